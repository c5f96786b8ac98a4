//! The Directory service: users, groups, memberships, connected
//! organizations.

use tonic::{Request, Response, Status};

use crate::domain::crud::{self, CreateArgs};
use crate::domain::directory::{
    self, GROUPS_IN_GROUP, GROUPS_OF_GROUP, GROUPS_OF_USER, Member, USERS_BY_ORGANIZATION,
    USERS_IN_GROUP,
};
use crate::domain::validate::Check;
use crate::pb::directory_server::Directory;
use crate::pb::*;
use crate::store::records::{self, Record, Source};
use crate::store::write;

use super::App;
use super::paging::PageRequest;
use super::rpc::Rpc;
use crate::policy::admin::Scope;

pub struct DirectoryApi {
    app: App,
}

impl DirectoryApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// NOT_FOUND for a filter naming an object that does not exist.
    fn require_filter<R: Record>(&self, id: &str, field: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Ok(());
        }
        let mut check = Check::new("");
        check.id(field, id);
        check.finish()?;
        records::require::<R>(self.app.store(), id)?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Directory for DirectoryApi {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.user,
            chosen_id: r.user_id,
            request_id: r.request_id,
            method: Rpc::CreateUser.name(),
        };
        Ok(Response::new(
            crud::create(self.app.store(), actor, args).await?,
        ))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(crud::get(
            self.app.store(),
            &request.get_ref().id,
        )?))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        self.require_filter::<Group>(&r.group_id, "group_id")?;
        self.require_filter::<ConnectedOrganization>(
            &r.connected_organization_id,
            "connected_organization_id",
        )?;
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[
                &r.group_id,
                &r.connected_organization_id,
                &r.kind.to_string(),
                &r.state.to_string(),
                &r.show_deleted.to_string(),
            ],
        )?;
        let source = if !r.group_id.is_empty() {
            Source::Index {
                kind: GroupMembership::KIND,
                name: USERS_IN_GROUP,
                value: &r.group_id,
            }
        } else if !r.connected_organization_id.is_empty() {
            Source::Index {
                kind: User::KIND,
                name: USERS_BY_ORGANIZATION,
                value: &r.connected_organization_id,
            }
        } else {
            Source::All
        };
        let deleted = UserState::Deleted as i32;
        let keep = |u: &User| {
            (r.kind == 0 || u.kind == r.kind)
                && (r.state == 0 || u.state == r.state)
                && (u.state != deleted || r.show_deleted || r.state == deleted)
                && (r.connected_organization_id.is_empty()
                    || u.connected_organization_id == r.connected_organization_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListUsersResponse {
            users: items,
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(self.app.store(), actor, r.user, r.update_mask).await?,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<User>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let mut check = Check::new("");
        check.id("id", &r.id);
        check.finish()?;
        let committed = write(self.app.store(), move |txn| {
            crate::workflow::lifecycle::delete_user(txn, &r.id, &r.etag, &actor)
        })
        .await?;
        Ok(Response::new(committed.value))
    }

    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.group,
            chosen_id: r.group_id,
            request_id: r.request_id,
            method: Rpc::CreateGroup.name(),
        };
        Ok(Response::new(
            crud::create(self.app.store(), actor, args).await?,
        ))
    }

    async fn get_group(
        &self,
        request: Request<GetGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(crud::get(
            self.app.store(),
            &request.get_ref().id,
        )?))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        self.require_filter::<Group>(&r.parent_group_id, "parent_group_id")?;
        self.require_filter::<User>(&r.member_user_id, "member_user_id")?;
        self.require_filter::<Group>(&r.member_group_id, "member_group_id")?;
        let filters = [
            ("parent_group_id", GROUPS_IN_GROUP, &r.parent_group_id),
            ("member_user_id", GROUPS_OF_USER, &r.member_user_id),
            ("member_group_id", GROUPS_OF_GROUP, &r.member_group_id),
        ];
        let set: Vec<_> = filters.iter().filter(|(_, _, v)| !v.is_empty()).collect();
        if set.len() > 1 {
            return Err(crate::error::Error::invalid(
                set[1].0,
                "only one of parent_group_id, member_user_id, member_group_id may be set",
            )
            .into());
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.parent_group_id, &r.member_user_id, &r.member_group_id],
        )?;
        let source = match set.first() {
            Some((_, index, value)) => Source::Index {
                kind: GroupMembership::KIND,
                name: index,
                value,
            },
            None => Source::All,
        };
        let (items, next_page_token) = page.list(self.app.store(), source, |_: &Group| true)?;
        Ok(Response::new(ListGroupsResponse {
            groups: items,
            next_page_token,
        }))
    }

    async fn update_group(
        &self,
        request: Request<UpdateGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(self.app.store(), actor, r.group, r.update_mask).await?,
        ))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let revision = crud::delete::<Group>(self.app.store(), actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }

    async fn add_group_member(
        &self,
        request: Request<AddGroupMemberRequest>,
    ) -> Result<Response<GroupMembership>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let member = match r.member {
            Some(add_group_member_request::Member::UserId(id)) => Some(Member::User(id)),
            Some(add_group_member_request::Member::MemberGroupId(id)) => Some(Member::Group(id)),
            None => None,
        };
        let member = directory::check_membership_args(&r.group_id, member.as_ref())?;
        let committed = write(self.app.store(), move |txn| {
            directory::add_member(txn, &r.group_id, member, &actor)
        })
        .await?;
        Ok(Response::new(committed.value))
    }

    async fn remove_group_member(
        &self,
        request: Request<RemoveGroupMemberRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let member = match r.member {
            Some(remove_group_member_request::Member::UserId(id)) => Some(Member::User(id)),
            Some(remove_group_member_request::Member::MemberGroupId(id)) => Some(Member::Group(id)),
            None => None,
        };
        let member = directory::check_membership_args(&r.group_id, member.as_ref())?;
        let committed = write(self.app.store(), move |txn| {
            directory::remove_member(txn, &r.group_id, &member, &actor)
        })
        .await?;
        Ok(Response::new(DeleteResponse {
            revision: committed.revision,
        }))
    }

    async fn create_connected_organization(
        &self,
        request: Request<CreateConnectedOrganizationRequest>,
    ) -> Result<Response<ConnectedOrganization>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.connected_organization,
            chosen_id: r.connected_organization_id,
            request_id: r.request_id,
            method: Rpc::CreateConnectedOrganization.name(),
        };
        Ok(Response::new(
            crud::create(self.app.store(), actor, args).await?,
        ))
    }

    async fn get_connected_organization(
        &self,
        request: Request<GetConnectedOrganizationRequest>,
    ) -> Result<Response<ConnectedOrganization>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(crud::get(
            self.app.store(),
            &request.get_ref().id,
        )?))
    }

    async fn list_connected_organizations(
        &self,
        request: Request<ListConnectedOrganizationsRequest>,
    ) -> Result<Response<ListConnectedOrganizationsResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&r.state.to_string()])?;
        let keep = |o: &ConnectedOrganization| r.state == 0 || o.state == r.state;
        let (items, next_page_token) = page.list(self.app.store(), Source::All, keep)?;
        Ok(Response::new(ListConnectedOrganizationsResponse {
            connected_organizations: items,
            next_page_token,
        }))
    }

    async fn update_connected_organization(
        &self,
        request: Request<UpdateConnectedOrganizationRequest>,
    ) -> Result<Response<ConnectedOrganization>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(
                self.app.store(),
                actor,
                r.connected_organization,
                r.update_mask,
            )
            .await?,
        ))
    }

    async fn delete_connected_organization(
        &self,
        request: Request<DeleteConnectedOrganizationRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let revision =
            crud::delete::<ConnectedOrganization>(self.app.store(), actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }
}
