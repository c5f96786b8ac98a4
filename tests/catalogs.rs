//! The Catalogs service over gRPC: catalogs (with the built-in "general"
//! one), the resources they hold, and administrative role assignments.

mod common;

use common::*;
use entitlements::pb::*;
use tonic::Code;

/// Everyone these tests call as: CRUD semantics are under test here, so
/// all of them administer (authorization has its own tests).
const CALLERS: &[&str] = &["alice", "bob", "curator", "granter", "owner"];

// ----------------------------------------------------------------- helpers

const GENERAL: &str = "general";

async fn get_catalog(catalogs: &mut Catalogs, id: &str) -> Catalog {
    catalogs
        .get_catalog(GetCatalogRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn get_resource(catalogs: &mut Catalogs, id: &str) -> Resource {
    catalogs
        .get_resource(GetResourceRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn catalog_ids(catalogs: &mut Catalogs) -> Vec<String> {
    let response = catalogs
        .list_catalogs(ListCatalogsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.next_page_token, "");
    response.catalogs.into_iter().map(|c| c.id).collect()
}

/// Ids of the resources one (unpaged) ListResources call returns.
async fn resource_ids(catalogs: &mut Catalogs, catalog_id: &str, r#type: &str) -> Vec<String> {
    let response = catalogs
        .list_resources(ListResourcesRequest {
            catalog_id: catalog_id.into(),
            r#type: r#type.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.next_page_token, "");
    response.resources.into_iter().map(|r| r.id).collect()
}

fn create_catalog(id: &str, catalog: Catalog) -> CreateCatalogRequest {
    CreateCatalogRequest {
        catalog: Some(catalog),
        catalog_id: id.into(),
        request_id: String::new(),
    }
}

fn create_resource(id: &str, resource: Resource) -> CreateResourceRequest {
    CreateResourceRequest {
        resource: Some(resource),
        resource_id: id.into(),
        request_id: String::new(),
    }
}

fn update_resource(resource: Resource, paths: &[&str]) -> UpdateResourceRequest {
    UpdateResourceRequest {
        resource: Some(resource),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn delete_resource(id: &str) -> DeleteResourceRequest {
    DeleteResourceRequest {
        id: id.into(),
        etag: String::new(),
    }
}

fn delete_catalog(id: &str) -> DeleteCatalogRequest {
    DeleteCatalogRequest {
        id: id.into(),
        etag: String::new(),
    }
}

fn roles(ids: &[&str]) -> Vec<ResourceRole> {
    resource("unused", "unused", ids).roles
}

fn grant(role: AdminRole, principal_id: &str, catalog_id: &str) -> GrantRoleRequest {
    GrantRoleRequest {
        role_assignment: Some(RoleAssignment {
            role: role as i32,
            principal_id: principal_id.into(),
            catalog_id: catalog_id.into(),
            info: None,
        }),
    }
}

fn revoke(role: AdminRole, principal_id: &str, catalog_id: &str) -> RevokeRoleRequest {
    RevokeRoleRequest {
        role: role as i32,
        principal_id: principal_id.into(),
        catalog_id: catalog_id.into(),
    }
}

/// (catalog_id, role, principal_id) of the assignments one ListRoleAssignments
/// call returns.
async fn assignments(
    catalogs: &mut Catalogs,
    request: ListRoleAssignmentsRequest,
) -> Vec<(String, AdminRole, String)> {
    let response = catalogs
        .list_role_assignments(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.next_page_token, "");
    response
        .role_assignments
        .into_iter()
        .map(|a| (a.catalog_id.clone(), a.role(), a.principal_id))
        .collect()
}

fn held(catalog_id: &str, role: AdminRole, principal_id: &str) -> (String, AdminRole, String) {
    (catalog_id.into(), role, principal_id.into())
}

/// A catalog "c1" with resource "r1" (roles member, owner) and a package
/// "p1" granting r1/member.
async fn catalog_with_a_used_resource(server: &TestServer) {
    server.create_catalog("c1").await;
    server
        .create_resource("r1", resource("c1", "sales-group", &["member", "owner"]))
        .await;
    server
        .create_package("p1", package("c1", "Sales", &[("r1", "member")]))
        .await;
}

// ---------------------------------------------------------------- catalogs

#[tokio::test]
async fn the_general_catalog_is_built_in_and_cannot_be_deleted() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut catalogs = server.catalogs(ADMIN);
    let general = get_catalog(&mut catalogs, GENERAL).await;
    assert_eq!(general.display_name, "General");
    assert_eq!(general.kind, CatalogKind::BuiltIn as i32);
    assert_eq!(general.enabled, Some(true));
    assert_eq!(general.externally_visible, Some(false));
    assert_eq!(general.info.as_ref().unwrap().created_by, "system");
    assert_eq!(catalog_ids(&mut catalogs).await, [GENERAL]);

    let mark = server.write_mark().await;
    let status = expect_code(
        catalogs.delete_catalog(delete_catalog(GENERAL)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("built in"), "{status:?}");
    expect_code(
        catalogs
            .create_catalog(create_catalog(GENERAL, catalog("Another general")))
            .await,
        Code::AlreadyExists,
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(get_catalog(&mut catalogs, GENERAL).await, general);

    // It can be renamed, and stays built in.
    let renamed = catalogs
        .update_catalog(UpdateCatalogRequest {
            catalog: Some(Catalog {
                id: GENERAL.into(),
                display_name: "Everything".into(),
                kind: CatalogKind::UserManaged as i32,
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Everything");
    assert_eq!(renamed.kind, CatalogKind::BuiltIn as i32);
    expect_code(
        catalogs.delete_catalog(delete_catalog(GENERAL)).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn catalog_crud_with_defaults() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut catalogs = server.catalogs("owner");

    // enabled defaults to true and externally_visible to false; kind is
    // output only.
    let defaults = catalogs
        .create_catalog(create_catalog(
            "hr",
            Catalog {
                kind: CatalogKind::BuiltIn as i32,
                description: "Human resources".into(),
                ..catalog("HR")
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defaults.id, "hr");
    assert_eq!(defaults.kind, CatalogKind::UserManaged as i32);
    assert_eq!(defaults.enabled, Some(true));
    assert_eq!(defaults.externally_visible, Some(false));
    assert_eq!(defaults.description, "Human resources");
    assert_eq!(defaults.info.as_ref().unwrap().created_by, "owner");
    assert_eq!(get_catalog(&mut catalogs, "hr").await, defaults);

    // Explicit values are kept, false included.
    let explicit = catalogs
        .create_catalog(create_catalog(
            "partners",
            Catalog {
                enabled: Some(false),
                externally_visible: Some(true),
                ..catalog("Partners")
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explicit.enabled, Some(false));
    assert_eq!(explicit.externally_visible, Some(true));
    assert_eq!(
        catalog_ids(&mut catalogs).await,
        [GENERAL, "hr", "partners"]
    );

    // A masked update changes only the masked field.
    let disabled = catalogs
        .update_catalog(UpdateCatalogRequest {
            catalog: Some(Catalog {
                id: "hr".into(),
                enabled: Some(false),
                externally_visible: Some(true),
                display_name: "ignored".into(),
                etag: defaults.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["enabled"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.enabled, Some(false));
    assert_eq!(disabled.externally_visible, Some(false));
    assert_eq!(disabled.display_name, "HR");

    // An empty mask updates what the patch populates; Some(false) counts.
    let enabled_again = catalogs
        .update_catalog(UpdateCatalogRequest {
            catalog: Some(Catalog {
                id: "partners".into(),
                externally_visible: Some(false),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled_again.externally_visible, Some(false));
    assert_eq!(enabled_again.enabled, Some(false));
    assert_eq!(enabled_again.display_name, "Partners");

    // Stale etags abort updates and deletes.
    let mark = server.write_mark().await;
    expect_code(
        catalogs
            .update_catalog(UpdateCatalogRequest {
                catalog: Some(Catalog {
                    id: "hr".into(),
                    description: "stale".into(),
                    etag: defaults.etag.clone(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await,
        Code::Aborted,
    );
    expect_code(
        catalogs
            .delete_catalog(DeleteCatalogRequest {
                id: "hr".into(),
                etag: defaults.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(get_catalog(&mut catalogs, "hr").await, disabled);

    catalogs
        .delete_catalog(DeleteCatalogRequest {
            id: "hr".into(),
            etag: disabled.etag,
        })
        .await
        .unwrap();
    expect_not_found(
        catalogs
            .get_catalog(GetCatalogRequest { id: "hr".into() })
            .await,
        "catalog",
        "hr",
    );
    expect_not_found(
        catalogs.delete_catalog(delete_catalog("hr")).await,
        "catalog",
        "hr",
    );
    assert_eq!(catalog_ids(&mut catalogs).await, [GENERAL, "partners"]);
}

#[tokio::test]
async fn catalog_bad_input_is_invalid_argument_and_writes_nothing() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("hr").await;
    let mut catalogs = server.catalogs(ADMIN);
    let before = get_catalog(&mut catalogs, "hr").await;
    let mark = server.write_mark().await;

    expect_invalid(
        catalogs
            .create_catalog(create_catalog("x", catalog("")))
            .await,
        &["catalog.display_name"],
    );
    expect_invalid(
        catalogs
            .create_catalog(create_catalog(
                "x",
                Catalog {
                    description: chars('d', 2049),
                    ..catalog("X")
                },
            ))
            .await,
        &["catalog.description"],
    );
    expect_invalid(
        catalogs
            .create_catalog(create_catalog("x?", catalog("X")))
            .await,
        &["catalog_id"],
    );
    expect_invalid(
        catalogs
            .create_catalog(CreateCatalogRequest {
                catalog: None,
                ..Default::default()
            })
            .await,
        &["catalog"],
    );
    expect_code(
        catalogs
            .create_catalog(create_catalog("hr", catalog("X")))
            .await,
        Code::AlreadyExists,
    );

    for (paths, fields) in [
        (vec!["kind"], vec!["update_mask"]),
        (vec!["id"], vec!["update_mask"]),
        (vec!["display_name"], vec!["catalog.display_name"]),
    ] {
        expect_invalid(
            catalogs
                .update_catalog(UpdateCatalogRequest {
                    catalog: Some(Catalog {
                        id: "hr".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&paths),
                })
                .await,
            &fields,
        );
    }
    expect_invalid(
        catalogs
            .get_catalog(GetCatalogRequest {
                id: chars('c', 129),
            })
            .await,
        &["id"],
    );
    expect_invalid(
        catalogs
            .list_catalogs(ListCatalogsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        &["page_size"],
    );
    expect_invalid(
        catalogs
            .list_catalogs(ListCatalogsRequest {
                page_token: "bm9wZQ".into(),
                ..Default::default()
            })
            .await,
        &["page_token"],
    );

    server.assert_no_writes_since(mark).await;
    assert_eq!(get_catalog(&mut catalogs, "hr").await, before);
    assert_eq!(catalog_ids(&mut catalogs).await, [GENERAL, "hr"]);
}

#[tokio::test]
async fn list_catalogs_pages_in_id_order() {
    let server = TestServer::start_with_admins(CALLERS).await;
    for id in ["f", "b", "d", "a", "c", "e"] {
        server.create_catalog(id).await;
    }
    let catalogs = server.catalogs(ADMIN);
    let listed = pages(|page_token| {
        let mut catalogs = catalogs.clone();
        async move {
            let page = catalogs
                .list_catalogs(ListCatalogsRequest {
                    page_size: 3,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((
                page.catalogs.into_iter().map(|c| c.id).collect(),
                page.next_page_token,
            ))
        }
    })
    .await;
    assert_pages(
        &listed,
        &[3, 3, 1],
        &["a", "b", "c", "d", "e", "f", GENERAL],
    );
}

#[tokio::test]
async fn create_catalog_is_idempotent_per_caller_and_request_id() {
    let server = TestServer::start_with_admins(CALLERS).await;
    let mut alice = server.catalogs("alice");
    let request = |name: &str| CreateCatalogRequest {
        catalog: Some(catalog(name)),
        catalog_id: String::new(),
        request_id: "create-hr".into(),
    };
    let first = alice
        .create_catalog(request("HR"))
        .await
        .unwrap()
        .into_inner();
    let mark = server.write_mark().await;
    let retried = alice
        .create_catalog(request("HR"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    // The same request id for a different catalog is a mistake, not a retry.
    expect_invalid(
        alice.create_catalog(request("Different")).await,
        &["request_id"],
    );
    server.assert_no_writes_since(mark).await;

    let bobs = server
        .catalogs("bob")
        .create_catalog(request("HR"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, first.id);
    let mut expected = vec![first.id, bobs.id, GENERAL.to_string()];
    expected.sort();
    assert_eq!(catalog_ids(&mut alice).await, expected);
}

// --------------------------------------------------------------- resources

#[tokio::test]
async fn resource_crud() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("c1").await;
    let mut catalogs = server.catalogs("curator");

    let created = catalogs
        .create_resource(create_resource(
            "r1",
            Resource {
                description: "The sales team".into(),
                ..resource("c1", "sales-group", &["member", "owner"])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "r1");
    assert_eq!(created.catalog_id, "c1");
    assert_eq!(created.r#type, "group");
    assert_eq!(created.origin_id, "sales-group");
    assert_eq!(created.roles, roles(&["member", "owner"]));
    assert_eq!(created.info.as_ref().unwrap().created_by, "curator");
    assert_eq!(get_resource(&mut catalogs, "r1").await, created);

    // A server-assigned id.
    let app = catalogs
        .create_resource(create_resource(
            "",
            Resource {
                r#type: "application".into(),
                ..resource(GENERAL, "crm", &["user"])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(app.id.len(), 36, "a UUID: {}", app.id);

    assert_eq!(
        resource_ids(&mut catalogs, "", "").await,
        [app.id.clone(), "r1".to_string()]
    );
    assert_eq!(resource_ids(&mut catalogs, "c1", "").await, ["r1"]);
    assert_eq!(
        resource_ids(&mut catalogs, GENERAL, "").await,
        [app.id.as_str()]
    );
    assert_eq!(
        resource_ids(&mut catalogs, "", "application").await,
        [app.id.as_str()]
    );
    assert_eq!(
        resource_ids(&mut catalogs, "c1", "application").await,
        Vec::<String>::new()
    );

    // Update with a mask: roles replaced, other fields kept.
    let updated = catalogs
        .update_resource(update_resource(
            Resource {
                id: "r1".into(),
                roles: roles(&["member", "owner", "guest"]),
                display_name: "ignored".into(),
                etag: created.etag.clone(),
                ..Default::default()
            },
            &["roles"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.roles, roles(&["member", "owner", "guest"]));
    assert_eq!(updated.display_name, created.display_name);
    assert_eq!(get_resource(&mut catalogs, "r1").await, updated);

    // Stale etags abort.
    let mark = server.write_mark().await;
    expect_code(
        catalogs
            .update_resource(update_resource(
                Resource {
                    id: "r1".into(),
                    description: "stale".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                },
                &[],
            ))
            .await,
        Code::Aborted,
    );
    expect_code(
        catalogs
            .delete_resource(DeleteResourceRequest {
                id: "r1".into(),
                etag: created.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    server.assert_no_writes_since(mark).await;

    catalogs
        .delete_resource(DeleteResourceRequest {
            id: "r1".into(),
            etag: updated.etag,
        })
        .await
        .unwrap();
    expect_not_found(
        catalogs
            .get_resource(GetResourceRequest { id: "r1".into() })
            .await,
        "resource",
        "r1",
    );
    expect_not_found(
        catalogs.delete_resource(delete_resource("r1")).await,
        "resource",
        "r1",
    );
    assert_eq!(
        resource_ids(&mut catalogs, "c1", "").await,
        Vec::<String>::new()
    );
    // With its resources gone the catalog can go.
    catalogs.delete_catalog(delete_catalog("c1")).await.unwrap();
}

#[tokio::test]
async fn resource_bad_input_and_missing_catalogs() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("c1").await;
    server
        .create_resource("r1", resource("c1", "sales", &["member"]))
        .await;
    let mut catalogs = server.catalogs(ADMIN);
    let mark = server.write_mark().await;

    expect_not_found(
        catalogs
            .create_resource(create_resource(
                "r2",
                resource("nope", "sales", &["member"]),
            ))
            .await,
        "catalog",
        "nope",
    );
    let cases: Vec<(&str, Resource, &[&str])> = vec![
        ("no roles", resource("c1", "x", &[]), &["resource.roles"]),
        (
            "role listed twice",
            resource("c1", "x", &["a", "b", "a"]),
            &["resource.roles[2].id"],
        ),
        (
            "bad role id",
            resource("c1", "x", &["a b"]),
            &["resource.roles[0].id"],
        ),
        (
            "missing type, origin and name",
            Resource {
                r#type: String::new(),
                origin_id: String::new(),
                display_name: String::new(),
                ..resource("c1", "x", &["a"])
            },
            &[
                "resource.type",
                "resource.origin_id",
                "resource.display_name",
            ],
        ),
        (
            "type too long",
            Resource {
                r#type: chars('t', 65),
                ..resource("c1", "x", &["a"])
            },
            &["resource.type"],
        ),
        (
            "missing catalog",
            resource("", "x", &["a"]),
            &["resource.catalog_id"],
        ),
    ];
    for (case, resource, fields) in cases {
        let status = expect_code(
            catalogs
                .create_resource(create_resource("r2", resource))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), fields, "case {case:?}");
    }
    expect_invalid(
        catalogs
            .update_resource(update_resource(
                Resource {
                    id: "r1".into(),
                    catalog_id: "general".into(),
                    ..Default::default()
                },
                &["catalog_id"],
            ))
            .await,
        &["update_mask"],
    );
    expect_invalid(
        catalogs
            .update_resource(update_resource(
                Resource {
                    id: "r1".into(),
                    ..Default::default()
                },
                &["roles"],
            ))
            .await,
        &["resource.roles"],
    );

    // Listing by a catalog that does not exist, or is not an id at all.
    expect_not_found(
        catalogs
            .list_resources(ListResourcesRequest {
                catalog_id: "nope".into(),
                ..Default::default()
            })
            .await,
        "catalog",
        "nope",
    );
    expect_invalid(
        catalogs
            .list_resources(ListResourcesRequest {
                catalog_id: "no pe".into(),
                ..Default::default()
            })
            .await,
        &["catalog_id"],
    );

    server.assert_no_writes_since(mark).await;
    assert_eq!(resource_ids(&mut catalogs, "", "").await, ["r1"]);
    assert_eq!(
        get_resource(&mut catalogs, "r1").await.roles,
        roles(&["member"])
    );
}

#[tokio::test]
async fn catalog_type_and_origin_identify_a_resource() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("c1").await;
    server.create_catalog("c2").await;
    server
        .create_resource("r1", resource("c1", "sales", &["member"]))
        .await;
    let mut catalogs = server.catalogs(ADMIN);

    let mark = server.write_mark().await;
    let status = expect_code(
        catalogs
            .create_resource(create_resource("r2", resource("c1", "sales", &["owner"])))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        resource_info(&status),
        Some(("resource".into(), "r1".into())),
        "names the holder"
    );
    expect_code(
        catalogs
            .create_resource(create_resource("r1", resource("c2", "other", &["owner"])))
            .await,
        Code::AlreadyExists,
    );
    server.assert_no_writes_since(mark).await;

    // Another type or another catalog is another resource.
    server
        .create_resource(
            "r2",
            Resource {
                r#type: "site".into(),
                ..resource("c1", "sales", &["visitor"])
            },
        )
        .await;
    server
        .create_resource("r3", resource("c2", "sales", &["member"]))
        .await;

    // Updating into an existing triple is refused; the old one is released
    // by an update that moves away from it.
    expect_code(
        catalogs
            .update_resource(update_resource(
                Resource {
                    id: "r2".into(),
                    r#type: "group".into(),
                    ..Default::default()
                },
                &[],
            ))
            .await,
        Code::AlreadyExists,
    );
    catalogs
        .update_resource(update_resource(
            Resource {
                id: "r1".into(),
                origin_id: "sales-renamed".into(),
                ..Default::default()
            },
            &[],
        ))
        .await
        .unwrap();
    let moved = catalogs
        .update_resource(update_resource(
            Resource {
                id: "r2".into(),
                r#type: "group".into(),
                ..Default::default()
            },
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (moved.r#type.as_str(), moved.origin_id.as_str()),
        ("group", "sales")
    );
}

#[tokio::test]
async fn resources_used_by_a_package_are_protected() {
    let server = TestServer::start_with_admins(CALLERS).await;
    catalog_with_a_used_resource(&server).await;
    let mut catalogs = server.catalogs(ADMIN);
    let before = get_resource(&mut catalogs, "r1").await;
    let mark = server.write_mark().await;

    // Removing the used role is refused, naming the package.
    let status = expect_code(
        catalogs
            .update_resource(update_resource(
                Resource {
                    id: "r1".into(),
                    roles: roles(&["owner"]),
                    ..Default::default()
                },
                &["roles"],
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("member") && status.message().contains("p1"),
        "{status:?}"
    );
    // So is deleting the resource ...
    let status = expect_code(
        catalogs.delete_resource(delete_resource("r1")).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("p1"), "{status:?}");
    assert_eq!(
        precondition_violations(&status),
        [("IN_USE".to_string(), "access_package/p1".to_string())]
    );
    // ... and the catalog holding it.
    let status = expect_code(
        catalogs.delete_catalog(delete_catalog("c1")).await,
        Code::FailedPrecondition,
    );
    let subjects: Vec<String> = precondition_violations(&status)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(subjects, ["access_package/p1", "resource/r1"]);
    server.assert_no_writes_since(mark).await;
    assert_eq!(get_resource(&mut catalogs, "r1").await, before);

    // Roles the package does not use can go.
    let trimmed = catalogs
        .update_resource(update_resource(
            Resource {
                id: "r1".into(),
                roles: roles(&["member"]),
                ..Default::default()
            },
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trimmed.roles, roles(&["member"]));

    // Once the package is gone, so can everything else.
    server
        .packages(ADMIN)
        .delete_access_package(DeleteAccessPackageRequest {
            id: "p1".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    catalogs
        .update_resource(update_resource(
            Resource {
                id: "r1".into(),
                roles: roles(&["owner"]),
                ..Default::default()
            },
            &[],
        ))
        .await
        .unwrap();
    catalogs
        .delete_resource(delete_resource("r1"))
        .await
        .unwrap();
    catalogs.delete_catalog(delete_catalog("c1")).await.unwrap();
    assert_eq!(catalog_ids(&mut catalogs).await, [GENERAL]);
}

#[tokio::test]
async fn list_resources_pages_and_checks_tokens() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("c1").await;
    for n in [4, 1, 5, 3, 2] {
        server
            .create_resource(
                &format!("r{n}"),
                resource("c1", &format!("o{n}"), &["member"]),
            )
            .await;
    }
    server
        .create_resource("r0", resource(GENERAL, "elsewhere", &["member"]))
        .await;
    let catalogs = server.catalogs(ADMIN);
    let listed = pages(|page_token| {
        let mut catalogs = catalogs.clone();
        async move {
            let page = catalogs
                .list_resources(ListResourcesRequest {
                    page_size: 2,
                    page_token,
                    catalog_id: "c1".into(),
                    r#type: "group".into(),
                })
                .await?
                .into_inner();
            Ok((
                page.resources.into_iter().map(|r| r.id).collect(),
                page.next_page_token,
            ))
        }
    })
    .await;
    assert_pages(&listed, &[2, 2, 1], &["r1", "r2", "r3", "r4", "r5"]);

    let mut catalogs = catalogs;
    let first = catalogs
        .list_resources(ListResourcesRequest {
            page_size: 2,
            catalog_id: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    expect_invalid(
        catalogs
            .list_resources(ListResourcesRequest {
                page_size: 2,
                page_token: first.next_page_token,
                catalog_id: GENERAL.into(),
                ..Default::default()
            })
            .await,
        &["page_token"],
    );
}

#[tokio::test]
async fn create_resource_is_idempotent_by_request_id() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_catalog("c1").await;
    let mut catalogs = server.catalogs(ADMIN);
    let request = |origin: &str| CreateResourceRequest {
        resource: Some(resource("c1", origin, &["member"])),
        resource_id: String::new(),
        request_id: "import-42".into(),
    };
    let first = catalogs
        .create_resource(request("sales"))
        .await
        .unwrap()
        .into_inner();
    let mark = server.write_mark().await;
    assert_eq!(
        catalogs
            .create_resource(request("sales"))
            .await
            .unwrap()
            .into_inner(),
        first
    );
    // A different payload under the same request id: refused, not a second
    // resource and not the first one passed off as its result.
    expect_invalid(
        catalogs.create_resource(request("marketing")).await,
        &["request_id"],
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(resource_ids(&mut catalogs, "c1", "").await, [first.id]);
}

// ---------------------------------------------------------- role assignments

#[tokio::test]
async fn grant_and_revoke_roles() {
    let server = TestServer::start_with_admins(CALLERS).await;
    server.create_user("alice", user("Alice")).await;
    server.create_catalog("c1").await;
    let mut catalogs = server.catalogs("granter");
    use AdminRole::*;

    let tenant = catalogs
        .grant_role(grant(GlobalAdmin, "alice", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            tenant.role(),
            tenant.principal_id.as_str(),
            tenant.catalog_id.as_str()
        ),
        (GlobalAdmin, "alice", "")
    );
    let info = tenant.info.unwrap();
    assert_eq!(info.created_by, "granter");
    assert_eq!(
        info.create_time,
        Some(prost_types::Timestamp::from(epoch()))
    );
    let owner = catalogs
        .grant_role(grant(CatalogOwner, "alice", "c1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owner.catalog_id, "c1");

    let mark = server.write_mark().await;
    // Tenant-wide roles take no catalog; catalog roles need one.
    expect_invalid(
        catalogs
            .grant_role(grant(CatalogCreator, "alice", "c1"))
            .await,
        &["role_assignment.catalog_id"],
    );
    expect_invalid(
        catalogs.grant_role(grant(CatalogReader, "alice", "")).await,
        &["role_assignment.catalog_id"],
    );
    expect_invalid(
        catalogs.grant_role(grant(Unspecified, "alice", "c1")).await,
        &["role_assignment.role"],
    );
    expect_invalid(
        catalogs.grant_role(grant(CatalogReader, "", "c1")).await,
        &["role_assignment.principal_id"],
    );
    expect_invalid(
        catalogs
            .grant_role(GrantRoleRequest {
                role_assignment: None,
            })
            .await,
        &["role_assignment"],
    );
    // Held already.
    let status = expect_code(
        catalogs.grant_role(grant(GlobalAdmin, "alice", "")).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains("alice"), "{status:?}");
    expect_code(
        catalogs
            .grant_role(grant(CatalogOwner, "alice", "c1"))
            .await,
        Code::AlreadyExists,
    );
    // Unknown user or catalog.
    expect_not_found(
        catalogs.grant_role(grant(GlobalAdmin, "ghost", "")).await,
        "user",
        "ghost",
    );
    expect_not_found(
        catalogs
            .grant_role(grant(CatalogOwner, "alice", "nope"))
            .await,
        "catalog",
        "nope",
    );
    // Not held.
    expect_code(
        catalogs
            .revoke_role(revoke(CatalogCreator, "alice", ""))
            .await,
        Code::NotFound,
    );
    expect_code(
        catalogs
            .revoke_role(revoke(CatalogOwner, "alice", GENERAL))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        catalogs
            .revoke_role(revoke(GlobalAdmin, "alice", "c1"))
            .await,
        &["catalog_id"],
    );
    expect_invalid(
        catalogs
            .revoke_role(revoke(CatalogOwner, "alice", ""))
            .await,
        &["catalog_id"],
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(
        assignments(&mut catalogs, ListRoleAssignmentsRequest::default()).await,
        [
            held("", GlobalAdmin, "alice"),
            held("c1", CatalogOwner, "alice")
        ]
    );

    let revoked = catalogs
        .revoke_role(revoke(GlobalAdmin, "alice", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revision > mark);
    expect_code(
        catalogs.revoke_role(revoke(GlobalAdmin, "alice", "")).await,
        Code::NotFound,
    );
    assert_eq!(
        assignments(&mut catalogs, ListRoleAssignmentsRequest::default()).await,
        [held("c1", CatalogOwner, "alice")]
    );

    // A deleted user cannot be granted anything.
    server
        .directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: "alice".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    expect_code(
        catalogs.grant_role(grant(GlobalAdmin, "alice", "")).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn list_role_assignments_by_catalog_principal_and_tenant() {
    let server = TestServer::start_with_admins(CALLERS).await;
    for u in ["alice", "bob"] {
        server.create_user(u, user(u)).await;
    }
    for c in ["c1", "c2"] {
        server.create_catalog(c).await;
    }
    let mut catalogs = server.catalogs(ADMIN);
    use AdminRole::*;
    for (role, principal, catalog) in [
        (CatalogReader, "bob", "c2"),
        (CatalogOwner, "bob", "c1"),
        (GlobalAdmin, "bob", ""),
        (CatalogOwner, "alice", "c1"),
        (CatalogCreator, "alice", ""),
        (CatalogReader, "alice", "c2"),
    ] {
        catalogs
            .grant_role(grant(role, principal, catalog))
            .await
            .unwrap();
    }
    let list = |catalog_id: &str, principal_id: &str, role: AdminRole| ListRoleAssignmentsRequest {
        catalog_id: catalog_id.into(),
        principal_id: principal_id.into(),
        role: role as i32,
        ..Default::default()
    };

    let cases = [
        (
            "by catalog",
            list("c1", "", Unspecified),
            vec![
                held("c1", CatalogOwner, "alice"),
                held("c1", CatalogOwner, "bob"),
            ],
        ),
        (
            "tenant-wide",
            list("-", "", Unspecified),
            vec![
                held("", CatalogCreator, "alice"),
                held("", GlobalAdmin, "bob"),
            ],
        ),
        (
            "by principal",
            list("", "bob", Unspecified),
            vec![
                held("", GlobalAdmin, "bob"),
                held("c1", CatalogOwner, "bob"),
                held("c2", CatalogReader, "bob"),
            ],
        ),
        (
            "by catalog and principal",
            list("c2", "alice", Unspecified),
            vec![held("c2", CatalogReader, "alice")],
        ),
        (
            "by role",
            list("", "", CatalogReader),
            vec![
                held("c2", CatalogReader, "alice"),
                held("c2", CatalogReader, "bob"),
            ],
        ),
        (
            "tenant-wide by principal",
            list("-", "alice", Unspecified),
            vec![held("", CatalogCreator, "alice")],
        ),
        ("nothing held", list(GENERAL, "", Unspecified), vec![]),
    ];
    for (case, request, expected) in cases {
        assert_eq!(
            assignments(&mut catalogs, request).await,
            expected,
            "case {case:?}"
        );
    }
    expect_not_found(
        catalogs
            .list_role_assignments(list("nope", "", Unspecified))
            .await,
        "catalog",
        "nope",
    );
    expect_invalid(
        catalogs
            .list_role_assignments(list("", "a b", Unspecified))
            .await,
        &["principal_id"],
    );

    // Paging: one per page, in the same order.
    let paged = pages(|page_token| {
        let mut catalogs = catalogs.clone();
        async move {
            let page = catalogs
                .list_role_assignments(ListRoleAssignmentsRequest {
                    page_size: 4,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let items = page
                .role_assignments
                .into_iter()
                .map(|a| format!("{}/{}", a.catalog_id, a.principal_id))
                .collect();
            Ok((items, page.next_page_token))
        }
    })
    .await;
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(paged.concat().len(), 6);

    // A deleted catalog takes its role assignments along.
    catalogs.delete_catalog(delete_catalog("c2")).await.unwrap();
    assert_eq!(
        assignments(&mut catalogs, list("", "alice", Unspecified)).await,
        [
            held("", CatalogCreator, "alice"),
            held("c1", CatalogOwner, "alice")
        ]
    );
}
