//! The database schema and its versioned migrations (the SQL files beside
//! this module). `entitlements_schema` records every migration applied; a
//! database whose newest migration is newer than this binary knows is
//! refused, and one that is older is refused until it is migrated
//! (`entitlements migrate`, or `serve --migrate`).

use tokio_postgres::Client;

use super::connect::describe;
use crate::store::{StoreError, StoreResult};

/// Every migration, in order: version, description, SQL.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "key space, revision, change log and leases",
    include_str!("migrations/0001_initial.sql"),
)];

/// The schema version this binary works with.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS entitlements_schema (
    version INT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

fn failed(what: &str, error: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {}", describe(error)))
}

/// The schema version of the database (0: none yet).
pub async fn version(client: &Client) -> StoreResult<i32> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'entitlements_schema'",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version", &e))?;
    if exists.is_none() {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM entitlements_schema",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version", &e))?;
    Ok(row.get(0))
}

/// Refuses a schema this binary cannot work with.
pub fn check(version: i32) -> StoreResult<()> {
    let latest = latest();
    if version > latest {
        return Err(StoreError::Incompatible(format!(
            "the database schema is at version {version}, newer than this binary knows \
             ({latest}): run a newer entitlements"
        )));
    }
    if version < latest {
        return Err(StoreError::Incompatible(format!(
            "the database schema is at version {version}, this binary needs {latest}: run \
             `entitlements migrate --store <url>` first, or start the server with --migrate"
        )));
    }
    Ok(())
}

/// Applies every migration the database lacks, in one transaction; returns
/// the versions before and after. Two processes migrating at once: one
/// wins, the other finds the work done.
pub async fn migrate(client: &mut Client) -> StoreResult<(i32, i32)> {
    let before = version(client).await?;
    if before > latest() {
        check(before)?;
    }
    match apply(client).await {
        Ok(after) => Ok((before, after)),
        Err(error) => {
            let now = version(client).await?;
            if now == latest() {
                Ok((before, now))
            } else {
                Err(error)
            }
        }
    }
}

async fn apply(client: &mut Client) -> StoreResult<i32> {
    let transaction = client
        .transaction()
        .await
        .map_err(|e| failed("migrating", &e))?;
    transaction
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(|e| failed("creating entitlements_schema", &e))?;
    let row = transaction
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM entitlements_schema",
            &[],
        )
        .await
        .map_err(|e| failed("reading the schema version", &e))?;
    let current: i32 = row.get(0);
    if current > latest() {
        check(current)?;
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        transaction
            .batch_execute(sql)
            .await
            .map_err(|e| failed(&format!("migration {version} ({description})"), &e))?;
        transaction
            .execute(
                "INSERT INTO entitlements_schema (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .await
            .map_err(|e| failed(&format!("recording migration {version}"), &e))?;
        tracing::info!(version, description, "database schema migrated");
    }
    transaction
        .commit()
        .await
        .map_err(|e| failed("committing the migration", &e))?;
    Ok(latest())
}
