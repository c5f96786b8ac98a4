//! The Settings service.

use tonic::{Request, Response, Status};

use crate::domain::crud;
use crate::domain::settings::SETTINGS_ID;
use crate::pb::settings_server::Settings;
use crate::pb::*;

use super::App;
use crate::policy::admin::Scope;

pub struct SettingsApi {
    app: App,
}

impl SettingsApi {
    pub fn new(app: App) -> Self {
        Self { app }
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
}
