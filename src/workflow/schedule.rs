//! When access starts and ends: what was asked, bounded by the policy.

use crate::domain::validate::MAX_TIMESTAMP_SECONDS;
use crate::error::{Error, Result};
use crate::pb::{AssignmentPolicy, ExpirationType, Schedule};
use crate::shared::clock::Moment;

/// A start and an optional end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Moment,
    pub end: Option<Moment>,
}

impl Window {
    pub fn to_schedule(self) -> Schedule {
        Schedule {
            start_time: Some(self.start.timestamp()),
            end_time: self.end.map(Moment::timestamp),
        }
    }

    /// INVALID_ARGUMENT unless the window ends after it starts, at a time a
    /// Timestamp can hold (a late start plus the policy's duration might
    /// not).
    pub fn check(self) -> Result<Self> {
        match self.end {
            Some(end) if end <= self.start => Err(Error::invalid(
                "assignment_request.schedule.end_time",
                "must be after the start (and, for a policy with an end date, before that date)",
            )),
            Some(end) if end.seconds() > MAX_TIMESTAMP_SECONDS => Err(Error::invalid(
                "assignment_request.schedule.start_time",
                "is too late: with the policy's duration, access would end after 9999-12-31",
            )),
            _ => Ok(self),
        }
    }
}

/// The latest end the policy allows for access starting at `start`.
pub fn policy_end(policy: &AssignmentPolicy, start: Moment) -> Option<Moment> {
    let expiration = policy.expiration.unwrap_or_default();
    match expiration.r#type() {
        ExpirationType::AfterDuration => expiration.duration.map(|d| start.after(d)),
        ExpirationType::OnDate => expiration.end_time.map(Moment::from_timestamp),
        ExpirationType::None | ExpirationType::Unspecified => None,
    }
}

fn earliest(a: Option<Moment>, b: Option<Moment>) -> Option<Moment> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The window for new access: it starts when asked (not before `now`) and
/// ends at the earlier of the asked end and the policy's limit.
pub fn for_add(policy: &AssignmentPolicy, asked: Option<&Schedule>, now: Moment) -> Window {
    let start = start_for_add(asked, now);
    let asked_end = asked.and_then(|s| s.end_time).map(Moment::from_timestamp);
    Window {
        start,
        end: earliest(asked_end, policy_end(policy, start)),
    }
}

/// When new access starts: when asked, but not before `now`.
pub fn start_for_add(asked: Option<&Schedule>, now: Moment) -> Moment {
    asked
        .and_then(|s| s.start_time)
        .map_or(now, Moment::from_timestamp)
        .max(now)
}

/// The new end of an extended assignment: the policy's limit counts from
/// the extension.
pub fn for_update(
    policy: &AssignmentPolicy,
    asked_end: Option<Moment>,
    now: Moment,
) -> Option<Moment> {
    earliest(asked_end, policy_end(policy, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Expiration;

    fn at(seconds: i64) -> Moment {
        Moment::from_timestamp(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn after(seconds: i64) -> AssignmentPolicy {
        AssignmentPolicy {
            expiration: Some(Expiration {
                r#type: ExpirationType::AfterDuration as i32,
                duration: Some(prost_types::Duration { seconds, nanos: 0 }),
                end_time: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_effective_end_is_the_earlier_of_asked_and_allowed() {
        let policy = after(100);
        let asked = |end| Schedule {
            start_time: None,
            end_time: Some(at(end).timestamp()),
        };
        assert_eq!(
            for_add(&policy, None, at(1000)),
            Window {
                start: at(1000),
                end: Some(at(1100))
            }
        );
        assert_eq!(
            for_add(&policy, Some(&asked(1050)), at(1000)).end,
            Some(at(1050))
        );
        assert_eq!(
            for_add(&policy, Some(&asked(5000)), at(1000)).end,
            Some(at(1100))
        );
        assert_eq!(for_update(&policy, None, at(2000)), Some(at(2100)));
        assert!(
            Window {
                start: at(10),
                end: Some(at(10))
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn a_start_in_the_past_means_now() {
        let schedule = Schedule {
            start_time: Some(at(5).timestamp()),
            end_time: None,
        };
        assert_eq!(for_add(&after(10), Some(&schedule), at(100)).start, at(100));
    }
}
