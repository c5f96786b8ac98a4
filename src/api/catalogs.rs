//! The Catalogs service: catalogs, their resources, and role assignments.

use tonic::{Request, Response, Status};

use crate::domain::catalog::{
    self, RESOURCES_BY_CATALOG, ROLES_BY_CATALOG, ROLES_BY_PRINCIPAL, TENANT_SCOPE,
};
use crate::domain::crud::{self, CreateArgs};
use crate::domain::validate::Check;
use crate::error::Error;
use crate::pb::catalogs_server::Catalogs;
use crate::pb::*;
use crate::store::records::{self, Record, Source};
use crate::store::write;

use super::App;
use super::paging::PageRequest;
use super::rpc::Rpc;
use crate::policy::admin::Scope;

/// Catalog roles are granted on their catalog, tenant roles on the tenant.
fn role_scope(catalog_id: &str) -> Scope<'_> {
    if catalog_id.is_empty() {
        Scope::Tenant
    } else {
        Scope::Catalog(catalog_id)
    }
}

pub struct CatalogsApi {
    app: App,
}

impl CatalogsApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Catalogs for CatalogsApi {
    async fn create_catalog(
        &self,
        request: Request<CreateCatalogRequest>,
    ) -> Result<Response<Catalog>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.catalog,
            chosen_id: r.catalog_id,
            request_id: r.request_id,
            method: Rpc::CreateCatalog.name(),
        };
        // Whoever creates a catalog owns it (when they are a directory user;
        // configured principals such as bootstrap admins need no ownership).
        let owner = actor.clone();
        let created = crud::create_checked(
            self.app.store(),
            actor,
            args,
            move |txn, catalog: &Catalog| {
                if !records::exists::<User>(txn, &owner.id)? {
                    return Ok(());
                }
                let ownership = RoleAssignment {
                    role: AdminRole::CatalogOwner as i32,
                    principal_id: owner.id.clone(),
                    catalog_id: catalog.id.clone(),
                    info: None,
                };
                catalog::grant_role(txn, ownership, &owner).map(|_| ())
            },
        )
        .await?;
        Ok(Response::new(created))
    }

    async fn get_catalog(
        &self,
        request: Request<GetCatalogRequest>,
    ) -> Result<Response<Catalog>, Status> {
        self.app
            .authorized(&request, Scope::Catalog(&request.get_ref().id))?;
        Ok(Response::new(crud::get(
            self.app.store(),
            &request.get_ref().id,
        )?))
    }

    async fn list_catalogs(
        &self,
        request: Request<ListCatalogsRequest>,
    ) -> Result<Response<ListCatalogsResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = self.app.catalog_filter(&caller);
        let r = request.into_inner();
        let page = PageRequest::parse(r.page_size, &r.page_token, &[])?;
        let (items, next_page_token) =
            page.list(self.app.store(), Source::All, |c: &Catalog| {
                visible.sees(&c.id)
            })?;
        Ok(Response::new(ListCatalogsResponse {
            catalogs: items,
            next_page_token,
        }))
    }

    async fn update_catalog(
        &self,
        request: Request<UpdateCatalogRequest>,
    ) -> Result<Response<Catalog>, Status> {
        let id = request
            .get_ref()
            .catalog
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let actor = self.app.authorized(&request, Scope::Catalog(&id))?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(self.app.store(), actor, r.catalog, r.update_mask).await?,
        ))
    }

    async fn delete_catalog(
        &self,
        request: Request<DeleteCatalogRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let actor = self
            .app
            .authorized(&request, Scope::Catalog(&request.get_ref().id))?;
        let r = request.into_inner();
        let revision = crud::delete::<Catalog>(self.app.store(), actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }

    async fn create_resource(
        &self,
        request: Request<CreateResourceRequest>,
    ) -> Result<Response<Resource>, Status> {
        let catalog = request
            .get_ref()
            .resource
            .as_ref()
            .map(|c| c.catalog_id.clone())
            .unwrap_or_default();
        let actor = self.app.authorized(&request, Scope::Catalog(&catalog))?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.resource,
            chosen_id: r.resource_id,
            request_id: r.request_id,
            method: Rpc::CreateResource.name(),
        };
        Ok(Response::new(
            crud::create(self.app.store(), actor, args).await?,
        ))
    }

    async fn get_resource(
        &self,
        request: Request<GetResourceRequest>,
    ) -> Result<Response<Resource>, Status> {
        let caller = self.app.caller(&request)?;
        let resource =
            self.app
                .authorize_record(&caller, &request.get_ref().id, |r: &Resource| {
                    Ok(r.catalog_id.clone())
                })?;
        Ok(Response::new(resource))
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = self.app.catalog_filter(&caller);
        let r = request.into_inner();
        self.app
            .authorize_filter(&caller, "catalog_id", &r.catalog_id, |c: &Catalog| {
                Ok(c.id.clone())
            })?;
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&r.catalog_id, &r.r#type])?;
        let source = if r.catalog_id.is_empty() {
            Source::All
        } else {
            Source::Index {
                kind: Resource::KIND,
                name: RESOURCES_BY_CATALOG,
                value: &r.catalog_id,
            }
        };
        let keep = |res: &Resource| {
            (r.r#type.is_empty() || res.r#type == r.r#type) && visible.sees(&res.catalog_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListResourcesResponse {
            resources: items,
            next_page_token,
        }))
    }

    async fn update_resource(
        &self,
        request: Request<UpdateResourceRequest>,
    ) -> Result<Response<Resource>, Status> {
        let caller = self.app.caller(&request)?;
        let id = request
            .get_ref()
            .resource
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        self.app
            .authorize_record(&caller, &id, |r: &Resource| Ok(r.catalog_id.clone()))?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(self.app.store(), caller.actor, r.resource, r.update_mask).await?,
        ))
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.app.caller(&request)?;
        self.app
            .authorize_record(&caller, &request.get_ref().id, |r: &Resource| {
                Ok(r.catalog_id.clone())
            })?;
        let r = request.into_inner();
        let revision =
            crud::delete::<Resource>(self.app.store(), caller.actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }

    async fn grant_role(
        &self,
        request: Request<GrantRoleRequest>,
    ) -> Result<Response<RoleAssignment>, Status> {
        let caller = self.app.caller(&request)?;
        let assignment = request
            .into_inner()
            .role_assignment
            .ok_or_else(|| Error::invalid("role_assignment", "is required"))?;
        catalog::check_role_args(
            assignment.role,
            &assignment.principal_id,
            &assignment.catalog_id,
            "role_assignment",
        )?;
        self.app
            .authorize(&caller, role_scope(&assignment.catalog_id))?;
        let actor = caller.actor.clone();
        let committed = write(self.app.store(), move |txn| {
            catalog::grant_role(txn, assignment, &actor)
        })
        .await?;
        let granted = &committed.value;
        tracing::info!(
            target: "audit",
            by = %caller.principal.id,
            role = granted.role().as_str_name(),
            principal = %granted.principal_id,
            catalog = %granted.catalog_id,
            revision = committed.revision,
            "role granted"
        );
        Ok(Response::new(committed.value))
    }

    async fn revoke_role(
        &self,
        request: Request<RevokeRoleRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let role = catalog::check_role_args(r.role, &r.principal_id, &r.catalog_id, "")?;
        self.app.authorize(&caller, role_scope(&r.catalog_id))?;
        let (principal, catalog_id) = (r.principal_id.clone(), r.catalog_id.clone());
        let actor = caller.actor.clone();
        let committed = write(self.app.store(), move |txn| {
            catalog::revoke_role(txn, role, &r.principal_id, &r.catalog_id, &actor)
        })
        .await?;
        tracing::info!(
            target: "audit",
            by = %caller.principal.id,
            role = role.as_str_name(),
            %principal,
            catalog = %catalog_id,
            revision = committed.revision,
            "role revoked"
        );
        Ok(Response::new(DeleteResponse {
            revision: committed.revision,
        }))
    }

    async fn list_role_assignments(
        &self,
        request: Request<ListRoleAssignmentsRequest>,
    ) -> Result<Response<ListRoleAssignmentsResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = self.app.catalog_filter(&caller);
        let tenant_visible = self.app.permits(&caller, Scope::Tenant)?;
        let r = request.into_inner();
        let mut check = Check::new("");
        if r.catalog_id != TENANT_SCOPE {
            check.optional_id("catalog_id", &r.catalog_id);
        }
        check.optional_id("principal_id", &r.principal_id);
        check.finish()?;
        if r.catalog_id != TENANT_SCOPE {
            self.app
                .authorize_filter(&caller, "catalog_id", &r.catalog_id, |c: &Catalog| {
                    Ok(c.id.clone())
                })?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.catalog_id, &r.principal_id, &r.role.to_string()],
        )?;
        let source = if !r.catalog_id.is_empty() {
            Source::Index {
                kind: RoleAssignment::KIND,
                name: ROLES_BY_CATALOG,
                value: &r.catalog_id,
            }
        } else if !r.principal_id.is_empty() {
            Source::Index {
                kind: RoleAssignment::KIND,
                name: ROLES_BY_PRINCIPAL,
                value: &r.principal_id,
            }
        } else {
            Source::All
        };
        let keep = |a: &RoleAssignment| {
            let sees = if a.catalog_id.is_empty() {
                tenant_visible
            } else {
                visible.sees(&a.catalog_id)
            };
            sees && (r.role == 0 || a.role == r.role)
                && (r.principal_id.is_empty() || a.principal_id == r.principal_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListRoleAssignmentsResponse {
            role_assignments: items,
            next_page_token,
        }))
    }
}
