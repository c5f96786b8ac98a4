//! SCIM 2.0 provisioning against the real server: what an identity system
//! sends (creates, PATCHes, deactivations, deletes, filtered and paged
//! reads, version conflicts, bad input), checked over SCIM and over the
//! gRPC API that shares the directory.

mod common;

use common::world::*;
use common::*;
use entitlements::pb::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The service principal identity systems call as.
const SYNC: &str = "scim-sync";

async fn start() -> TestServer {
    TestServer::start_with_settings(|settings| {
        settings.scim_listen = "127.0.0.1:0".into();
        settings
            .auth
            .service_principals
            .push(entitlements::config::ServicePrincipal {
                id: SYNC.into(),
                roles: vec!["directory-sync".into()],
            });
    })
    .await
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn scim_error(&self, status: u16, scim_type: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
        );
        assert_eq!(self.body["status"], status.to_string());
        assert_eq!(self.body["scimType"].as_str(), scim_type, "{}", self.body);
    }
}

/// One HTTP/1.1 exchange with the SCIM listener as `caller` (None: no
/// credentials), with extra headers.
async fn call_with(
    server: &TestServer,
    caller: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let address = server.scim.expect("the SCIM listener is on");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} /scim/v2{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(caller) = caller {
        request.push_str(&format!("x-entitlements-user: {caller}\r\n"));
    }
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let answer = Answer {
        status,
        headers,
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
        },
    };
    if !answer.body.is_null() {
        assert_eq!(answer.header("content-type"), Some("application/scim+json"));
    }
    answer
}

async fn call(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Answer {
    let body = body.map(|b| b.to_string());
    call_with(server, Some(SYNC), method, path, body.as_deref(), &[]).await
}

fn scim_user(user_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "externalId": external_id,
        "name": {"givenName": "Given", "familyName": user_name},
        "emails": [{"value": format!("{user_name}@contoso.example"), "type": "work", "primary": true}],
        "active": true,
    })
}

async fn create_user(server: &TestServer, user_name: &str) -> Value {
    let created = call(
        server,
        "POST",
        "/Users",
        Some(scim_user(user_name, &format!("ext-{user_name}"))),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body
}

fn patch(operations: Value) -> Option<Value> {
    Some(json!({"schemas": [PATCH], "Operations": operations}))
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["userName"]
                .as_str()
                .or(r["displayName"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn users_are_created_read_filtered_paged_updated_and_deleted() {
    let server = start().await;
    let created = call(&server, "POST", "/Users", Some(scim_user("alice", "ext-1"))).await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.header("location").unwrap(),
        created.body["meta"]["location"]
    );
    assert_eq!(
        created.header("etag").unwrap(),
        created.body["meta"]["version"]
    );
    assert_eq!(created.body["displayName"], "Given alice");
    assert_eq!(created.body["active"], true);

    // The gRPC Directory sees the same user.
    let user = server.get_user(&id).await;
    assert_eq!(user.user_name, "alice");
    assert_eq!(user.external_id, "ext-1");
    assert_eq!(user.email, "alice@contoso.example");
    assert_eq!(user.state(), UserState::Active);

    // userName is unique regardless of case.
    let mark = server.write_mark().await;
    call(&server, "POST", "/Users", Some(scim_user("ALICE", "ext-x")))
        .await
        .scim_error(409, Some("uniqueness"));
    server.assert_no_writes_since(mark).await;

    for name in ["bob", "carol", "dave", "erin"] {
        create_user(&server, name).await;
    }
    let shared = &server;
    let list = |filter: &str| {
        let path = format!("/Users?filter={}", urlencode(filter));
        async move { call(shared, "GET", &path, None).await }
    };
    assert_eq!(ids(&list(r#"userName eq "Alice""#).await.body), ["alice"]);
    assert_eq!(ids(&list(r#"externalId eq "ext-bob""#).await.body), ["bob"]);
    assert_eq!(ids(&list(r#"emails.value sw "car""#).await.body), ["carol"]);
    assert_eq!(
        ids(
            &list(r#"(userName eq "dave" or userName eq "erin") and active eq true"#)
                .await
                .body
        ),
        ["dave", "erin"]
    );
    assert_eq!(
        ids(&list(r#"displayName co "given" and not (userName sw "a")"#)
            .await
            .body)
        .len(),
        4
    );
    assert_eq!(
        ids(&list(&format!(r#"id eq "{id}""#)).await.body),
        ["alice"]
    );
    list("userName eq")
        .await
        .scim_error(400, Some("invalidFilter"));

    // Paging: startIndex is 1-based; totalResults counts every match.
    let page = call(&server, "GET", "/Users?startIndex=2&count=2", None)
        .await
        .body;
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 2);
    let all = call(&server, "GET", "/Users", None).await.body;
    let names: Vec<&Value> = all["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["userName"])
        .collect();
    let paged: Vec<&Value> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["userName"])
        .collect();
    assert_eq!(paged, names[1..3]);

    // PATCH as identity systems send it, then a full PUT.
    let patched = call(&server, "PATCH", &format!("/Users/{id}"), patch(json!([
        {"op": "Replace", "path": "displayName", "value": "Alice Smith"},
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "asmith@contoso.example"},
        {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Sales"},
    ]))).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let user = server.get_user(&id).await;
    assert_eq!(user.display_name, "Alice Smith");
    assert_eq!(user.email, "asmith@contoso.example");
    assert_eq!(user.attributes["department"], "Sales");
    assert_eq!(patched.body[ENTERPRISE]["department"], "Sales");

    // A stale version is refused and changes nothing.
    let stale = created.header("etag").unwrap();
    let mark = server.write_mark().await;
    call_with(
        &server,
        Some(SYNC),
        "PUT",
        &format!("/Users/{id}"),
        Some(&scim_user("alice", "ext-2").to_string()),
        &[("If-Match", stale)],
    )
    .await
    .scim_error(412, None);
    call_with(
        &server,
        Some(SYNC),
        "DELETE",
        &format!("/Users/{id}"),
        None,
        &[("If-Match", stale)],
    )
    .await
    .scim_error(412, None);
    let mark = server.assert_no_writes_since(mark).await;
    let current = patched.header("etag").unwrap();
    let replaced = call_with(
        &server,
        Some(SYNC),
        "PUT",
        &format!("/Users/{id}"),
        Some(&scim_user("alice", "ext-2").to_string()),
        &[("If-Match", current)],
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_ne!(replaced.header("etag"), Some(current));
    let user = server.get_user(&id).await;
    assert_eq!(user.external_id, "ext-2");
    // PUT replaces: the department it left out is gone.
    assert!(!user.attributes.contains_key("department"));
    assert_eq!(user.info.unwrap().revision, mark + 1);

    // DELETE is DeleteUser: the user turns DELETED and is gone from SCIM.
    let deleted = call(&server, "DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get_user(&id).await.state(), UserState::Deleted);
    call(&server, "GET", &format!("/Users/{id}"), None)
        .await
        .scim_error(404, None);
    call(&server, "DELETE", &format!("/Users/{id}"), None)
        .await
        .scim_error(404, None);
    assert_eq!(
        call(&server, "GET", "/Users", None).await.body["totalResults"],
        4
    );
    // Its userName is free again.
    create_user(&server, "alice").await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn group_members(server: &TestServer, group: &str) -> Vec<String> {
    let mut ids: Vec<String> = server
        .directory(ADMIN)
        .list_users(ListUsersRequest {
            group_id: group.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.user_name)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn group_members_are_added_and_removed_as_identity_systems_send_them() {
    let server = start().await;
    let mut users = Vec::new();
    for name in ["u1", "u2", "u3", "u4"] {
        users.push(
            create_user(&server, name).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let created = call(
        &server,
        "POST",
        "/Groups",
        Some(json!({
            "schemas": [GROUP], "displayName": "Sales", "externalId": "g-ext",
            "members": [{"value": users[0]}, {"value": users[1], "type": "User"}],
        })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(group_members(&server, &group).await, ["u1", "u2"]);

    let path = format!("/Groups/{group}");
    let answer = call(
        &server,
        "PATCH",
        &path,
        patch(json!([
            {"op": "Add", "path": "members", "value": [{"value": users[2]}, {"value": users[3]}]},
            {"op": "Remove", "path": format!("members[value eq \"{}\"]", users[0])},
        ])),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(group_members(&server, &group).await, ["u2", "u3", "u4"]);
    // Remove with a list of values, and rename without a path.
    call(
        &server,
        "PATCH",
        &path,
        patch(json!([
            {"op": "remove", "path": "members", "value": [{"value": users[1]}]},
            {"op": "replace", "value": {"displayName": "Sales EMEA"}},
        ])),
    )
    .await;
    assert_eq!(group_members(&server, &group).await, ["u3", "u4"]);
    let read = call(&server, "GET", &path, None).await.body;
    assert_eq!(read["displayName"], "Sales EMEA");
    assert_eq!(read["members"].as_array().unwrap().len(), 2);

    // Filters on groups.
    let filter = urlencode(&format!(r#"members.value eq "{}""#, users[2]));
    let found = call(&server, "GET", &format!("/Groups?filter={filter}"), None)
        .await
        .body;
    assert_eq!(ids(&found), ["Sales EMEA"]);
    let user = call(&server, "GET", &format!("/Users/{}", users[2]), None)
        .await
        .body;
    assert_eq!(user["groups"][0]["value"], group.as_str());

    // A member that does not exist: nothing is written.
    let mark = server.write_mark().await;
    call(
        &server,
        "PATCH",
        &path,
        patch(json!([
            {"op": "add", "path": "members", "value": [{"value": users[0]}, {"value": "nobody"}]},
        ])),
    )
    .await
    .scim_error(400, Some("invalidValue"));
    call(
        &server,
        "PATCH",
        &path,
        patch(json!([
            {"op": "add", "path": "members", "value": [{"value": "nobody", "type": "User"}]},
        ])),
    )
    .await
    .scim_error(400, Some("invalidValue"));
    server.assert_no_writes_since(mark).await;
    assert_eq!(group_members(&server, &group).await, ["u3", "u4"]);

    // PUT replaces the members.
    let replaced = call(
        &server,
        "PUT",
        &path,
        Some(json!({
            "schemas": [GROUP], "displayName": "Sales", "members": [{"value": users[0]}],
        })),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(group_members(&server, &group).await, ["u1"]);

    assert_eq!(call(&server, "DELETE", &path, None).await.status, 204);
    call(&server, "GET", &path, None)
        .await
        .scim_error(404, None);
}

/// CheckAccess of `user` to resource "r" as "member", at `min_revision`.
async fn allowed(server: &TestServer, user: &str, min_revision: u64) -> bool {
    server
        .decisions(ADMIN)
        .check_access(CheckAccessRequest {
            user_id: user.into(),
            resource_id: "r".into(),
            role_id: "member".into(),
            min_revision,
        })
        .await
        .unwrap()
        .into_inner()
        .allowed
}

#[tokio::test]
async fn deactivating_a_user_stops_their_grants_at_once() {
    let server = start().await;
    let id = create_user(&server, "dora").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.add_catalog("c", false).await;
    server.add_resource("r", "c", "group").await;
    server.add_package("pkg", "c", &["r"]).await;
    server
        .add_policy(policy(
            "pol",
            "pkg",
            AllowedTargetScope::AllMemberUsers,
            never(),
        ))
        .await;
    server.request_add(&id, "pol").await.unwrap();
    eventually("the grant", || async {
        allowed(&server, &id, 0).await.then_some(())
    })
    .await;

    let answer = call(
        &server,
        "PATCH",
        &format!("/Users/{id}"),
        patch(json!([
            {"op": "Replace", "path": "active", "value": "False"},
        ])),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["active"], false);
    let blocked = server.get_user(&id).await;
    assert_eq!(blocked.state(), UserState::Blocked);
    let revision = blocked.info.unwrap().revision;
    assert!(
        !allowed(&server, &id, revision).await,
        "a deactivated user's grants stop"
    );
}

#[tokio::test]
async fn a_synced_sales_user_is_eligible_and_their_synced_manager_approves() {
    let server = start().await;
    let manager = create_user(&server, "mona").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sam = scim_user("sam", "ext-sam");
    sam[ENTERPRISE] = json!({"department": "Sales", "manager": {"value": manager}});
    let created = call(&server, "POST", "/Users", Some(sam)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let sam = created.body["id"].as_str().unwrap().to_string();
    let engineer = create_user(&server, "eve").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(server.get_user(&sam).await.manager_id, manager);

    server.add_catalog("c", false).await;
    server.add_resource("r", "c", "group").await;
    server.add_package("pkg", "c", &["r"]).await;
    server
        .add_policy(AssignmentPolicy {
            extra_condition: r#"principal.attributes.department == "Sales""#.into(),
            approval_settings: Some(approval(
                vec![stage(vec![approver::Approver::ManagerLevel(1)])],
                true,
            )),
            ..policy("pol", "pkg", AllowedTargetScope::AllMemberUsers, never())
        })
        .await;
    assert!(
        server.request_add(&engineer, "pol").await.is_err(),
        "not in Sales"
    );
    let request = server.request_add(&sam, "pol").await.unwrap();
    assert_eq!(request.state(), RequestState::PendingApproval);
    assert_eq!(
        server.pending_approvals(&manager).await,
        vec![request.id.clone()]
    );
    let done = server.decide(&manager, &request.id, 1, true).await.unwrap();
    assert_eq!(done.state(), RequestState::Delivered);
}

/// A request (method, path, body) and the status and scimType it gets.
type BadCase<'a> = (&'a str, &'a str, Option<String>, u16, Option<&'a str>);

#[tokio::test]
async fn bad_requests_get_scim_errors_and_write_nothing() {
    let server = start().await;
    let id = create_user(&server, "frank").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/Users/{id}");
    let mark = server.write_mark().await;
    let cases: Vec<BadCase> = vec![
        (
            "POST",
            "/Users",
            Some("{not json".to_string()),
            400,
            Some("invalidSyntax"),
        ),
        (
            "POST",
            "/Users",
            Some(r#"{"userName": "x"}"#.to_string()),
            400,
            Some("invalidSyntax"),
        ),
        (
            "POST",
            "/Users",
            Some(format!(r#"{{"schemas": ["{USER}"]}}"#)),
            400,
            Some("invalidValue"),
        ),
        (
            "POST",
            "/Users",
            Some(format!(
                r#"{{"schemas": ["{USER}"], "userName": "y", "active": 3}}"#
            )),
            400,
            Some("invalidValue"),
        ),
        (
            "POST",
            "/Users",
            Some(format!(
                r#"{{"schemas": ["{USER}"], "userName": "y", "{ENTERPRISE}": {{"manager": {{"value": "nobody"}}}}}}"#
            )),
            400,
            Some("invalidValue"),
        ),
        (
            "POST",
            "/Users",
            Some(format!(
                r#"{{"schemas": ["{USER}"], "userName": "{}"}}"#,
                "n".repeat(1000)
            )),
            400,
            Some("invalidValue"),
        ),
        (
            "PATCH",
            &path,
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "replace", "path": "id", "value": "x"}}]}}"#
            )),
            400,
            Some("mutability"),
        ),
        (
            "PATCH",
            &path,
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "jump", "path": "title"}}]}}"#
            )),
            400,
            Some("invalidSyntax"),
        ),
        (
            "PATCH",
            &path,
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "replace", "path": "emails[value", "value": "x"}}]}}"#
            )),
            400,
            Some("invalidPath"),
        ),
        (
            "PATCH",
            &path,
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "replace", "path": "emails[type eq \"home\" or value eq \"z\"].value", "value": "x"}}]}}"#
            )),
            400,
            Some("noTarget"),
        ),
        (
            "PATCH",
            &path,
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "replace", "path": "title", "value": "ok"}}, {{"op": "replace", "path": "active", "value": "maybe"}}]}}"#
            )),
            400,
            Some("invalidValue"),
        ),
        (
            "PATCH",
            "/Users/nobody",
            Some(format!(
                r#"{{"schemas": ["{PATCH}"], "Operations": [{{"op": "replace", "path": "title", "value": "x"}}]}}"#
            )),
            404,
            None,
        ),
        (
            "GET",
            "/Users?filter=userName%20eq",
            None,
            400,
            Some("invalidFilter"),
        ),
        (
            "GET",
            "/Users?filter=emails%5Btype%20eq%20%22work%22",
            None,
            400,
            Some("invalidFilter"),
        ),
        ("GET", "/Users?count=many", None, 400, Some("invalidValue")),
        ("GET", "/Users/nobody", None, 404, None),
        ("GET", "/Users/bad%20id", None, 404, None),
        (
            "POST",
            "/Groups",
            Some(format!(
                r#"{{"schemas": ["{GROUP}"], "displayName": "G", "members": [{{"value": "nobody"}}]}}"#
            )),
            400,
            Some("invalidValue"),
        ),
        (
            "POST",
            "/Groups",
            Some(format!(r#"{{"schemas": ["{GROUP}"]}}"#)),
            400,
            Some("invalidValue"),
        ),
        ("POST", "/Bulk", Some("{}".to_string()), 501, None),
        ("GET", "/Nothing", None, 404, None),
    ];
    for (method, path, body, status, scim_type) in cases {
        let answer = call_with(&server, Some(SYNC), method, path, body.as_deref(), &[]).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body:?}: {}",
            answer.body
        );
        answer.scim_error(status, scim_type);
    }
    // No credentials, and a caller without a directory role.
    call_with(&server, None, "GET", "/Users", None, &[])
        .await
        .scim_error(401, None);
    let plain = call_with(
        &server,
        Some("plain"),
        "POST",
        "/Users",
        Some(&scim_user("g", "g").to_string()),
        &[],
    )
    .await;
    plain.scim_error(403, None);
    server.assert_no_writes_since(mark).await;
    assert_eq!(server.get_user(&id).await.attributes.get("title"), None);
}

#[tokio::test]
async fn discovery_tells_what_is_supported() {
    let server = start().await;
    let config = call_with(&server, None, "GET", "/ServiceProviderConfig", None, &[])
        .await
        .body;
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["bulk"]["supported"], false);
    assert_eq!(config["etag"]["supported"], true);
    assert_eq!(config["filter"]["supported"], true);
    assert_eq!(config["sort"]["supported"], false);
    let types = call(&server, "GET", "/ResourceTypes", None).await.body;
    assert_eq!(types["totalResults"], 2);
    let user = call(&server, "GET", "/ResourceTypes/User", None).await.body;
    assert_eq!(user["schemaExtensions"][0]["schema"], ENTERPRISE);
    let schemas = call(&server, "GET", "/Schemas", None).await.body;
    assert_eq!(schemas["totalResults"], 3);
    let schema = call(&server, "GET", &format!("/Schemas/{ENTERPRISE}"), None)
        .await
        .body;
    assert_eq!(schema["name"], "EnterpriseUser");
    call(&server, "GET", "/Schemas/nope", None)
        .await
        .scim_error(404, None);
}

/// The python with scim2-tester: `SCIM_TESTER_PYTHON`, or the environment
/// `.ci/install-scim-tester` makes by default.
fn scim_tester_python() -> Option<std::path::PathBuf> {
    if let Some(python) = std::env::var_os("SCIM_TESTER_PYTHON") {
        return Some(python.into());
    }
    let default =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scim-venv/bin/python");
    default.exists().then_some(default)
}

/// scim2-tester, a SCIM compliance checker, creates, reads, filters,
/// patches, replaces and deletes users and groups as a client would, and
/// checks each answer against RFC 7643/7644.
#[tokio::test]
async fn a_scim_compliance_checker_finds_no_violation() {
    let Some(python) = scim_tester_python() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs scim2-tester: run .ci/install-scim-tester and set SCIM_TESTER_PYTHON"
        );
        eprintln!("skipped: no scim2-tester (bash .ci/install-scim-tester installs it)");
        return;
    };
    let server = start().await;
    let base = format!("http://{}/scim/v2", server.scim.unwrap());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scim_compliance/check.py"
    );
    // The server answers on this runtime while the checker runs.
    let run = python.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(run)
            .args([script, &base, SYNC])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scim2-tester found violations:\n{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains(" checks, 0 failed"), "{printed}");
}
