//! The dataset in PostgreSQL: copied from the sled store into a schema of
//! its own for one run, and dropped afterwards.

use std::path::Path;

use entitlements::store::Store;
use entitlements::store::sled_store::SledStore;

/// Copies the store in `data_dir` into a new schema on `url`; returns the
/// schema's URL and name.
pub async fn copy_into_fresh_schema(
    data_dir: &Path,
    url: &str,
) -> anyhow::Result<(String, String)> {
    let name = format!("loadgen_{}", std::process::id());
    let schema_url = super::schema::fresh(url, &name).await?;
    let source = SledStore::open(data_dir)?;
    let started = std::time::Instant::now();
    let copied =
        entitlements::store::postgres::copy::copy(&source, source.revision(), &schema_url).await?;
    source.close()?;
    println!(
        "copied {} keys at revision {} into schema {name} in {:.1} s",
        copied.keys,
        copied.revision,
        started.elapsed().as_secs_f64()
    );
    Ok((schema_url, name))
}

pub async fn drop_schema(url: &str, name: &str) -> anyhow::Result<()> {
    super::schema::remove(url, name).await
}
