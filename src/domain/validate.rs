//! Input checks that collect every problem with a request before anything is
//! written, and the limits they enforce (documented in the proto comments).

use std::time::SystemTime;

use prost_types::{Duration, Timestamp};

use crate::error::{Error, FieldViolation, Result};

use crate::shared::actor::SYSTEM_ACTOR;

pub mod audit_filter;
pub mod cedar;

pub const MAX_ID: usize = 128;
pub const MAX_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 2048;
pub const MAX_EMAIL: usize = 320;
pub const MAX_TYPE: usize = 64;
pub const MAX_LIST: usize = 100;
pub const MAX_IDENTITY_SOURCES: usize = 50;
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_KEY: usize = 64;
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;
pub const MAX_REQUEST_ID: usize = 128;

/// The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z. Anything else cannot be written as
/// JSON (RFC 3339), so clients such as grpcurl could not read it back.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// The range of google.protobuf.Duration: about 10,000 years either way.
const MAX_PROTO_DURATION_SECONDS: i64 = 315_576_000_000;
const MAX_NANOS: i32 = 999_999_999;
const DAY: i64 = 86_400;

/// Why `value` is not a google.protobuf.Timestamp, if it is not one.
fn timestamp_problem(value: &Timestamp) -> Option<String> {
    if !(0..=MAX_NANOS).contains(&value.nanos) {
        Some(format!("nanos must be from 0 to {MAX_NANOS}"))
    } else if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&value.seconds) {
        Some("must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z".into())
    } else {
        None
    }
}

/// Why `value` is not a google.protobuf.Duration, if it is not one.
fn duration_problem(value: &Duration) -> Option<String> {
    if !(-MAX_NANOS..=MAX_NANOS).contains(&value.nanos) {
        Some(format!("nanos must be from -{MAX_NANOS} to {MAX_NANOS}"))
    } else if (value.seconds > 0 && value.nanos < 0) || (value.seconds < 0 && value.nanos > 0) {
        Some("seconds and nanos must have the same sign".into())
    } else if !(-MAX_PROTO_DURATION_SECONDS..=MAX_PROTO_DURATION_SECONDS).contains(&value.seconds) {
        Some(format!(
            "must be within {MAX_PROTO_DURATION_SECONDS} seconds (10,000 years) either way"
        ))
    } else {
        None
    }
}

/// A number of seconds as the limits above are documented: "0",
/// "1 second", "3660 days".
fn describe_seconds(seconds: i64) -> String {
    match seconds {
        1 => "1 second".into(),
        s if s > 0 && s % DAY == 0 => format!("{} days", s / DAY),
        s => format!("{s} seconds"),
    }
}

pub fn is_valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~@:-".contains(&b))
}

/// Ids that name the service itself in the audit trail. No user, service
/// principal or caller may take one, in any letter case, so nobody's
/// actions pass for the service's own.
const RESERVED_IDS: [&str; 1] = [SYSTEM_ACTOR];

pub fn is_reserved_id(value: &str) -> bool {
    RESERVED_IDS.iter().any(|r| r.eq_ignore_ascii_case(value))
}

/// Why a reserved id cannot be taken.
pub fn reserved_id_message(value: &str) -> String {
    format!("{value:?} is reserved for the service's own actions")
}

/// Collects field violations under a field-path prefix such as "user".
#[derive(Debug, Default)]
pub struct Check {
    prefix: String,
    violations: Vec<FieldViolation>,
}

impl Check {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            violations: Vec::new(),
        }
    }

    fn path(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    pub fn fail(&mut self, field: &str, description: impl Into<String>) {
        let field = self.path(field);
        self.violations.push(FieldViolation {
            field,
            description: description.into(),
        });
    }

    pub fn require(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.fail(field, description);
        }
    }

    /// A required id.
    pub fn id(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.fail(field, "is required");
        } else {
            self.optional_id(field, value);
        }
    }

    /// An id that may be empty.
    pub fn optional_id(&mut self, field: &str, value: &str) {
        if !value.is_empty() && !is_valid_id(value) {
            self.fail(
                field,
                format!("must be 1-{MAX_ID} characters of [A-Za-z0-9._~@:-]"),
            );
        }
    }

    /// An optional id of someone who can act (a user): not a reserved id.
    pub fn actor_id(&mut self, field: &str, value: &str) {
        if is_reserved_id(value) {
            self.fail(field, reserved_id_message(value));
        } else {
            self.optional_id(field, value);
        }
    }

    /// Free text: at most `max` characters and no control characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize, required: bool) {
        if required && value.trim().is_empty() {
            self.fail(field, "is required");
        } else if value.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        } else if value.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
    }

    /// A google.protobuf.Timestamp within its documented range; false
    /// (with a violation) otherwise.
    pub fn timestamp(&mut self, field: &str, value: &Timestamp) -> bool {
        match timestamp_problem(value) {
            Some(problem) => {
                self.fail(field, problem);
                false
            }
            None => true,
        }
    }

    /// A valid Timestamp that is still to come at `now`: an end must not
    /// have passed already.
    pub fn future_timestamp(&mut self, field: &str, value: &Timestamp, now: SystemTime) {
        let now = crate::shared::clock::to_timestamp(now);
        if self.timestamp(field, value) && (value.seconds, value.nanos) <= (now.seconds, now.nanos)
        {
            self.fail(field, format!("must be in the future (after {now})"));
        }
    }

    /// A google.protobuf.Duration of whole seconds from `min` to `max`.
    pub fn whole_seconds(&mut self, field: &str, value: Option<&Duration>, min: i64, max: i64) {
        let Some(value) = value else {
            self.fail(field, "is required");
            return;
        };
        if let Some(problem) = duration_problem(value) {
            self.fail(field, problem);
        } else if value.nanos != 0 || !(min..=max).contains(&value.seconds) {
            self.fail(
                field,
                format!(
                    "must be whole seconds, from {} to {}",
                    describe_seconds(min),
                    describe_seconds(max)
                ),
            );
        }
    }

    /// Cedar text from a caller: within the nesting and depth Cedar parses
    /// and evaluates safely (see [`cedar`]).
    pub fn cedar(&mut self, field: &str, text: &str) {
        if let Some(problem) = cedar::problem(text) {
            self.fail(field, problem);
        }
    }

    /// A list of distinct ids, at most `max` long.
    pub fn id_list(&mut self, field: &str, values: &[String], max: usize) {
        if values.len() > max {
            self.fail(field, format!("must have at most {max} entries"));
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, value) in values.iter().enumerate() {
            let item = format!("{field}[{i}]");
            self.id(&item, value);
            if !seen.insert(value) {
                self.fail(&item, format!("{value:?} is listed twice"));
            }
        }
    }

    pub fn finish(self) -> Result<()> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.violations))
        }
    }
}

/// Checks a request id (empty means "not idempotent").
pub fn request_id(value: &str) -> Result<()> {
    let mut check = Check::new("");
    if value.len() > MAX_REQUEST_ID || value.chars().any(char::is_control) {
        check.fail(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID} printable characters"),
        );
    }
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_alphabet() {
        assert!(is_valid_id("user-1@example.com"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(MAX_ID + 1)));
    }

    #[test]
    fn the_service_id_is_reserved_in_any_case() {
        assert!(is_reserved_id("system"));
        assert!(is_reserved_id("SYSTEM"));
        assert!(!is_reserved_id("system-1"));
    }

    #[test]
    fn timestamps_and_durations_keep_to_the_protobuf_ranges() {
        let at = |seconds, nanos| Timestamp { seconds, nanos };
        let mut check = Check::new("");
        assert!(check.timestamp("t", &at(MIN_TIMESTAMP_SECONDS, 0)));
        assert!(check.timestamp("t", &at(MAX_TIMESTAMP_SECONDS, MAX_NANOS)));
        assert!(!check.timestamp("t", &at(MIN_TIMESTAMP_SECONDS - 1, 0)));
        assert!(!check.timestamp("t", &at(MAX_TIMESTAMP_SECONDS + 1, 0)));
        assert!(!check.timestamp("t", &at(0, -1)));
        assert!(!check.timestamp("t", &at(0, MAX_NANOS + 1)));
        let span = |seconds, nanos| Some(Duration { seconds, nanos });
        let mut check = Check::new("");
        check.whole_seconds("d", span(1, 0).as_ref(), 1, 10);
        check.whole_seconds("d", span(10, 0).as_ref(), 1, 10);
        assert!(check.finish().is_ok());
        for (seconds, nanos) in [(0, 0), (11, 0), (1, 1), (1, -1), (i64::MAX, 0), (-1, 0)] {
            let mut check = Check::new("");
            check.whole_seconds("d", span(seconds, nanos).as_ref(), 1, 10);
            assert!(check.finish().is_err(), "{seconds}s {nanos}ns");
        }
        assert_eq!(
            duration_problem(&Duration {
                seconds: -1,
                nanos: 5
            }),
            Some("seconds and nanos must have the same sign".into())
        );
        assert!(
            duration_problem(&Duration {
                seconds: MAX_PROTO_DURATION_SECONDS + 1,
                nanos: 0
            })
            .is_some()
        );
    }

    #[test]
    fn violations_carry_the_field_path() {
        let mut check = Check::new("user");
        check.text("display_name", "", MAX_NAME, true);
        check.id_list("sponsor_ids", &["a".into(), "a".into()], 5);
        let Err(Error::InvalidArgument(v)) = check.finish() else {
            panic!("expected violations")
        };
        assert_eq!(v[0].field, "user.display_name");
        assert_eq!(v[1].field, "user.sponsor_ids[1]");
    }
}
