//! `migrate` and `store copy`: upgrading a store offline (a PostgreSQL
//! store's schema, and either store's data), and moving a stopped server's
//! sled store into PostgreSQL.

use std::path::Path;

use crate::domain::migrations;
use crate::store::sled_store::SledStore;
use crate::store::{Location, Store, postgres};

/// Applies the pending migrations to the store `store` names (`sled:DIR`,
/// whose server must be stopped, or a postgres:// URL): the schema of a
/// database, then the stored data. Says which versions it went from and to.
pub async fn migrate(store: &str) -> anyhow::Result<String> {
    let location = Location::parse(Some(store), Path::new("data"))?;
    let mut said = format!("{location}:");
    match &location {
        Location::Postgres(url) => {
            let (before, after) = postgres::migrate(url).await?;
            said.push_str(&format!(" schema version {before} -> {after},"));
        }
        // Opening would create an empty store in a mistyped directory.
        Location::Sled(dir) => anyhow::ensure!(
            dir.join(crate::store::acknowledged::FILE_NAME).is_file(),
            "{} holds no store",
            dir.display()
        ),
    }
    let opening = location.clone();
    let options = crate::store::Options {
        postgres: postgres::Options {
            migrate: true,
            ..postgres::Options::default()
        },
        ..crate::store::Options::default()
    };
    let opened =
        tokio::task::spawn_blocking(move || crate::store::open(&opening, options)).await??;
    let upgraded = migrations::run(opened.as_ref()).await;
    tokio::task::spawn_blocking(move || opened.close()).await??;
    let upgrade = upgraded?;
    said.push_str(&format!(" data version {} -> {}", upgrade.from, upgrade.to));
    Ok(said)
}

/// Copies the sled store `from` (`sled:DIR`) into the database `to`.
pub async fn copy(from: &str, to: &str) -> anyhow::Result<String> {
    let data = Path::new("data");
    let (Location::Sled(dir), Location::Postgres(url)) = (
        Location::parse(Some(from), data)?,
        Location::parse(Some(to), data)?,
    ) else {
        anyhow::bail!("store copy goes from sled:DIR to a postgres:// URL");
    };
    anyhow::ensure!(dir.is_dir(), "{} holds no store", dir.display());
    let source = SledStore::open(&dir)?;
    let revision = Store::revision(&source);
    let copied = crate::store::postgres::copy::copy(&source, revision, &url).await?;
    source.close()?;
    Ok(format!(
        "copied {} keys at revision {} from {from} to {}",
        copied.keys,
        copied.revision,
        Location::Postgres(url)
    ))
}
