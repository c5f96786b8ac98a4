//! The fixtures: builders of entities, and methods that create them over
//! gRPC as [`ADMIN`] with a chosen id (each panics on failure), so tests
//! read as their scenario.

use entitlements::pb::*;
use tonic::Status;

use super::{ADMIN, TestServer};

pub fn days(n: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: n * 86_400,
        nanos: 0,
    }
}

pub fn seconds(n: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: n,
        nanos: 0,
    }
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
pub fn policy(
    id: &str,
    package: &str,
    scope: AllowedTargetScope,
    expiration: Expiration,
) -> AssignmentPolicy {
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
        let user = User {
            email: format!("{id}@example.com"),
            kind: kind as i32,
            connected_organization_id: organization.into(),
            ..super::user(&id.to_uppercase())
        };
        self.create_user(id, user).await
    }

    pub async fn add_member_user(&self, id: &str) -> User {
        self.add_user(id, UserKind::Member, "").await
    }

    /// A group with `users` as direct members.
    pub async fn add_group(&self, id: &str, users: &[&str]) -> Group {
        let group = self.create_group(id).await;
        for user in users {
            self.add_member(
                id,
                add_group_member_request::Member::UserId(user.to_string()),
            )
            .await;
        }
        group
    }

    pub async fn nest_group(&self, parent: &str, child: &str) {
        self.add_member(
            parent,
            add_group_member_request::Member::MemberGroupId(child.into()),
        )
        .await;
    }

    pub async fn add_organization(
        &self,
        id: &str,
        domain: &str,
        state: ConnectedOrganizationState,
    ) {
        let organization = ConnectedOrganization {
            state: state as i32,
            ..super::organization(&id.to_uppercase(), domain)
        };
        self.create_organization(id, organization).await;
    }

    pub async fn add_catalog(&self, id: &str, externally_visible: bool) {
        let catalog = Catalog {
            externally_visible: Some(externally_visible),
            ..super::catalog(&id.to_uppercase())
        };
        self.create_catalog_from(id, catalog).await;
    }

    /// A resource of `kind` with one role, "member".
    pub async fn add_resource(&self, id: &str, catalog: &str, kind: &str) {
        let resource = Resource {
            r#type: kind.into(),
            ..super::resource(catalog, &format!("origin-{id}"), &["member"])
        };
        self.create_resource(id, resource).await;
    }

    /// A package granting the "member" role of each resource.
    pub async fn add_package(&self, id: &str, catalog: &str, resources: &[&str]) -> AccessPackage {
        let roles: Vec<_> = resources.iter().map(|r| (*r, "member")).collect();
        self.create_package(id, super::package(catalog, &id.to_uppercase(), &roles))
            .await
    }

    pub async fn add_policy(&self, policy: AssignmentPolicy) -> AssignmentPolicy {
        self.try_add_policy(policy).await.expect("create policy")
    }

    pub async fn try_add_policy(
        &self,
        policy: AssignmentPolicy,
    ) -> Result<AssignmentPolicy, Status> {
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
    pub async fn request(
        &self,
        caller: &str,
        request: AssignmentRequest,
    ) -> Result<AssignmentRequest, Status> {
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
            .list_user_grants(ListUserGrantsRequest {
                user_id: user.into(),
            })
            .await
            .expect("list grants")
            .into_inner()
            .grants
            .into_iter()
            .map(|g| (g.resource_id, g.role_id))
            .collect()
    }
}

/// Reading back requests, assignments and grants, and canceling requests.
impl TestServer {
    /// Every request a ListAssignmentRequests call with `filter` lists,
    /// across pages.
    pub async fn list_requests(
        &self,
        filter: ListAssignmentRequestsRequest,
    ) -> Vec<AssignmentRequest> {
        let client = self.requests(ADMIN);
        let pages = super::pages(|page_token| {
            let request = ListAssignmentRequestsRequest {
                page_token,
                ..filter.clone()
            };
            let mut client = client.clone();
            async move {
                let page = client.list_assignment_requests(request).await?.into_inner();
                Ok((page.assignment_requests, page.next_page_token))
            }
        })
        .await;
        pages.concat()
    }

    /// The requests for `package`, oldest first.
    pub async fn package_requests(&self, package: &str) -> Vec<AssignmentRequest> {
        self.list_requests(ListAssignmentRequestsRequest {
            access_package_id: package.into(),
            ..Default::default()
        })
        .await
    }

    /// The requests for `user`, oldest first.
    pub async fn user_requests(&self, user: &str) -> Vec<AssignmentRequest> {
        self.list_requests(ListAssignmentRequestsRequest {
            target_id: user.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn get_request(&self, id: &str) -> AssignmentRequest {
        self.requests(ADMIN)
            .get_assignment_request(GetAssignmentRequestRequest { id: id.into() })
            .await
            .expect("get assignment request")
            .into_inner()
    }

    pub async fn cancel_request(
        &self,
        caller: &str,
        id: &str,
    ) -> Result<AssignmentRequest, Status> {
        self.requests(caller)
            .cancel_assignment_request(CancelAssignmentRequestRequest { id: id.into() })
            .await
            .map(|r| r.into_inner())
    }

    /// The assignments of `user` (one page is enough for tests).
    pub async fn user_assignments(&self, user: &str) -> Vec<Assignment> {
        let response = self
            .assignments(ADMIN)
            .list_assignments(ListAssignmentsRequest {
                target_id: user.into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("list assignments")
            .into_inner();
        assert_eq!(response.next_page_token, "", "more than one page");
        response.assignments
    }

    /// The grants of `user`, with the assignments that give them.
    pub async fn user_grants(&self, user: &str) -> Vec<Grant> {
        self.assignments(ADMIN)
            .list_user_grants(ListUserGrantsRequest {
                user_id: user.into(),
            })
            .await
            .expect("list grants")
            .into_inner()
            .grants
    }
}

/// Approval settings with `stages`, required for adds (and extensions when
/// `for_update`).
pub fn approval(stages: Vec<ApprovalStage>, for_update: bool) -> ApprovalSettings {
    ApprovalSettings {
        approval_required_for_add: true,
        approval_required_for_update: for_update,
        stages,
    }
}

/// A stage decided by `primary` (one approval needed, default timeout).
pub fn stage(primary: Vec<approver::Approver>) -> ApprovalStage {
    ApprovalStage {
        primary_approvers: primary
            .into_iter()
            .map(|a| Approver { approver: Some(a) })
            .collect(),
        ..Default::default()
    }
}

pub fn user_approver(id: &str) -> approver::Approver {
    approver::Approver::UserId(id.into())
}

pub fn group_approver(id: &str) -> approver::Approver {
    approver::Approver::GroupId(id.into())
}

impl TestServer {
    /// `caller` approves (or denies) `stage` of request `id`.
    pub async fn decide(
        &self,
        caller: &str,
        id: &str,
        stage: i32,
        approve: bool,
    ) -> Result<AssignmentRequest, Status> {
        let request = DecideAssignmentRequestRequest {
            id: id.into(),
            stage,
            justification: format!("decided by {caller}"),
        };
        let mut client = self.requests(caller);
        let response = if approve {
            client.approve_assignment_request(request).await
        } else {
            client.deny_assignment_request(request).await
        };
        response.map(|r| r.into_inner())
    }

    /// The server clock, in epoch seconds.
    pub fn clock_seconds(&self) -> i64 {
        use entitlements::shared::clock::Clock;
        self.clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// Ids of the requests `caller` has to decide.
    pub async fn pending_approvals(&self, caller: &str) -> Vec<String> {
        self.requests(caller)
            .list_pending_approvals(ListPendingApprovalsRequest::default())
            .await
            .expect("list pending approvals")
            .into_inner()
            .assignment_requests
            .into_iter()
            .map(|r| r.id)
            .collect()
    }
}

/// Who an external requestor (a caller not in the directory) says they are.
pub fn external(email: &str, tenant_id: &str) -> ExternalRequestor {
    ExternalRequestor {
        email: email.into(),
        tenant_id: tenant_id.into(),
        ..Default::default()
    }
}

pub type TenantSettingsClient = settings_client::SettingsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, super::AsUser>,
>;

/// External requestors, the guests they become, and the tenant settings
/// that govern those guests.
impl TestServer {
    /// `caller`, who is not in the directory, asks for a package through
    /// `policy` as `requestor`.
    pub async fn request_external(
        &self,
        caller: &str,
        policy: &str,
        requestor: ExternalRequestor,
    ) -> Result<AssignmentRequest, Status> {
        self.request(
            caller,
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: policy.into(),
                external_requestor: Some(requestor),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn get_user(&self, id: &str) -> User {
        self.directory(ADMIN)
            .get_user(GetUserRequest { id: id.into() })
            .await
            .unwrap_or_else(|s| panic!("get user {id}: {s:?}"))
            .into_inner()
    }

    /// Sets a user's state (e.g. ACTIVE to unblock them).
    pub async fn set_user_state(&self, id: &str, state: UserState) -> User {
        self.directory(ADMIN)
            .update_user(UpdateUserRequest {
                user: Some(User {
                    id: id.into(),
                    state: state as i32,
                    ..Default::default()
                }),
                update_mask: super::mask(&["state"]),
            })
            .await
            .unwrap_or_else(|s| panic!("set the state of user {id}: {s:?}"))
            .into_inner()
    }

    /// The connected organizations in `state` (UNSPECIFIED: all), by id.
    pub async fn organizations(
        &self,
        state: ConnectedOrganizationState,
    ) -> Vec<ConnectedOrganization> {
        let response = self
            .directory(ADMIN)
            .list_connected_organizations(ListConnectedOrganizationsRequest {
                page_size: 1000,
                state: state as i32,
                ..Default::default()
            })
            .await
            .expect("list connected organizations")
            .into_inner();
        assert_eq!(response.next_page_token, "", "more than one page");
        response.connected_organizations
    }

    pub fn settings(&self, user: &str) -> TenantSettingsClient {
        settings_client::SettingsClient::with_interceptor(self.channel(), super::AsUser::new(user))
    }

    pub async fn get_settings(&self) -> TenantSettings {
        self.settings(ADMIN)
            .get_settings(GetSettingsRequest {})
            .await
            .expect("get settings")
            .into_inner()
    }

    /// Updates the `paths` of the tenant settings from `settings`.
    pub async fn update_settings(
        &self,
        settings: TenantSettings,
        paths: &[&str],
    ) -> Result<TenantSettings, Status> {
        self.settings(ADMIN)
            .update_settings(UpdateSettingsRequest {
                settings: Some(settings),
                update_mask: super::mask(paths),
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// Administrative roles.
impl TestServer {
    /// Grants `role` to `principal` in `catalog` ("" for a tenant-wide role),
    /// as [`ADMIN`].
    pub async fn grant_role(
        &self,
        role: AdminRole,
        principal: &str,
        catalog: &str,
    ) -> RoleAssignment {
        self.catalogs(ADMIN)
            .grant_role(GrantRoleRequest {
                role_assignment: Some(RoleAssignment {
                    role: role as i32,
                    principal_id: principal.into(),
                    catalog_id: catalog.into(),
                    info: None,
                }),
            })
            .await
            .unwrap_or_else(|s| panic!("grant {role:?} to {principal} in {catalog:?}: {s:?}"))
            .into_inner()
    }
}

/// An update mask with `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

pub fn user(display_name: &str) -> User {
    User {
        display_name: display_name.into(),
        ..Default::default()
    }
}

pub fn group(display_name: &str) -> Group {
    Group {
        display_name: display_name.into(),
        ..Default::default()
    }
}

/// A connected organization identified by one email domain.
pub fn organization(display_name: &str, domain: &str) -> ConnectedOrganization {
    ConnectedOrganization {
        display_name: display_name.into(),
        identity_sources: vec![domain_source(domain)],
        ..Default::default()
    }
}

pub fn domain_source(domain: &str) -> IdentitySource {
    IdentitySource {
        source: Some(identity_source::Source::DomainName(domain.into())),
        display_name: String::new(),
    }
}

pub fn tenant_source(tenant: &str) -> IdentitySource {
    IdentitySource {
        source: Some(identity_source::Source::TenantId(tenant.into())),
        display_name: String::new(),
    }
}

pub fn catalog(display_name: &str) -> Catalog {
    Catalog {
        display_name: display_name.into(),
        ..Default::default()
    }
}

/// A group-type resource in `catalog_id` offering `roles`.
pub fn resource(catalog_id: &str, origin_id: &str, roles: &[&str]) -> Resource {
    Resource {
        catalog_id: catalog_id.into(),
        r#type: "group".into(),
        origin_id: origin_id.into(),
        display_name: format!("Resource {origin_id}"),
        roles: roles
            .iter()
            .map(|r| ResourceRole {
                id: r.to_string(),
                display_name: r.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// A package in `catalog_id` granting `(resource_id, role_id)` pairs.
pub fn package(catalog_id: &str, display_name: &str, roles: &[(&str, &str)]) -> AccessPackage {
    AccessPackage {
        catalog_id: catalog_id.into(),
        display_name: display_name.into(),
        resource_roles: roles
            .iter()
            .map(|(res, role)| role_ref(res, role))
            .collect(),
        ..Default::default()
    }
}

pub fn role_ref(resource_id: &str, role_id: &str) -> ResourceRoleRef {
    ResourceRoleRef {
        resource_id: resource_id.into(),
        role_id: role_id.into(),
    }
}

/// Entities created as [`ADMIN`] with a chosen id.
impl TestServer {
    pub async fn create_user(&self, id: &str, user: User) -> User {
        self.directory(ADMIN)
            .create_user(CreateUserRequest {
                user: Some(user),
                user_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create user {id}: {s:?}"))
            .into_inner()
    }

    pub async fn create_group(&self, id: &str) -> Group {
        self.directory(ADMIN)
            .create_group(CreateGroupRequest {
                group: Some(group(&format!("Group {id}"))),
                group_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create group {id}: {s:?}"))
            .into_inner()
    }

    pub async fn create_organization(
        &self,
        id: &str,
        organization: ConnectedOrganization,
    ) -> ConnectedOrganization {
        self.directory(ADMIN)
            .create_connected_organization(CreateConnectedOrganizationRequest {
                connected_organization: Some(organization),
                connected_organization_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create connected organization {id}: {s:?}"))
            .into_inner()
    }

    /// Adds a user (`Member::UserId`) or a group (`Member::MemberGroupId`).
    pub async fn add_member(
        &self,
        group_id: &str,
        member: add_group_member_request::Member,
    ) -> GroupMembership {
        self.directory(ADMIN)
            .add_group_member(AddGroupMemberRequest {
                group_id: group_id.into(),
                member: Some(member.clone()),
            })
            .await
            .unwrap_or_else(|s| panic!("add {member:?} to {group_id}: {s:?}"))
            .into_inner()
    }

    pub async fn create_catalog(&self, id: &str) -> Catalog {
        self.create_catalog_from(id, catalog(&format!("Catalog {id}")))
            .await
    }

    pub async fn create_catalog_from(&self, id: &str, catalog: Catalog) -> Catalog {
        self.catalogs(ADMIN)
            .create_catalog(CreateCatalogRequest {
                catalog: Some(catalog),
                catalog_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create catalog {id}: {s:?}"))
            .into_inner()
    }

    pub async fn create_resource(&self, id: &str, resource: Resource) -> Resource {
        self.catalogs(ADMIN)
            .create_resource(CreateResourceRequest {
                resource: Some(resource),
                resource_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create resource {id}: {s:?}"))
            .into_inner()
    }

    pub async fn create_package(&self, id: &str, package: AccessPackage) -> AccessPackage {
        self.packages(ADMIN)
            .create_access_package(CreateAccessPackageRequest {
                access_package: Some(package),
                access_package_id: id.into(),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create access package {id}: {s:?}"))
            .into_inner()
    }
}
