//! The Settings service: tenant settings, and backups of the whole store.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::domain::crud;
use crate::domain::settings::SETTINGS_ID;
use crate::pb::settings_server::Settings;
use crate::pb::*;

use super::App;
use super::backup::{self, BackupStream};
use crate::policy::admin::Scope;
use crate::store::backup::snapshot::ChangeTap;

pub struct SettingsApi {
    app: App,
    /// Records the commits made while a backup runs.
    tap: Arc<ChangeTap>,
}

impl SettingsApi {
    pub fn new(app: App) -> Self {
        let tap = ChangeTap::attach(app.store());
        Self { app, tap }
    }
}

#[tonic::async_trait]
impl Settings for SettingsApi {
    async fn get_settings(
        &self,
        request: Request<GetSettingsRequest>,
    ) -> Result<Response<TenantSettings>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(crud::get(self.app.store(), SETTINGS_ID)?))
    }

    async fn update_settings(
        &self,
        request: Request<UpdateSettingsRequest>,
    ) -> Result<Response<TenantSettings>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        Ok(Response::new(
            crud::update(self.app.store(), actor, r.settings, r.update_mask).await?,
        ))
    }

    type BackupStoreStream = BackupStream;

    async fn backup_store(
        &self,
        request: Request<BackupStoreRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(backup::stream(
            self.app.store.clone(),
            self.tap.clone(),
        )))
    }
}
