//! Requests and assignments: eligibility decisions, the request state
//! machine, delivery, extension, removal, expiry and the background work
//! that runs them on time.

pub mod answers;
pub mod approval;
pub mod approvers;
pub mod eligibility;
pub mod external;
pub mod lifecycle;
pub mod requests;
pub mod schedule;
pub mod scheduler;
