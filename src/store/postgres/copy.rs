//! Copying a store into an empty PostgreSQL database: every key with its
//! value (records, indexes, metadata such as the audit chain's head) and
//! the revision, so that revisions clients hold stay meaningful and the
//! audit chain verifies as before.

use super::connect::{Target, describe};
use super::schema;
use crate::store::{KeyValue, ReadView, Revision, StoreError, StoreResult, keys};

/// Keys written per statement.
const CHUNK: usize = 1000;

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub keys: usize,
    pub revision: Revision,
}

/// Copies every key of `source` (at `revision`) into the database at `url`,
/// which must hold no data yet; its schema is migrated first. One
/// transaction: a failed copy leaves the database empty.
pub async fn copy(source: &dyn ReadView, revision: Revision, url: &str) -> StoreResult<Copied> {
    let target = Target::parse(url)?;
    let (mut client, _) = target.connect().await?;
    schema::migrate(&mut client).await?;
    let failed = |what: &str, e: tokio_postgres::Error| {
        StoreError::Unavailable(format!("{what} in {}: {}", target.display, describe(&e)))
    };
    let transaction = client
        .transaction()
        .await
        .map_err(|e| failed("starting the copy", e))?;
    let held: i64 = transaction
        .query_one(
            "SELECT revision FROM entitlements_revision WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(|e| failed("reading the revision", e))?
        .get(0);
    let any = transaction
        .query_opt("SELECT 1 FROM entitlements_kv LIMIT 1", &[])
        .await
        .map_err(|e| failed("reading the key space", e))?;
    if held != 0 || any.is_some() {
        return Err(StoreError::Incompatible(format!(
            "{} already holds a store (at revision {held}); copy only into an empty database",
            target.display
        )));
    }
    let insert = transaction
        .prepare(
            "INSERT INTO entitlements_kv (key, value) \
             SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[])",
        )
        .await
        .map_err(|e| failed("preparing the copy", e))?;
    // The embedded store keeps its revision among its keys; the database
    // keeps it in its own row.
    let revision_key = keys::revision_key();
    let mut copied = 0;
    let mut chunk: Vec<KeyValue> = Vec::with_capacity(CHUNK);
    let mut entries = source.scan(b"", None).peekable();
    while entries.peek().is_some() {
        chunk.clear();
        for entry in entries.by_ref() {
            let (key, value) = entry?;
            if key != revision_key {
                chunk.push((key, value));
            }
            if chunk.len() == CHUNK {
                break;
            }
        }
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
        let values: Vec<&[u8]> = chunk.iter().map(|(_, v)| v.as_slice()).collect();
        transaction
            .execute(&insert, &[&keys, &values])
            .await
            .map_err(|e| failed("copying keys", e))?;
        copied += chunk.len();
    }
    transaction
        .execute(
            "UPDATE entitlements_revision SET revision = $1 WHERE id = 1",
            &[&(revision as i64)],
        )
        .await
        .map_err(|e| failed("setting the revision", e))?;
    transaction
        .commit()
        .await
        .map_err(|e| failed("committing the copy", e))?;
    Ok(Copied {
        keys: copied,
        revision,
    })
}
