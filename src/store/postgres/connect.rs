//! Connecting to PostgreSQL: the connection URL, TLS with rustls, and the
//! task that drives a connection and hands its notifications over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, StoreResult};

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database is and how to reach it.
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: MakeRustlsConnect,
    /// The URL without its password, for messages.
    pub display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// True for a store setting that names a PostgreSQL database.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

impl Target {
    /// Parses a `postgres://` URL. Besides what tokio-postgres reads, it
    /// takes libpq's `sslrootcert=FILE` (the CA certificates to trust
    /// instead of the system's) and `sslmode=verify-ca` / `verify-full`
    /// (which are what `require` does here: rustls always verifies the
    /// server's certificate and name).
    pub fn parse(url: &str) -> StoreResult<Self> {
        let invalid = |why: String| StoreError::Unavailable(format!("invalid store URL: {why}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut root_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", file)) => root_file = Some(PathBuf::from(file)),
                Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: Config = url.parse().map_err(|e| invalid(format!("{e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("entitlements");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let tls = if config.get_ssl_mode() == SslMode::Disable {
            MakeRustlsConnect::new(client_config(rustls::RootCertStore::empty()))
        } else {
            MakeRustlsConnect::new(client_config(roots(root_file)?))
        };
        Ok(Self {
            config,
            tls,
            display: without_password(base),
        })
    }

    /// Opens a connection; its notifications (payloads) go to the receiver,
    /// which closes when the connection ends.
    pub async fn connect(&self) -> StoreResult<(Client, mpsc::UnboundedReceiver<String>)> {
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| unavailable(&self.display, &e))?;
        let (notify, notifications) = mpsc::unbounded_channel();
        let database = self.display.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = notify.send(n.payload().to_string());
                    }
                    Ok(AsyncMessage::Notice(notice)) => {
                        tracing::debug!(%notice, "database notice");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%database, %error, "the database connection ended");
                        break;
                    }
                }
            }
        });
        Ok((client, notifications))
    }
}

/// A database error as the store reports it: the database could not be
/// used just now (UNAVAILABLE to clients; retry later).
pub fn unavailable(database: &str, error: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("database {database}: {}", describe(error)))
}

/// The server's message when there is one (tokio-postgres's Display says
/// only "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn roots(file: Option<PathBuf>) -> StoreResult<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match file {
        Some(file) => {
            let certificates = CertificateDer::pem_file_iter(&file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Unavailable(format!("sslrootcert {}: {e}", file.display()))
                })?;
            roots.add_parsable_certificates(certificates);
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(roots)
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_messages_and_take_libpq_tls_words() {
        assert_eq!(
            without_password("postgres://app:s3cret@db:5432/ent"),
            "postgres://app@db:5432/ent"
        );
        let target =
            Target::parse("postgres://app:s3cret@db/ent?sslmode=verify-full&application_name=x")
                .unwrap();
        assert_eq!(target.display, "postgres://app@db/ent");
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert!(Target::parse("postgres://db/ent?nonsense=1").is_err());
    }
}
