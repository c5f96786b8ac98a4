//! Audit events as JSON objects (one per line in exports): field names as
//! in the proto, times in RFC 3339, hashes in hex.

use prost_types::value::Kind;
use prost_types::{Struct, Timestamp, Value};
use serde_json::{Map, Value as Json, json};

use crate::pb::AuditEvent;

fn rfc3339(time: Option<Timestamp>) -> Json {
    // prost-types prints Timestamps in RFC 3339 (UTC, "Z").
    time.map_or(Json::Null, |t| Json::String(t.to_string()))
}

fn value_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        // Whole numbers (times in epoch seconds, counts) print as integers,
        // as they were recorded, not as 1700000000.0.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            json!(*n as i64)
        }
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_json).collect()),
    }
}

fn struct_json(fields: &Struct) -> Json {
    Json::Object(
        fields
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), value_json(value)))
            .collect::<Map<_, _>>(),
    )
}

pub fn event_json(event: &AuditEvent) -> Json {
    json!({
        "sequence": event.sequence,
        "time": rfc3339(event.time),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "outcome": event.outcome,
        "details": event.details.as_ref().map_or(json!({}), struct_json),
        "request_id": event.request_id,
        "catalog_id": event.catalog_id,
        "access_package_id": event.access_package_id,
        "user_id": event.user_id,
        "revision": event.revision,
        "previous_hash": hex::encode(&event.previous_hash),
        "hash": hex::encode(&event.hash),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Draft, Verb};

    #[test]
    fn details_and_hashes_render_as_plain_json() {
        let draft = Draft::new("assignment", Verb::Expired, "a1")
            .detail("start", 7_i64)
            .detail("roles", vec!["r/x".to_string()]);
        let event = AuditEvent {
            sequence: 3,
            time: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            action: draft.action.name(),
            details: draft.details_struct(),
            hash: vec![0xab, 0x01],
            ..AuditEvent::default()
        };
        let line = event_json(&event);
        assert_eq!(line["action"], "assignment.expired");
        assert_eq!(line["time"], "1970-01-01T00:00:00Z");
        assert_eq!(line["details"]["start"], 7);
        assert!(line.to_string().contains(r#""start":7}"#), "{line}");
        assert_eq!(line["details"]["roles"][0], "r/x");
        assert_eq!(line["hash"], "ab01");
    }
}
