//! Create, get, list, update and delete for any [`Entity`], with the API's
//! conventions: client-chosen or generated ids, idempotent creates by request
//! id, etags, update masks, and "nothing written" on any failure.

use crate::audit::{self, Draft, Verb};
use crate::error::{Error, Result};
use crate::store::idempotency::Idempotency;
use crate::store::records::{self, Record, Source};
use crate::store::{ReadView, Revision, Store, Txn, write};

use crate::shared::actor::Actor;
use crate::shared::id::new_id;

use super::entity::{Entity, check_etag, fields_to_update, stamp};
use super::validate::{self, Check};

pub struct CreateArgs<E> {
    pub entity: Option<E>,
    pub chosen_id: String,
    pub request_id: String,
    /// Names the call for request-id bookkeeping.
    pub method: &'static str,
}

pub async fn create<E: Entity>(store: &dyn Store, actor: Actor, args: CreateArgs<E>) -> Result<E> {
    create_checked(store, actor, args, |_, _| Ok(())).await
}

/// Like [`create`], with one more step in the same transaction once the
/// record (id assigned) is stored: a last check, or writes that belong
/// with it.
pub async fn create_checked<E: Entity>(
    store: &dyn Store,
    actor: Actor,
    args: CreateArgs<E>,
    finish: impl FnOnce(&mut dyn Txn, &E) -> Result<()> + Send + 'static,
) -> Result<E> {
    let CreateArgs {
        entity,
        chosen_id,
        request_id,
        method,
    } = args;
    validate::request_id(&request_id)?;
    let mut entity = entity.ok_or_else(|| Error::invalid(E::FIELD, "is required"))?;
    let idempotency = Idempotency::new(&actor.id, method, &request_id, || {
        vec![chosen_id.clone().into_bytes(), entity.canonical_encoding()]
    });
    let mut check = Check::new("");
    E::check_chosen_id(&mut check, &format!("{}_id", E::FIELD), &chosen_id);
    check.finish()?;
    // Shape checks that compare against the id (e.g. "not the object
    // itself") see the id the object will have; an assigned id is new.
    entity.set_id(chosen_id.clone());
    entity.normalize(None);
    let mut check = Check::new(E::FIELD);
    entity.validate(&mut check);
    entity.validate_at(actor.now, None, &mut check);
    check.finish()?;

    let committed = write(store, move |txn| {
        if let Some(first) = idempotency.recall::<E>(txn)? {
            return Ok(first);
        }
        let id = if chosen_id.is_empty() {
            new_id()
        } else {
            chosen_id
        };
        if records::exists::<E>(txn, &id)? {
            return Err(Error::AlreadyExists {
                kind: E::KIND,
                id: id.clone(),
                message: format!("{} {id:?} already exists", E::KIND),
            });
        }
        entity.set_id(id);
        entity.check_against(txn, None)?;
        stamp(&mut entity, None, &actor, txn.revision());
        records::save(txn, None, &entity)?;
        let draft = entity.audit(txn, Draft::new(E::KIND, Verb::Created, entity.id()), None)?;
        audit::append(txn, &actor, draft)?;
        finish(txn, &entity)?;
        idempotency.remember(txn, &entity);
        Ok(entity)
    })
    .await?;
    Ok(committed.value)
}

pub fn get<E: Record>(view: &dyn ReadView, id: &str) -> Result<E> {
    let mut check = Check::new("");
    check.id("id", id);
    check.finish()?;
    Ok(records::require(view, id)?)
}

pub async fn update<E: Entity>(
    store: &dyn Store,
    actor: Actor,
    patch: Option<E>,
    mask: Option<prost_types::FieldMask>,
) -> Result<E> {
    update_checked(store, actor, patch, mask, |_| Ok(())).await
}

/// Like [`update`], with one more check of the updated record before it is
/// stored.
pub async fn update_checked<E: Entity>(
    store: &dyn Store,
    actor: Actor,
    patch: Option<E>,
    mask: Option<prost_types::FieldMask>,
    extra_check: impl FnOnce(&E) -> Result<()> + Send + 'static,
) -> Result<E> {
    let patch = patch.ok_or_else(|| Error::invalid(E::FIELD, "is required"))?;
    let mut check = Check::new(E::FIELD);
    check.id("id", &patch.id());
    check.finish()?;
    let fields = fields_to_update(&patch, mask.as_ref())?;
    let committed = write(store, move |txn| {
        update_in(txn, &actor, &patch, &fields, extra_check)
    })
    .await?;
    Ok(committed.value)
}

/// The body of [`update_checked`] inside a transaction the caller holds
/// (for writes that change a record and more at once): applies `fields`
/// of `patch` to the stored record with `patch`'s id, checks the result
/// and records the change.
pub fn update_in<E: Entity>(
    txn: &mut dyn Txn,
    actor: &Actor,
    patch: &E,
    fields: &[&'static str],
    extra_check: impl FnOnce(&E) -> Result<()>,
) -> Result<E> {
    let old: E = records::require(txn, &patch.id())?;
    check_etag(patch.etag(), old.etag(), E::KIND, &old.id())?;
    let mut new = old.clone();
    for field in fields {
        new.copy_field(patch, field);
    }
    new.normalize(Some(&old));
    let mut check = Check::new(E::FIELD);
    new.validate(&mut check);
    new.validate_at(actor.now, Some(&old), &mut check);
    check.finish()?;
    new.check_against(txn, Some(&old))?;
    extra_check(&new)?;
    stamp(&mut new, Some(&old), actor, txn.revision());
    records::save(txn, Some(&old), &new)?;
    let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let draft = Draft::new(E::KIND, Verb::Updated, new.id()).detail("fields", fields);
    let draft = new.audit(txn, draft, Some(&old))?;
    audit::append(txn, actor, draft)?;
    Ok(new)
}

pub async fn delete<E: Entity>(
    store: &dyn Store,
    actor: Actor,
    id: String,
    etag: String,
) -> Result<Revision> {
    let mut check = Check::new("");
    check.id("id", &id);
    check.finish()?;
    let committed = write(store, move |txn| {
        let old: E = records::require(txn, &id)?;
        check_etag(&etag, old.etag(), E::KIND, &id)?;
        // The deletion is recorded before what it brings about (requests
        // canceled, roles revoked): cause before effect.
        let draft = old.audit(txn, Draft::new(E::KIND, Verb::Deleted, id.clone()), None)?;
        audit::append(txn, &actor, draft)?;
        old.before_remove(txn, &actor)?;
        records::remove(txn, &old).map_err(Error::from)
    })
    .await?;
    Ok(committed.revision)
}

/// One page of a listing.
pub struct Listed<E> {
    pub items: Vec<E>,
    /// Whether more matching items follow the last one.
    pub more: bool,
}

/// Up to `size` records from `source` after id `after` that pass `keep`. It
/// reads ahead to the next match so that `more` is never a false promise.
pub fn list<E: Record>(
    view: &dyn ReadView,
    source: Source<'_>,
    keep: impl Fn(&E) -> bool,
    size: usize,
    after: Option<&str>,
) -> Result<Listed<E>> {
    let mut items = Vec::new();
    for id in records::ids(view, E::KIND, &source, after) {
        let Some(record) = records::load::<E>(view, &id?)? else {
            continue;
        };
        if !keep(&record) {
            continue;
        }
        if items.len() == size {
            return Ok(Listed { items, more: true });
        }
        items.push(record);
    }
    Ok(Listed { items, more: false })
}
