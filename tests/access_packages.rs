//! The AccessPackages service over gRPC: bundles of resource roles from one
//! catalog, with separation-of-duties lists.

mod common;

use common::*;
use entitlements::pb::*;
use tonic::Code;

/// Everyone these tests call as: CRUD semantics are under test here, so
/// all of them administer (authorization has its own tests).
const CALLERS: &[&str] = &["alice", "bob", "manager"];

// ----------------------------------------------------------------- helpers

/// Catalog "c1" holding "r1" (roles member, owner) and "r2" (role reader);
/// catalog "c2" holding "r9" (role member).
async fn setup(server: &TestServer) {
    server.create_catalog("c1").await;
    server.create_catalog("c2").await;
    server
        .create_resource("r1", resource("c1", "sales", &["member", "owner"]))
        .await;
    server
        .create_resource("r2", resource("c1", "wiki", &["reader"]))
        .await;
    server
        .create_resource("r9", resource("c2", "other", &["member"]))
        .await;
}

async fn get_package(packages: &mut Packages, id: &str) -> AccessPackage {
    packages
        .get_access_package(GetAccessPackageRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Ids of the packages one (unpaged) ListAccessPackages call returns.
async fn package_ids(packages: &mut Packages, request: ListAccessPackagesRequest) -> Vec<String> {
    let response = packages
        .list_access_packages(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.next_page_token, "");
    response.access_packages.into_iter().map(|p| p.id).collect()
}

fn create(id: &str, package: AccessPackage) -> CreateAccessPackageRequest {
    CreateAccessPackageRequest {
        access_package: Some(package),
        access_package_id: id.into(),
        request_id: String::new(),
    }
}

fn update(package: AccessPackage, paths: &[&str]) -> UpdateAccessPackageRequest {
    UpdateAccessPackageRequest {
        access_package: Some(package),
        update_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn delete(id: &str) -> DeleteAccessPackageRequest {
    DeleteAccessPackageRequest {
        id: id.into(),
        etag: String::new(),
    }
}

/// A patch for package `id`.
fn patch(id: &str) -> AccessPackage {
    AccessPackage {
        id: id.into(),
        ..Default::default()
    }
}

fn ids(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

// -------------------------------------------------------------------- CRUD

#[tokio::test]
async fn access_package_crud() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    let mut packages = server.packages("manager");

    let created = packages
        .create_access_package(create(
            "sales",
            AccessPackage {
                description: "Sales tools".into(),
                ..package("c1", "Sales", &[("r1", "member"), ("r2", "reader")])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.id, "sales");
    assert_eq!(created.catalog_id, "c1");
    assert_eq!(created.display_name, "Sales");
    assert_eq!(created.description, "Sales tools");
    assert!(!created.hidden);
    assert_eq!(
        created.resource_roles,
        [role_ref("r1", "member"), role_ref("r2", "reader")]
    );
    assert_eq!(created.info.as_ref().unwrap().created_by, "manager");
    assert_eq!(get_package(&mut packages, "sales").await, created);

    let generated = packages
        .create_access_package(create("", package("c2", "Other", &[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        uuid::Uuid::parse_str(&generated.id)
            .unwrap()
            .get_version_num(),
        7
    );
    let mut all = vec![generated.id.clone(), "sales".to_string()];
    all.sort();
    assert_eq!(
        package_ids(&mut packages, ListAccessPackagesRequest::default()).await,
        all
    );

    // A masked update touches only the masked fields.
    let updated = packages
        .update_access_package(update(
            AccessPackage {
                display_name: "Sales (hidden)".into(),
                hidden: true,
                description: "ignored".into(),
                etag: created.etag.clone(),
                ..patch("sales")
            },
            &["display_name", "hidden"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Sales (hidden)");
    assert!(updated.hidden);
    assert_eq!(updated.description, "Sales tools");
    assert_eq!(updated.resource_roles, created.resource_roles);

    // An empty mask updates the populated fields: roles are replaced.
    let regranted = packages
        .update_access_package(update(
            AccessPackage {
                resource_roles: vec![role_ref("r1", "owner")],
                ..patch("sales")
            },
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(regranted.resource_roles, [role_ref("r1", "owner")]);
    assert!(regranted.hidden);
    assert_eq!(get_package(&mut packages, "sales").await, regranted);

    // The roles no longer granted are free again.
    server
        .catalogs(ADMIN)
        .delete_resource(DeleteResourceRequest {
            id: "r2".into(),
            etag: String::new(),
        })
        .await
        .unwrap();

    // Stale etags abort updates and deletes.
    let mark = server.write_mark().await;
    expect_code(
        packages
            .update_access_package(update(
                AccessPackage {
                    description: "stale".into(),
                    etag: created.etag.clone(),
                    ..patch("sales")
                },
                &[],
            ))
            .await,
        Code::Aborted,
    );
    expect_code(
        packages
            .delete_access_package(DeleteAccessPackageRequest {
                id: "sales".into(),
                etag: updated.etag.clone(),
            })
            .await,
        Code::Aborted,
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(get_package(&mut packages, "sales").await, regranted);

    let deleted = packages
        .delete_access_package(DeleteAccessPackageRequest {
            id: "sales".into(),
            etag: regranted.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.revision > regranted.info.unwrap().revision);
    expect_not_found(
        packages
            .get_access_package(GetAccessPackageRequest { id: "sales".into() })
            .await,
        "access_package",
        "sales",
    );
    expect_not_found(
        packages.delete_access_package(delete("sales")).await,
        "access_package",
        "sales",
    );
    assert_eq!(
        package_ids(&mut packages, ListAccessPackagesRequest::default()).await,
        [generated.id]
    );
}

#[tokio::test]
async fn create_access_package_rejects_bad_input_and_writes_nothing() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    server
        .create_package("existing", package("c1", "Existing", &[]))
        .await;
    let mut packages = server.packages(ADMIN);
    let mark = server.write_mark().await;
    let field = |f: &str| format!("access_package.{f}");

    let cases: Vec<(&str, CreateAccessPackageRequest, Vec<String>)> = vec![
        (
            "no package",
            CreateAccessPackageRequest {
                access_package: None,
                ..create("p", package("c1", "P", &[]))
            },
            vec!["access_package".into()],
        ),
        (
            "missing display_name",
            create("p", package("c1", "", &[])),
            vec![field("display_name")],
        ),
        (
            "missing catalog_id",
            create("p", package("", "P", &[])),
            vec![field("catalog_id")],
        ),
        (
            "bad id",
            create("p p", package("c1", "P", &[])),
            vec!["access_package_id".into()],
        ),
        (
            "too long id",
            create(&chars('p', 129), package("c1", "P", &[])),
            vec!["access_package_id".into()],
        ),
        (
            "too long description",
            create(
                "p",
                AccessPackage {
                    description: chars('d', 2049),
                    ..package("c1", "P", &[])
                },
            ),
            vec![field("description")],
        ),
        (
            "role listed twice",
            create(
                "p",
                package(
                    "c1",
                    "P",
                    &[("r1", "member"), ("r1", "owner"), ("r1", "member")],
                ),
            ),
            vec![field("resource_roles[2]")],
        ),
        (
            "empty role id",
            create("p", package("c1", "P", &[("r1", "")])),
            vec![field("resource_roles[0].role_id")],
        ),
        (
            "resource of another catalog",
            create(
                "p",
                package("c1", "P", &[("r1", "member"), ("r9", "member")]),
            ),
            vec![field("resource_roles[1].resource_id")],
        ),
        (
            "too many incompatible packages",
            create(
                "p",
                AccessPackage {
                    incompatible_package_ids: (0..101).map(|n| format!("p{n}")).collect(),
                    ..package("c1", "P", &[])
                },
            ),
            vec![field("incompatible_package_ids")],
        ),
        (
            "incompatible group listed twice",
            create(
                "p",
                AccessPackage {
                    incompatible_group_ids: ids(&["g", "g"]),
                    ..package("c1", "P", &[])
                },
            ),
            vec![field("incompatible_group_ids[1]")],
        ),
        (
            "bad request id",
            CreateAccessPackageRequest {
                request_id: "tab\there".into(),
                ..create("p", package("c1", "P", &[]))
            },
            vec!["request_id".into()],
        ),
    ];
    for (case, request, fields) in cases {
        let status = expect_code(
            packages.create_access_package(request).await,
            Code::InvalidArgument,
        );
        assert_eq!(
            violated_fields(&status),
            fields,
            "case {case:?}: {status:?}"
        );
    }

    // The exact field the brief names: the first role from another catalog.
    expect_invalid(
        packages
            .create_access_package(create("p", package("c2", "P", &[("r1", "member")])))
            .await,
        &["access_package.resource_roles[0].resource_id"],
    );
    let status = expect_code(
        packages
            .create_access_package(create("existing", package("c1", "P", &[])))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        resource_info(&status),
        Some(("access_package".into(), "existing".into()))
    );

    server.assert_no_writes_since(mark).await;
    assert_eq!(
        package_ids(&mut packages, ListAccessPackagesRequest::default()).await,
        ["existing"]
    );
}

#[tokio::test]
async fn unknown_catalogs_resources_and_roles_are_not_found() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    server
        .create_package("p1", package("c1", "P1", &[("r1", "member")]))
        .await;
    let mut packages = server.packages(ADMIN);
    let mark = server.write_mark().await;

    expect_not_found(
        packages
            .create_access_package(create("p", package("nope", "P", &[])))
            .await,
        "catalog",
        "nope",
    );
    expect_not_found(
        packages
            .create_access_package(create("p", package("c1", "P", &[("ghost", "member")])))
            .await,
        "resource",
        "ghost",
    );
    expect_not_found(
        packages
            .create_access_package(create("p", package("c1", "P", &[("r1", "admin")])))
            .await,
        "resource_role",
        "r1/admin",
    );
    // The same checks hold on update.
    expect_not_found(
        packages
            .update_access_package(update(
                AccessPackage {
                    resource_roles: vec![role_ref("r2", "writer")],
                    ..patch("p1")
                },
                &[],
            ))
            .await,
        "resource_role",
        "r2/writer",
    );
    expect_invalid(
        packages
            .update_access_package(update(
                AccessPackage {
                    resource_roles: vec![role_ref("r9", "member")],
                    ..patch("p1")
                },
                &[],
            ))
            .await,
        &["access_package.resource_roles[0].resource_id"],
    );
    expect_not_found(
        packages
            .update_access_package(update(
                AccessPackage {
                    display_name: "X".into(),
                    ..patch("ghost")
                },
                &[],
            ))
            .await,
        "access_package",
        "ghost",
    );
    // The catalog is immutable.
    expect_invalid(
        packages
            .update_access_package(update(
                AccessPackage {
                    catalog_id: "c2".into(),
                    ..patch("p1")
                },
                &["catalog_id"],
            ))
            .await,
        &["update_mask"],
    );
    expect_invalid(
        packages
            .update_access_package(update(
                AccessPackage {
                    display_name: String::new(),
                    ..patch("p1")
                },
                &["display_name"],
            ))
            .await,
        &["access_package.display_name"],
    );
    expect_invalid(
        packages
            .get_access_package(GetAccessPackageRequest { id: "p/1".into() })
            .await,
        &["id"],
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(
        get_package(&mut packages, "p1").await.resource_roles,
        [role_ref("r1", "member")]
    );
}

// ------------------------------------------------- separation of duties

#[tokio::test]
async fn incompatible_packages_and_groups_must_exist_and_exclude_the_package_itself() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    server.create_group("auditors").await;
    server.create_package("p1", package("c1", "P1", &[])).await;
    let mut packages = server.packages(ADMIN);
    let mark = server.write_mark().await;

    let with = |package_ids: &[&str], group_ids: &[&str]| AccessPackage {
        incompatible_package_ids: ids(package_ids),
        incompatible_group_ids: ids(group_ids),
        ..package("c1", "P2", &[])
    };
    expect_not_found(
        packages
            .create_access_package(create("p2", with(&["p1", "ghost"], &[])))
            .await,
        "access_package",
        "ghost",
    );
    expect_not_found(
        packages
            .create_access_package(create("p2", with(&[], &["nobody"])))
            .await,
        "group",
        "nobody",
    );
    // Not the package itself, on create ...
    expect_invalid(
        packages
            .create_access_package(create("p2", with(&["p1", "p2"], &[])))
            .await,
        &["access_package.incompatible_package_ids[1]"],
    );
    // ... nor on update.
    expect_invalid(
        packages
            .update_access_package(update(
                AccessPackage {
                    incompatible_package_ids: ids(&["p1"]),
                    ..patch("p1")
                },
                &[],
            ))
            .await,
        &["access_package.incompatible_package_ids[0]"],
    );
    server.assert_no_writes_since(mark).await;

    let p2 = packages
        .create_access_package(create("p2", with(&["p1"], &["auditors"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.incompatible_package_ids, ["p1"]);
    assert_eq!(p2.incompatible_group_ids, ["auditors"]);

    // What p2 names cannot be deleted while it does.
    let mark = server.write_mark().await;
    let status = expect_code(
        packages.delete_access_package(delete("p1")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        precondition_violations(&status),
        [("IN_USE".to_string(), "access_package/p2".to_string())]
    );
    let status = expect_code(
        server
            .directory(ADMIN)
            .delete_group(DeleteGroupRequest {
                id: "auditors".into(),
                etag: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        precondition_violations(&status),
        [("IN_USE".to_string(), "access_package/p2".to_string())]
    );
    server.assert_no_writes_since(mark).await;

    // Dropping the references releases them.
    packages
        .update_access_package(update(
            patch("p2"),
            &["incompatible_package_ids", "incompatible_group_ids"],
        ))
        .await
        .unwrap();
    packages.delete_access_package(delete("p1")).await.unwrap();
    server
        .directory(ADMIN)
        .delete_group(DeleteGroupRequest {
            id: "auditors".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        package_ids(&mut packages, ListAccessPackagesRequest::default()).await,
        ["p2"]
    );
}

// ----------------------------------------------------------------- listing

#[tokio::test]
async fn list_access_packages_filters() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    server
        .create_package("a-sales", package("c1", "Sales", &[("r1", "member")]))
        .await;
    server
        .create_package(
            "b-hidden",
            AccessPackage {
                hidden: true,
                ..package("c1", "Hidden", &[("r1", "owner"), ("r2", "reader")])
            },
        )
        .await;
    server
        .create_package("c-wiki", package("c1", "Wiki", &[("r2", "reader")]))
        .await;
    server
        .create_package("d-other", package("c2", "Other", &[("r9", "member")]))
        .await;
    server
        .create_package(
            "e-empty",
            AccessPackage {
                hidden: true,
                ..package("c2", "Empty", &[])
            },
        )
        .await;
    let mut packages = server.packages(ADMIN);
    let list =
        |catalog_id: &str, resource_id: &str, exclude_hidden: bool| ListAccessPackagesRequest {
            catalog_id: catalog_id.into(),
            resource_id: resource_id.into(),
            exclude_hidden,
            ..Default::default()
        };

    let cases: Vec<(&str, ListAccessPackagesRequest, &[&str])> = vec![
        (
            "all",
            list("", "", false),
            &["a-sales", "b-hidden", "c-wiki", "d-other", "e-empty"],
        ),
        (
            "exclude_hidden",
            list("", "", true),
            &["a-sales", "c-wiki", "d-other"],
        ),
        (
            "catalog c1",
            list("c1", "", false),
            &["a-sales", "b-hidden", "c-wiki"],
        ),
        ("catalog c2", list("c2", "", false), &["d-other", "e-empty"]),
        ("catalog c2, visible", list("c2", "", true), &["d-other"]),
        (
            "resource r1",
            list("", "r1", false),
            &["a-sales", "b-hidden"],
        ),
        (
            "resource r2",
            list("", "r2", false),
            &["b-hidden", "c-wiki"],
        ),
        ("resource r2, visible", list("", "r2", true), &["c-wiki"]),
        (
            "resource and its catalog",
            list("c1", "r1", false),
            &["a-sales", "b-hidden"],
        ),
        ("resource and another catalog", list("c2", "r1", false), &[]),
        ("general", list("general", "", false), &[]),
    ];
    for (case, request, expected) in cases {
        assert_eq!(
            package_ids(&mut packages, request).await,
            expected,
            "case {case:?}"
        );
    }
    expect_not_found(
        packages.list_access_packages(list("nope", "", false)).await,
        "catalog",
        "nope",
    );
    expect_not_found(
        packages.list_access_packages(list("", "nope", false)).await,
        "resource",
        "nope",
    );
    expect_invalid(
        packages
            .list_access_packages(list("", "no pe", false))
            .await,
        &["resource_id"],
    );
    expect_invalid(
        packages.list_access_packages(list("c 1", "", false)).await,
        &["catalog_id"],
    );
}

#[tokio::test]
async fn list_access_packages_pages_with_filters() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    for n in [6, 3, 1, 7, 5, 2, 4] {
        server
            .create_package(
                &format!("p{n}"),
                AccessPackage {
                    hidden: n == 4,
                    ..package("c1", &format!("P{n}"), &[("r1", "member")])
                },
            )
            .await;
    }
    let packages = server.packages(ADMIN);
    let listing = |exclude_hidden: bool| {
        let packages = packages.clone();
        move |page_token: String| {
            let mut packages = packages.clone();
            async move {
                let page = packages
                    .list_access_packages(ListAccessPackagesRequest {
                        page_size: 3,
                        page_token,
                        resource_id: "r1".into(),
                        exclude_hidden,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok((
                    page.access_packages.into_iter().map(|p| p.id).collect(),
                    page.next_page_token,
                ))
            }
        }
    };
    assert_pages(
        &pages(listing(false)).await,
        &[3, 3, 1],
        &["p1", "p2", "p3", "p4", "p5", "p6", "p7"],
    );
    assert_pages(
        &pages(listing(true)).await,
        &[3, 3],
        &["p1", "p2", "p3", "p5", "p6", "p7"],
    );

    // A token from one listing is refused by another.
    let mut packages = packages;
    let first = packages
        .list_access_packages(ListAccessPackagesRequest {
            page_size: 3,
            resource_id: "r1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    expect_invalid(
        packages
            .list_access_packages(ListAccessPackagesRequest {
                page_size: 3,
                page_token: first.next_page_token,
                resource_id: "r1".into(),
                exclude_hidden: true,
                ..Default::default()
            })
            .await,
        &["page_token"],
    );
    expect_invalid(
        packages
            .list_access_packages(ListAccessPackagesRequest {
                page_size: -3,
                ..Default::default()
            })
            .await,
        &["page_size"],
    );
}

#[tokio::test]
async fn create_access_package_is_idempotent_by_request_id() {
    let server = TestServer::start_with_admins(CALLERS).await;
    setup(&server).await;
    let request = |name: &str| CreateAccessPackageRequest {
        request_id: "req-7".into(),
        ..create("", package("c1", name, &[("r1", "member")]))
    };
    let mut alice = server.packages("alice");
    let first = alice
        .create_access_package(request("Sales"))
        .await
        .unwrap()
        .into_inner();
    let mark = server.write_mark().await;
    assert_eq!(
        alice
            .create_access_package(request("Sales"))
            .await
            .unwrap()
            .into_inner(),
        first
    );
    expect_invalid(
        alice.create_access_package(request("Changed")).await,
        &["request_id"],
    );
    server.assert_no_writes_since(mark).await;

    let bobs = server
        .packages("bob")
        .create_access_package(request("Sales"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, first.id);
    assert_eq!(bobs.info.unwrap().created_by, "bob");
    let mut expected = vec![first.id, bobs.id];
    expected.sort();
    assert_eq!(
        package_ids(&mut alice, ListAccessPackagesRequest::default()).await,
        expected
    );
}
