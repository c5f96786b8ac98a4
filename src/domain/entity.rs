//! What every administered object (user, group, catalog, package, ...) has in
//! common: an id, an etag, bookkeeping, shape checks, checks against stored
//! state, and a set of fields an update may change.

use std::time::SystemTime;

use crate::audit::Draft;
use crate::error::{Error, Result};
use crate::pb::RecordInfo;
use crate::shared::actor::Actor;
use crate::store::records::Record;
use crate::store::{ReadView, Revision, Txn};

use super::validate::Check;

pub trait Entity: Record {
    /// The request field that carries the entity, e.g. "user"; prefixes the
    /// paths of field violations.
    const FIELD: &'static str;
    /// Fields an update may change, by proto field name.
    const MUTABLE: &'static [&'static str];

    fn set_id(&mut self, id: String);
    fn etag(&self) -> &str;
    fn set_etag(&mut self, etag: String);
    fn info(&self) -> Option<&RecordInfo>;
    fn set_info(&mut self, info: RecordInfo);

    /// Whether `field` (one of MUTABLE) holds a non-default value.
    fn is_set(&self, field: &str) -> bool;
    /// Copies `field` (one of MUTABLE) from `from`.
    fn copy_field(&mut self, from: &Self, field: &str);

    /// The record's protobuf encoding, the same for equal records (it
    /// fingerprints the body of idempotent creates). Only map fields
    /// encode in no fixed order; records with maps override this.
    fn canonical_encoding(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Checks the id a client chose for a new record.
    fn check_chosen_id(check: &mut Check, field: &str, id: &str) {
        check.optional_id(field, id);
    }

    /// Fills defaults and canonical forms before checks; `old` is the stored
    /// version on update.
    fn normalize(&mut self, _old: Option<&Self>) {}
    /// Checks the shape of the record (violations under `check`'s prefix).
    fn validate(&self, check: &mut Check);
    /// Checks what depends on the time of the write (an end must not have
    /// passed), for values that `old`, the stored version on update, does
    /// not already hold.
    fn validate_at(&self, _now: SystemTime, _old: Option<&Self>, _check: &mut Check) {}
    /// Checks the record against stored state: referenced objects exist and
    /// rules across objects hold.
    fn check_against(&self, _view: &dyn ReadView, _old: Option<&Self>) -> Result<()> {
        Ok(())
    }
    /// Removes what belongs to the record alone, or refuses the removal.
    fn before_remove(&self, _txn: &mut dyn Txn, _actor: &Actor) -> Result<()> {
        Ok(())
    }
    /// Completes the audit event of a change to this version of the record:
    /// the catalog, package or user it belongs to, and details worth
    /// keeping; `previous` is the version an update replaced.
    fn audit(&self, _view: &dyn ReadView, draft: Draft, _previous: Option<&Self>) -> Result<Draft> {
        Ok(draft)
    }
}

pub fn etag_of(revision: Revision) -> String {
    revision.to_string()
}

/// Bookkeeping for a write by `actor` at `revision`; `created` is the
/// bookkeeping of the version being replaced, if any.
pub fn record_info(actor: &Actor, revision: Revision, created: Option<&RecordInfo>) -> RecordInfo {
    let now = crate::shared::clock::to_timestamp(actor.now);
    let (create_time, created_by) = match created {
        Some(info) => (info.create_time, info.created_by.clone()),
        None => (Some(now), actor.id.clone()),
    };
    RecordInfo {
        create_time,
        created_by,
        update_time: Some(now),
        updated_by: actor.id.clone(),
        revision,
    }
}

/// Sets bookkeeping and etag for a write at `revision`.
pub fn stamp<E: Entity>(entity: &mut E, old: Option<&E>, actor: &Actor, revision: Revision) {
    entity.set_info(record_info(actor, revision, old.and_then(Entity::info)));
    entity.set_etag(etag_of(revision));
}

/// ABORTED when a client sent an etag that no longer matches.
pub fn check_etag(sent: &str, stored: &str, kind: &str, id: &str) -> Result<()> {
    if sent.is_empty() || sent == stored {
        Ok(())
    } else {
        Err(Error::Aborted(format!(
            "{kind} {id:?} changed since etag {sent:?} (now {stored:?}); read it again and retry"
        )))
    }
}

/// The fields an update applies: the mask's paths, or with no mask every
/// mutable field the patch populates; "*" means every mutable field.
pub fn fields_to_update<E: Entity>(
    patch: &E,
    mask: Option<&prost_types::FieldMask>,
) -> Result<Vec<&'static str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(E::MUTABLE
            .iter()
            .copied()
            .filter(|f| patch.is_set(f))
            .collect());
    }
    if paths.len() == 1 && paths[0] == "*" {
        return Ok(E::MUTABLE.to_vec());
    }
    let mut check = Check::new("");
    let mut fields = Vec::new();
    for path in paths {
        match E::MUTABLE.iter().find(|f| **f == path) {
            Some(field) => fields.push(*field),
            None => check.fail(
                "update_mask",
                format!(
                    "{path:?} is not a mutable field of {}; mutable: {}",
                    E::KIND,
                    E::MUTABLE.join(", ")
                ),
            ),
        }
    }
    check.finish()?;
    Ok(fields)
}
