//! The AssignmentPolicies service.

use tonic::{Request, Response, Status};

use crate::domain::assignment_policy::POLICIES_BY_PACKAGE;
use crate::domain::crud::{self, CreateArgs};
use crate::domain::validate::is_valid_id;
use crate::error::Result;
use crate::pb::assignment_policies_server::AssignmentPolicies;
use crate::pb::*;
use crate::policy::checked;
use crate::store::records::{Record, Source};

use super::App;
use super::authz::{Caller, PackageCatalogs};
use super::paging::PageRequest;
use super::rpc::Rpc;
use crate::policy::admin::{ANY_CATALOG, Scope};

pub struct AssignmentPoliciesApi {
    app: App,
}

impl AssignmentPoliciesApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// Loads a policy and authorizes the caller in its package's catalog.
    fn authorize_policy(&self, caller: &Caller, id: &str) -> Result<AssignmentPolicy> {
        self.app
            .authorize_record(caller, id, |p: &AssignmentPolicy| {
                self.app.package_catalog(&p.access_package_id)
            })
    }
}

#[tonic::async_trait]
impl AssignmentPolicies for AssignmentPoliciesApi {
    async fn create_assignment_policy(
        &self,
        request: Request<CreateAssignmentPolicyRequest>,
    ) -> Result<Response<AssignmentPolicy>, Status> {
        let caller = self.app.caller(&request)?;
        let package = request
            .get_ref()
            .assignment_policy
            .as_ref()
            .map(|p| p.access_package_id.clone())
            .unwrap_or_default();
        // A malformed package id is left to the create's validation.
        if is_valid_id(&package) {
            // A package in a catalog the caller may not manage, and one
            // that does not exist, get the same answer.
            let package: AccessPackage = self.app.load_visible(&caller, &package, ANY_CATALOG)?;
            self.app
                .authorize(&caller, Scope::Catalog(&package.catalog_id))?;
        }
        let actor = caller.actor;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.assignment_policy,
            chosen_id: r.assignment_policy_id,
            request_id: r.request_id,
            method: Rpc::CreateAssignmentPolicy.name(),
        };
        let check = checked::compiles(self.app.policies.clone());
        let policy =
            crud::create_checked(self.app.store(), actor, args, move |_, p| check(p)).await?;
        Ok(Response::new(policy))
    }

    async fn get_assignment_policy(
        &self,
        request: Request<GetAssignmentPolicyRequest>,
    ) -> Result<Response<AssignmentPolicy>, Status> {
        let caller = self.app.caller(&request)?;
        Ok(Response::new(
            self.authorize_policy(&caller, &request.get_ref().id)?,
        ))
    }

    async fn list_assignment_policies(
        &self,
        request: Request<ListAssignmentPoliciesRequest>,
    ) -> Result<Response<ListAssignmentPoliciesResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = self.app.catalog_filter(&caller);
        let catalogs = PackageCatalogs::new(&self.app);
        let r = request.into_inner();
        self.app.authorize_filter(
            &caller,
            "access_package_id",
            &r.access_package_id,
            |p: &AccessPackage| Ok(p.catalog_id.clone()),
        )?;
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&r.access_package_id])?;
        let source = if r.access_package_id.is_empty() {
            Source::All
        } else {
            Source::Index {
                kind: AssignmentPolicy::KIND,
                name: POLICIES_BY_PACKAGE,
                value: &r.access_package_id,
            }
        };
        let (items, next_page_token) =
            page.list(self.app.store(), source, |p: &AssignmentPolicy| {
                catalogs
                    .of(&p.access_package_id)
                    .is_some_and(|c| visible.sees(&c))
            })?;
        Ok(Response::new(ListAssignmentPoliciesResponse {
            assignment_policies: items,
            next_page_token,
        }))
    }

    async fn update_assignment_policy(
        &self,
        request: Request<UpdateAssignmentPolicyRequest>,
    ) -> Result<Response<AssignmentPolicy>, Status> {
        let caller = self.app.caller(&request)?;
        let id = request
            .get_ref()
            .assignment_policy
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        self.authorize_policy(&caller, &id)?;
        let actor = caller.actor;
        let r = request.into_inner();
        let policy = crud::update_checked(
            self.app.store(),
            actor,
            r.assignment_policy,
            r.update_mask,
            checked::compiles(self.app.policies.clone()),
        )
        .await?;
        Ok(Response::new(policy))
    }

    async fn delete_assignment_policy(
        &self,
        request: Request<DeleteAssignmentPolicyRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.app.caller(&request)?;
        self.authorize_policy(&caller, &request.get_ref().id)?;
        let r = request.into_inner();
        let revision =
            crud::delete::<AssignmentPolicy>(self.app.store(), caller.actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }

    async fn get_compiled_policy(
        &self,
        request: Request<GetCompiledPolicyRequest>,
    ) -> Result<Response<CompiledPolicy>, Status> {
        let caller = self.app.caller(&request)?;
        let policy = self.authorize_policy(&caller, &request.get_ref().id)?;
        Ok(Response::new(checked::compiled(policy)))
    }
}
