//! Settings for `entitlements serve`. Later sources override earlier ones:
//! built-in defaults, the TOML file given by `--config` (or
//! `ENTITLEMENTS_CONFIG`), `ENTITLEMENTS_*` environment variables (nested
//! keys with `__`, e.g. `ENTITLEMENTS_AUTH__JWT_ISSUER`), flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Directory with `schema.cedarschema` and `*.cedar` invariants; absent
    /// means the ones shipped in `policies/` (built into the binary).
    pub policies: Option<PathBuf>,
    /// How often background work (expiry, scheduled starts) looks for due
    /// items, in milliseconds.
    pub scheduler_interval_ms: u64,
    /// How many revisions with grant changes WatchGrants can replay.
    pub watch_retention: usize,
    /// How often an idle WatchGrants stream gets a checkpoint, in
    /// milliseconds.
    pub watch_checkpoint_ms: u64,
    /// How many days audit events are kept; 0 keeps everything. Requests
    /// and assignments are never pruned.
    pub audit_retention_days: u32,
    /// Trust the development header naming the caller. Loopback only.
    pub dev_auth: bool,
    pub auth: AuthSettings,
    /// Serve TLS (and with `client_ca_file`, require client certificates).
    pub tls: Option<TlsSettings>,
}

/// How callers prove who they are: bearer JWTs verified with one of the
/// keys below, and who is special.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// HS256 shared secret (the file's bytes, surrounding whitespace
    /// trimmed).
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// RS256 or ES256 public key, PEM.
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document (RS256 / ES256 / HS256 keys, chosen by `kid`).
    pub jwt_jwks_file: Option<PathBuf>,
    /// Required `iss` claim.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    pub jwt_audience: Option<String>,
    /// Subjects that are service principals rather than people, with the
    /// roles they hold (e.g. "decision-reader").
    pub service_principals: Vec<ServicePrincipal>,
    /// Subjects that are global administrators from the start.
    pub global_admins: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePrincipal {
    pub id: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// Server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Server private key, PEM.
    pub key_file: PathBuf,
    /// CA that client certificates must chain to (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            log_format: LogFormat::Text,
            policies: None,
            scheduler_interval_ms: 1000,
            watch_retention: 100_000,
            audit_retention_days: 0,
            watch_checkpoint_ms: 1000,
            dev_auth: false,
            auth: AuthSettings::default(),
            tls: None,
        }
    }
}

/// Flags of `entitlements serve`; each overrides the same setting from the
/// file and the environment.
#[derive(Debug, Default, Clone, Serialize, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [env: ENTITLEMENTS_LISTEN] [default: 127.0.0.1:50051]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Data directory [env: ENTITLEMENTS_DATA_DIR] [default: ./data]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Log format [env: ENTITLEMENTS_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Cedar schema and invariants directory [env: ENTITLEMENTS_POLICIES] [default: built in]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<PathBuf>,
    /// Trust the x-entitlements-user header (development only; loopback only) [env: ENTITLEMENTS_DEV_AUTH]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dev_auth: bool,
    /// A global administrator to add to auth.global_admins (repeatable)
    #[arg(long = "global-admin", value_name = "ID")]
    #[serde(skip)]
    pub global_admins: Vec<String>,
    /// TOML settings file
    #[arg(long, env = "ENTITLEMENTS_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl Settings {
    /// How long audit events are kept; None keeps everything.
    pub fn audit_retention(&self) -> Option<Duration> {
        (self.audit_retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.audit_retention_days) * 24 * 3600))
    }

    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = &args.config {
            anyhow::ensure!(
                file.is_file(),
                "settings file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut settings: Settings = figment
            .merge(
                Env::prefixed("ENTITLEMENTS_")
                    .ignore(&["config"])
                    .split("__"),
            )
            .merge(Serialized::defaults(args))
            .extract()?;
        settings
            .auth
            .global_admins
            .extend(args.global_admins.iter().cloned());
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.toml");
        std::fs::write(&file, "data_dir = \"/var/lib/x\"\nlog_format = \"json\"\n").unwrap();
        let args = ServeArgs {
            log_format: Some(LogFormat::Text),
            config: Some(file),
            ..Default::default()
        };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.listen, Settings::default().listen);
    }

    #[test]
    fn a_missing_settings_file_is_an_error() {
        let args = ServeArgs {
            config: Some(PathBuf::from("/nonexistent/settings.toml")),
            ..Default::default()
        };
        assert!(Settings::load(&args).is_err());
    }
}
