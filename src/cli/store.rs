//! `migrate` and `store copy`: a PostgreSQL store's schema, and moving a
//! stopped server's sled store into one.

use std::path::Path;

use crate::store::sled_store::SledStore;
use crate::store::{Location, Store};

/// Applies the pending migrations to the database `store` names; says
/// which versions it went from and to.
pub async fn migrate(store: &str) -> anyhow::Result<String> {
    let location = Location::parse(Some(store), Path::new("data"))?;
    let Location::Postgres(url) = &location else {
        anyhow::bail!(
            "{location} needs no migration: sled stores are upgraded when the server starts"
        );
    };
    let (before, after) = crate::store::postgres::migrate(url).await?;
    Ok(format!("{location}: schema version {before} -> {after}"))
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
