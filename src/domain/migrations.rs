//! One-time upgrades of stored data, run at start-up before anything is
//! served. Each records that it ran in the store's metadata, so a store is
//! upgraded once, and a store written before an upgrade existed gets it on
//! its first start with the new version.

use crate::error::Result;
use crate::pb::{AssignmentPolicy, ConnectedOrganization, User};
use crate::store::records::restore_references;
use crate::store::{Store, keys, write};

/// Names the version of the reverse references (referenced id ->
/// referrers) in the store's metadata.
const REFERENCES_VERSION_KEY: &str = "references_version";

/// Version 2: assignment policies refer to the users, groups and connected
/// organizations they name, organizations to their sponsors, and users to
/// theirs.
const REFERENCES_VERSION: u8 = 2;

/// Brings the stored data up to what this version of the service expects.
pub async fn run(store: &dyn Store) -> Result<()> {
    write(store, |txn| {
        let key = keys::key(&[keys::META, REFERENCES_VERSION_KEY]);
        let stored = txn.get(&key)?.and_then(|v| v.first().copied());
        if stored.is_some_and(|version| version >= REFERENCES_VERSION) {
            return Ok(());
        }
        let policies = restore_references::<AssignmentPolicy>(txn)?;
        let organizations = restore_references::<ConnectedOrganization>(txn)?;
        let users = restore_references::<User>(txn)?;
        txn.put(key, vec![REFERENCES_VERSION]);
        if policies + organizations + users > 0 {
            tracing::info!(
                policies,
                organizations,
                users,
                "stored data upgraded: reverse references rebuilt"
            );
        }
        Ok::<_, crate::error::Error>(())
    })
    .await?;
    Ok(())
}
