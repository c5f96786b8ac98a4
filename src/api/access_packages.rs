//! The AccessPackages service.

use tonic::{Request, Response, Status};

use crate::domain::crud::{self, CreateArgs};
use crate::domain::package::{PACKAGES_BY_CATALOG, PACKAGES_BY_RESOURCE};
use crate::domain::validate::Check;
use crate::pb::access_packages_server::AccessPackages;
use crate::pb::*;
use crate::store::records::{Record, Source};

use super::App;
use super::paging::PageRequest;
use super::rpc::Rpc;
use crate::policy::admin::Scope;

pub struct AccessPackagesApi {
    app: App,
}

impl AccessPackagesApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AccessPackages for AccessPackagesApi {
    async fn create_access_package(
        &self,
        request: Request<CreateAccessPackageRequest>,
    ) -> Result<Response<AccessPackage>, Status> {
        let catalog = request
            .get_ref()
            .access_package
            .as_ref()
            .map(|p| p.catalog_id.clone())
            .unwrap_or_default();
        let actor = self.app.authorized(&request, Scope::Catalog(&catalog))?;
        let r = request.into_inner();
        let args = CreateArgs {
            entity: r.access_package,
            chosen_id: r.access_package_id,
            request_id: r.request_id,
            method: Rpc::CreateAccessPackage.name(),
        };
        Ok(Response::new(
            crud::create(self.app.store(), actor, args).await?,
        ))
    }

    async fn get_access_package(
        &self,
        request: Request<GetAccessPackageRequest>,
    ) -> Result<Response<AccessPackage>, Status> {
        let caller = self.app.caller(&request)?;
        let package =
            self.app
                .authorize_record(&caller, &request.get_ref().id, |p: &AccessPackage| {
                    Ok(p.catalog_id.clone())
                })?;
        Ok(Response::new(package))
    }

    async fn list_access_packages(
        &self,
        request: Request<ListAccessPackagesRequest>,
    ) -> Result<Response<ListAccessPackagesResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = self.app.catalog_filter(&caller);
        let r = request.into_inner();
        let mut check = Check::new("");
        check.optional_id("catalog_id", &r.catalog_id);
        check.optional_id("resource_id", &r.resource_id);
        check.finish()?;
        self.app
            .authorize_filter(&caller, "catalog_id", &r.catalog_id, |c: &Catalog| {
                Ok(c.id.clone())
            })?;
        self.app
            .authorize_filter(&caller, "resource_id", &r.resource_id, |r: &Resource| {
                Ok(r.catalog_id.clone())
            })?;
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.catalog_id, &r.resource_id, &r.exclude_hidden.to_string()],
        )?;
        let source = if !r.resource_id.is_empty() {
            Source::Index {
                kind: AccessPackage::KIND,
                name: PACKAGES_BY_RESOURCE,
                value: &r.resource_id,
            }
        } else if !r.catalog_id.is_empty() {
            Source::Index {
                kind: AccessPackage::KIND,
                name: PACKAGES_BY_CATALOG,
                value: &r.catalog_id,
            }
        } else {
            Source::All
        };
        let keep = |p: &AccessPackage| {
            (r.catalog_id.is_empty() || p.catalog_id == r.catalog_id)
                && !(r.exclude_hidden && p.hidden)
                && visible.sees(&p.catalog_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListAccessPackagesResponse {
            access_packages: items,
            next_page_token,
        }))
    }

    async fn update_access_package(
        &self,
        request: Request<UpdateAccessPackageRequest>,
    ) -> Result<Response<AccessPackage>, Status> {
        let caller = self.app.caller(&request)?;
        let id = request
            .get_ref()
            .access_package
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        self.app
            .authorize_record(&caller, &id, |p: &AccessPackage| Ok(p.catalog_id.clone()))?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(
                self.app.store(),
                caller.actor,
                r.access_package,
                r.update_mask,
            )
            .await?,
        ))
    }

    async fn delete_access_package(
        &self,
        request: Request<DeleteAccessPackageRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = self.app.caller(&request)?;
        self.app
            .authorize_record(&caller, &request.get_ref().id, |p: &AccessPackage| {
                Ok(p.catalog_id.clone())
            })?;
        let r = request.into_inner();
        let revision =
            crud::delete::<AccessPackage>(self.app.store(), caller.actor, r.id, r.etag).await?;
        Ok(Response::new(DeleteResponse { revision }))
    }
}
