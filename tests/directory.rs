//! The Directory service over gRPC: users, groups, memberships and connected
//! organizations, plus the conventions every service shares (ids, request
//! ids, update masks, etags, paging).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use entitlements::pb::add_group_member_request::Member as Add;
use entitlements::pb::remove_group_member_request::Member as Remove;
use entitlements::pb::*;
use tonic::Code;

/// Everyone these tests call as: CRUD semantics are under test here, so
/// all of them administer (authorization has its own tests).
const CALLERS: &[&str] = &[
    "alice",
    "alice-admin",
    "bob",
    "editor",
    "member-admin",
    "remover",
];

// ----------------------------------------------------------------- helpers

async fn create_user_as(
    directory: &mut Directory,
    id: &str,
    user: User,
    request_id: &str,
) -> Result<tonic::Response<User>, tonic::Status> {
    directory
        .create_user(CreateUserRequest {
            user: Some(user),
            user_id: id.into(),
            request_id: request_id.into(),
        })
        .await
}

async fn create_group_as(
    directory: &mut Directory,
    id: &str,
    display_name: &str,
    request_id: &str,
) -> Result<tonic::Response<Group>, tonic::Status> {
    directory
        .create_group(CreateGroupRequest {
            group: Some(group(display_name)),
            group_id: id.into(),
            request_id: request_id.into(),
        })
        .await
}

async fn get_user(directory: &mut Directory, id: &str) -> User {
    directory
        .get_user(GetUserRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn get_group(directory: &mut Directory, id: &str) -> Group {
    directory
        .get_group(GetGroupRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Ids of the users one (unpaged) ListUsers call returns.
async fn user_ids(directory: &mut Directory, request: ListUsersRequest) -> Vec<String> {
    let response = directory.list_users(request).await.unwrap().into_inner();
    assert_eq!(response.next_page_token, "", "expected a single page");
    response.users.into_iter().map(|u| u.id).collect()
}

/// Ids of the groups one (unpaged) ListGroups call returns.
async fn group_ids(directory: &mut Directory, request: ListGroupsRequest) -> Vec<String> {
    let response = directory.list_groups(request).await.unwrap().into_inner();
    assert_eq!(response.next_page_token, "", "expected a single page");
    response.groups.into_iter().map(|g| g.id).collect()
}

async fn organization_ids(
    directory: &mut Directory,
    state: ConnectedOrganizationState,
) -> Vec<String> {
    directory
        .list_connected_organizations(ListConnectedOrganizationsRequest {
            state: state as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connected_organizations
        .into_iter()
        .map(|o| o.id)
        .collect()
}

fn member_of(group: &str) -> ListUsersRequest {
    ListUsersRequest {
        group_id: group.into(),
        ..Default::default()
    }
}

fn groups_of_user(user: &str) -> ListGroupsRequest {
    ListGroupsRequest {
        member_user_id: user.into(),
        ..Default::default()
    }
}

fn parents_of(group: &str) -> ListGroupsRequest {
    ListGroupsRequest {
        member_group_id: group.into(),
        ..Default::default()
    }
}

fn children_of(group: &str) -> ListGroupsRequest {
    ListGroupsRequest {
        parent_group_id: group.into(),
        ..Default::default()
    }
}

fn add_user(group_id: &str, user_id: &str) -> AddGroupMemberRequest {
    AddGroupMemberRequest {
        group_id: group_id.into(),
        member: Some(Add::UserId(user_id.into())),
    }
}

fn add_group(group_id: &str, member_group_id: &str) -> AddGroupMemberRequest {
    AddGroupMemberRequest {
        group_id: group_id.into(),
        member: Some(Add::MemberGroupId(member_group_id.into())),
    }
}

fn update_user(user: User, paths: &[&str]) -> UpdateUserRequest {
    UpdateUserRequest {
        user: Some(user),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

// ------------------------------------------------------------------- users

#[tokio::test]
async fn create_user_with_a_chosen_id_fills_defaults_and_bookkeeping() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory("alice-admin");
    let created = create_user_as(
        &mut directory,
        "alice",
        User {
            email: "  Alice@Contoso.EXAMPLE ".into(),
            attributes: HashMap::from([("department".into(), "Sales".into())]),
            ..user("Alice")
        },
        "",
    )
    .await
    .unwrap()
    .into_inner();

    assert_eq!(created.id, "alice");
    assert_eq!(created.display_name, "Alice");
    assert_eq!(
        created.email, "alice@contoso.example",
        "email is trimmed and lower-cased"
    );
    assert_eq!(created.kind, UserKind::Member as i32);
    assert_eq!(created.state, UserState::Active as i32);
    assert!(!created.governed);
    assert_eq!(created.delete_time, None);
    assert_eq!(created.attributes["department"], "Sales");
    let info = created.info.clone().expect("record info");
    let now = prost_types::Timestamp::from(epoch());
    assert_eq!(info.create_time, Some(now));
    assert_eq!(info.update_time, Some(now));
    assert_eq!(info.created_by, "alice-admin");
    assert_eq!(info.updated_by, "alice-admin");
    assert!(info.revision > 0);
    assert!(!created.etag.is_empty());

    assert_eq!(get_user(&mut directory, "alice").await, created);
}

#[tokio::test]
async fn output_only_user_fields_sent_on_create_are_ignored() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    let forged = prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    };
    let created = create_user_as(
        &mut directory,
        "mallory",
        User {
            governed: true,
            delete_time: Some(forged),
            etag: "999".into(),
            info: Some(RecordInfo {
                create_time: Some(forged),
                created_by: "someone-else".into(),
                update_time: Some(forged),
                updated_by: "someone-else".into(),
                revision: 999,
            }),
            ..user("Mallory")
        },
        "",
    )
    .await
    .unwrap()
    .into_inner();
    assert!(!created.governed, "governed is output only");
    assert_eq!(created.delete_time, None, "delete_time is output only");
    let info = created.info.clone().unwrap();
    assert_eq!(info.created_by, ADMIN);
    assert_eq!(
        info.create_time,
        Some(prost_types::Timestamp::from(epoch()))
    );
    assert_ne!(info.revision, 999);
    assert_ne!(created.etag, "999");
    assert_eq!(get_user(&mut directory, "mallory").await, created);
}

#[tokio::test]
async fn create_user_without_an_id_assigns_time_ordered_uuids() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    let mut ids = Vec::new();
    for name in ["First", "Second", "Third"] {
        let created = create_user_as(&mut directory, "", user(name), "")
            .await
            .unwrap()
            .into_inner();
        let uuid = uuid::Uuid::parse_str(&created.id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7, "{} is not a v7 UUID", created.id);
        assert_eq!(
            get_user(&mut directory, &created.id).await.display_name,
            name
        );
        ids.push(created.id);
    }
    // Listings by id follow creation.
    assert_eq!(
        user_ids(&mut directory, ListUsersRequest::default()).await,
        ids
    );
}

#[tokio::test]
async fn create_user_rejects_bad_input_with_field_paths_and_writes_nothing() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;

    let cases: Vec<(&str, CreateUserRequest, &[&str])> = vec![
        (
            "no user",
            CreateUserRequest {
                user: None,
                user_id: "u1".into(),
                request_id: String::new(),
            },
            &["user"],
        ),
        (
            "missing display_name",
            create("u1", User::default()),
            &["user.display_name"],
        ),
        (
            "blank display_name",
            create("u1", user("   ")),
            &["user.display_name"],
        ),
        (
            "too long display_name",
            create("u1", user(&chars('x', 257))),
            &["user.display_name"],
        ),
        ("space in id", create("a b", user("A")), &["user_id"]),
        ("slash in id", create("a/b", user("A")), &["user_id"]),
        (
            "too long id",
            create(&chars('a', 129), user("A")),
            &["user_id"],
        ),
        (
            "too long email",
            create(
                "u1",
                User {
                    email: format!("{}@example.com", chars('a', 310)),
                    ..user("A")
                },
            ),
            &["user.email"],
        ),
        (
            "malformed email",
            create(
                "u1",
                User {
                    email: "not-an-email".into(),
                    ..user("A")
                },
            ),
            &["user.email"],
        ),
        (
            "DELETED state",
            create(
                "u1",
                User {
                    state: UserState::Deleted as i32,
                    ..user("A")
                },
            ),
            &["user.state"],
        ),
        (
            "unknown kind",
            create(
                "u1",
                User {
                    kind: 42,
                    ..user("A")
                },
            ),
            &["user.kind"],
        ),
        (
            "bad manager id",
            create(
                "u1",
                User {
                    manager_id: "x y".into(),
                    ..user("A")
                },
            ),
            &["user.manager_id"],
        ),
        (
            "own manager",
            create(
                "u1",
                User {
                    manager_id: "u1".into(),
                    ..user("A")
                },
            ),
            &["user.manager_id"],
        ),
        (
            "sponsor listed twice",
            create(
                "u1",
                User {
                    sponsor_ids: vec!["s".into(), "s".into()],
                    ..user("A")
                },
            ),
            &["user.sponsor_ids[1]"],
        ),
        (
            "bad attribute key",
            create(
                "u1",
                User {
                    attributes: HashMap::from([("cost-center".into(), "1".into())]),
                    ..user("A")
                },
            ),
            &["user.attributes[\"cost-center\"]"],
        ),
        (
            "several problems at once",
            create(
                "u1",
                User {
                    email: "nope".into(),
                    manager_id: "x y".into(),
                    ..User::default()
                },
            ),
            &["user.display_name", "user.email", "user.manager_id"],
        ),
        (
            "too long request_id",
            CreateUserRequest {
                user: Some(user("A")),
                user_id: "u1".into(),
                request_id: chars('r', 129),
            },
            &["request_id"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = expect_code(directory.create_user(request).await, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            fields,
            "case {case:?}: {status:?}"
        );
    }

    // Nothing was written.
    expect_code(
        directory.get_user(GetUserRequest { id: "u1".into() }).await,
        Code::NotFound,
    );
    let all = ListUsersRequest {
        show_deleted: true,
        ..Default::default()
    };
    assert_eq!(user_ids(&mut directory, all).await, Vec::<String>::new());
    server.assert_no_writes_since(mark).await;

    fn create(id: &str, user: User) -> CreateUserRequest {
        CreateUserRequest {
            user: Some(user),
            user_id: id.into(),
            request_id: String::new(),
        }
    }
}

#[tokio::test]
async fn create_user_referring_to_missing_objects_is_not_found() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;
    for (patch, kind, id) in [
        (
            User {
                manager_id: "ghost".into(),
                ..user("A")
            },
            "user",
            "ghost",
        ),
        (
            User {
                sponsor_ids: vec!["ghost".into()],
                ..user("A")
            },
            "user",
            "ghost",
        ),
        (
            User {
                connected_organization_id: "nowhere".into(),
                ..user("A")
            },
            "connected_organization",
            "nowhere",
        ),
    ] {
        expect_not_found(
            create_user_as(&mut directory, "u1", patch, "").await,
            kind,
            id,
        );
    }
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn a_duplicate_chosen_user_id_is_already_exists_and_keeps_the_original() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let original = server.create_user("alice", user("Alice")).await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;

    let status = expect_code(
        create_user_as(&mut directory, "alice", user("Impostor"), "").await,
        Code::AlreadyExists,
    );
    assert_eq!(
        resource_info(&status),
        Some(("user".into(), "alice".into()))
    );
    assert_eq!(get_user(&mut directory, "alice").await, original);
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn get_user_errors() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    expect_not_found(
        directory
            .get_user(GetUserRequest {
                id: "nobody".into(),
            })
            .await,
        "user",
        "nobody",
    );
    expect_invalid(
        directory
            .get_user(GetUserRequest { id: String::new() })
            .await,
        &["id"],
    );
    expect_invalid(
        directory
            .get_user(GetUserRequest { id: "a*b".into() })
            .await,
        &["id"],
    );
}

#[tokio::test]
async fn list_users_filters() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server
        .create_organization("fabrikam", organization("Fabrikam", "fabrikam.example"))
        .await;
    let guest = |name: &str, state: UserState| User {
        kind: UserKind::Guest as i32,
        state: state as i32,
        connected_organization_id: "fabrikam".into(),
        ..user(name)
    };
    server.create_user("u1-member", user("Member")).await;
    server
        .create_user("u2-guest", guest("Guest", UserState::Active))
        .await;
    server
        .create_user("u3-blocked", guest("Blocked", UserState::Blocked))
        .await;
    server.create_user("u4-deleted", user("Deleted")).await;
    server.create_user("u5-grouped", user("Grouped")).await;
    server.create_group("g").await;
    server
        .add_member("g", Add::UserId("u5-grouped".into()))
        .await;
    server
        .add_member("g", Add::UserId("u1-member".into()))
        .await;
    let mut directory = server.directory(ADMIN);
    directory
        .delete_user(DeleteUserRequest {
            id: "u4-deleted".into(),
            etag: String::new(),
        })
        .await
        .unwrap();

    let cases: Vec<(&str, ListUsersRequest, &[&str])> = vec![
        (
            "no filter hides deleted users",
            ListUsersRequest::default(),
            &["u1-member", "u2-guest", "u3-blocked", "u5-grouped"],
        ),
        ("group_id", member_of("g"), &["u1-member", "u5-grouped"]),
        (
            "connected_organization_id",
            ListUsersRequest {
                connected_organization_id: "fabrikam".into(),
                ..Default::default()
            },
            &["u2-guest", "u3-blocked"],
        ),
        (
            "kind GUEST",
            ListUsersRequest {
                kind: UserKind::Guest as i32,
                ..Default::default()
            },
            &["u2-guest", "u3-blocked"],
        ),
        (
            "kind MEMBER",
            ListUsersRequest {
                kind: UserKind::Member as i32,
                ..Default::default()
            },
            &["u1-member", "u5-grouped"],
        ),
        (
            "state BLOCKED",
            ListUsersRequest {
                state: UserState::Blocked as i32,
                ..Default::default()
            },
            &["u3-blocked"],
        ),
        (
            "state DELETED",
            ListUsersRequest {
                state: UserState::Deleted as i32,
                ..Default::default()
            },
            &["u4-deleted"],
        ),
        (
            "show_deleted",
            ListUsersRequest {
                show_deleted: true,
                ..Default::default()
            },
            &[
                "u1-member",
                "u2-guest",
                "u3-blocked",
                "u4-deleted",
                "u5-grouped",
            ],
        ),
        (
            "organization and state",
            ListUsersRequest {
                connected_organization_id: "fabrikam".into(),
                state: UserState::Active as i32,
                ..Default::default()
            },
            &["u2-guest"],
        ),
        (
            "group and kind",
            ListUsersRequest {
                group_id: "g".into(),
                kind: UserKind::Guest as i32,
                ..Default::default()
            },
            &[],
        ),
    ];
    for (case, request, expected) in cases {
        assert_eq!(
            user_ids(&mut directory, request).await,
            expected,
            "case {case:?}"
        );
    }

    expect_not_found(
        directory.list_users(member_of("nope")).await,
        "group",
        "nope",
    );
    expect_not_found(
        directory
            .list_users(ListUsersRequest {
                connected_organization_id: "nope".into(),
                ..Default::default()
            })
            .await,
        "connected_organization",
        "nope",
    );
    expect_invalid(
        directory.list_users(member_of("bad id")).await,
        &["group_id"],
    );
}

#[tokio::test]
async fn update_user_with_a_mask_changes_only_the_masked_fields() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let before = server
        .create_user(
            "alice",
            User {
                email: "alice@contoso.example".into(),
                ..user("Alice")
            },
        )
        .await;
    server.clock.advance(Duration::from_secs(60));
    let mut directory = server.directory("editor");

    let patch = User {
        id: "alice".into(),
        display_name: "Alice Smith".into(),
        email: "ignored@contoso.example".into(),
        kind: UserKind::Guest as i32,
        ..Default::default()
    };
    let after = directory
        .update_user(update_user(patch, &["display_name"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.display_name, "Alice Smith");
    assert_eq!(after.email, "alice@contoso.example");
    assert_eq!(after.kind, UserKind::Member as i32);
    assert_ne!(after.etag, before.etag);
    let (old, new) = (before.info.unwrap(), after.info.clone().unwrap());
    assert_eq!(new.created_by, ADMIN);
    assert_eq!(new.create_time, old.create_time);
    assert_eq!(new.updated_by, "editor");
    assert_eq!(
        new.update_time,
        Some(prost_types::Timestamp::from(
            epoch() + Duration::from_secs(60)
        ))
    );
    assert!(new.revision > old.revision);
    assert_eq!(get_user(&mut directory, "alice").await, after);
}

#[tokio::test]
async fn update_user_with_an_empty_mask_updates_the_populated_fields() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("boss", user("Boss")).await;
    let before = server
        .create_user(
            "alice",
            User {
                email: "alice@contoso.example".into(),
                attributes: HashMap::from([("team".into(), "red".into())]),
                ..user("Alice")
            },
        )
        .await;
    let mut directory = server.directory(ADMIN);
    let patch = User {
        id: "alice".into(),
        state: UserState::Blocked as i32,
        manager_id: "boss".into(),
        ..Default::default()
    };
    let after = directory
        .update_user(update_user(patch, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state, UserState::Blocked as i32);
    assert_eq!(after.manager_id, "boss");
    // Unpopulated fields keep their values.
    assert_eq!(after.display_name, before.display_name);
    assert_eq!(after.email, before.email);
    assert_eq!(after.kind, before.kind);
    assert_eq!(after.attributes, before.attributes);

    // "*" replaces every mutable field, clearing what the patch leaves empty.
    let replaced = directory
        .update_user(update_user(
            User {
                id: "alice".into(),
                display_name: "Alice".into(),
                ..Default::default()
            },
            &["*"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.email, "");
    assert_eq!(replaced.manager_id, "");
    assert!(replaced.attributes.is_empty());
}

#[tokio::test]
async fn update_user_rejects_bad_input_and_changes_nothing() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let original = server.create_user("alice", user("Alice")).await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;
    let patch = |user: User| User {
        id: "alice".into(),
        ..user
    };

    let cases: Vec<(&str, UpdateUserRequest, &[&str])> = vec![
        (
            "unknown mask path",
            update_user(patch(user("X")), &["nickname"]),
            &["update_mask"],
        ),
        (
            "immutable id in mask",
            update_user(patch(user("X")), &["id"]),
            &["update_mask"],
        ),
        (
            "output-only field in mask",
            update_user(patch(user("X")), &["governed"]),
            &["update_mask"],
        ),
        (
            "one bad path among good ones",
            update_user(patch(user("X")), &["display_name", "etag"]),
            &["update_mask"],
        ),
        ("no user", UpdateUserRequest::default(), &["user"]),
        (
            "no id",
            update_user(user("X"), &["display_name"]),
            &["user.id"],
        ),
        (
            "clearing display_name",
            update_user(patch(User::default()), &["display_name"]),
            &["user.display_name"],
        ),
        (
            "setting DELETED",
            update_user(
                patch(User {
                    state: UserState::Deleted as i32,
                    ..Default::default()
                }),
                &[],
            ),
            &["user.state"],
        ),
        (
            "own manager",
            update_user(
                patch(User {
                    manager_id: "alice".into(),
                    ..Default::default()
                }),
                &[],
            ),
            &["user.manager_id"],
        ),
    ];
    for (case, request, fields) in cases {
        let status = expect_code(directory.update_user(request).await, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            fields,
            "case {case:?}: {status:?}"
        );
    }
    expect_not_found(
        directory
            .update_user(update_user(
                User {
                    id: "nobody".into(),
                    ..user("X")
                },
                &[],
            ))
            .await,
        "user",
        "nobody",
    );
    expect_not_found(
        directory
            .update_user(update_user(
                patch(User {
                    manager_id: "ghost".into(),
                    ..Default::default()
                }),
                &[],
            ))
            .await,
        "user",
        "ghost",
    );
    assert_eq!(get_user(&mut directory, "alice").await, original);
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn stale_etags_abort_user_updates_and_deletes() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let first = server.create_user("alice", user("Alice")).await;
    let mut directory = server.directory(ADMIN);
    let second = directory
        .update_user(update_user(
            User {
                id: "alice".into(),
                display_name: "Alice 2".into(),
                etag: first.etag.clone(),
                ..Default::default()
            },
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    let mark = server.write_mark().await;

    expect_code(
        directory
            .update_user(update_user(
                User {
                    id: "alice".into(),
                    display_name: "Alice 3".into(),
                    etag: first.etag.clone(),
                    ..Default::default()
                },
                &[],
            ))
            .await,
        Code::Aborted,
    );
    expect_code(
        directory
            .delete_user(DeleteUserRequest {
                id: "alice".into(),
                etag: first.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    assert_eq!(get_user(&mut directory, "alice").await, second);
    server.assert_no_writes_since(mark).await;

    let deleted = directory
        .delete_user(DeleteUserRequest {
            id: "alice".into(),
            etag: second.etag,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state, UserState::Deleted as i32);
}

#[tokio::test]
async fn delete_user_is_soft_and_leaves_every_group() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("alice", user("Alice")).await;
    server.create_user("bob", user("Bob")).await;
    for g in ["g1", "g2"] {
        server.create_group(g).await;
        server.add_member(g, Add::UserId("alice".into())).await;
        server.add_member(g, Add::UserId("bob".into())).await;
    }
    server.clock.advance(Duration::from_secs(3600));
    let mut directory = server.directory("remover");

    let deleted = directory
        .delete_user(DeleteUserRequest {
            id: "alice".into(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let then = prost_types::Timestamp::from(epoch() + Duration::from_secs(3600));
    assert_eq!(deleted.state, UserState::Deleted as i32);
    assert_eq!(deleted.delete_time, Some(then));
    assert_eq!(deleted.info.as_ref().unwrap().updated_by, "remover");
    assert_eq!(deleted.display_name, "Alice");

    // Still readable by id; gone from listings and groups.
    assert_eq!(get_user(&mut directory, "alice").await, deleted);
    assert_eq!(
        user_ids(&mut directory, ListUsersRequest::default()).await,
        ["bob"]
    );
    assert_eq!(
        group_ids(&mut directory, groups_of_user("alice")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, groups_of_user("bob")).await,
        ["g1", "g2"]
    );
    for g in ["g1", "g2"] {
        assert_eq!(user_ids(&mut directory, member_of(g)).await, ["bob"]);
    }

    // A deleted user cannot be deleted again, changed, or added to a group.
    let mark = server.write_mark().await;
    let again = expect_code(
        directory
            .delete_user(DeleteUserRequest {
                id: "alice".into(),
                etag: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(again.message().contains("already deleted"), "{again:?}");
    expect_code(
        directory
            .update_user(update_user(
                User {
                    id: "alice".into(),
                    display_name: "Back".into(),
                    ..Default::default()
                },
                &[],
            ))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        directory.add_group_member(add_user("g1", "alice")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(get_user(&mut directory, "alice").await, deleted);
    server.assert_no_writes_since(mark).await;

    expect_not_found(
        directory
            .delete_user(DeleteUserRequest {
                id: "nobody".into(),
                etag: String::new(),
            })
            .await,
        "user",
        "nobody",
    );
    expect_invalid(
        directory
            .delete_user(DeleteUserRequest {
                id: String::new(),
                etag: String::new(),
            })
            .await,
        &["id"],
    );
}

// ------------------------------------------------------------------ groups

#[tokio::test]
async fn group_crud() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut directory = server.directory(ADMIN);
    let created = directory
        .create_group(CreateGroupRequest {
            group: Some(Group {
                description: "Everyone in sales".into(),
                ..group("Sales")
            }),
            group_id: "sales".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.id.as_str(), created.display_name.as_str()),
        ("sales", "Sales")
    );
    assert_eq!(created.description, "Everyone in sales");
    assert_eq!(get_group(&mut directory, "sales").await, created);
    assert_eq!(
        group_ids(&mut directory, ListGroupsRequest::default()).await,
        ["sales"]
    );

    let updated = directory
        .update_group(UpdateGroupRequest {
            group: Some(Group {
                id: "sales".into(),
                description: "Sales and presales".into(),
                display_name: "ignored".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Sales");
    assert_eq!(updated.description, "Sales and presales");
    assert_eq!(get_group(&mut directory, "sales").await, updated);

    // Stale etags abort, and change nothing.
    let stale = |etag: &str| Group {
        id: "sales".into(),
        display_name: "Stale".into(),
        etag: etag.into(),
        ..Default::default()
    };
    expect_code(
        directory
            .update_group(UpdateGroupRequest {
                group: Some(stale(&created.etag)),
                update_mask: None,
            })
            .await,
        Code::Aborted,
    );
    expect_code(
        directory
            .delete_group(DeleteGroupRequest {
                id: "sales".into(),
                etag: created.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    expect_invalid(
        directory
            .update_group(UpdateGroupRequest {
                group: Some(stale("")),
                update_mask: mask(&["members"]),
            })
            .await,
        &["update_mask"],
    );
    assert_eq!(get_group(&mut directory, "sales").await, updated);

    let deleted = directory
        .delete_group(DeleteGroupRequest {
            id: "sales".into(),
            etag: updated.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.revision > updated.info.unwrap().revision);
    expect_not_found(
        directory
            .get_group(GetGroupRequest { id: "sales".into() })
            .await,
        "group",
        "sales",
    );
    expect_not_found(
        directory
            .delete_group(DeleteGroupRequest {
                id: "sales".into(),
                etag: String::new(),
            })
            .await,
        "group",
        "sales",
    );
    assert_eq!(
        group_ids(&mut directory, ListGroupsRequest::default()).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn create_group_rejects_bad_input_and_duplicates() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_group("sales").await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;

    expect_invalid(
        create_group_as(&mut directory, "g", "", "").await,
        &["group.display_name"],
    );
    expect_invalid(
        create_group_as(&mut directory, "g!", "G", "").await,
        &["group_id"],
    );
    expect_invalid(
        create_group_as(&mut directory, "g", &chars('n', 257), "").await,
        &["group.display_name"],
    );
    expect_invalid(
        create_group_as(&mut directory, "g", "Tab\tbed", "").await,
        &["group.display_name"],
    );
    expect_invalid(
        directory
            .create_group(CreateGroupRequest {
                group: Some(Group {
                    description: chars('d', 2049),
                    ..group("G")
                }),
                group_id: "g".into(),
                request_id: String::new(),
            })
            .await,
        &["group.description"],
    );
    let status = expect_code(
        create_group_as(&mut directory, "sales", "Again", "").await,
        Code::AlreadyExists,
    );
    assert_eq!(
        resource_info(&status),
        Some(("group".into(), "sales".into()))
    );

    assert_eq!(
        group_ids(&mut directory, ListGroupsRequest::default()).await,
        ["sales"]
    );
    assert_eq!(
        get_group(&mut directory, "sales").await.display_name,
        "Group sales"
    );
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn group_members_are_added_and_removed() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("alice", user("Alice")).await;
    server.create_group("parent").await;
    server.create_group("child").await;
    let mut directory = server.directory("member-admin");

    let membership = directory
        .add_group_member(add_user("parent", "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(membership.group_id, "parent");
    assert_eq!(
        membership.member,
        Some(group_membership::Member::UserId("alice".into()))
    );
    assert_eq!(membership.info.unwrap().created_by, "member-admin");
    let nested = directory
        .add_group_member(add_group("parent", "child"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        nested.member,
        Some(group_membership::Member::MemberGroupId("child".into()))
    );

    assert_eq!(
        user_ids(&mut directory, member_of("parent")).await,
        ["alice"]
    );
    assert_eq!(
        group_ids(&mut directory, children_of("parent")).await,
        ["child"]
    );

    // Already a direct member.
    let mark = server.write_mark().await;
    expect_code(
        directory
            .add_group_member(add_user("parent", "alice"))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        directory
            .add_group_member(add_group("parent", "child"))
            .await,
        Code::AlreadyExists,
    );
    // Unknown objects.
    expect_not_found(
        directory
            .add_group_member(add_user("parent", "ghost"))
            .await,
        "user",
        "ghost",
    );
    expect_not_found(
        directory
            .add_group_member(add_group("parent", "ghost"))
            .await,
        "group",
        "ghost",
    );
    expect_not_found(
        directory.add_group_member(add_user("ghost", "alice")).await,
        "group",
        "ghost",
    );
    // Malformed requests.
    expect_invalid(
        directory
            .add_group_member(AddGroupMemberRequest {
                group_id: "parent".into(),
                member: None,
            })
            .await,
        &["member"],
    );
    expect_invalid(
        directory.add_group_member(add_user("", "alice")).await,
        &["group_id"],
    );
    expect_invalid(
        directory.add_group_member(add_user("parent", "a b")).await,
        &["user_id"],
    );
    expect_invalid(
        directory.add_group_member(add_group("parent", "")).await,
        &["member_group_id"],
    );
    server.assert_no_writes_since(mark).await;

    let remove = |member: Remove| RemoveGroupMemberRequest {
        group_id: "parent".into(),
        member: Some(member),
    };
    let removed = directory
        .remove_group_member(remove(Remove::UserId("alice".into())))
        .await
        .unwrap()
        .into_inner();
    assert!(removed.revision > mark);
    directory
        .remove_group_member(remove(Remove::MemberGroupId("child".into())))
        .await
        .unwrap();
    assert_eq!(
        user_ids(&mut directory, member_of("parent")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, children_of("parent")).await,
        Vec::<String>::new()
    );

    // No longer members.
    expect_code(
        directory
            .remove_group_member(remove(Remove::UserId("alice".into())))
            .await,
        Code::NotFound,
    );
    expect_code(
        directory
            .remove_group_member(remove(Remove::MemberGroupId("child".into())))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        directory
            .remove_group_member(RemoveGroupMemberRequest {
                group_id: "parent".into(),
                member: None,
            })
            .await,
        &["member"],
    );
}

#[tokio::test]
async fn nesting_that_would_make_a_cycle_is_failed_precondition() {
    let server = TestServer::start_with_admins(CALLERS).await;
    for g in ["a", "b", "c"] {
        server.create_group(g).await;
    }
    // a contains b contains c.
    server.add_member("a", Add::MemberGroupId("b".into())).await;
    server.add_member("b", Add::MemberGroupId("c".into())).await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;

    for (container, member) in [("a", "a"), ("b", "a"), ("c", "a"), ("c", "b")] {
        let status = expect_code(
            directory
                .add_group_member(add_group(container, member))
                .await,
            Code::FailedPrecondition,
        );
        assert!(
            status.message().contains("cycle"),
            "{container} <- {member}: {status:?}"
        );
    }
    server.assert_no_writes_since(mark).await;
    assert_eq!(
        group_ids(&mut directory, parents_of("a")).await,
        Vec::<String>::new()
    );

    // Nesting without a cycle (a diamond) is fine.
    directory
        .add_group_member(add_group("a", "c"))
        .await
        .unwrap();
    assert_eq!(group_ids(&mut directory, parents_of("c")).await, ["a", "b"]);
}

#[tokio::test]
async fn list_groups_filters() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("alice", user("Alice")).await;
    for g in ["g1", "g2", "g3", "g4"] {
        server.create_group(g).await;
    }
    server
        .add_member("g1", Add::MemberGroupId("g3".into()))
        .await;
    server
        .add_member("g1", Add::MemberGroupId("g2".into()))
        .await;
    server
        .add_member("g2", Add::MemberGroupId("g3".into()))
        .await;
    server.add_member("g4", Add::UserId("alice".into())).await;
    server.add_member("g2", Add::UserId("alice".into())).await;
    let mut directory = server.directory(ADMIN);

    let cases: Vec<(&str, ListGroupsRequest, &[&str])> = vec![
        (
            "all",
            ListGroupsRequest::default(),
            &["g1", "g2", "g3", "g4"],
        ),
        ("parent_group_id g1", children_of("g1"), &["g2", "g3"]),
        ("parent_group_id g2", children_of("g2"), &["g3"]),
        ("parent_group_id g3", children_of("g3"), &[]),
        ("member_user_id", groups_of_user("alice"), &["g2", "g4"]),
        ("member_group_id g3", parents_of("g3"), &["g1", "g2"]),
        ("member_group_id g1", parents_of("g1"), &[]),
    ];
    for (case, request, expected) in cases {
        assert_eq!(
            group_ids(&mut directory, request).await,
            expected,
            "case {case:?}"
        );
    }

    expect_invalid(
        directory
            .list_groups(ListGroupsRequest {
                parent_group_id: "g1".into(),
                member_user_id: "alice".into(),
                ..Default::default()
            })
            .await,
        &["member_user_id"],
    );
    expect_not_found(
        directory.list_groups(children_of("nope")).await,
        "group",
        "nope",
    );
    expect_not_found(
        directory.list_groups(groups_of_user("nobody")).await,
        "user",
        "nobody",
    );
    expect_not_found(
        directory.list_groups(parents_of("nope")).await,
        "group",
        "nope",
    );
    expect_invalid(
        directory.list_groups(parents_of("no pe")).await,
        &["member_group_id"],
    );
}

#[tokio::test]
async fn deleting_a_group_removes_its_memberships() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("alice", user("Alice")).await;
    for g in ["parent", "doomed", "child", "other"] {
        server.create_group(g).await;
    }
    server
        .add_member("parent", Add::MemberGroupId("doomed".into()))
        .await;
    server
        .add_member("doomed", Add::MemberGroupId("child".into()))
        .await;
    server
        .add_member("doomed", Add::UserId("alice".into()))
        .await;
    server
        .add_member("other", Add::UserId("alice".into()))
        .await;
    let mut directory = server.directory(ADMIN);

    directory
        .delete_group(DeleteGroupRequest {
            id: "doomed".into(),
            etag: String::new(),
        })
        .await
        .unwrap();

    assert_eq!(
        group_ids(&mut directory, children_of("parent")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, parents_of("child")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, groups_of_user("alice")).await,
        ["other"]
    );
    expect_not_found(
        directory.list_users(member_of("doomed")).await,
        "group",
        "doomed",
    );

    // A new group with the same id starts empty.
    server.create_group("doomed").await;
    assert_eq!(
        user_ids(&mut directory, member_of("doomed")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, children_of("doomed")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        group_ids(&mut directory, parents_of("doomed")).await,
        Vec::<String>::new()
    );
}

// ------------------------------------------------------------------ paging

#[tokio::test]
async fn list_groups_pages_in_ascending_id_order() {
    let server = TestServer::start_with_admins(CALLERS).await;
    // Created out of order; listed by id.
    for g in ["g5", "g2", "g7", "g1", "g4", "g6", "g3"] {
        server.create_group(g).await;
    }
    let directory = server.directory(ADMIN);
    let all = ["g1", "g2", "g3", "g4", "g5", "g6", "g7"];

    for (page_size, sizes) in [
        (3, vec![3, 3, 1]),
        (7, vec![7]),
        (6, vec![6, 1]),
        (0, vec![7]),
        (5000, vec![7]),
    ] {
        let listed = pages(|page_token| {
            let mut directory = directory.clone();
            async move {
                let page = directory
                    .list_groups(ListGroupsRequest {
                        page_size,
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((
                    page.groups.into_iter().map(|g| g.id).collect(),
                    page.next_page_token,
                ))
            }
        })
        .await;
        assert_pages(&listed, &sizes, &all);
    }
}

#[tokio::test]
async fn list_users_pages_with_filters() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_group("g").await;
    for n in 1..=5 {
        let id = format!("u{n}");
        server.create_user(&id, user(&id)).await;
        if n != 3 {
            server.add_member("g", Add::UserId(id)).await;
        }
    }
    let directory = server.directory(ADMIN);
    let listed = pages(|page_token| {
        let mut directory = directory.clone();
        async move {
            let page = directory
                .list_users(ListUsersRequest {
                    page_size: 2,
                    page_token,
                    group_id: "g".into(),
                    kind: UserKind::Member as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((
                page.users.into_iter().map(|u| u.id).collect(),
                page.next_page_token,
            ))
        }
    })
    .await;
    assert_pages(&listed, &[2, 2], &["u1", "u2", "u4", "u5"]);
}

#[tokio::test]
async fn bad_paging_arguments_are_invalid_argument() {
    let server = TestServer::start_with_admins(CALLERS).await;
    for g in ["g1", "g2", "g3"] {
        server.create_group(g).await;
    }
    server
        .add_member("g1", Add::MemberGroupId("g2".into()))
        .await;
    server
        .add_member("g1", Add::MemberGroupId("g3".into()))
        .await;
    for u in ["u1", "u2"] {
        server.create_user(u, user(u)).await;
    }
    let mut directory = server.directory(ADMIN);
    let first = |page_token: &str| ListGroupsRequest {
        page_size: 1,
        page_token: page_token.into(),
        ..Default::default()
    };

    expect_invalid(
        directory
            .list_groups(ListGroupsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        &["page_size"],
    );
    expect_invalid(
        directory.list_groups(first("garbage!")).await,
        &["page_token"],
    );
    expect_invalid(
        directory.list_groups(first("Z2FyYmFnZQ")).await,
        &["page_token"],
    );

    // A token works only with the filters it was issued for.
    let token = directory
        .list_groups(first(""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    expect_invalid(
        directory
            .list_groups(ListGroupsRequest {
                page_token: token.clone(),
                ..children_of("g1")
            })
            .await,
        &["page_token"],
    );
    // ... but the page size may change.
    let rest = directory
        .list_groups(ListGroupsRequest {
            page_size: 10,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.groups
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>(),
        ["g2", "g3"]
    );

    let members = ListUsersRequest {
        page_size: 1,
        kind: UserKind::Member as i32,
        ..Default::default()
    };
    let token = directory
        .list_users(members.clone())
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    expect_invalid(
        directory
            .list_users(ListUsersRequest {
                page_token: token.clone(),
                kind: UserKind::Guest as i32,
                ..members.clone()
            })
            .await,
        &["page_token"],
    );
    expect_invalid(
        directory
            .list_users(ListUsersRequest {
                page_token: token.clone(),
                show_deleted: true,
                ..members
            })
            .await,
        &["page_token"],
    );
    // Nor on another listing.
    expect_invalid(
        directory
            .list_connected_organizations(ListConnectedOrganizationsRequest {
                page_token: token,
                ..Default::default()
            })
            .await,
        &["page_token"],
    );
    expect_invalid(
        directory
            .list_connected_organizations(ListConnectedOrganizationsRequest {
                page_size: -5,
                ..Default::default()
            })
            .await,
        &["page_size"],
    );
}

// --------------------------------------------------------------- request ids

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_returns_the_first_result() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut alice = server.directory("alice");
    let first = create_group_as(&mut alice, "", "Sales", "req-1")
        .await
        .unwrap()
        .into_inner();
    let mark = server.write_mark().await;

    // The same payload gets the first result; a different one is refused
    // (see tests/input_validation.rs).
    let same = create_group_as(&mut alice, "", "Sales", "req-1")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, first);
    expect_invalid(
        create_group_as(&mut alice, "chosen", "Marketing", "req-1").await,
        &["request_id"],
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(
        group_ids(&mut alice, ListGroupsRequest::default()).await,
        [first.id.as_str()]
    );

    // Another caller's request ids are its own.
    let mut bob = server.directory("bob");
    let bobs = create_group_as(&mut bob, "", "Sales", "req-1")
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, first.id);
    assert_eq!(bobs.info.unwrap().created_by, "bob");
    // So are another method's.
    let created = create_user_as(&mut alice, "", user("Alice"), "req-1")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.display_name, "Alice");
    let mut expected = vec![first.id, bobs.id];
    expected.sort();
    assert_eq!(
        group_ids(&mut alice, ListGroupsRequest::default()).await,
        expected
    );
}

#[tokio::test]
async fn request_ids_with_chosen_ids() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut alice = server.directory("alice");
    let first = create_user_as(&mut alice, "u1", user("One"), "req")
        .await
        .unwrap()
        .into_inner();
    // A retry is not a duplicate...
    let retried = create_user_as(&mut alice, "u1", user("One"), "req")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    // ... but the same id from another caller is.
    let mut bob = server.directory("bob");
    expect_code(
        create_user_as(&mut bob, "u1", user("One"), "req").await,
        Code::AlreadyExists,
    );

    // A failed create remembers nothing: a retry with the same request id
    // after fixing the input succeeds.
    expect_not_found(
        create_user_as(
            &mut alice,
            "u2",
            User {
                manager_id: "u3".into(),
                ..user("Two")
            },
            "req-2",
        )
        .await,
        "user",
        "u3",
    );
    let fixed = create_user_as(
        &mut alice,
        "u2",
        User {
            manager_id: "u1".into(),
            ..user("Two")
        },
        "req-2",
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(fixed.manager_id, "u1");
}

// ------------------------------------------------ connected organizations

#[tokio::test]
async fn connected_organization_crud() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("sponsor", user("Sponsor")).await;
    let mut directory = server.directory(ADMIN);

    let created = directory
        .create_connected_organization(CreateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                description: "A partner".into(),
                identity_sources: vec![
                    domain_source(" Fabrikam.EXAMPLE "),
                    tenant_source("tenant-1"),
                ],
                internal_sponsor_ids: vec!["sponsor".into()],
                ..organization("Fabrikam", "unused.example")
            }),
            connected_organization_id: "fabrikam".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "fabrikam");
    assert_eq!(created.state, ConnectedOrganizationState::Configured as i32);
    assert_eq!(
        created.identity_sources,
        [domain_source("fabrikam.example"), tenant_source("tenant-1")]
    );
    assert_eq!(created.internal_sponsor_ids, ["sponsor"]);
    let get = |id: &str| GetConnectedOrganizationRequest { id: id.into() };
    assert_eq!(
        directory
            .get_connected_organization(get("fabrikam"))
            .await
            .unwrap()
            .into_inner(),
        created
    );

    let proposed = server
        .create_organization(
            "auto-1",
            ConnectedOrganization {
                state: ConnectedOrganizationState::Proposed as i32,
                ..organization("Auto", "auto.example")
            },
        )
        .await;
    assert_eq!(proposed.state, ConnectedOrganizationState::Proposed as i32);
    use ConnectedOrganizationState as S;
    assert_eq!(
        organization_ids(&mut directory, S::Unspecified).await,
        ["auto-1", "fabrikam"]
    );
    assert_eq!(
        organization_ids(&mut directory, S::Configured).await,
        ["fabrikam"]
    );
    assert_eq!(
        organization_ids(&mut directory, S::Proposed).await,
        ["auto-1"]
    );

    // Replacing the identity sources frees the old ones.
    let updated = directory
        .update_connected_organization(UpdateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                id: "fabrikam".into(),
                identity_sources: vec![domain_source("fabrikam.test")],
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["identity_sources"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.identity_sources, [domain_source("fabrikam.test")]);
    assert_eq!(updated.display_name, "Fabrikam");
    assert_eq!(updated.internal_sponsor_ids, ["sponsor"]);
    server
        .create_organization(
            "heir",
            ConnectedOrganization {
                identity_sources: vec![
                    domain_source("fabrikam.example"),
                    tenant_source("tenant-1"),
                ],
                ..organization("Heir", "x.example")
            },
        )
        .await;

    // Stale etags abort.
    expect_code(
        directory
            .delete_connected_organization(DeleteConnectedOrganizationRequest {
                id: "fabrikam".into(),
                etag: created.etag,
            })
            .await,
        Code::Aborted,
    );
    directory
        .delete_connected_organization(DeleteConnectedOrganizationRequest {
            id: "fabrikam".into(),
            etag: updated.etag,
        })
        .await
        .unwrap();
    expect_not_found(
        directory.get_connected_organization(get("fabrikam")).await,
        "connected_organization",
        "fabrikam",
    );
    assert_eq!(
        organization_ids(&mut directory, S::Unspecified).await,
        ["auto-1", "heir"]
    );
}

#[tokio::test]
async fn identity_sources_belong_to_one_organization() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let fabrikam = server
        .create_organization(
            "fabrikam",
            ConnectedOrganization {
                identity_sources: vec![domain_source("fabrikam.example"), tenant_source("t-1")],
                ..organization("Fabrikam", "unused.example")
            },
        )
        .await;
    let contoso = server
        .create_organization("contoso", organization("Contoso", "contoso.example"))
        .await;
    let mut directory = server.directory(ADMIN);
    let mark = server.write_mark().await;
    let create =
        |id: &str, organization: ConnectedOrganization| CreateConnectedOrganizationRequest {
            connected_organization: Some(organization),
            connected_organization_id: id.into(),
            request_id: String::new(),
        };

    // The domain is compared lower-cased.
    let status = expect_code(
        directory
            .create_connected_organization(create(
                "other",
                organization("Other", "FABRIKAM.Example"),
            ))
            .await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("fabrikam"), "{status:?}");
    expect_code(
        directory
            .create_connected_organization(create(
                "other",
                ConnectedOrganization {
                    identity_sources: vec![tenant_source("t-1")],
                    ..organization("Other", "x.example")
                },
            ))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        directory
            .update_connected_organization(UpdateConnectedOrganizationRequest {
                connected_organization: Some(ConnectedOrganization {
                    id: "contoso".into(),
                    identity_sources: vec![
                        domain_source("contoso.example"),
                        domain_source("fabrikam.example"),
                    ],
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await,
        Code::AlreadyExists,
    );

    let field = "connected_organization.identity_sources";
    let cases: Vec<(&str, ConnectedOrganization, String)> = vec![
        (
            "no sources",
            ConnectedOrganization {
                identity_sources: vec![],
                ..organization("Other", "x.example")
            },
            field.to_string(),
        ),
        (
            "same domain twice",
            ConnectedOrganization {
                identity_sources: vec![
                    domain_source("other.example"),
                    domain_source("Other.Example"),
                ],
                ..organization("Other", "x.example")
            },
            format!("{field}[1]"),
        ),
        (
            "not a domain",
            organization("Other", "localhost"),
            format!("{field}[0].domain_name"),
        ),
        (
            "bad tenant id",
            ConnectedOrganization {
                identity_sources: vec![tenant_source("a tenant")],
                ..organization("Other", "x.example")
            },
            format!("{field}[0].tenant_id"),
        ),
        (
            "empty source",
            ConnectedOrganization {
                identity_sources: vec![IdentitySource::default()],
                ..organization("Other", "x.example")
            },
            format!("{field}[0]"),
        ),
        (
            "missing display_name",
            organization("", "x.example"),
            "connected_organization.display_name".into(),
        ),
        (
            "unknown state",
            ConnectedOrganization {
                state: 9,
                ..organization("Other", "x.example")
            },
            "connected_organization.state".into(),
        ),
    ];
    for (case, organization, expected) in cases {
        let status = expect_code(
            directory
                .create_connected_organization(create("other", organization))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), [expected], "case {case:?}");
    }
    expect_not_found(
        directory
            .create_connected_organization(create(
                "other",
                ConnectedOrganization {
                    external_sponsor_ids: vec!["ghost".into()],
                    ..organization("Other", "other.example")
                },
            ))
            .await,
        "user",
        "ghost",
    );

    server.assert_no_writes_since(mark).await;
    let get = |id: &str| GetConnectedOrganizationRequest { id: id.into() };
    assert_eq!(
        directory
            .get_connected_organization(get("fabrikam"))
            .await
            .unwrap()
            .into_inner(),
        fabrikam
    );
    assert_eq!(
        directory
            .get_connected_organization(get("contoso"))
            .await
            .unwrap()
            .into_inner(),
        contoso
    );
}

#[tokio::test]
async fn a_connected_organization_in_use_cannot_be_deleted() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server
        .create_organization("fabrikam", organization("Fabrikam", "fabrikam.example"))
        .await;
    let guest = server
        .create_user(
            "guest",
            User {
                kind: UserKind::Guest as i32,
                connected_organization_id: "fabrikam".into(),
                ..user("Guest")
            },
        )
        .await;
    let mut directory = server.directory(ADMIN);
    let delete = || DeleteConnectedOrganizationRequest {
        id: "fabrikam".into(),
        etag: String::new(),
    };
    let mark = server.write_mark().await;

    let status = expect_code(
        directory.delete_connected_organization(delete()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        precondition_violations(&status),
        [("IN_USE".to_string(), "user/guest".to_string())]
    );
    assert!(status.message().contains("guest"), "{status:?}");
    server.assert_no_writes_since(mark).await;
    assert_eq!(
        organization_ids(&mut directory, ConnectedOrganizationState::Unspecified).await,
        ["fabrikam"]
    );

    // Clearing the field with an explicit mask releases the organization.
    let moved = directory
        .update_user(update_user(
            User {
                id: "guest".into(),
                etag: guest.etag,
                ..Default::default()
            },
            &["connected_organization_id"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.connected_organization_id, "");
    assert_eq!(moved.display_name, "Guest");
    directory
        .delete_connected_organization(delete())
        .await
        .unwrap();
    assert_eq!(
        organization_ids(&mut directory, ConnectedOrganizationState::Unspecified).await,
        Vec::<String>::new()
    );
}
