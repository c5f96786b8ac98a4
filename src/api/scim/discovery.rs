//! What the service provider supports (RFC 7644 §4): its configuration,
//! resource types and schemas. Served without authentication; they say
//! nothing about the directory's contents.

use axum::extract::Path;
use serde_json::{Value, json};

use super::errors::{ScimError, ScimResult};
use super::routes::{Base, MAX_COUNT, ScimJson};
use super::urns::{ENTERPRISE_SCHEMA, GROUP_SCHEMA, LIST_SCHEMA, USER_SCHEMA};

pub async fn service_provider_config(base: Base) -> ScimJson {
    ScimJson::ok(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The bearer JWT the gRPC API takes, of a principal allowed to manage the directory",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", base.0)},
    }))
}

fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users",
            "description": "A user of the directory",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "A directory group; groups may nest",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// One attribute definition (RFC 7643 §7).
fn attribute(
    name: &str,
    kind: &str,
    multi: bool,
    required: bool,
    mutability: &str,
    uniqueness: &str,
) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": multi, "required": required,
        "caseExact": false, "mutability": mutability, "returned": "default",
        "uniqueness": uniqueness, "description": name,
    })
}

fn string(name: &str) -> Value {
    attribute(name, "string", false, false, "readWrite", "none")
}

fn complex(name: &str, multi: bool, mutability: &str, subs: Vec<Value>) -> Value {
    let mut value = attribute(name, "complex", multi, false, mutability, "none");
    value["subAttributes"] = Value::Array(subs);
    value
}

fn schemas(base: &str) -> Vec<Value> {
    let schema = |id: &str, name: &str, attributes: Vec<Value>| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": id, "name": name, "description": name, "attributes": attributes,
            "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
        })
    };
    let mut member_type = string("type");
    member_type["canonicalValues"] = json!(["User", "Group"]);
    let mut external_id = string("externalId");
    external_id["caseExact"] = json!(true);
    let reference = |name: &str, mutability: &str| {
        let mut value = attribute(name, "reference", false, false, mutability, "none");
        value["referenceTypes"] = json!(["User", "Group"]);
        value
    };
    vec![
        schema(
            USER_SCHEMA,
            "User",
            vec![
                attribute("userName", "string", false, true, "readWrite", "server"),
                external_id.clone(),
                string("displayName"),
                string("title"),
                complex(
                    "name",
                    false,
                    "readWrite",
                    vec![
                        string("givenName"),
                        string("familyName"),
                        string("formatted"),
                    ],
                ),
                attribute("active", "boolean", false, false, "readWrite", "none"),
                complex(
                    "emails",
                    true,
                    "readWrite",
                    // One email address is kept; the service calls it the
                    // primary work address.
                    vec![
                        string("value"),
                        attribute("type", "string", false, false, "readOnly", "none"),
                        attribute("primary", "boolean", false, false, "readOnly", "none"),
                    ],
                ),
                complex(
                    "groups",
                    true,
                    "readOnly",
                    vec![
                        attribute("value", "string", false, false, "readOnly", "none"),
                        reference("$ref", "readOnly"),
                        attribute("type", "string", false, false, "readOnly", "none"),
                    ],
                ),
            ],
        ),
        schema(
            ENTERPRISE_SCHEMA,
            "EnterpriseUser",
            vec![
                string("employeeNumber"),
                string("costCenter"),
                string("organization"),
                string("division"),
                string("department"),
                complex(
                    "manager",
                    false,
                    "readWrite",
                    vec![string("value"), reference("$ref", "readWrite")],
                ),
            ],
        ),
        schema(
            GROUP_SCHEMA,
            "Group",
            vec![
                attribute("displayName", "string", false, true, "readWrite", "none"),
                external_id,
                complex(
                    "members",
                    true,
                    "readWrite",
                    vec![string("value"), reference("$ref", "readWrite"), member_type],
                ),
            ],
        ),
    ]
}

fn list(resources: Vec<Value>) -> ScimJson {
    ScimJson::ok(json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    }))
}

fn find(resources: Vec<Value>, id: &str, what: &str) -> ScimResult<ScimJson> {
    resources
        .into_iter()
        .find(|r| r["id"] == id)
        .map(ScimJson::ok)
        .ok_or_else(|| ScimError::not_found(what, id))
}

pub async fn list_resource_types(base: Base) -> ScimJson {
    list(resource_types(&base.0))
}

pub async fn get_resource_type(base: Base, Path(id): Path<String>) -> ScimResult<ScimJson> {
    find(resource_types(&base.0), &id, "resource type")
}

pub async fn list_schemas(base: Base) -> ScimJson {
    list(schemas(&base.0))
}

pub async fn get_schema(base: Base, Path(id): Path<String>) -> ScimResult<ScimJson> {
    find(schemas(&base.0), &id, "schema")
}
