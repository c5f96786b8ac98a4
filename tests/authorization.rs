//! The authorization matrix, over real gRPC: every role × every RPC is
//! allowed or denied as Entra entitlement management's roles say, and every
//! List shows each role exactly what it may see.
//!
//! Each role is held by its own user. Catalog roles are held in "c1" (the
//! catalog the matrix acts on); "owner2" owns "c2" to show that catalog
//! roles do not reach across catalogs. Rows that write act on fresh objects
//! per role, so every allowed call succeeds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use common::world::{approval, never, policy, stage, user_approver};
use common::*;
use entitlements::api::rpc::Rpc;
use entitlements::config::ServicePrincipal;
use entitlements::pb::*;
use tokio::task::JoinSet;
use tonic::{Code, Status};

// ------------------------------------------------------------------- roles

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Granted ADMIN_ROLE_GLOBAL_ADMIN (not a configured admin).
    GlobalAdmin,
    CatalogCreator,
    /// The c1 roles.
    Owner,
    Reader,
    PackageManager,
    AssignmentManager,
    /// No role; a requestor in c1 (and c2).
    Plain,
    /// Owner of c2, not of c1.
    OtherOwner,
    /// A service principal configured with the directory-sync role (an
    /// identity system provisioning users and groups).
    DirectorySync,
}

use Role::*;

impl Role {
    const ALL: [Role; 9] = [
        GlobalAdmin,
        CatalogCreator,
        Owner,
        Reader,
        PackageManager,
        AssignmentManager,
        Plain,
        OtherOwner,
        DirectorySync,
    ];

    /// The user who holds the role.
    fn user(self) -> &'static str {
        match self {
            GlobalAdmin => "ga",
            CatalogCreator => "creator",
            Owner => "owner",
            Reader => "reader",
            PackageManager => "pkg-manager",
            AssignmentManager => "asg-manager",
            Plain => "plain",
            OtherOwner => "owner2",
            DirectorySync => "directory-sync",
        }
    }

    /// The role assignment: (role, catalog; "" for tenant-wide).
    fn grant(self) -> Option<(AdminRole, &'static str)> {
        match self {
            GlobalAdmin => Some((AdminRole::GlobalAdmin, "")),
            CatalogCreator => Some((AdminRole::CatalogCreator, "")),
            Owner => Some((AdminRole::CatalogOwner, C1)),
            Reader => Some((AdminRole::CatalogReader, C1)),
            PackageManager => Some((AdminRole::AccessPackageManager, C1)),
            AssignmentManager => Some((AdminRole::AccessPackageAssignmentManager, C1)),
            Plain => None,
            OtherOwner => Some((AdminRole::CatalogOwner, C2)),
            DirectorySync => None,
        }
    }

    /// The role this user holds in c1, if any.
    fn c1_role(self) -> Option<AdminRole> {
        self.grant()
            .filter(|(_, catalog)| *catalog == C1)
            .map(|(role, _)| role)
    }
}

/// Who may call a row's RPC.
const EVERYONE: &[Role] = &Role::ALL;
const GLOBAL_ADMIN: &[Role] = &[GlobalAdmin];
/// Create, update and delete users and groups, and their memberships.
const DIRECTORY_SYNCERS: &[Role] = &[GlobalAdmin, DirectorySync];
const CREATORS: &[Role] = &[GlobalAdmin, CatalogCreator];
/// Read c1 and its records.
const C1_READERS: &[Role] = &[
    GlobalAdmin,
    Owner,
    Reader,
    PackageManager,
    AssignmentManager,
];
/// Manage c1 itself: the catalog, its resources and its role holders.
const C1_OWNERS: &[Role] = &[GlobalAdmin, Owner];
/// Manage c1's packages and policies.
const C1_PACKAGE_MANAGERS: &[Role] = &[GlobalAdmin, Owner, PackageManager];
/// Assign, remove and cancel for others in c1.
const C1_ASSIGNERS: &[Role] = &[GlobalAdmin, Owner, PackageManager, AssignmentManager];
/// Approving is for the approvers a policy names, never for a role.
const NOBODY: &[Role] = &[];

// ---------------------------------------------------------------- fixture

const C1: &str = "c1";
const C2: &str = "c2";
/// A catalog the catalog creator made (and so owns).
const C3: &str = "c3";
/// Requestors in c1 and c2 who hold no role: "plain" is a role of the
/// matrix, "bystander" is the someone else whose records others act on.
const BYSTANDER: &str = "bystander";
const APPROVER: &str = "approver";

/// A policy into `package` for every member user, without approval.
fn open_policy(id: &str, package: &str) -> AssignmentPolicy {
    policy(id, package, AllowedTargetScope::AllMemberUsers, never())
}

/// Like [`open_policy`], but USER_ADD waits for [`APPROVER`].
fn approval_policy(id: &str, package: &str) -> AssignmentPolicy {
    AssignmentPolicy {
        approval_settings: Some(approval(vec![stage(vec![user_approver(APPROVER)])], false)),
        ..open_policy(id, package)
    }
}

fn add_request(kind: RequestType, policy: &str, target: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: kind as i32,
        assignment_policy_id: policy.into(),
        target_id: target.into(),
        ..Default::default()
    }
}

/// `ADMIN` assigns `target` through `policy`; returns the delivered request.
async fn admin_add(server: &TestServer, policy: &str, target: &str) -> AssignmentRequest {
    let request = server
        .request(ADMIN, add_request(RequestType::AdminAdd, policy, target))
        .await
        .unwrap_or_else(|s| panic!("assign {target} through {policy}: {s:?}"));
    assert_eq!(request.state(), RequestState::Delivered, "{request:?}");
    request
}

/// `user` asks for access through `policy`.
async fn user_add(server: &TestServer, user: &str, policy: &str) -> AssignmentRequest {
    server
        .request_add(user, policy)
        .await
        .unwrap_or_else(|s| panic!("{user} requests through {policy}: {s:?}"))
}

/// The directory, the role holders, and requestors in two catalogs:
///
/// - c1: resource r1, packages p1 (policy pol1, no approval) and p1a (pol1a,
///   approval by [`APPROVER`]);
/// - c2: resource r2, package p2 (pol2, no approval);
/// - c3: empty, created by the catalog creator;
/// - "plain" and "bystander" each hold p1 and p2 and wait for p1a.
///
/// Requests are keyed "<target>/<package>".
struct World {
    server: TestServer,
    requests: BTreeMap<String, AssignmentRequest>,
}

impl World {
    async fn new() -> Self {
        let server = TestServer::start_with_settings(|settings| {
            settings.auth.service_principals.push(ServicePrincipal {
                id: DirectorySync.user().into(),
                roles: vec!["directory-sync".into()],
            });
        })
        .await;
        for role in Role::ALL {
            server.add_member_user(role.user()).await;
        }
        for user in [BYSTANDER, APPROVER] {
            server.add_member_user(user).await;
        }
        server.add_group("g1", &[BYSTANDER]).await;
        server
            .add_organization("o1", "o1.example", ConnectedOrganizationState::Configured)
            .await;

        for (catalog, resource, packages) in
            [(C1, "r1", &["p1", "p1a"][..]), (C2, "r2", &["p2"][..])]
        {
            server.add_catalog(catalog, false).await;
            server.add_resource(resource, catalog, "group").await;
            for package in packages {
                server.add_package(package, catalog, &[resource]).await;
            }
        }
        server.add_policy(open_policy("pol1", "p1")).await;
        server.add_policy(approval_policy("pol1a", "p1a")).await;
        server.add_policy(open_policy("pol2", "p2")).await;

        for role in Role::ALL {
            if let Some((admin_role, catalog)) = role.grant() {
                server.grant_role(admin_role, role.user(), catalog).await;
            }
        }
        server
            .catalogs(CatalogCreator.user())
            .create_catalog(CreateCatalogRequest {
                catalog: Some(catalog("C3")),
                catalog_id: C3.into(),
                request_id: String::new(),
            })
            .await
            .expect("the catalog creator creates c3");

        let mut requests = BTreeMap::new();
        for user in [Plain.user(), BYSTANDER] {
            for (package, policy) in [("p1", "pol1"), ("p1a", "pol1a"), ("p2", "pol2")] {
                let request = user_add(&server, user, policy).await;
                requests.insert(format!("{user}/{package}"), request);
            }
        }
        Self { server, requests }
    }

    fn request(&self, key: &str) -> &AssignmentRequest {
        &self.requests[key]
    }
}

// ------------------------------------------------------------ the matrix

/// One row of the matrix: a call of `rpc` (as `case` names it), the roles
/// allowed to make it, and how to make it. Calls that write act on objects
/// made for the calling role (ids ending in the role's user id), in c1
/// unless named.
struct Row {
    case: &'static str,
    rpc: Rpc,
    allowed: &'static [Role],
    call: fn(Caller) -> CallFuture,
}

type CallFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// A row's call: `|c, s, who| body` runs `body` with the [`Caller`] `c`,
/// the server `s` and the calling user `who`.
macro_rules! row {
    ($case:literal, $rpc:ident, $allowed:expr, |$c:ident, $s:ident, $who:ident| $body:expr) => {
        Row {
            case: $case,
            rpc: Rpc::$rpc,
            allowed: $allowed,
            call: |$c: Caller| -> CallFuture {
                Box::pin(async move {
                    #[allow(unused_variables)]
                    let $s = &$c.matrix.world.server;
                    #[allow(unused_variables)]
                    let $who = $c.role.user();
                    $body
                })
            },
        }
    };
}

/// Every row: each RPC, some in several cases (one's own records and
/// others', catalog and tenant roles).
fn matrix() -> Vec<Row> {
    vec![
        row!("CreateUser", CreateUser, DIRECTORY_SYNCERS, |c, s, who| s
            .directory(who)
            .create_user(CreateUserRequest {
                user: Some(user("New")),
                user_id: c.fresh("nu"),
                request_id: String::new(),
            })
            .await
            .map(drop)),
        row!("GetUser", GetUser, EVERYONE, |c, s, who| s
            .directory(who)
            .get_user(GetUserRequest {
                id: BYSTANDER.into(),
            })
            .await
            .map(drop)),
        row!("ListUsers", ListUsers, EVERYONE, |c, s, who| s
            .directory(who)
            .list_users(ListUsersRequest::default())
            .await
            .map(drop)),
        row!("UpdateUser", UpdateUser, DIRECTORY_SYNCERS, |c, s, who| {
            let id = c.fresh("uu");
            s.add_member_user(&id).await;
            s.directory(who)
                .update_user(UpdateUserRequest {
                    user: Some(User {
                        id,
                        ..user("Renamed")
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop)
        }),
        row!("DeleteUser", DeleteUser, DIRECTORY_SYNCERS, |c, s, who| {
            let id = c.fresh("du");
            s.add_member_user(&id).await;
            s.directory(who)
                .delete_user(DeleteUserRequest {
                    id,
                    etag: String::new(),
                })
                .await
                .map(drop)
        }),
        row!(
            "CreateGroup",
            CreateGroup,
            DIRECTORY_SYNCERS,
            |c, s, who| s
                .directory(who)
                .create_group(CreateGroupRequest {
                    group: Some(group("New")),
                    group_id: c.fresh("ng"),
                    request_id: String::new(),
                })
                .await
                .map(drop)
        ),
        row!("GetGroup", GetGroup, EVERYONE, |c, s, who| s
            .directory(who)
            .get_group(GetGroupRequest { id: "g1".into() })
            .await
            .map(drop)),
        row!("ListGroups", ListGroups, EVERYONE, |c, s, who| s
            .directory(who)
            .list_groups(ListGroupsRequest::default())
            .await
            .map(drop)),
        row!(
            "UpdateGroup",
            UpdateGroup,
            DIRECTORY_SYNCERS,
            |c, s, who| {
                let id = c.fresh("ug");
                s.create_group(&id).await;
                s.directory(who)
                    .update_group(UpdateGroupRequest {
                        group: Some(Group {
                            id,
                            ..group("Renamed")
                        }),
                        update_mask: mask(&["display_name"]),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "DeleteGroup",
            DeleteGroup,
            DIRECTORY_SYNCERS,
            |c, s, who| {
                let id = c.fresh("dg");
                s.create_group(&id).await;
                s.directory(who)
                    .delete_group(DeleteGroupRequest {
                        id,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "AddGroupMember",
            AddGroupMember,
            DIRECTORY_SYNCERS,
            |c, s, who| {
                let id = c.fresh("ag");
                s.create_group(&id).await;
                s.directory(who)
                    .add_group_member(AddGroupMemberRequest {
                        group_id: id,
                        member: Some(add_group_member_request::Member::UserId(BYSTANDER.into())),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "RemoveGroupMember",
            RemoveGroupMember,
            DIRECTORY_SYNCERS,
            |c, s, who| {
                let id = c.fresh("rg");
                s.add_group(&id, &[BYSTANDER]).await;
                s.directory(who)
                    .remove_group_member(RemoveGroupMemberRequest {
                        group_id: id,
                        member: Some(remove_group_member_request::Member::UserId(
                            BYSTANDER.into(),
                        )),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "CreateConnectedOrganization",
            CreateConnectedOrganization,
            GLOBAL_ADMIN,
            |c, s, who| {
                let id = c.fresh("no");
                s.directory(who)
                    .create_connected_organization(CreateConnectedOrganizationRequest {
                        connected_organization: Some(organization("New", &format!("{id}.example"))),
                        connected_organization_id: id,
                        request_id: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "GetConnectedOrganization",
            GetConnectedOrganization,
            EVERYONE,
            |c, s, who| s
                .directory(who)
                .get_connected_organization(GetConnectedOrganizationRequest { id: "o1".into() })
                .await
                .map(drop)
        ),
        row!(
            "ListConnectedOrganizations",
            ListConnectedOrganizations,
            EVERYONE,
            |c, s, who| s
                .directory(who)
                .list_connected_organizations(ListConnectedOrganizationsRequest::default())
                .await
                .map(drop)
        ),
        row!(
            "UpdateConnectedOrganization",
            UpdateConnectedOrganization,
            GLOBAL_ADMIN,
            |c, s, who| {
                let id = c.fresh("uo");
                let domain = format!("{id}.example");
                s.create_organization(&id, organization("Org", &domain))
                    .await;
                s.directory(who)
                    .update_connected_organization(UpdateConnectedOrganizationRequest {
                        connected_organization: Some(ConnectedOrganization {
                            id,
                            ..organization("Renamed", &domain)
                        }),
                        update_mask: mask(&["display_name"]),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "DeleteConnectedOrganization",
            DeleteConnectedOrganization,
            GLOBAL_ADMIN,
            |c, s, who| {
                let id = c.fresh("xo");
                s.create_organization(&id, organization("Org", &format!("{id}.example")))
                    .await;
                s.directory(who)
                    .delete_connected_organization(DeleteConnectedOrganizationRequest {
                        id,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        // Creates a catalog, then updates it: its creator owns it.
        row!(
            "CreateCatalogThenUpdateIt",
            CreateCatalog,
            CREATORS,
            |c, s, who| {
                let id = c.fresh("nc");
                let mut catalogs = s.catalogs(who);
                catalogs
                    .create_catalog(CreateCatalogRequest {
                        catalog: Some(catalog("New")),
                        catalog_id: id.clone(),
                        request_id: String::new(),
                    })
                    .await?;
                catalogs.update_catalog(rename_catalog(&id)).await.map(drop)
            }
        ),
        row!("GetCatalog", GetCatalog, C1_READERS, |c, s, who| s
            .catalogs(who)
            .get_catalog(GetCatalogRequest { id: C1.into() })
            .await
            .map(drop)),
        row!("ListCatalogs", ListCatalogs, EVERYONE, |c, s, who| s
            .catalogs(who)
            .list_catalogs(ListCatalogsRequest::default())
            .await
            .map(drop)),
        row!("UpdateCatalog", UpdateCatalog, C1_OWNERS, |c, s, who| s
            .catalogs(who)
            .update_catalog(rename_catalog(C1))
            .await
            .map(drop)),
        // A fresh catalog, in which the c1 role holders hold their c1 roles.
        row!("DeleteCatalog", DeleteCatalog, C1_OWNERS, |c, s, who| {
            let id = c.fresh("dc");
            s.create_catalog(&id).await;
            for holder in Role::ALL {
                if let Some(role) = holder.c1_role() {
                    s.grant_role(role, holder.user(), &id).await;
                }
            }
            s.catalogs(who)
                .delete_catalog(DeleteCatalogRequest {
                    id,
                    etag: String::new(),
                })
                .await
                .map(drop)
        }),
        row!("CreateResource", CreateResource, C1_OWNERS, |c, s, who| {
            let id = c.fresh("nr");
            s.catalogs(who)
                .create_resource(CreateResourceRequest {
                    resource: Some(resource(C1, &id, &["member"])),
                    resource_id: id,
                    request_id: String::new(),
                })
                .await
                .map(drop)
        }),
        row!("GetResource", GetResource, C1_READERS, |c, s, who| s
            .catalogs(who)
            .get_resource(GetResourceRequest { id: "r1".into() })
            .await
            .map(drop)),
        row!("ListResources", ListResources, EVERYONE, |c, s, who| s
            .catalogs(who)
            .list_resources(ListResourcesRequest::default())
            .await
            .map(drop)),
        row!("UpdateResource", UpdateResource, C1_OWNERS, |c, s, who| {
            let id = c.fresh("ur");
            s.add_resource(&id, C1, "group").await;
            s.catalogs(who)
                .update_resource(UpdateResourceRequest {
                    resource: Some(Resource {
                        id,
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop)
        }),
        row!("DeleteResource", DeleteResource, C1_OWNERS, |c, s, who| {
            let id = c.fresh("xr");
            s.add_resource(&id, C1, "group").await;
            s.catalogs(who)
                .delete_resource(DeleteResourceRequest {
                    id,
                    etag: String::new(),
                })
                .await
                .map(drop)
        }),
        row!("GrantCatalogRole", GrantRole, C1_OWNERS, |c, s, who| {
            let id = c.fresh("gc");
            s.add_member_user(&id).await;
            s.catalogs(who)
                .grant_role(grant(AdminRole::CatalogReader, &id, C1))
                .await
                .map(drop)
        }),
        row!("RevokeCatalogRole", RevokeRole, C1_OWNERS, |c, s, who| {
            let id = c.fresh("rc");
            s.add_member_user(&id).await;
            s.grant_role(AdminRole::CatalogReader, &id, C1).await;
            s.catalogs(who)
                .revoke_role(revoke(AdminRole::CatalogReader, &id, C1))
                .await
                .map(drop)
        }),
        row!("GrantTenantRole", GrantRole, GLOBAL_ADMIN, |c, s, who| {
            let id = c.fresh("gt");
            s.add_member_user(&id).await;
            s.catalogs(who)
                .grant_role(grant(AdminRole::CatalogCreator, &id, ""))
                .await
                .map(drop)
        }),
        row!("RevokeTenantRole", RevokeRole, GLOBAL_ADMIN, |c, s, who| {
            let id = c.fresh("rt");
            s.add_member_user(&id).await;
            s.grant_role(AdminRole::CatalogCreator, &id, "").await;
            s.catalogs(who)
                .revoke_role(revoke(AdminRole::CatalogCreator, &id, ""))
                .await
                .map(drop)
        }),
        row!(
            "ListRoleAssignments",
            ListRoleAssignments,
            EVERYONE,
            |c, s, who| s
                .catalogs(who)
                .list_role_assignments(ListRoleAssignmentsRequest::default())
                .await
                .map(drop)
        ),
        row!(
            "CreateAccessPackage",
            CreateAccessPackage,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("np");
                s.packages(who)
                    .create_access_package(CreateAccessPackageRequest {
                        access_package: Some(package(C1, "New", &[("r1", "member")])),
                        access_package_id: id,
                        request_id: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "GetAccessPackage",
            GetAccessPackage,
            C1_READERS,
            |c, s, who| s
                .packages(who)
                .get_access_package(GetAccessPackageRequest { id: "p1".into() })
                .await
                .map(drop)
        ),
        row!(
            "ListAccessPackages",
            ListAccessPackages,
            EVERYONE,
            |c, s, who| s
                .packages(who)
                .list_access_packages(ListAccessPackagesRequest::default())
                .await
                .map(drop)
        ),
        row!(
            "UpdateAccessPackage",
            UpdateAccessPackage,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("up");
                s.add_package(&id, C1, &["r1"]).await;
                s.packages(who)
                    .update_access_package(UpdateAccessPackageRequest {
                        access_package: Some(AccessPackage {
                            id,
                            display_name: "Renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["display_name"]),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "DeleteAccessPackage",
            DeleteAccessPackage,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("xp");
                s.add_package(&id, C1, &["r1"]).await;
                s.packages(who)
                    .delete_access_package(DeleteAccessPackageRequest {
                        id,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "CreateAssignmentPolicy",
            CreateAssignmentPolicy,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("npol");
                s.policies(who)
                    .create_assignment_policy(CreateAssignmentPolicyRequest {
                        assignment_policy: Some(open_policy(&id, "p1")),
                        assignment_policy_id: id,
                        request_id: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "GetAssignmentPolicy",
            GetAssignmentPolicy,
            C1_READERS,
            |c, s, who| s
                .policies(who)
                .get_assignment_policy(GetAssignmentPolicyRequest { id: "pol1".into() })
                .await
                .map(drop)
        ),
        row!(
            "ListAssignmentPolicies",
            ListAssignmentPolicies,
            EVERYONE,
            |c, s, who| s
                .policies(who)
                .list_assignment_policies(ListAssignmentPoliciesRequest::default())
                .await
                .map(drop)
        ),
        row!(
            "UpdateAssignmentPolicy",
            UpdateAssignmentPolicy,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("upol");
                s.add_policy(open_policy(&id, "p1")).await;
                s.policies(who)
                    .update_assignment_policy(UpdateAssignmentPolicyRequest {
                        assignment_policy: Some(AssignmentPolicy {
                            id,
                            display_name: "Renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["display_name"]),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "DeleteAssignmentPolicy",
            DeleteAssignmentPolicy,
            C1_PACKAGE_MANAGERS,
            |c, s, who| {
                let id = c.fresh("xpol");
                s.add_policy(open_policy(&id, "p1")).await;
                s.policies(who)
                    .delete_assignment_policy(DeleteAssignmentPolicyRequest {
                        id,
                        etag: String::new(),
                    })
                    .await
                    .map(drop)
            }
        ),
        row!(
            "GetCompiledPolicy",
            GetCompiledPolicy,
            C1_READERS,
            |c, s, who| s
                .policies(who)
                .get_compiled_policy(GetCompiledPolicyRequest { id: "pol1".into() })
                .await
                .map(drop)
        ),
        row!(
            "CreateUserAddForSelf",
            CreateAssignmentRequest,
            EVERYONE,
            |c, s, who| s
                .request(who, add_request(RequestType::UserAdd, "polself", ""))
                .await
                .map(drop)
        ),
        row!(
            "CreateAdminAddForOther",
            CreateAssignmentRequest,
            C1_ASSIGNERS,
            |c, s, who| {
                let target = c.fresh("aa");
                s.add_member_user(&target).await;
                s.request(who, add_request(RequestType::AdminAdd, "pol1", &target))
                    .await
                    .map(drop)
            }
        ),
        row!(
            "CreateAdminRemoveForOther",
            CreateAssignmentRequest,
            C1_ASSIGNERS,
            |c, s, who| {
                let target = c.fresh("ar");
                s.add_member_user(&target).await;
                let added = admin_add(s, "pol1", &target).await;
                s.request(
                    who,
                    AssignmentRequest {
                        r#type: RequestType::AdminRemove as i32,
                        assignment_id: added.assignment_id,
                        ..Default::default()
                    },
                )
                .await
                .map(drop)
            }
        ),
        row!(
            "GetOwnAssignmentRequest",
            GetAssignmentRequest,
            EVERYONE,
            |c, s, who| get_request(s, who, &c.own().id).await
        ),
        row!(
            "GetOthersAssignmentRequest",
            GetAssignmentRequest,
            C1_READERS,
            |c, s, who| get_request(s, who, &c.others_request().id).await
        ),
        row!(
            "ListAssignmentRequests",
            ListAssignmentRequests,
            EVERYONE,
            |c, s, who| s
                .requests(who)
                .list_assignment_requests(ListAssignmentRequestsRequest::default())
                .await
                .map(drop)
        ),
        row!(
            "CancelOwnAssignmentRequest",
            CancelAssignmentRequest,
            EVERYONE,
            |c, s, who| {
                let pending = user_add(s, who, "polcancel").await;
                s.cancel_request(who, &pending.id).await.map(drop)
            }
        ),
        row!(
            "CancelOthersAssignmentRequest",
            CancelAssignmentRequest,
            C1_ASSIGNERS,
            |c, s, who| {
                let requestor = c.fresh("co");
                s.add_member_user(&requestor).await;
                let pending = user_add(s, &requestor, "polcancel").await;
                s.cancel_request(who, &pending.id).await.map(drop)
            }
        ),
        // Someone else's request, waiting for [`APPROVER`].
        row!(
            "ApproveAssignmentRequest",
            ApproveAssignmentRequest,
            NOBODY,
            |c, s, who| {
                let requestor = c.fresh("ap");
                s.add_member_user(&requestor).await;
                let pending = user_add(s, &requestor, "polcancel").await;
                s.decide(who, &pending.id, 1, true).await.map(drop)
            }
        ),
        row!(
            "DenyAssignmentRequest",
            DenyAssignmentRequest,
            NOBODY,
            |c, s, who| {
                let requestor = c.fresh("dn");
                s.add_member_user(&requestor).await;
                let pending = user_add(s, &requestor, "polcancel").await;
                s.decide(who, &pending.id, 1, false).await.map(drop)
            }
        ),
        row!(
            "ListPendingApprovals",
            ListPendingApprovals,
            EVERYONE,
            |c, s, who| s
                .requests(who)
                .list_pending_approvals(ListPendingApprovalsRequest::default())
                .await
                .map(drop)
        ),
        row!("GetOwnAssignment", GetAssignment, EVERYONE, |c, s, who| {
            get_assignment(s, who, &c.own().assignment_id).await
        }),
        row!(
            "GetOthersAssignment",
            GetAssignment,
            C1_READERS,
            |c, s, who| get_assignment(s, who, c.others_assignment()).await
        ),
        row!("ListAssignments", ListAssignments, EVERYONE, |c, s, who| s
            .assignments(who)
            .list_assignments(ListAssignmentsRequest::default())
            .await
            .map(drop)),
        row!(
            "ListOwnUserGrants",
            ListUserGrants,
            EVERYONE,
            |c, s, who| user_grants(s, who, who).await
        ),
        row!(
            "ListOthersUserGrants",
            ListUserGrants,
            GLOBAL_ADMIN,
            |c, s, who| user_grants(s, who, BYSTANDER).await
        ),
        row!("GetSettings", GetSettings, EVERYONE, |c, s, who| s
            .settings(who)
            .get_settings(GetSettingsRequest {})
            .await
            .map(drop)),
        row!(
            "UpdateSettings",
            UpdateSettings,
            GLOBAL_ADMIN,
            |c, s, who| s
                .settings(who)
                .update_settings(UpdateSettingsRequest {
                    settings: Some(TenantSettings {
                        delete_after: Some(common::world::days(10)),
                        ..Default::default()
                    }),
                    update_mask: mask(&["delete_after"]),
                })
                .await
                .map(drop)
        ),
        row!("BackupStore", BackupStore, GLOBAL_ADMIN, |c, s, who| s
            .settings(who)
            .backup_store(BackupStoreRequest {})
            .await
            .map(drop)),
        row!(
            "VerifyAuditLog",
            VerifyAuditLog,
            GLOBAL_ADMIN,
            |c, s, who| s
                .audit(who)
                .verify_audit_log(VerifyAuditLogRequest {})
                .await
                .map(drop)
        ),
        row!(
            "PackageAccessReport",
            PackageAccessReport,
            C1_READERS,
            |c, s, who| s
                .reports(who)
                .package_access_report(PackageAccessReportRequest {
                    access_package_id: "p1".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
        row!(
            "ExpiringAssignmentsReportForPackage",
            ExpiringAssignmentsReport,
            C1_READERS,
            |c, s, who| s
                .reports(who)
                .expiring_assignments_report(ExpiringAssignmentsReportRequest {
                    within: Some(common::world::days(30)),
                    access_package_id: "p1".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
        row!(
            "RequestHistoryReportForPackage",
            RequestHistoryReport,
            C1_READERS,
            |c, s, who| s
                .reports(who)
                .request_history_report(RequestHistoryReportRequest {
                    access_package_id: "p1".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
        row!(
            "AccessAtTimeReportForPackage",
            AccessAtTimeReport,
            C1_READERS,
            |c, s, who| s
                .reports(who)
                .access_at_time_report(AccessAtTimeReportRequest {
                    at: Some(prost_types::Timestamp {
                        seconds: epoch_seconds(),
                        nanos: 0,
                    }),
                    access_package_id: "p1".into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
        // Decisions: questions about oneself are everyone's; about others,
        // and tenant-wide ones, are for administrators (and decision
        // readers, which the matrix does not hold).
        row!("CheckOwnAccess", CheckAccess, EVERYONE, |c, s, who| s
            .decisions(who)
            .check_access(CheckAccessRequest {
                user_id: who.into(),
                resource_id: "r1".into(),
                role_id: "member".into(),
                min_revision: 0,
            })
            .await
            .map(drop)),
        row!(
            "CheckOthersAccess",
            CheckAccess,
            GLOBAL_ADMIN,
            |c, s, who| s
                .decisions(who)
                .check_access(CheckAccessRequest {
                    user_id: BYSTANDER.into(),
                    resource_id: "r1".into(),
                    role_id: "member".into(),
                    min_revision: 0,
                })
                .await
                .map(drop)
        ),
        row!(
            "BatchCheckAccess",
            BatchCheckAccess,
            GLOBAL_ADMIN,
            |c, s, who| s
                .decisions(who)
                .batch_check_access(BatchCheckAccessRequest {
                    checks: vec![AccessCheck {
                        user_id: who.into(),
                        resource_id: "r1".into(),
                        role_id: "member".into(),
                    }],
                    min_revision: 0,
                })
                .await
                .map(drop)
        ),
        row!(
            "ListOwnRequestablePackages",
            ListRequestablePackages,
            EVERYONE,
            |c, s, who| s
                .decisions(who)
                .list_requestable_packages(ListRequestablePackagesRequest {
                    user_id: who.into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
        row!(
            "ExplainOwnEligibility",
            ExplainEligibility,
            EVERYONE,
            |c, s, who| s
                .decisions(who)
                .explain_eligibility(ExplainEligibilityRequest {
                    user_id: who.into(),
                    access_package_id: "p1".into(),
                    min_revision: 0,
                })
                .await
                .map(drop)
        ),
        row!(
            "ListOthersEffectiveGrants",
            ListEffectiveGrants,
            GLOBAL_ADMIN,
            |c, s, who| s
                .decisions(who)
                .list_effective_grants(ListEffectiveGrantsRequest {
                    user_id: BYSTANDER.into(),
                    min_revision: 0,
                })
                .await
                .map(drop)
        ),
        row!("WhoHasAccess", WhoHasAccess, GLOBAL_ADMIN, |c, s, who| s
            .decisions(who)
            .who_has_access(WhoHasAccessRequest {
                target: Some(who_has_access_request::Target::AccessPackageId("p1".into())),
                ..Default::default()
            })
            .await
            .map(drop)),
        // Opening the stream is what is authorized.
        row!("WatchGrants", WatchGrants, GLOBAL_ADMIN, |c, s, who| s
            .decisions(who)
            .watch_grants(WatchGrantsRequest { from_revision: 0 })
            .await
            .map(drop)),
        row!("Ping", Ping, EVERYONE, |c, s, who| s
            .decisions(who)
            .ping(PingRequest {})
            .await
            .map(drop)),
        // Audit: everyone may ask; each sees the events of what they may
        // read (see the list scoping below).
        row!("ListAuditEvents", ListAuditEvents, EVERYONE, |c, s, who| s
            .audit(who)
            .list_audit_events(ListAuditEventsRequest::default())
            .await
            .map(drop)),
        row!(
            "ExportAuditEvents",
            ExportAuditEvents,
            EVERYONE,
            |c, s, who| s
                .audit(who)
                .export_audit_events(ExportAuditEventsRequest::default())
                .await
                .map(drop)
        ),
        // Rows of catalogs the caller may not read are left out.
        row!(
            "UserAccessReport",
            UserAccessReport,
            EVERYONE,
            |c, s, who| s
                .reports(who)
                .user_access_report(UserAccessReportRequest {
                    user_id: BYSTANDER.into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        ),
    ]
}

/// The world, plus what the matrix's request rows use in c1: package
/// "pself" (policy "polself") for USER_ADD rows, "pcancel" ("polcancel",
/// with approval) for requests to cancel or decide, and "pown" ("polown") through
/// which every role holds an assignment of their own.
struct Matrix {
    world: World,
    /// Each role's own (delivered) request for "pown".
    own: BTreeMap<Role, AssignmentRequest>,
}

impl Matrix {
    async fn new() -> Self {
        let world = World::new().await;
        let server = &world.server;
        for (package, policy) in [
            ("pself", open_policy("polself", "pself")),
            ("pcancel", approval_policy("polcancel", "pcancel")),
            ("pown", open_policy("polown", "pown")),
        ] {
            server.add_package(package, C1, &["r1"]).await;
            server.add_policy(policy).await;
        }
        let mut own = BTreeMap::new();
        for role in Role::ALL {
            own.insert(role, admin_add(server, "polown", role.user()).await);
        }
        Self { world, own }
    }
}

/// The holder of a role, making a row's call.
struct Caller {
    matrix: Arc<Matrix>,
    role: Role,
}

impl Caller {
    /// An id for an object made for this caller.
    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.role.user())
    }

    /// The caller's own (delivered) request.
    fn own(&self) -> &AssignmentRequest {
        &self.matrix.own[&self.role]
    }

    /// Someone else's request, waiting for [`APPROVER`].
    fn others_request(&self) -> &AssignmentRequest {
        self.matrix.world.request("bystander/p1a")
    }

    /// Someone else's assignment.
    fn others_assignment(&self) -> &str {
        &self.matrix.world.request("bystander/p1").assignment_id
    }
}

fn rename_catalog(id: &str) -> UpdateCatalogRequest {
    UpdateCatalogRequest {
        catalog: Some(Catalog {
            id: id.into(),
            ..catalog("Renamed")
        }),
        update_mask: mask(&["display_name"]),
    }
}

fn grant(role: AdminRole, principal: &str, catalog: &str) -> GrantRoleRequest {
    GrantRoleRequest {
        role_assignment: Some(RoleAssignment {
            role: role as i32,
            principal_id: principal.into(),
            catalog_id: catalog.into(),
            info: None,
        }),
    }
}

fn revoke(role: AdminRole, principal: &str, catalog: &str) -> RevokeRoleRequest {
    RevokeRoleRequest {
        role: role as i32,
        principal_id: principal.into(),
        catalog_id: catalog.into(),
    }
}

async fn get_request(s: &TestServer, who: &str, id: &str) -> Result<(), Status> {
    s.requests(who)
        .get_assignment_request(GetAssignmentRequestRequest { id: id.into() })
        .await
        .map(drop)
}

async fn get_assignment(s: &TestServer, who: &str, id: &str) -> Result<(), Status> {
    s.assignments(who)
        .get_assignment(GetAssignmentRequest { id: id.into() })
        .await
        .map(drop)
}

async fn user_grants(s: &TestServer, who: &str, user_id: &str) -> Result<(), Status> {
    s.assignments(who)
        .list_user_grants(ListUserGrantsRequest {
            user_id: user_id.into(),
        })
        .await
        .map(drop)
}

/// Makes `row`'s call as every role at once (their objects are distinct,
/// and concurrent writes share the store's durable syncs).
async fn call_as_everyone(matrix: &Arc<Matrix>, row: &Row) -> BTreeMap<Role, Result<(), Status>> {
    let mut calls = JoinSet::new();
    for role in Role::ALL {
        let call = (row.call)(Caller {
            matrix: matrix.clone(),
            role,
        });
        calls.spawn(async move { (role, call.await) });
    }
    calls.join_all().await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_may_call_exactly_its_rpcs() {
    let matrix = Arc::new(Matrix::new().await);
    let rows = self::matrix();
    let mut mismatches = Vec::new();
    for row in &rows {
        for (role, result) in call_as_everyone(&matrix, row).await {
            let may = row.allowed.contains(&role);
            match (may, result) {
                (true, Ok(())) => {}
                (false, Err(status)) if status.code() == Code::PermissionDenied => {
                    // Asserts google.rpc.ErrorInfo (POLICY_DENIED, policy ids).
                    denied::<()>(Err(status));
                }
                (may, outcome) => mismatches.push(format!(
                    "{} ({:?}) as {role:?} ({}): expected {}, got {}",
                    row.case,
                    row.rpc,
                    role.user(),
                    if may { "allowed" } else { "denied" },
                    match outcome {
                        Ok(()) => "OK".to_string(),
                        Err(status) => format!("{:?}: {}", status.code(), status.message()),
                    }
                )),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} calls went against the matrix:\n{}",
        mismatches.len(),
        rows.len() * Role::ALL.len(),
        mismatches.join("\n")
    );
}

/// Driven by the descriptors the server serves: every RPC has a Cedar
/// action declared in the schema and at least one row in the matrix, and
/// the matrix names no RPC twice under one case.
#[test]
fn every_rpc_has_an_action_a_schema_entry_and_a_matrix_row() {
    use entitlements::pb::FILE_DESCRIPTOR_SET;
    use prost::Message;

    let descriptors = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let served: BTreeSet<String> = descriptors
        .file
        .iter()
        .filter(|f| f.package() == "entitlements.v1")
        .flat_map(|f| {
            f.service.iter().flat_map(move |s| {
                s.method
                    .iter()
                    .map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
            })
        })
        .collect();
    let known: BTreeSet<String> = Rpc::ALL.iter().map(|r| r.path().to_string()).collect();
    assert_eq!(served, known, "the generated RPC list is the served one");

    let schema_text = std::fs::read_to_string("policies/schema.cedarschema").unwrap();
    let (schema, _) = cedar_policy::Schema::from_cedarschema_str(&schema_text).unwrap();
    let declared: BTreeSet<String> = schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    let rows = matrix();
    let mut cases = BTreeSet::new();
    let mut missing = Vec::new();
    for rpc in Rpc::ALL {
        if !declared.contains(rpc.action()) {
            missing.push(format!(
                "{rpc:?}: no action {:?} in the schema",
                rpc.action()
            ));
        }
        if !rows.iter().any(|row| row.rpc == rpc) {
            missing.push(format!("{rpc:?}: no row in the role × RPC matrix"));
        }
    }
    for row in &rows {
        assert!(cases.insert(row.case), "case {} twice", row.case);
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

// ----------------------------------------------------------- list scoping

/// A List call, unfiltered or with a filter that must not widen it (a
/// filter naming what the caller may not read is refused).
#[derive(Debug, Clone, Copy)]
enum List {
    Catalogs,
    Resources,
    ResourcesOfC1,
    AccessPackages,
    AccessPackagesOfC2,
    AssignmentPolicies,
    AssignmentPoliciesOfP1,
    /// "<catalog or ->/<principal>" of each.
    RoleAssignments,
    RoleAssignmentsOfC1,
    /// "<target>/<package>" of each.
    AssignmentRequests,
    AssignmentRequestsForBystander,
    /// "<target>/<package>" of each.
    Assignments,
    AssignmentsOfPlain,
}

/// What each role lists: the global admin, the catalog creator, each of the
/// four c1 roles, the plain user, the owner of c2 and the directory-sync
/// principal.
struct Sees {
    global: &'static [&'static str],
    creator: &'static [&'static str],
    c1: &'static [&'static str],
    plain: &'static [&'static str],
    c2_owner: &'static [&'static str],
    /// The directory-sync service principal: no catalog role.
    sync: &'static [&'static str],
}

impl Sees {
    fn of(&self, role: Role) -> &'static [&'static str] {
        match role {
            GlobalAdmin => self.global,
            CatalogCreator => self.creator,
            Owner | Reader | PackageManager | AssignmentManager => self.c1,
            Plain => self.plain,
            OtherOwner => self.c2_owner,
            DirectorySync => self.sync,
        }
    }
}

const NOTHING: &[&str] = &[];
/// A filter naming a catalog, resource or package the role may not read:
/// PERMISSION_DENIED, as for a read of it.
const DENIED: &[&str] = &["PERMISSION_DENIED"];

fn scoping() -> Vec<(List, Sees)> {
    let c1_roles = &["c1/asg-manager", "c1/owner", "c1/pkg-manager", "c1/reader"];
    vec![
        (
            List::Catalogs,
            Sees {
                global: &["c1", "c2", "c3", "general"],
                creator: &["c3"],
                sync: NOTHING,
                c1: &["c1"],
                plain: NOTHING,
                c2_owner: &["c2"],
            },
        ),
        (
            List::Resources,
            Sees {
                global: &["r1", "r2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["r1"],
                plain: NOTHING,
                c2_owner: &["r2"],
            },
        ),
        (
            List::ResourcesOfC1,
            Sees {
                global: &["r1"],
                creator: DENIED,
                sync: DENIED,
                c1: &["r1"],
                plain: DENIED,
                c2_owner: DENIED,
            },
        ),
        (
            List::AccessPackages,
            Sees {
                global: &["p1", "p1a", "p2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["p1", "p1a"],
                plain: NOTHING,
                c2_owner: &["p2"],
            },
        ),
        (
            List::AccessPackagesOfC2,
            Sees {
                global: &["p2"],
                creator: DENIED,
                sync: DENIED,
                c1: DENIED,
                plain: DENIED,
                c2_owner: &["p2"],
            },
        ),
        (
            List::AssignmentPolicies,
            Sees {
                global: &["pol1", "pol1a", "pol2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["pol1", "pol1a"],
                plain: NOTHING,
                c2_owner: &["pol2"],
            },
        ),
        (
            List::AssignmentPoliciesOfP1,
            Sees {
                global: &["pol1"],
                creator: DENIED,
                sync: DENIED,
                c1: &["pol1"],
                plain: DENIED,
                c2_owner: DENIED,
            },
        ),
        (
            List::RoleAssignments,
            Sees {
                global: &[
                    "-/creator",
                    "-/ga",
                    "c1/asg-manager",
                    "c1/owner",
                    "c1/pkg-manager",
                    "c1/reader",
                    "c2/owner2",
                    "c3/creator",
                ],
                creator: &["c3/creator"],
                sync: NOTHING,
                c1: c1_roles,
                plain: NOTHING,
                c2_owner: &["c2/owner2"],
            },
        ),
        (
            List::RoleAssignmentsOfC1,
            Sees {
                global: c1_roles,
                creator: DENIED,
                sync: DENIED,
                c1: c1_roles,
                plain: DENIED,
                c2_owner: DENIED,
            },
        ),
        (
            List::AssignmentRequests,
            Sees {
                global: &[
                    "bystander/p1",
                    "bystander/p1a",
                    "bystander/p2",
                    "plain/p1",
                    "plain/p1a",
                    "plain/p2",
                ],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["bystander/p1", "bystander/p1a", "plain/p1", "plain/p1a"],
                plain: &["plain/p1", "plain/p1a", "plain/p2"],
                c2_owner: &["bystander/p2", "plain/p2"],
            },
        ),
        (
            List::AssignmentRequestsForBystander,
            Sees {
                global: &["bystander/p1", "bystander/p1a", "bystander/p2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["bystander/p1", "bystander/p1a"],
                plain: NOTHING,
                c2_owner: &["bystander/p2"],
            },
        ),
        (
            List::Assignments,
            Sees {
                global: &["bystander/p1", "bystander/p2", "plain/p1", "plain/p2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["bystander/p1", "plain/p1"],
                plain: &["plain/p1", "plain/p2"],
                c2_owner: &["bystander/p2", "plain/p2"],
            },
        ),
        (
            List::AssignmentsOfPlain,
            Sees {
                global: &["plain/p1", "plain/p2"],
                creator: NOTHING,
                sync: NOTHING,
                c1: &["plain/p1"],
                plain: &["plain/p1", "plain/p2"],
                c2_owner: &["plain/p2"],
            },
        ),
    ]
}

/// What `list` returns to `who` in one page, as sorted labels.
async fn listed(s: &TestServer, list: List, who: &str) -> Result<Vec<String>, Status> {
    const PAGE: i32 = 1000;
    let (mut labels, next): (Vec<String>, String) = match list {
        List::Catalogs => {
            let r = s
                .catalogs(who)
                .list_catalogs(ListCatalogsRequest {
                    page_size: PAGE,
                    ..Default::default()
                })
                .await?
                .into_inner();
            (
                r.catalogs.into_iter().map(|c| c.id).collect(),
                r.next_page_token,
            )
        }
        List::Resources | List::ResourcesOfC1 => {
            let catalog_id = if matches!(list, List::ResourcesOfC1) {
                C1
            } else {
                ""
            };
            let r = s
                .catalogs(who)
                .list_resources(ListResourcesRequest {
                    page_size: PAGE,
                    catalog_id: catalog_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            (
                r.resources.into_iter().map(|r| r.id).collect(),
                r.next_page_token,
            )
        }
        List::AccessPackages | List::AccessPackagesOfC2 => {
            let catalog_id = if matches!(list, List::AccessPackagesOfC2) {
                C2
            } else {
                ""
            };
            let r = s
                .packages(who)
                .list_access_packages(ListAccessPackagesRequest {
                    page_size: PAGE,
                    catalog_id: catalog_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let ids = r.access_packages.into_iter().map(|p| p.id).collect();
            (ids, r.next_page_token)
        }
        List::AssignmentPolicies | List::AssignmentPoliciesOfP1 => {
            let package = if matches!(list, List::AssignmentPoliciesOfP1) {
                "p1"
            } else {
                ""
            };
            let r = s
                .policies(who)
                .list_assignment_policies(ListAssignmentPoliciesRequest {
                    page_size: PAGE,
                    access_package_id: package.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let ids = r.assignment_policies.into_iter().map(|p| p.id).collect();
            (ids, r.next_page_token)
        }
        List::RoleAssignments | List::RoleAssignmentsOfC1 => {
            let catalog_id = if matches!(list, List::RoleAssignmentsOfC1) {
                C1
            } else {
                ""
            };
            let r = s
                .catalogs(who)
                .list_role_assignments(ListRoleAssignmentsRequest {
                    page_size: PAGE,
                    catalog_id: catalog_id.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let labels = r
                .role_assignments
                .into_iter()
                .map(|a| {
                    let scope = if a.catalog_id.is_empty() {
                        "-"
                    } else {
                        &a.catalog_id
                    };
                    format!("{scope}/{}", a.principal_id)
                })
                .collect();
            (labels, r.next_page_token)
        }
        List::AssignmentRequests | List::AssignmentRequestsForBystander => {
            let target = if matches!(list, List::AssignmentRequestsForBystander) {
                BYSTANDER
            } else {
                ""
            };
            let r = s
                .requests(who)
                .list_assignment_requests(ListAssignmentRequestsRequest {
                    page_size: PAGE,
                    target_id: target.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let labels = r
                .assignment_requests
                .into_iter()
                .map(|q| format!("{}/{}", q.target_id, q.access_package_id))
                .collect();
            (labels, r.next_page_token)
        }
        List::Assignments | List::AssignmentsOfPlain => {
            let target = if matches!(list, List::AssignmentsOfPlain) {
                Plain.user()
            } else {
                ""
            };
            let r = s
                .assignments(who)
                .list_assignments(ListAssignmentsRequest {
                    page_size: PAGE,
                    target_id: target.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let labels = r
                .assignments
                .into_iter()
                .map(|a| format!("{}/{}", a.target_id, a.access_package_id))
                .collect();
            (labels, r.next_page_token)
        }
    };
    assert_eq!(next, "", "{list:?} as {who} needs more than one page");
    labels.sort();
    Ok(labels)
}

#[tokio::test]
async fn every_list_shows_each_role_exactly_what_it_may_see() {
    let world = World::new().await;
    let table = scoping();
    let mut mismatches = Vec::new();
    for (list, sees) in &table {
        for role in Role::ALL {
            let expected: Vec<String> = sees.of(role).iter().map(|s| s.to_string()).collect();
            match listed(&world.server, *list, role.user()).await {
                Ok(labels) if labels == expected => {}
                Err(status)
                    if status.code() == Code::PermissionDenied && sees.of(role) == DENIED => {}
                outcome => mismatches.push(format!(
                    "{list:?} as {role:?} ({}): expected {expected:?}, got {outcome:?}",
                    role.user()
                )),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} lists went against the table:\n{}",
        mismatches.len(),
        table.len() * Role::ALL.len(),
        mismatches.join("\n")
    );
}

// ------------------------------------------------ former role holders

/// Role assignments give rights only while their holder is active: a
/// blocked or deleted global admin or catalog owner may do nothing
/// administrative (their assignments stay on record).
#[tokio::test]
async fn blocked_and_deleted_role_holders_hold_no_rights() {
    let server = TestServer::start().await;
    server.add_catalog(C1, false).await;
    for (user, role, catalog) in [
        ("former-admin", AdminRole::GlobalAdmin, ""),
        ("former-owner", AdminRole::CatalogOwner, C1),
    ] {
        server.add_member_user(user).await;
        server.grant_role(role, user, catalog).await;
        // An administrative call of the role: UpdateCatalog on c1.
        let update = || async {
            server
                .catalogs(user)
                .update_catalog(rename_catalog(C1))
                .await
        };
        update()
            .await
            .unwrap_or_else(|s| panic!("{user} while active: {s:?}"));

        server.set_user_state(user, UserState::Blocked).await;
        denied(update().await);
        server.set_user_state(user, UserState::Active).await;
        update()
            .await
            .unwrap_or_else(|s| panic!("{user} unblocked: {s:?}"));

        server
            .directory(ADMIN)
            .delete_user(DeleteUserRequest {
                id: user.into(),
                etag: String::new(),
            })
            .await
            .expect("delete the role holder");
        denied(update().await);
        let held = server
            .catalogs(ADMIN)
            .list_role_assignments(ListRoleAssignmentsRequest {
                principal_id: user.into(),
                ..Default::default()
            })
            .await
            .expect("list role assignments")
            .into_inner()
            .role_assignments;
        assert_eq!(held.len(), 1, "the assignment stays on record: {held:?}");
    }
}

// ------------------------------------------------------------- probing ids

/// A caller who cannot read a catalog cannot tell its ids from unknown ones:
/// both are PERMISSION_DENIED. Whoever may read everything gets NOT_FOUND.
#[tokio::test]
async fn ids_cannot_be_probed_without_the_right_to_read_them() {
    let server = TestServer::start().await;
    server.add_member_user("plain").await;
    server.create_catalog("c1").await;
    server
        .create_resource("r1", resource("c1", "origin-r1", &["member"]))
        .await;
    server
        .create_package("p1", package("c1", "P1", &[("r1", "member")]))
        .await;
    let get_package = |who: &'static str, id: &'static str| {
        let server = &server;
        async move {
            server
                .packages(who)
                .get_access_package(GetAccessPackageRequest { id: id.into() })
                .await
        }
    };
    expect_code(get_package("plain", "p1").await, Code::PermissionDenied);
    expect_code(get_package("plain", "nope").await, Code::PermissionDenied);
    expect_code(get_package(ADMIN, "nope").await, Code::NotFound);
    let get_request = |who: &'static str| {
        let server = &server;
        async move {
            server
                .requests(who)
                .get_assignment_request(GetAssignmentRequestRequest { id: "nope".into() })
                .await
        }
    };
    expect_code(get_request("plain").await, Code::PermissionDenied);
    expect_code(get_request(ADMIN).await, Code::NotFound);
    let get_assignment = server
        .assignments("plain")
        .get_assignment(GetAssignmentRequest { id: "nope".into() })
        .await;
    expect_code(get_assignment, Code::PermissionDenied);
}

/// A List filter that names a catalog, resource or package is a read of
/// it: a caller who may not read its catalog gets PERMISSION_DENIED
/// whether or not it exists (no empty list for one and NOT_FOUND for the
/// other), and only whoever may read every catalog learns NOT_FOUND.
#[tokio::test]
async fn list_filters_do_not_tell_whether_what_they_name_exists() {
    let server = TestServer::start().await;
    let s = &server;
    for user in ["plain", "c1-reader"] {
        s.add_member_user(user).await;
    }
    s.add_catalog(C1, false).await;
    s.grant_role(AdminRole::CatalogReader, "c1-reader", C1)
        .await;
    s.add_resource("r1", C1, "group").await;
    s.add_package("p1", C1, &["r1"]).await;
    s.add_policy(open_policy("pol1", "p1")).await;
    s.add_package("gone", C1, &["r1"]).await;
    s.packages(ADMIN)
        .delete_access_package(DeleteAccessPackageRequest {
            id: "gone".into(),
            etag: String::new(),
        })
        .await
        .expect("delete a package");

    // Each filter, with an id that exists and one that does not.
    #[derive(Debug, Clone, Copy)]
    enum Filter {
        ResourcesOfCatalog,
        PackagesOfCatalog,
        PackagesOfResource,
        PoliciesOfPackage,
        RolesOfCatalog,
        AccessAtTimeOfPackage,
    }
    let cases = [
        (Filter::ResourcesOfCatalog, C1),
        (Filter::PackagesOfCatalog, C1),
        (Filter::PackagesOfResource, "r1"),
        (Filter::PoliciesOfPackage, "p1"),
        (Filter::RolesOfCatalog, C1),
        (Filter::AccessAtTimeOfPackage, "p1"),
        (Filter::AccessAtTimeOfPackage, "gone"),
    ];
    let list = |filter: Filter, who: &'static str, id: &str| {
        let id = id.to_string();
        async move {
            let code = |result: Result<(), Status>| result.map_err(|s| s.code());
            code(match filter {
                Filter::ResourcesOfCatalog => s
                    .catalogs(who)
                    .list_resources(ListResourcesRequest {
                        catalog_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Filter::PackagesOfCatalog => s
                    .packages(who)
                    .list_access_packages(ListAccessPackagesRequest {
                        catalog_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Filter::PackagesOfResource => s
                    .packages(who)
                    .list_access_packages(ListAccessPackagesRequest {
                        resource_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Filter::PoliciesOfPackage => s
                    .policies(who)
                    .list_assignment_policies(ListAssignmentPoliciesRequest {
                        access_package_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Filter::RolesOfCatalog => s
                    .catalogs(who)
                    .list_role_assignments(ListRoleAssignmentsRequest {
                        catalog_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                Filter::AccessAtTimeOfPackage => s
                    .reports(who)
                    .access_at_time_report(AccessAtTimeReportRequest {
                        at: Some(prost_types::Timestamp {
                            seconds: epoch_seconds(),
                            nanos: 0,
                        }),
                        access_package_id: id,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
            })
        }
    };
    for (filter, existing) in cases {
        assert_eq!(
            list(filter, "c1-reader", existing).await,
            Ok(()),
            "{filter:?} {existing:?} as a reader of its catalog"
        );
        for id in [existing, "nope"] {
            assert_eq!(
                list(filter, "plain", id).await,
                Err(Code::PermissionDenied),
                "{filter:?} {id:?} as someone who may not read its catalog"
            );
        }
        let missing = list(filter, ADMIN, "nope").await;
        match filter {
            // A report on a package that never existed is empty.
            Filter::AccessAtTimeOfPackage => assert_eq!(missing, Ok(()), "{filter:?}"),
            _ => assert_eq!(missing, Err(Code::NotFound), "{filter:?}"),
        }
    }

    // Requests and assignments are read by their own rights, not the
    // catalog's: a package filter lists what the caller may see of it,
    // which tells nothing about whether it exists.
    for id in ["p1", "nope"] {
        let requests = s
            .requests("plain")
            .list_assignment_requests(ListAssignmentRequestsRequest {
                access_package_id: id.into(),
                ..Default::default()
            })
            .await
            .expect("list requests by package")
            .into_inner();
        assert!(requests.assignment_requests.is_empty(), "{requests:?}");
        let assignments = s
            .assignments("plain")
            .list_assignments(ListAssignmentsRequest {
                access_package_id: id.into(),
                ..Default::default()
            })
            .await
            .expect("list assignments by package")
            .into_inner();
        assert!(assignments.assignments.is_empty(), "{assignments:?}");
    }
}
