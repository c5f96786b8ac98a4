//! Builders that set up directory, catalogs, packages and policies over
//! gRPC as an administrator, so workflow tests read as their scenario.

use entitlements::pb::*;
use tonic::Status;

use super::TestServer;

pub const ADMIN: &str = "admin";

pub fn days(n: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: n * 86_400, nanos: 0 }
}

pub fn seconds(n: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: n, nanos: 0 }
}

pub fn after(duration: prost_types::Duration) -> Expiration {
    Expiration {
        r#type: ExpirationType::AfterDuration as i32,
        duration: Some(duration),
        end_time: None,
    }
}

pub fn never() -> Expiration {
    Expiration {
        r#type: ExpirationType::None as i32,
        ..Default::default()
    }
}

/// Self add, update and remove enabled.
pub fn self_service() -> RequestorSettings {
    RequestorSettings {
        enable_self_add: true,
        enable_self_update: true,
        enable_self_remove: true,
        ..Default::default()
    }
}

/// A policy of `scope` into `package`, self-service, lasting `expiration`.
pub fn policy(id: &str, package: &str, scope: AllowedTargetScope, expiration: Expiration) -> AssignmentPolicy {
    AssignmentPolicy {
        id: id.into(),
        access_package_id: package.into(),
        display_name: format!("policy {id}"),
        allowed_target_scope: scope as i32,
        requestor_settings: Some(self_service()),
        expiration: Some(expiration),
        ..Default::default()
    }
}

impl TestServer {
    pub async fn add_user(&self, id: &str, kind: UserKind, organization: &str) -> User {
        self.directory(ADMIN)
            .create_user(CreateUserRequest {
                user: Some(User {
                    display_name: id.to_uppercase(),
                    email: format!("{id}@example.com"),
                    kind: kind as i32,
                    connected_organization_id: organization.into(),
                    ..Default::default()
                }),
                user_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create user")
            .into_inner()
    }

    pub async fn add_member(&self, id: &str) -> User {
        self.add_user(id, UserKind::Member, "").await
    }

    pub async fn add_group(&self, id: &str, users: &[&str]) -> Group {
        let mut directory = self.directory(ADMIN);
        let group = directory
            .create_group(CreateGroupRequest {
                group: Some(Group {
                    display_name: id.to_uppercase(),
                    ..Default::default()
                }),
                group_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create group")
            .into_inner();
        for user in users {
            directory
                .add_group_member(AddGroupMemberRequest {
                    group_id: id.into(),
                    member: Some(add_group_member_request::Member::UserId(user.to_string())),
                })
                .await
                .expect("add member");
        }
        group
    }

    pub async fn nest_group(&self, parent: &str, child: &str) {
        self.directory(ADMIN)
            .add_group_member(AddGroupMemberRequest {
                group_id: parent.into(),
                member: Some(add_group_member_request::Member::MemberGroupId(child.into())),
            })
            .await
            .expect("nest group");
    }

    pub async fn add_organization(&self, id: &str, domain: &str, state: ConnectedOrganizationState) {
        self.directory(ADMIN)
            .create_connected_organization(CreateConnectedOrganizationRequest {
                connected_organization: Some(ConnectedOrganization {
                    display_name: id.to_uppercase(),
                    identity_sources: vec![IdentitySource {
                        source: Some(identity_source::Source::DomainName(domain.into())),
                        display_name: String::new(),
                    }],
                    state: state as i32,
                    ..Default::default()
                }),
                connected_organization_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create connected organization");
    }

    pub async fn add_catalog(&self, id: &str, externally_visible: bool) {
        self.catalogs(ADMIN)
            .create_catalog(CreateCatalogRequest {
                catalog: Some(Catalog {
                    display_name: id.to_uppercase(),
                    externally_visible: Some(externally_visible),
                    ..Default::default()
                }),
                catalog_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create catalog");
    }

    /// A resource of `kind` with one role, "member".
    pub async fn add_resource(&self, id: &str, catalog: &str, kind: &str) {
        self.catalogs(ADMIN)
            .create_resource(CreateResourceRequest {
                resource: Some(Resource {
                    catalog_id: catalog.into(),
                    r#type: kind.into(),
                    origin_id: format!("origin-{id}"),
                    display_name: id.to_uppercase(),
                    roles: vec![ResourceRole {
                        id: "member".into(),
                        display_name: "Member".into(),
                    }],
                    ..Default::default()
                }),
                resource_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create resource");
    }

    /// A package granting the "member" role of each resource.
    pub async fn add_package(&self, id: &str, catalog: &str, resources: &[&str]) -> AccessPackage {
        self.save_package(AccessPackage {
            id: id.into(),
            catalog_id: catalog.into(),
            display_name: id.to_uppercase(),
            resource_roles: resources
                .iter()
                .map(|r| ResourceRoleRef {
                    resource_id: r.to_string(),
                    role_id: "member".into(),
                })
                .collect(),
            ..Default::default()
        })
        .await
    }

    pub async fn save_package(&self, package: AccessPackage) -> AccessPackage {
        self.packages(ADMIN)
            .create_access_package(CreateAccessPackageRequest {
                access_package_id: package.id.clone(),
                access_package: Some(package),
                request_id: String::new(),
            })
            .await
            .expect("create package")
            .into_inner()
    }

    pub async fn add_policy(&self, policy: AssignmentPolicy) -> AssignmentPolicy {
        self.try_add_policy(policy).await.expect("create policy")
    }

    pub async fn try_add_policy(&self, policy: AssignmentPolicy) -> Result<AssignmentPolicy, Status> {
        self.policies(ADMIN)
            .create_assignment_policy(CreateAssignmentPolicyRequest {
                assignment_policy_id: policy.id.clone(),
                assignment_policy: Some(policy),
                request_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Sends a request as `caller`.
    pub async fn request(&self, caller: &str, request: AssignmentRequest) -> Result<AssignmentRequest, Status> {
        self.requests(caller)
            .create_assignment_request(CreateAssignmentRequestRequest {
                assignment_request: Some(request),
                request_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `user` asks for a package through `policy`.
    pub async fn request_add(&self, user: &str, policy: &str) -> Result<AssignmentRequest, Status> {
        self.request(
            user,
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: policy.into(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn assignment(&self, id: &str) -> Assignment {
        self.assignments(ADMIN)
            .get_assignment(GetAssignmentRequest { id: id.into() })
            .await
            .expect("get assignment")
            .into_inner()
    }

    /// The (resource, role) pairs a user holds.
    pub async fn grants(&self, user: &str) -> Vec<(String, String)> {
        self.assignments(ADMIN)
            .list_user_grants(ListUserGrantsRequest { user_id: user.into() })
            .await
            .expect("list grants")
            .into_inner()
            .grants
            .into_iter()
            .map(|g| (g.resource_id, g.role_id))
            .collect()
    }
}
