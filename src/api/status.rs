//! Maps [`Error`] to gRPC statuses with google.rpc error details, which
//! grpcurl and other clients decode (the detail descriptors are served by
//! reflection).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;
use crate::store::StoreError;
use crate::store::records::RecordError;

/// The ErrorInfo domain of every error this service raises.
pub const ERROR_DOMAIN: &str = "entitlements";

/// PERMISSION_DENIED by Cedar policies, with ErrorInfo reason POLICY_DENIED
/// and `metadata`.
fn policy_denied<const N: usize>(message: String, metadata: [(&str, String); N]) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    Status::with_error_details(
        Code::PermissionDenied,
        message,
        ErrorDetails::with_error_info("POLICY_DENIED", ERROR_DOMAIN, metadata),
    )
}

/// How long an overloaded server asks callers to wait before retrying.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// RESOURCE_EXHAUSTED for a call refused because the server is at a limit
/// (calls in flight, queued writes): nothing was done, and RetryInfo says
/// when to try again.
pub fn overloaded(message: impl Into<String>) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
    details.set_error_info("OVERLOADED", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound { kind, id } => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(kind, id, "", "not found"),
            ),
            Error::AlreadyExists { kind, id, .. } => Status::with_error_details(
                Code::AlreadyExists,
                message.clone(),
                ErrorDetails::with_resource_info(kind, id, "", message),
            ),
            Error::FailedPrecondition(failure) => {
                let mut details = ErrorDetails::new();
                for v in failure.violations() {
                    details.add_precondition_failure_violation(
                        v.kind.as_str(),
                        &v.subject,
                        &v.description,
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::Aborted(_) => Status::aborted(message),
            Error::PermissionDenied { policy_ids, .. } => {
                policy_denied(message, [("policy_ids", policy_ids.join(","))])
            }
            Error::Ineligible {
                assignment_policy_id,
                policy_ids,
                reasons,
                ..
            } => policy_denied(
                message,
                [
                    ("policy_ids", policy_ids.join(",")),
                    ("assignment_policy_id", assignment_policy_id),
                    ("reasons", reasons.join(",")),
                ],
            ),
            Error::Unauthenticated(_) => Status::unauthenticated(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            // The store stopped (it failed, or the server is stopping), or
            // its database is unreachable: the outcome of a write is unknown
            // until the restart or reconnection, so retrying (with the same
            // request_id) elsewhere or later is right.
            Error::Store(
                StoreError::Failed(_) | StoreError::Closed | StoreError::Unavailable(_),
            ) => Status::unavailable(message),
            Error::Store(StoreError::Busy { .. }) => overloaded(message),
            Error::Store(StoreError::DeadlineExceeded) => Status::deadline_exceeded(message),
            Error::Store(error) => {
                tracing::error!(%error, "store failure");
                Status::internal(message)
            }
            Error::Internal(error) => {
                tracing::error!(%error, "internal failure");
                Status::internal(message)
            }
        }
    }
}

impl From<RecordError> for Status {
    fn from(error: RecordError) -> Self {
        Error::from(error).into()
    }
}
