//! Requests and assignments: eligibility decisions, the request state
//! machine, delivery, extension, removal, expiry and the background work
//! that runs them on time.

pub mod answers;
pub mod approval;
pub mod approvers;
pub mod eligibility;
pub mod external;
pub mod grants;
pub mod lifecycle;
pub mod requests;
pub mod schedule;
pub mod scheduler;

use std::time::{SystemTime, UNIX_EPOCH};

/// Epoch seconds of a time (times before 1970 count as 0).
pub fn epoch_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn timestamp(epoch_seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: epoch_seconds,
        nanos: 0,
    }
}
