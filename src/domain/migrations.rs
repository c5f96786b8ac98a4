//! Upgrades of stored data: an ordered list of migrations, each taking the
//! data from one version to the next, and the data version in the store's
//! metadata. They run before anything is served, at start-up and from
//! `entitlements migrate` (offline, for either store), in one transaction:
//! a store is upgraded all the way or not at all, and once. A store whose
//! data is newer than this binary knows is refused: its records may mean
//! what this binary cannot read correctly.
//!
//! Record bytes carry a format version of their own ([`crate::store::codec`])
//! for a change protobuf cannot absorb; such a change comes with a
//! migration here that rewrites the records.

use crate::error::Result;
use crate::pb::{AssignmentPolicy, ConnectedOrganization, User};
use crate::store::records::restore_references;
use crate::store::{StoreError, StoreResult, Txn, keys, write};

/// Names the version of the stored data in the store's metadata (4 bytes,
/// big-endian).
const DATA_VERSION_KEY: &str = "data_version";

/// Where the one upgrade that predates data versions recorded that it ran
/// (one byte, 2); read as data version 2, and removed once the data
/// version is recorded.
const LEGACY_REFERENCES_KEY: &str = "references_version";

/// One step: what `run` does takes data at `version - 1` to `version`.
struct Migration {
    version: u32,
    name: &'static str,
    run: fn(&mut dyn Txn) -> StoreResult<()>,
}

/// Every migration, in order. Version 1 is the data as first stored.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 2,
    name: "reverse references: assignment policies refer to the users, groups and connected \
           organizations they name, organizations to their sponsors, users to theirs",
    run: rebuild_references,
}];

/// The data version this binary writes.
pub const CURRENT: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The data versions a store went from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    pub from: u32,
    pub to: u32,
}

/// Brings the stored data up to [`CURRENT`]; refuses data newer than that.
pub async fn run(store: &dyn crate::store::Store) -> Result<Upgrade> {
    let upgrade = write(store, |txn| {
        let upgrade = upgrade(txn)?;
        Ok::<_, crate::error::Error>(upgrade)
    })
    .await?
    .value;
    if upgrade.from != upgrade.to {
        tracing::info!(from = upgrade.from, to = upgrade.to, "stored data upgraded");
    }
    Ok(upgrade)
}

fn upgrade(txn: &mut dyn Txn) -> StoreResult<Upgrade> {
    let key = keys::key(&[keys::META, DATA_VERSION_KEY]);
    let recorded = txn.get(&key)?;
    let from = match &recorded {
        Some(bytes) => decode_version(bytes)?,
        None => unrecorded_version(txn)?,
    };
    if from > CURRENT {
        return Err(StoreError::Incompatible(format!(
            "the stored data is at version {from}, newer than this binary's {CURRENT}: it was \
             written by a newer entitlements; run that version (or restore a backup taken \
             before the upgrade)"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        tracing::info!(
            version = migration.version,
            migration = migration.name,
            "upgrading stored data"
        );
        (migration.run)(txn)?;
    }
    if recorded.is_none() || from != CURRENT {
        txn.put(key, CURRENT.to_be_bytes().to_vec());
        txn.delete(keys::key(&[keys::META, LEGACY_REFERENCES_KEY]));
    }
    Ok(Upgrade { from, to: CURRENT })
}

/// The version of a store that records none: new (nothing to upgrade),
/// upgraded once before versions were recorded, or as first stored.
fn unrecorded_version(txn: &dyn Txn) -> StoreResult<u32> {
    let legacy = txn.get(&keys::key(&[keys::META, LEGACY_REFERENCES_KEY]))?;
    if legacy.and_then(|v| v.first().copied()) >= Some(2) {
        return Ok(2);
    }
    let empty = txn
        .scan(&keys::prefix(&[keys::RECORD]), None)
        .next()
        .is_none();
    Ok(if empty { CURRENT } else { 1 })
}

fn decode_version(bytes: &[u8]) -> StoreResult<u32> {
    let raw: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("the stored data version is not 4 bytes"))?;
    Ok(u32::from_be_bytes(raw))
}

fn rebuild_references(txn: &mut dyn Txn) -> StoreResult<()> {
    let policies = restore_references::<AssignmentPolicy>(txn)?;
    let organizations = restore_references::<ConnectedOrganization>(txn)?;
    let users = restore_references::<User>(txn)?;
    tracing::info!(policies, organizations, users, "reverse references rebuilt");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::{ReadView, Store};

    async fn put(store: &dyn Store, key: Vec<u8>, value: Vec<u8>) {
        write::<_, StoreError, _>(store, move |txn| {
            txn.put(key, value);
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_new_store_is_at_the_current_version_and_upgrades_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let first = run(&store).await.unwrap();
        assert_eq!(
            first,
            Upgrade {
                from: CURRENT,
                to: CURRENT
            }
        );
        let revision = store.revision();
        assert_eq!(run(&store).await.unwrap(), first);
        assert_eq!(
            store.revision(),
            revision,
            "nothing written the second time"
        );
    }

    #[tokio::test]
    async fn the_legacy_marker_counts_as_version_2_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let legacy = keys::key(&[keys::META, LEGACY_REFERENCES_KEY]);
        put(&store, legacy.clone(), vec![2]).await;
        put(&store, keys::key(&[keys::RECORD, "x", "y"]), vec![]).await;
        assert_eq!(run(&store).await.unwrap().from, 2);
        assert_eq!(store.get(&legacy).unwrap(), None);
    }

    #[tokio::test]
    async fn newer_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let key = keys::key(&[keys::META, DATA_VERSION_KEY]);
        put(&store, key, (CURRENT + 1).to_be_bytes().to_vec()).await;
        let refused = run(&store).await.unwrap_err().to_string();
        assert!(refused.contains("newer than this binary's"), "{refused}");
    }
}
