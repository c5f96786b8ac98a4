//! Tenant-wide settings: one record, created with defaults on first start.

use crate::audit::{self, Draft, Verb};
use crate::error::Result;
use crate::pb::{ExternalUserLifecycle, RecordInfo, TenantSettings};
use crate::store::records::{self, Record};
use crate::store::{ReadView, Store, write};

use super::assignment_policy::MAX_DURATION_SECONDS;
use super::entity::{Entity, stamp};
use super::mutable_fields;
use super::validate::Check;
use crate::shared::actor::Actor;

pub const SETTINGS_ID: &str = "tenant";
pub const DEFAULT_DELETE_AFTER_SECONDS: i64 = 30 * 86_400;

impl Record for TenantSettings {
    const KIND: &'static str = "settings";

    fn id(&self) -> String {
        SETTINGS_ID.to_string()
    }
}

impl Entity for TenantSettings {
    const FIELD: &'static str = "settings";
    mutable_fields!(external_user_lifecycle, delete_after);

    fn set_id(&mut self, _id: String) {}

    fn etag(&self) -> &str {
        &self.etag
    }

    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }

    fn info(&self) -> Option<&RecordInfo> {
        self.info.as_ref()
    }

    fn set_info(&mut self, info: RecordInfo) {
        self.info = Some(info);
    }

    fn normalize(&mut self, old: Option<&Self>) {
        if self.external_user_lifecycle == ExternalUserLifecycle::Unspecified as i32 {
            self.external_user_lifecycle = old
                .map_or(ExternalUserLifecycle::BlockSignInAndDelete as i32, |o| {
                    o.external_user_lifecycle
                });
        }
        if self.delete_after.is_none() {
            self.delete_after = old
                .and_then(|o| o.delete_after)
                .or(Some(prost_types::Duration {
                    seconds: DEFAULT_DELETE_AFTER_SECONDS,
                    nanos: 0,
                }));
        }
    }

    fn validate(&self, check: &mut Check) {
        check.require(
            ExternalUserLifecycle::try_from(self.external_user_lifecycle).is_ok(),
            "external_user_lifecycle",
            "is not a known lifecycle",
        );
        check.whole_seconds(
            "delete_after",
            self.delete_after.as_ref(),
            0,
            MAX_DURATION_SECONDS,
        );
    }
}

/// The settings in force (the defaults before anyone changed them).
pub fn current(view: &(impl ReadView + ?Sized)) -> Result<TenantSettings> {
    let mut settings = records::load::<TenantSettings>(view, SETTINGS_ID)?.unwrap_or_default();
    settings.normalize(None);
    Ok(settings)
}

/// Stores the default settings on first start.
pub async fn ensure_settings(store: &dyn Store, actor: Actor) -> Result<()> {
    write(store, move |txn| {
        if records::exists::<TenantSettings>(txn, SETTINGS_ID)? {
            return Ok(());
        }
        let mut settings = current(txn)?;
        stamp(&mut settings, None, &actor, txn.revision());
        records::save(txn, None, &settings)?;
        audit::append(
            txn,
            &actor,
            Draft::new(TenantSettings::KIND, Verb::Created, SETTINGS_ID),
        )
    })
    .await?;
    Ok(())
}
