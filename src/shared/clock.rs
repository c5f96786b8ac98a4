//! Time as the service sees it. Production reads the system clock; tests use
//! [`ManualClock`] so that expiry and timeouts can be driven without sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock lock poisoned") += by;
    }

    pub fn set(&self, to: SystemTime) {
        *self.now.lock().expect("clock lock poisoned") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().expect("clock lock poisoned")
    }
}

pub fn to_timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A moment at the full precision of a protobuf Timestamp: nanoseconds
/// since the Unix epoch, ordered. Every time the service compares
/// (assignment starts and ends, due work, audit event times, the moment a
/// point-in-time report asks about) is one, so nothing is cut to whole
/// seconds on the way; only Cedar's `context.now` and the time indexes
/// (which are re-checked at full precision) take whole seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(i128);

impl Moment {
    pub fn of(time: SystemTime) -> Self {
        Self::from_timestamp(to_timestamp(time))
    }

    pub fn from_timestamp(time: prost_types::Timestamp) -> Self {
        Self(i128::from(time.seconds) * NANOS_PER_SECOND + i128::from(time.nanos))
    }

    pub fn timestamp(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.seconds(),
            nanos: self.0.rem_euclid(NANOS_PER_SECOND) as i32,
        }
    }

    /// Whole epoch seconds, rounded down.
    pub fn seconds(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SECOND) as i64
    }

    /// The moment `duration` later.
    pub fn after(self, duration: prost_types::Duration) -> Self {
        Self(self.0 + i128::from(duration.seconds) * NANOS_PER_SECOND + i128::from(duration.nanos))
    }

    /// Nanoseconds since the epoch, e.g. for page tokens.
    pub fn nanos(self) -> i128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_keep_nanoseconds_both_ways() {
        let time = prost_types::Timestamp {
            seconds: -2,
            nanos: 171_000_000,
        };
        let moment = Moment::from_timestamp(time);
        assert_eq!(moment.timestamp(), time);
        assert_eq!(moment.seconds(), -2);
        let later = moment.after(prost_types::Duration {
            seconds: 1,
            nanos: 900_000_000,
        });
        assert_eq!(
            later.timestamp(),
            prost_types::Timestamp {
                seconds: 0,
                nanos: 71_000_000
            }
        );
        assert!(moment < later);
    }
}
