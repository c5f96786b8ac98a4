//! A PostgreSQL schema of its own for one benchmark run, dropped afterwards.

async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Creates (afresh) the schema `name` on `url`; returns a URL whose
/// connections use it.
pub async fn fresh(url: &str, name: &str) -> anyhow::Result<String> {
    execute(
        url,
        &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
    )
    .await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}options=-c%20search_path%3D{name}"))
}

pub async fn remove(url: &str, name: &str) -> anyhow::Result<()> {
    execute(url, &format!("DROP SCHEMA {name} CASCADE")).await
}
