//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource's SCIM JSON. The
//! patched JSON then goes the way a PUT body goes, so PATCH and PUT share
//! every check and every mapping onto the directory.

use serde_json::{Map, Value};

use super::errors::{ScimError, ScimResult};
use super::filter::{AttrPath, CompareOp, Filter, PatchPath, parse_patch_path};
use super::urns::PATCH_SCHEMA;

/// The most operations one PATCH may carry.
const MAX_OPERATIONS: usize = 1000;

/// Attributes only the service sets.
const READ_ONLY: [&str; 4] = ["id", "meta", "groups", "schemas"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies the operations of a PatchOp message to `resource`.
pub fn apply(resource: &mut Value, message: &Value) -> ScimResult<()> {
    super::resources::require_schema(message, PATCH_SCHEMA)?;
    let operations = super::filter::member(message, "Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be a non-empty array"))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_syntax(format!(
            "at most {MAX_OPERATIONS} operations per PATCH"
        )));
    }
    for operation in operations {
        let op = match super::filter::member(operation, "op").and_then(Value::as_str) {
            // Some identity systems capitalize the operation.
            Some(op) if op.eq_ignore_ascii_case("add") => Op::Add,
            Some(op) if op.eq_ignore_ascii_case("replace") => Op::Replace,
            Some(op) if op.eq_ignore_ascii_case("remove") => Op::Remove,
            other => {
                return Err(ScimError::invalid_syntax(format!(
                    "op must be add, replace or remove, not {other:?}"
                )));
            }
        };
        let value = super::filter::member(operation, "value").cloned();
        match super::filter::member(operation, "path") {
            Some(Value::String(path)) => apply_at(resource, op, &parse_patch_path(path)?, value)?,
            None | Some(Value::Null) => apply_without_path(resource, op, value)?,
            Some(other) => {
                return Err(ScimError::invalid_path(format!(
                    "path must be a string, not {other}"
                )));
            }
        }
    }
    Ok(())
}

/// An add or replace without a path: each member of the value object is
/// an attribute path (`displayName`, `name.givenName`, an extension's URN
/// or `URN:attribute`) with its value.
fn apply_without_path(resource: &mut Value, op: Op, value: Option<Value>) -> ScimResult<()> {
    let Some(Value::Object(values)) = value else {
        return Err(ScimError::invalid_value(
            "an operation without a path needs an object value",
        ));
    };
    if op == Op::Remove {
        return Err(ScimError::no_target("remove needs a path"));
    }
    // A whole resource sent as the value names its schemas too: they are
    // the resource's, not a change.
    for (key, value) in values.into_iter().filter(|(key, _)| key != "schemas") {
        apply_at(resource, op, &parse_patch_path(&key)?, Some(value))?;
    }
    Ok(())
}

/// The object holding `path`'s attribute: the resource, or the extension
/// object its URN names (made when absent, for add and replace).
fn container<'v>(
    resource: &'v mut Value,
    attr: &AttrPath,
    create: bool,
) -> Option<&'v mut Map<String, Value>> {
    let object = resource.as_object_mut()?;
    let Some(uri) = &attr.uri else {
        return Some(object);
    };
    let key = match object.keys().find(|k| k.eq_ignore_ascii_case(uri)) {
        Some(key) => key.clone(),
        None if create => uri.clone(),
        None => return None,
    };
    object
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// The key under which `object` holds `name`, in whatever letter case.
fn key_of(object: &Map<String, Value>, name: &str) -> String {
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn apply_at(
    resource: &mut Value,
    op: Op,
    path: &PatchPath,
    value: Option<Value>,
) -> ScimResult<()> {
    let attr = &path.attr;
    if attr.uri.is_none() && READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(&attr.name)) {
        return Err(ScimError::mutability(format!("{} is read-only", attr.name)));
    }
    let value = match (op, value) {
        (Op::Remove, value) => value,
        (_, Some(value)) => Some(value),
        (_, None) => return Err(ScimError::invalid_value("add and replace need a value")),
    };
    let Some(object) = container(resource, attr, op != Op::Remove) else {
        return Ok(());
    };
    if attr.name.is_empty() {
        return apply_to_extension(object, op, value);
    }
    let key = key_of(object, &attr.name);
    match &path.filter {
        None => apply_to_attribute(object, &key, attr.sub.as_deref(), op, value),
        Some(filter) => {
            let items = match object.get_mut(&key) {
                Some(Value::Array(items)) => items,
                _ if op == Op::Remove => return Ok(()),
                _ => {
                    object.insert(key.clone(), Value::Array(Vec::new()));
                    object
                        .get_mut(&key)
                        .and_then(Value::as_array_mut)
                        .expect("just inserted")
                }
            };
            apply_to_selected(items, filter, path.sub.as_deref(), op, value, &attr.name)
        }
    }
}

/// An operation on a whole extension object (`object`): add merges its
/// attributes, replace replaces them all, remove removes them all.
fn apply_to_extension(
    object: &mut Map<String, Value>,
    op: Op,
    value: Option<Value>,
) -> ScimResult<()> {
    if op != Op::Add {
        object.clear();
    }
    match value {
        Some(Value::Object(fields)) if op != Op::Remove => {
            for (name, value) in fields {
                let key = key_of(object, &name);
                apply_to_attribute(object, &key, None, op, Some(value))?;
            }
            Ok(())
        }
        _ if op == Op::Remove => Ok(()),
        _ => Err(ScimError::invalid_value(
            "an extension's value must be an object",
        )),
    }
}

fn apply_to_attribute(
    object: &mut Map<String, Value>,
    key: &str,
    sub: Option<&str>,
    op: Op,
    value: Option<Value>,
) -> ScimResult<()> {
    if let Some(sub) = sub {
        let parent = object
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(parent) = parent else {
            return Err(ScimError::invalid_path(format!(
                "{key} has no sub-attribute {sub}"
            )));
        };
        let sub_key = key_of(parent, sub);
        return apply_to_attribute(parent, &sub_key, None, op, value);
    }
    match (op, value, object.get_mut(key)) {
        (Op::Remove, Some(Value::Array(removed)), Some(Value::Array(items))) => {
            // Remove the listed values (as some identity systems remove members).
            items.retain(|item| !removed.iter().any(|r| same_value(item, r)));
        }
        (Op::Remove, _, _) => {
            object.remove(key);
        }
        (Op::Add, Some(Value::Array(added)), Some(Value::Array(items))) => {
            for value in added {
                if !items.iter().any(|item| same_value(item, &value)) {
                    items.push(value);
                }
            }
        }
        (Op::Add, Some(Value::Object(added)), Some(Value::Object(fields))) => {
            fields.extend(added);
        }
        (_, Some(value), _) => {
            object.insert(key.to_string(), value);
        }
        (_, None, _) => unreachable!("add and replace carry a value"),
    }
    Ok(())
}

/// Two values of a multi-valued attribute are the same when equal, or,
/// for complex ones, when their `value`s are.
fn same_value(a: &Value, b: &Value) -> bool {
    match (
        super::filter::member(a, "value"),
        super::filter::member(b, "value"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// An operation on the values of a multi-valued attribute that `filter`
/// selects (`members[value eq "u1"]`, `emails[type eq "work"].value`).
fn apply_to_selected(
    items: &mut Vec<Value>,
    filter: &Filter,
    sub: Option<&str>,
    op: Op,
    value: Option<Value>,
    name: &str,
) -> ScimResult<()> {
    let selected: Vec<usize> = (0..items.len())
        .filter(|&i| filter.matches(&items[i]))
        .collect();
    if op == Op::Remove {
        match sub {
            Some(sub) => {
                for &i in &selected {
                    if let Value::Object(item) = &mut items[i] {
                        let key = key_of(item, sub);
                        item.remove(&key);
                    }
                }
            }
            None => {
                let mut index = 0;
                items.retain(|_| {
                    index += 1;
                    !selected.contains(&(index - 1))
                });
            }
        }
        return Ok(());
    }
    let value = value.expect("add and replace carry a value");
    if selected.is_empty() {
        // Identity systems set e.g. `emails[type eq "work"].value` on a
        // user with no work email yet: a filter of equalities describes
        // the new value, which is added.
        let Some(mut item) = item_described_by(filter) else {
            return Err(ScimError::no_target(format!(
                "no value of {name} matches the filter"
            )));
        };
        match (sub, value) {
            (Some(sub), value) => {
                item.insert(sub.to_string(), value);
            }
            (None, Value::Object(fields)) => item.extend(fields),
            (None, _) => {
                return Err(ScimError::invalid_value(format!(
                    "a value of {name} must be an object"
                )));
            }
        }
        items.push(Value::Object(item));
        return Ok(());
    }
    for i in selected {
        match (sub, &value, &mut items[i]) {
            (Some(sub), value, Value::Object(item)) => {
                let key = key_of(item, sub);
                item.insert(key, value.clone());
            }
            (None, Value::Object(fields), Value::Object(item)) if op == Op::Add => {
                item.extend(fields.clone());
            }
            (None, value, item) => *item = value.clone(),
            (Some(_), _, _) => {
                return Err(ScimError::invalid_path(format!(
                    "the values of {name} have no sub-attributes"
                )));
            }
        }
    }
    Ok(())
}

/// The object a filter of `attr eq value` terms joined by `and` describes.
fn item_described_by(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare {
            path:
                AttrPath {
                    uri: None,
                    name,
                    sub: None,
                },
            op: CompareOp::Eq,
            value,
        } => Some(Map::from_iter([(name.clone(), value.clone())])),
        Filter::And(left, right) => {
            let mut item = item_described_by(left)?;
            item.extend(item_described_by(right)?);
            Some(item)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn patch(resource: &mut Value, operations: Value) -> ScimResult<()> {
        apply(
            resource,
            &json!({"schemas": [PATCH_SCHEMA], "Operations": operations}),
        )
    }

    #[test]
    fn members_are_added_once_and_removed_by_value_path_or_list() {
        let mut group = json!({"displayName": "G", "members": [{"value": "a"}]});
        patch(&mut group, json!([{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}])).unwrap();
        assert_eq!(
            group["members"],
            json!([{"value": "a"}, {"value": "b"}, {"value": "c"}])
        );
        patch(
            &mut group,
            json!([{"op": "Remove", "path": "members[value eq \"b\"]"}]),
        )
        .unwrap();
        assert_eq!(group["members"], json!([{"value": "a"}, {"value": "c"}]));
        patch(
            &mut group,
            json!([{"op": "remove", "path": "members", "value": [{"value": "a"}]}]),
        )
        .unwrap();
        assert_eq!(group["members"], json!([{"value": "c"}]));
        patch(
            &mut group,
            json!([{"op": "replace", "path": "members", "value": []}]),
        )
        .unwrap();
        assert_eq!(group["members"], json!([]));
    }

    #[test]
    fn attributes_by_path_without_path_and_in_extensions() {
        let mut user = json!({"userName": "a", "active": true, "emails": [{"value": "a@x.example", "type": "work"}]});
        patch(&mut user, json!([
            {"op": "Replace", "value": {"displayName": "A", "name.givenName": "Al", "active": "False"}},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.example"},
            {"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@x.example"},
            {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Sales"},
            {"op": "add", "value": {ENTERPRISE: {"manager": {"value": "m1"}}}},
            {"op": "replace", "path": format!("{ENTERPRISE}:manager.value"), "value": "m2"},
        ])).unwrap();
        assert_eq!(user["displayName"], "A");
        assert_eq!(user["name"]["givenName"], "Al");
        assert_eq!(user["active"], "False");
        assert_eq!(
            user["emails"],
            json!([{"value": "b@x.example", "type": "work"}, {"type": "home", "value": "h@x.example"}])
        );
        assert_eq!(
            user[ENTERPRISE],
            json!({"department": "Sales", "manager": {"value": "m2"}})
        );
        patch(
            &mut user,
            json!([{"op": "remove", "path": format!("{ENTERPRISE}:manager")}]),
        )
        .unwrap();
        assert_eq!(user[ENTERPRISE], json!({"department": "Sales"}));
    }

    #[test]
    fn bad_operations_are_refused_with_their_scim_type() {
        let mut user = json!({"userName": "a"});
        let cases = [
            (json!([{"op": "move", "path": "userName"}]), "invalidSyntax"),
            (json!([]), "invalidSyntax"),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                "mutability",
            ),
            (
                json!([{"op": "replace", "path": "emails[", "value": "x"}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "emails[value co \"x\"].value", "value": "x"}]),
                "noTarget",
            ),
            (
                json!([{"op": "replace", "path": "userName"}]),
                "invalidValue",
            ),
            (json!([{"op": "remove"}]), "invalidValue"),
        ];
        for (operations, scim_type) in cases {
            let error = patch(&mut user, operations.clone()).unwrap_err();
            assert_eq!(error.scim_type, Some(scim_type), "{operations}");
        }
        assert!(
            apply(
                &mut user,
                &json!({"Operations": [{"op": "add", "path": "title", "value": "x"}]})
            )
            .is_err()
        );
    }
}
