//! Failures as clients see them. Each variant maps to one gRPC status code
//! (see `api::status`); the payloads become google.rpc error details.

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreconditionViolation {
    /// A short machine-readable category, e.g. "IN_USE".
    pub kind: String,
    /// What the violation is about, e.g. "access_package/p1".
    pub subject: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {}", describe_fields(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{message}")]
    AlreadyExists {
        kind: &'static str,
        id: String,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        violations: Vec<PreconditionViolation>,
    },
    #[error("{0}")]
    Aborted(String),
    #[error("{message}")]
    PermissionDenied {
        message: String,
        /// The Cedar policies that decided the denial.
        policy_ids: Vec<String>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    /// A question about a range the service no longer (or not yet) holds.
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of the service itself (e.g. a Cedar request it could not
    /// build); never the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn describe_fields(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            message: message.into(),
            violations: Vec::new(),
        }
    }
}
