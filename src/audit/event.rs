//! Audit events as stored records, and [`Draft`]: what a change says about
//! itself before [`super::chain::append`] gives it a place in the chain.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

use super::action::{Action, Verb};
use crate::pb::AuditEvent;
use crate::shared::clock::Moment;
use crate::store::records::{IndexEntry, Record};

/// Index names over audit events; the target of every entry is the event's
/// [`sequence_key`], so each index lists events in sequence order.
pub const BY_ACTOR: &str = "actor";
pub const BY_TARGET: &str = "target";
pub const BY_TARGET_TYPE: &str = "target_type";
pub const BY_ACTION: &str = "action";
pub const BY_CATALOG: &str = "catalog";
pub const BY_PACKAGE: &str = "package";
pub const BY_USER: &str = "user";

/// Outcome of a change with no state of its own to report.
pub const SUCCEEDED: &str = "SUCCEEDED";

/// Sequence numbers as record ids: zero-padded, so that they sort.
pub fn sequence_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

/// The value of the [`BY_TARGET`] index for a target.
pub fn target_key(target_type: &str, target_id: &str) -> String {
    format!("{target_type}:{target_id}")
}

impl Record for AuditEvent {
    const KIND: &'static str = "audit_event";

    fn id(&self) -> String {
        sequence_key(self.sequence)
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let id = self.id();
        let mut entries = vec![
            IndexEntry::new(BY_ACTOR, &self.actor, &id),
            IndexEntry::new(
                BY_TARGET,
                target_key(&self.target_type, &self.target_id),
                &id,
            ),
            IndexEntry::new(BY_TARGET_TYPE, &self.target_type, &id),
            IndexEntry::new(BY_ACTION, &self.action, &id),
        ];
        for (name, value) in [
            (BY_CATALOG, &self.catalog_id),
            (BY_PACKAGE, &self.access_package_id),
            (BY_USER, &self.user_id),
        ] {
            if !value.is_empty() {
                entries.push(IndexEntry::new(name, value, &id));
            }
        }
        entries
    }
}

/// An event before it joins the chain: what happened to what, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub action: Action<'static>,
    pub target_id: String,
    pub outcome: String,
    pub catalog_id: String,
    pub access_package_id: String,
    pub user_id: String,
    pub details: BTreeMap<String, Value>,
}

impl Draft {
    /// An event with action `verb` on a `target_type` about `target_id`.
    pub fn new(target_type: &'static str, verb: Verb, target_id: impl Into<String>) -> Self {
        Self::of(Action::new(target_type, verb), target_id)
    }

    /// An event with `action` about `target_id`.
    pub fn of(action: Action<'static>, target_id: impl Into<String>) -> Self {
        Self {
            action,
            target_id: target_id.into(),
            outcome: SUCCEEDED.into(),
            catalog_id: String::new(),
            access_package_id: String::new(),
            user_id: String::new(),
            details: BTreeMap::new(),
        }
    }

    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }

    pub fn catalog(mut self, catalog_id: impl Into<String>) -> Self {
        self.catalog_id = catalog_id.into();
        self
    }

    pub fn package(mut self, access_package_id: impl Into<String>) -> Self {
        self.access_package_id = access_package_id.into();
        self
    }

    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = user_id.into();
        self
    }

    /// Adds a detail; empty texts and lists are left out.
    pub fn detail(mut self, key: &str, value: impl Into<Detail>) -> Self {
        if let Some(value) = value.into().0 {
            self.details.insert(key.to_string(), value);
        }
        self
    }

    pub fn details_struct(&self) -> Option<Struct> {
        (!self.details.is_empty()).then(|| Struct {
            fields: self.details.clone(),
        })
    }
}

/// A detail value; None for "nothing to say".
pub struct Detail(Option<Value>);

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

impl From<&str> for Detail {
    fn from(text: &str) -> Self {
        Detail((!text.is_empty()).then(|| value(Kind::StringValue(text.to_string()))))
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Detail::from(text.as_str())
    }
}

impl From<&String> for Detail {
    fn from(text: &String) -> Self {
        Detail::from(text.as_str())
    }
}

impl From<bool> for Detail {
    fn from(flag: bool) -> Self {
        Detail(Some(value(Kind::BoolValue(flag))))
    }
}

impl From<i64> for Detail {
    fn from(number: i64) -> Self {
        // JSON numbers: exact up to 2^53, which covers counts and sequence
        // numbers (times are RFC 3339 text).
        Detail(Some(value(Kind::NumberValue(number as f64))))
    }
}

/// A time, as RFC 3339 text with every digit of its fraction (a JSON
/// number would lose the nanoseconds).
impl From<Option<prost_types::Timestamp>> for Detail {
    fn from(time: Option<prost_types::Timestamp>) -> Self {
        Detail(time.map(|t| value(Kind::StringValue(t.to_string()))))
    }
}

impl From<Vec<String>> for Detail {
    fn from(items: Vec<String>) -> Self {
        Detail((!items.is_empty()).then(|| {
            value(Kind::ListValue(ListValue {
                values: items
                    .into_iter()
                    .map(|item| value(Kind::StringValue(item)))
                    .collect(),
            }))
        }))
    }
}

/// A text detail of a stored event ("" when absent).
pub fn text_detail<'a>(event: &'a AuditEvent, key: &str) -> &'a str {
    match detail(event, key) {
        Some(Kind::StringValue(text)) => text,
        _ => "",
    }
}

/// A time detail of a stored event. Events recorded before times were kept
/// to the nanosecond carry whole epoch seconds, as a number.
pub fn time_detail(event: &AuditEvent, key: &str) -> Option<Moment> {
    let time = match detail(event, key)? {
        Kind::StringValue(text) => text.parse::<prost_types::Timestamp>().ok()?,
        Kind::NumberValue(seconds) => prost_types::Timestamp {
            seconds: *seconds as i64,
            nanos: 0,
        },
        _ => return None,
    };
    Some(Moment::from_timestamp(time))
}

/// A list-of-texts detail of a stored event.
pub fn list_detail(event: &AuditEvent, key: &str) -> Vec<String> {
    match detail(event, key) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(text)) => Some(text.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn detail<'a>(event: &'a AuditEvent, key: &str) -> Option<&'a Kind> {
    event
        .details
        .as_ref()
        .and_then(|d| d.fields.get(key))
        .and_then(|v| v.kind.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_details_keep_nanoseconds_and_older_whole_seconds_still_read() {
        let start = prost_types::Timestamp {
            seconds: 1_893_456_010,
            nanos: 171_000_000,
        };
        let draft = Draft::new("request", Verb::Delivered, "r1")
            .detail("start", Some(start))
            .detail("end", 1_893_456_020_i64);
        let event = AuditEvent {
            details: draft.details_struct(),
            ..Default::default()
        };
        assert_eq!(text_detail(&event, "start"), "2030-01-01T00:00:10.171Z");
        assert_eq!(
            time_detail(&event, "start"),
            Some(Moment::from_timestamp(start))
        );
        assert_eq!(
            time_detail(&event, "end").map(Moment::seconds),
            Some(1_893_456_020)
        );
        assert_eq!(time_detail(&event, "previous_end"), None);
    }
}
