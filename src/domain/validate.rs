//! Input checks that collect every problem with a request before anything is
//! written, and the limits they enforce (documented in the proto comments).

use crate::error::{Error, FieldViolation, Result};

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

pub fn is_valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~@:-".contains(&b))
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
