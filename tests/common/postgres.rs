//! PostgreSQL for tests. One switch, `ENTITLEMENTS_TEST_STORE=postgres`,
//! runs everything that can use PostgreSQL against a real server: the
//! integration suites (each test server gets a schema of its own), the
//! conformance suite's PostgreSQL half and the replica tests. The server is
//! named by `ENTITLEMENTS_TEST_DATABASE_URL`, or `DATABASE_URL` (which
//! `.ci/pg.sh` exports). Without the switch the suites run on sled and the
//! PostgreSQL-only tests are skipped, saying so on stderr.

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use sha2::{Digest, Sha256};

/// The switch: `ENTITLEMENTS_TEST_STORE`.
pub const SWITCH: &str = "ENTITLEMENTS_TEST_STORE";

/// True when the suites run on PostgreSQL.
pub fn enabled() -> bool {
    match std::env::var(SWITCH) {
        Ok(store) if store == "postgres" => true,
        Ok(store) if store.is_empty() || store == "sled" => false,
        Ok(other) => panic!("{SWITCH}={other:?}: use postgres or sled"),
        Err(_) => false,
    }
}

/// The server the suites use when the switch is on.
pub fn server_url() -> String {
    ["ENTITLEMENTS_TEST_DATABASE_URL", "DATABASE_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|url| !url.is_empty()))
        .unwrap_or_else(|| {
            panic!(
                "{SWITCH}=postgres needs a server: set ENTITLEMENTS_TEST_DATABASE_URL or \
                 DATABASE_URL (`source .ci/pg.sh; start_pg` starts one and sets DATABASE_URL)"
            )
        })
}

/// The server for a test that needs PostgreSQL: None, after saying so on
/// stderr (past the test harness's capture, so it shows), when the switch
/// is off.
pub fn database(test: &str) -> Option<String> {
    if enabled() {
        return Some(server_url());
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the PostgreSQL tests in this binary (e.g. {test}) need \
             {SWITCH}=postgres and a server (`source .ci/pg.sh; start_pg`)"
        );
    });
    None
}

/// Runs `work` on a runtime of its own, on a thread of its own (callers may
/// be inside a runtime already).
fn on_the_side<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .expect("database setup panicked")
}

async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
    let driver = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    drop(client);
    let _ = driver.await;
}

/// The URL of a schema of its own for `name` on `server` (created if it is
/// not there yet): the connection's search_path names it.
pub fn schema_url(server: &str, name: &str) -> String {
    let schema = format!("t_{name}");
    let (base, create) = (
        server.to_string(),
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
    );
    on_the_side(async move { execute(&base, &create).await });
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-c%20search_path%3D{schema}")
}

/// A fresh schema URL for a test, unique per run.
pub fn fresh_schema(server: &str) -> String {
    schema_url(server, &uuid::Uuid::now_v7().simple().to_string())
}

/// Runs SQL on the server (not in a test's schema): e.g. to cut the
/// connections of a schema's replicas.
pub fn run_sql(server: &str, sql: &str) {
    let (base, sql) = (server.to_string(), sql.to_string());
    on_the_side(async move { execute(&base, &sql).await });
}

/// The store a test server on `data_dir` uses when the suites run on
/// PostgreSQL: a schema named after the directory, so a restart on the same
/// directory finds the same data.
pub fn store_for(data_dir: &Path) -> Option<String> {
    if !enabled() {
        return None;
    }
    let server = server_url();
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(path.to_string_lossy().as_bytes());
    Some(schema_url(&server, &hex::encode(&digest[..12])))
}
