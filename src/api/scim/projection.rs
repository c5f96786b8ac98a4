//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5): which
//! attributes a response shows. `id` and `schemas` always show.

use serde_json::{Map, Value};

use super::errors::{ScimError, ScimResult};
use super::filter::{AttrPath, attr_path};

const ALWAYS: [&str; 2] = ["id", "schemas"];

#[derive(Default)]
pub struct Projection {
    /// Only these (and what always shows); empty: every attribute.
    attributes: Vec<AttrPath>,
    /// Not these.
    excluded: Vec<AttrPath>,
}

fn paths(list: Option<&str>) -> ScimResult<Vec<AttrPath>> {
    list.map_or(Ok(Vec::new()), |list| {
        list.split(',')
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .map(|path| attr_path(path).map_err(ScimError::invalid_value))
            .collect()
    })
}

/// The key under which `object` holds `name`, in whatever letter case.
fn key(object: &Map<String, Value>, name: &str) -> Option<String> {
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

impl Projection {
    /// From comma-separated attribute paths.
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> ScimResult<Self> {
        Ok(Self {
            attributes: paths(attributes)?,
            excluded: paths(excluded)?,
        })
    }

    pub fn apply(&self, resource: Value) -> Value {
        let Value::Object(mut all) = resource else {
            return resource;
        };
        if !self.attributes.is_empty() {
            let mut kept = Map::new();
            for name in ALWAYS {
                if let Some(value) = all.remove(name) {
                    kept.insert(name.to_string(), value);
                }
            }
            for path in &self.attributes {
                copy(&all, &mut kept, path);
            }
            all = kept;
        }
        for path in &self.excluded {
            remove(&mut all, path);
        }
        Value::Object(all)
    }
}

/// The object holding `path`'s attribute in `object`, and its key there.
fn holder<'v>(
    object: &'v Map<String, Value>,
    path: &AttrPath,
) -> Option<(&'v Map<String, Value>, String)> {
    let holder = match &path.uri {
        Some(uri) => object.get(&key(object, uri)?)?.as_object()?,
        None => object,
    };
    let name = key(holder, &path.name)?;
    Some((holder, name))
}

/// Copies the attribute (or sub-attribute) `path` names from `from` into
/// `to`, under the same keys.
fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, path: &AttrPath) {
    if path.name.is_empty() {
        if let Some(uri) = path.uri.as_ref().and_then(|uri| key(from, uri)) {
            to.insert(uri.clone(), from[&uri].clone());
        }
        return;
    }
    let Some((holder, name)) = holder(from, path) else {
        return;
    };
    let value = match (&path.sub, &holder[&name]) {
        (None, value) => value.clone(),
        (Some(sub), Value::Object(fields)) => match key(fields, sub) {
            Some(sub) => Value::Object(Map::from_iter([(sub.clone(), fields[&sub].clone())])),
            None => return,
        },
        (Some(sub), Value::Array(items)) => Value::Array(
            items
                .iter()
                .filter_map(|item| {
                    let fields = item.as_object()?;
                    let sub = key(fields, sub)?;
                    Some(Value::Object(Map::from_iter([(
                        sub.clone(),
                        fields[&sub].clone(),
                    )])))
                })
                .collect(),
        ),
        (Some(_), _) => return,
    };
    let target = match &path.uri {
        Some(uri) => {
            let uri = key(from, uri).unwrap_or_else(|| uri.clone());
            let entry = to.entry(uri).or_insert_with(|| Value::Object(Map::new()));
            match entry.as_object_mut() {
                Some(target) => target,
                None => return,
            }
        }
        None => to,
    };
    match (target.get_mut(&name), value) {
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, value) => {
            target.insert(name, value);
        }
    }
}

fn remove(object: &mut Map<String, Value>, path: &AttrPath) {
    if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&path.name)) && path.uri.is_none() {
        return;
    }
    let holder = match &path.uri {
        Some(uri) => match key(object, uri) {
            Some(uri) if path.name.is_empty() => {
                object.remove(&uri);
                return;
            }
            Some(uri) => match object.get_mut(&uri).and_then(Value::as_object_mut) {
                Some(holder) => holder,
                None => return,
            },
            None => return,
        },
        None => object,
    };
    let Some(name) = key(holder, &path.name) else {
        return;
    };
    match (&path.sub, holder.get_mut(&name)) {
        (None, _) => {
            holder.remove(&name);
        }
        (Some(sub), Some(Value::Object(fields))) => {
            if let Some(sub) = key(fields, sub) {
                fields.remove(&sub);
            }
        }
        (Some(sub), Some(Value::Array(items))) => {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(sub) = key(item, sub) {
                    item.remove(&sub);
                }
            }
        }
        (Some(_), _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user() -> Value {
        json!({
            "schemas": ["s"], "id": "u1", "userName": "a", "displayName": "A",
            "name": {"givenName": "G", "familyName": "F"},
            "emails": [{"value": "a@x.example", "type": "work"}],
            ENTERPRISE: {"department": "Sales", "division": "D"},
            "meta": {"version": "W/\"1\""},
        })
    }

    #[test]
    fn attributes_keep_only_what_is_asked_and_always_id() {
        let only = Projection::parse(
            Some(&format!(
                "userName,name.givenName,emails.value,{ENTERPRISE}:department"
            )),
            None,
        )
        .unwrap();
        assert_eq!(
            only.apply(user()),
            json!({
                "schemas": ["s"], "id": "u1", "userName": "a", "name": {"givenName": "G"},
                "emails": [{"value": "a@x.example"}], ENTERPRISE: {"department": "Sales"},
            })
        );
    }

    #[test]
    fn excluded_attributes_go_but_never_id() {
        let without = Projection::parse(
            None,
            Some(&format!("displayName,NAME.familyName,id,{ENTERPRISE}")),
        )
        .unwrap();
        let shown = without.apply(user());
        assert_eq!(shown["name"], json!({"givenName": "G"}));
        assert!(shown.get("displayName").is_none());
        assert!(shown.get(ENTERPRISE).is_none());
        assert_eq!(shown["id"], "u1");
        assert!(Projection::parse(Some("a b"), None).is_err());
    }
}
