//! Checking an [`AuditFilter`] from a client: the audit layer below knows
//! no validation rules, so its [`Filter`] is parsed here.

use crate::audit::query::Filter;
use crate::error::Result;
use crate::pb::AuditFilter;

use super::Check;

impl Filter {
    pub fn parse(filter: Option<AuditFilter>) -> Result<Self> {
        let f = filter.unwrap_or_default();
        let mut check = Check::new("filter");
        for (field, value) in [
            ("actor", &f.actor),
            ("target_id", &f.target_id),
            ("catalog_id", &f.catalog_id),
            ("access_package_id", &f.access_package_id),
            ("user_id", &f.user_id),
        ] {
            check.optional_id(field, value);
        }
        check.text("target_type", &f.target_type, 64, false);
        check.text("action", &f.action, 128, false);
        check.require(
            f.target_id.is_empty() || !f.target_type.is_empty(),
            "target_type",
            "is required with target_id",
        );
        let start_valid = f
            .start_time
            .is_none_or(|t| check.timestamp("start_time", &t));
        let end_valid = f.end_time.is_none_or(|t| check.timestamp("end_time", &t));
        if let (Some(start), Some(end)) = (&f.start_time, &f.end_time)
            && start_valid
            && end_valid
        {
            check.require(
                (start.seconds, start.nanos) < (end.seconds, end.nanos),
                "end_time",
                "must be after start_time",
            );
        }
        check.finish()?;
        Ok(Self {
            actor: f.actor,
            target_type: f.target_type,
            target_id: f.target_id,
            action: f.action,
            catalog_id: f.catalog_id,
            access_package_id: f.access_package_id,
            user_id: f.user_id,
            start: f.start_time,
            end: f.end_time,
        })
    }
}
