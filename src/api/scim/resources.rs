//! Users and groups as SCIM resources (RFC 7643): the JSON a client reads,
//! and the directory records a client's JSON becomes.
//!
//! | SCIM                                   | directory                     |
//! |----------------------------------------|-------------------------------|
//! | `id`                                   | `id`                          |
//! | `userName`                             | `user_name` (unique)          |
//! | `externalId`                           | `external_id`                 |
//! | `displayName` (else `name.formatted`, else given + family name, else `userName`) | `display_name` |
//! | `emails` (primary, else first) `.value`| `email`                       |
//! | `active`                               | `state` ACTIVE / BLOCKED      |
//! | `name.givenName`, `name.familyName`, `name.formatted`, `title` | attributes `givenName`, `familyName`, `formattedName`, `title` |
//! | enterprise `manager.value`             | `manager_id`                  |
//! | enterprise `department`, `employeeNumber`, `costCenter`, `organization`, `division` | attributes of the same names |
//! | group `displayName`, `externalId`      | `display_name`, `external_id` |
//! | group `members[].value`                | direct members (users or groups) |

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::domain::directory::{GROUPS_OF_USER, Member, direct_members, targets};
use crate::pb::{Group, GroupMembership, RecordInfo, User, UserState};
use crate::store::ReadView;
use crate::store::records::{self, Record};

use super::errors::{ScimError, ScimResult};
use super::filter::member;
use super::urns::{ENTERPRISE_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};

/// Enterprise extension attributes kept as user attributes of the same
/// name, where assignment-policy conditions read them.
pub const ENTERPRISE_ATTRIBUTES: [&str; 5] = [
    "department",
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
];
/// Core attributes kept as user attributes: (SCIM path, attribute key).
const NAME_ATTRIBUTES: [(&str, &str); 3] = [
    ("givenName", "givenName"),
    ("familyName", "familyName"),
    ("formatted", "formattedName"),
];
const TITLE: &str = "title";

/// The directory fields a SCIM write of a user sets (the update mask).
pub const USER_FIELDS: [&str; 7] = [
    "user_name",
    "external_id",
    "display_name",
    "email",
    "state",
    "manager_id",
    "attributes",
];
pub const GROUP_FIELDS: [&str; 2] = ["display_name", "external_id"];

/// `meta.version`: a weak ETag of the record's etag.
pub fn version(etag: &str) -> String {
    format!("W/\"{etag}\"")
}

fn meta(kind: &str, location: String, etag: &str, info: Option<&RecordInfo>) -> Value {
    // A protobuf Timestamp displays as RFC 3339, SCIM's dateTime.
    let time = |t: Option<prost_types::Timestamp>| t.map(|t| t.to_string());
    json!({
        "resourceType": kind,
        "created": time(info.and_then(|i| i.create_time)),
        "lastModified": time(info.and_then(|i| i.update_time)),
        "location": location,
        "version": version(etag),
    })
}

fn set_text(object: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        object.insert(key.to_string(), json!(value));
    }
}

/// The user as SCIM shows it, with the groups they are a direct member of.
pub fn user_json(view: &dyn ReadView, base: &str, user: &User) -> ScimResult<Value> {
    let mut object = Map::new();
    object.insert("id".into(), json!(user.id));
    set_text(&mut object, "externalId", &user.external_id);
    let user_name = if user.user_name.is_empty() {
        &user.id
    } else {
        &user.user_name
    };
    object.insert("userName".into(), json!(user_name));
    object.insert("displayName".into(), json!(user.display_name));
    let mut name = Map::new();
    for (path, key) in NAME_ATTRIBUTES {
        if let Some(value) = user.attributes.get(key) {
            name.insert(path.into(), json!(value));
        }
    }
    if !name.is_empty() {
        object.insert("name".into(), Value::Object(name));
    }
    if let Some(title) = user.attributes.get(TITLE) {
        object.insert(TITLE.into(), json!(title));
    }
    object.insert(
        "active".into(),
        json!(user.state == UserState::Active as i32),
    );
    if !user.email.is_empty() {
        object.insert(
            "emails".into(),
            json!([{"value": user.email, "type": "work", "primary": true}]),
        );
    }
    let groups =
        targets(view, GroupMembership::KIND, GROUPS_OF_USER, &user.id).map_err(ScimError::from)?;
    if !groups.is_empty() {
        let groups: Vec<Value> = groups
            .iter()
            .map(|id| json!({"value": id, "$ref": format!("{base}/Groups/{id}"), "type": "direct"}))
            .collect();
        object.insert("groups".into(), Value::Array(groups));
    }
    let mut enterprise = Map::new();
    for key in ENTERPRISE_ATTRIBUTES {
        if let Some(value) = user.attributes.get(key) {
            enterprise.insert(key.into(), json!(value));
        }
    }
    if !user.manager_id.is_empty() {
        enterprise.insert(
            "manager".into(),
            json!({"value": user.manager_id, "$ref": format!("{base}/Users/{}", user.manager_id)}),
        );
    }
    let mut schemas = vec![json!(USER_SCHEMA)];
    if !enterprise.is_empty() {
        schemas.push(json!(ENTERPRISE_SCHEMA));
        object.insert(ENTERPRISE_SCHEMA.into(), Value::Object(enterprise));
    }
    object.insert("schemas".into(), Value::Array(schemas));
    object.insert(
        "meta".into(),
        meta(
            "User",
            format!("{base}/Users/{}", user.id),
            &user.etag,
            user.info.as_ref(),
        ),
    );
    Ok(Value::Object(object))
}

/// The group as SCIM shows it, with its direct members.
pub fn group_json(view: &dyn ReadView, base: &str, group: &Group) -> ScimResult<Value> {
    let members: Vec<Value> = direct_members(view, &group.id)?
        .into_iter()
        .map(|member| {
            let (id, kind, path) = match &member {
                Member::User(id) => (id, "User", "Users"),
                Member::Group(id) => (id, "Group", "Groups"),
            };
            json!({"value": id, "type": kind, "$ref": format!("{base}/{path}/{id}")})
        })
        .collect();
    let mut object = Map::new();
    object.insert("schemas".into(), json!([GROUP_SCHEMA]));
    object.insert("id".into(), json!(group.id));
    set_text(&mut object, "externalId", &group.external_id);
    object.insert("displayName".into(), json!(group.display_name));
    object.insert("members".into(), Value::Array(members));
    object.insert(
        "meta".into(),
        meta(
            "Group",
            format!("{base}/Groups/{}", group.id),
            &group.etag,
            group.info.as_ref(),
        ),
    );
    Ok(Value::Object(object))
}

/// A body must be a JSON object naming `schema` among its `schemas`.
pub fn require_schema(body: &Value, schema: &str) -> ScimResult<()> {
    let named = member(body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|schemas| {
            schemas
                .iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(schema)))
        });
    if !body.is_object() || !named {
        return Err(ScimError::invalid_syntax(format!(
            "the body must be a JSON object whose \"schemas\" include {schema:?}"
        )));
    }
    Ok(())
}

/// A string attribute: absent or null is None; any other type is an
/// invalid value.
fn text<'v>(object: &'v Value, name: &str) -> ScimResult<Option<&'v str>> {
    match member(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name} must be a string, not {other}"
        ))),
    }
}

/// `active`: a boolean, or the strings "true"/"false" (as some identity
/// systems send in PATCH values).
fn active(object: &Value) -> ScimResult<bool> {
    match member(object, "active") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(active)) => Ok(*active),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ScimError::invalid_value(format!(
            "active must be a boolean, not {other}"
        ))),
    }
}

/// The email of `emails`: the primary one, else the first.
fn email(object: &Value) -> ScimResult<String> {
    let emails = match member(object, "emails") {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::Array(emails)) => emails,
        Some(other) => {
            return Err(ScimError::invalid_value(format!(
                "emails must be an array, not {other}"
            )));
        }
    };
    let primary = emails
        .iter()
        .find(|e| member(e, "primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| emails.first());
    Ok(primary
        .map(|e| text(e, "value"))
        .transpose()?
        .flatten()
        .unwrap_or_default()
        .to_string())
}

/// The user `body` describes (a full representation: what it leaves out
/// is cleared), on top of `old`'s fields that SCIM does not show.
pub fn user_from_json(body: &Value, old: Option<&User>) -> ScimResult<User> {
    let mut user = old.cloned().unwrap_or_default();
    user.user_name = text(body, "userName")?
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("userName is required"))?
        .to_string();
    user.external_id = text(body, "externalId")?.unwrap_or_default().to_string();
    let name = member(body, "name").cloned().unwrap_or(Value::Null);
    for (path, key) in NAME_ATTRIBUTES {
        set_attribute(&mut user, key, text(&name, path)?);
    }
    set_attribute(&mut user, TITLE, text(body, TITLE)?);
    let given_and_family = [text(&name, "givenName")?, text(&name, "familyName")?]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    user.display_name = [
        text(body, "displayName")?.map(str::to_string),
        text(&name, "formatted")?.map(str::to_string),
        Some(given_and_family),
        Some(user.user_name.clone()),
    ]
    .into_iter()
    .flatten()
    .find(|name| !name.trim().is_empty())
    .unwrap_or_default();
    user.email = email(body)?;
    user.state = if active(body)? {
        UserState::Active
    } else {
        UserState::Blocked
    } as i32;
    let enterprise = member(body, ENTERPRISE_SCHEMA)
        .cloned()
        .unwrap_or(Value::Null);
    for key in ENTERPRISE_ATTRIBUTES {
        set_attribute(&mut user, key, text(&enterprise, key)?);
    }
    user.manager_id = match member(&enterprise, "manager") {
        None | Some(Value::Null) => String::new(),
        // Some identity systems send the manager's id alone.
        Some(Value::String(id)) => id.clone(),
        Some(manager) => text(manager, "value")?.unwrap_or_default().to_string(),
    };
    Ok(user)
}

fn set_attribute(user: &mut User, key: &str, value: Option<&str>) {
    match value.filter(|value| !value.is_empty()) {
        Some(value) => user.attributes.insert(key.to_string(), value.to_string()),
        None => user.attributes.remove(key),
    };
}

/// The group `body` describes, with the ids of its members (users or
/// groups, as [`resolve_members`] tells).
pub fn group_from_json(body: &Value, old: Option<&Group>) -> ScimResult<(Group, Vec<MemberRef>)> {
    let mut group = old.cloned().unwrap_or_default();
    group.display_name = text(body, "displayName")?
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_string();
    group.external_id = text(body, "externalId")?.unwrap_or_default().to_string();
    let members = match member(body, "members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(members)) => members
            .iter()
            .map(|m| {
                let id = text(m, "value")?
                    .ok_or_else(|| ScimError::invalid_value("each member needs a value"))?;
                Ok(MemberRef {
                    id: id.to_string(),
                    kind: text(m, "type")?.map(str::to_ascii_lowercase),
                })
            })
            .collect::<ScimResult<_>>()?,
        Some(other) => {
            return Err(ScimError::invalid_value(format!(
                "members must be an array, not {other}"
            )));
        }
    };
    Ok((group, members))
}

/// A member as a client names it: an id, and perhaps its type.
pub struct MemberRef {
    id: String,
    /// "user" or "group", lower-cased; anything else or None: looked up.
    kind: Option<String>,
}

/// The members `refs` name, once each: a user when the type says so or
/// a user has the id, otherwise a group; invalidValue for neither.
pub fn resolve_members(
    view: &(impl ReadView + ?Sized),
    refs: &[MemberRef],
) -> ScimResult<Vec<Member>> {
    let mut seen = BTreeSet::new();
    let mut members = Vec::new();
    for reference in refs {
        let id = reference.id.clone();
        let member = match reference.kind.as_deref() {
            Some("user") => Member::User(id),
            Some("group") => Member::Group(id),
            Some(other) => {
                return Err(ScimError::invalid_value(format!(
                    "member type {other:?} is neither User nor Group"
                )));
            }
            None if records::exists::<User>(view, &id).map_err(crate::error::Error::from)? => {
                Member::User(id)
            }
            _ if records::exists::<Group>(view, &id).map_err(crate::error::Error::from)? => {
                Member::Group(id)
            }
            None => {
                return Err(ScimError::invalid_value(format!(
                    "member {id:?} is neither a user nor a group"
                )));
            }
        };
        if seen.insert(format!("{member:?}")) {
            members.push(member);
        }
    }
    Ok(members)
}
