//! Failures as clients see them. Each variant maps to one gRPC status code
//! (see `api::status`); the payloads become google.rpc error details.
//!
//! The layers below the domain do not know this type: the store refuses
//! with its own [`RecordError`], mapped here ([`From<RecordError>`]), and
//! fails with [`StoreError`], which stays the source.

use crate::store::StoreError;
use crate::store::records::{RecordError, Referrer};

#[derive(Debug, Clone, PartialEq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// What blocks a change: the `type` of a google.rpc.PreconditionFailure
/// violation, which a program can act on without reading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreconditionKind {
    /// Other records refer to the object (the subjects name them).
    InUse,
    /// The object's state does not allow the change: a deleted user, a
    /// request that is no longer waiting, an assignment that has ended.
    State,
    /// The user already holds the package through an active assignment.
    AlreadyAssigned,
    /// Another open request already covers the same user and package, or
    /// the same assignment.
    RequestOpen,
    /// The approval stage was decided already.
    StageDecided,
    /// The approval stage has not started yet.
    StageNotStarted,
    /// The approver already decided this stage.
    AlreadyDecided,
    /// The assignment policy no longer has the request's approval stage.
    StageRemoved,
    /// The object is built in (the General catalog).
    BuiltIn,
    /// Nesting the group would make it its own ancestor.
    NestingCycle,
    /// The object named is deleted, so naming it would leave a dangling
    /// reference.
    Deleted,
    /// An approval stage's approvers resolve to nobody who could decide.
    NoApprovers,
}

impl PreconditionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InUse => "IN_USE",
            Self::State => "STATE",
            Self::AlreadyAssigned => "ALREADY_ASSIGNED",
            Self::RequestOpen => "REQUEST_OPEN",
            Self::StageDecided => "STAGE_DECIDED",
            Self::StageNotStarted => "STAGE_NOT_STARTED",
            Self::AlreadyDecided => "ALREADY_DECIDED",
            Self::StageRemoved => "STAGE_REMOVED",
            Self::BuiltIn => "BUILT_IN",
            Self::NestingCycle => "NESTING_CYCLE",
            Self::Deleted => "DELETED",
            Self::NoApprovers => "NO_APPROVERS",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreconditionViolation {
    pub kind: PreconditionKind,
    /// What the violation is about, as `<kind>/<id>`, e.g.
    /// "access_package/p1".
    pub subject: String,
    pub description: String,
}

impl PreconditionViolation {
    pub fn new(
        kind: PreconditionKind,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            subject: subject.into(),
            description: description.into(),
        }
    }
}

/// A FAILED_PRECONDITION: a message and at least one violation. The fields
/// are private so that no refusal leaves a program guessing what blocks it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreconditionFailure {
    message: String,
    violations: Vec<PreconditionViolation>,
}

impl PreconditionFailure {
    pub fn violations(&self) -> &[PreconditionViolation] {
        &self.violations
    }
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
    #[error("{}", .0.message)]
    FailedPrecondition(PreconditionFailure),
    #[error("{0}")]
    Aborted(String),
    #[error("{message}")]
    PermissionDenied {
        message: String,
        /// The Cedar policies that decided the denial.
        policy_ids: Vec<String>,
    },
    /// PERMISSION_DENIED because an assignment policy does not let the
    /// target have the change (eligibility, separation of duties, lifetime).
    #[error("{message}")]
    Ineligible {
        message: String,
        assignment_policy_id: String,
        /// The Cedar policies that decided the denial.
        policy_ids: Vec<String>,
        /// Machine-readable reasons (see `policy::reasons`).
        reasons: Vec<String>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    /// A question about a range the service no longer (or not yet) holds.
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of the service itself (e.g. a Cedar request it could not
    /// build); never the caller's fault. The cause is kept as the source.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
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

    /// FAILED_PRECONDITION with one violation of `kind` about `subject`
    /// (`<record kind>/<id>`); the description is the message too.
    pub fn precondition(
        kind: PreconditionKind,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let violation = PreconditionViolation::new(kind, subject, description);
        Self::FailedPrecondition(PreconditionFailure {
            message: violation.description.clone(),
            violations: vec![violation],
        })
    }

    /// FAILED_PRECONDITION: `kind` `id` is in use by `referrers` (at least
    /// one), each named as an IN_USE violation.
    pub fn in_use(kind: &str, id: &str, referrers: &[Referrer]) -> Self {
        let names: Vec<String> = referrers
            .iter()
            .map(|r| format!("{} {:?}", r.kind_name, r.id))
            .collect();
        let mut violations = referrers.iter().map(|r| {
            PreconditionViolation::new(
                PreconditionKind::InUse,
                format!("{}/{}", r.kind_name, r.id),
                format!("refers to {kind} {id:?}"),
            )
        });
        let first = violations.next().expect("in use by at least one referrer");
        Self::preconditions(
            format!("{kind} {id:?} is in use by {}", names.join(", ")),
            first,
            violations,
        )
    }

    /// FAILED_PRECONDITION with `message`, `first` and any `more`
    /// violations.
    pub fn preconditions(
        message: impl Into<String>,
        first: PreconditionViolation,
        more: impl IntoIterator<Item = PreconditionViolation>,
    ) -> Self {
        let mut violations = vec![first];
        violations.extend(more);
        Self::FailedPrecondition(PreconditionFailure {
            message: message.into(),
            violations,
        })
    }
}

/// Blocking work that panicked or was cancelled: the service's fault, with
/// the task's failure kept as the source.
impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Internal(Box::new(error))
    }
}

/// How the store's refusals reach a client.
impl From<RecordError> for Error {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Store(error) => Self::Store(error),
            RecordError::NotFound { kind, id } => Self::NotFound { kind, id },
            RecordError::Taken {
                kind,
                name,
                value,
                owner,
            } => Self::AlreadyExists {
                kind,
                message: format!("{kind} {owner:?} already has {name} {value:?}"),
                id: owner,
            },
            RecordError::InUse {
                kind,
                id,
                referrers,
            } => Self::in_use(&kind, &id, &referrers),
            RecordError::RequestIdReused { method } => Self::invalid(
                "request_id",
                format!(
                    "was already used by this caller for a different {method} request; \
                     a new request needs a new request_id"
                ),
            ),
        }
    }
}
