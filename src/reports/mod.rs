//! Reports assembled from the domain records, the decision view and the
//! audit trail: a layer above [`crate::domain`], [`crate::audit`] and
//! [`crate::decision`], below [`crate::api`], which only authorizes and
//! converts.

pub mod access;
pub mod history;
