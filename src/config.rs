//! Settings for `entitlements serve`. Later sources override earlier ones:
//! built-in defaults, the TOML file given by `--config` (or
//! `ENTITLEMENTS_CONFIG`), `ENTITLEMENTS_*` environment variables (nested
//! keys with `__`, e.g. `ENTITLEMENTS_AUTH__JWT_ISSUER`), flags.
//!
//! An unknown key, in the file or as an `ENTITLEMENTS_*` variable, is an
//! error rather than ignored: a misspelt `jwt_audience` would otherwise
//! silently switch the audience check off.

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
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`,
    /// `/readyz`), or `off`.
    pub admin_listen: String,
    /// Address of the SCIM 2.0 provisioning listener (`/scim/v2/...`), or
    /// `off`.
    pub scim_listen: String,
    /// OTLP/gRPC collector that spans are exported to (e.g.
    /// `http://127.0.0.1:4317`); absent: no trace export.
    pub otlp_endpoint: Option<String>,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Which store: absent or `sled` (sled in `data_dir`), `sled:DIR`, or
    /// a `postgres://` URL (several replicas may share one database).
    pub store: Option<String>,
    /// Apply pending database migrations at start-up (PostgreSQL) instead
    /// of refusing an older schema.
    pub migrate: bool,
    /// How replicas use a PostgreSQL store.
    pub postgres: PostgresSettings,
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
    /// How long in-flight calls may take to finish after a shutdown signal,
    /// in milliseconds.
    pub drain_deadline_ms: u64,
    /// The most client connections open at once; beyond it new connections
    /// are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a new connection may take to send its first bytes (the
    /// HTTP/2 preface, or with TLS the start of the handshake), in
    /// milliseconds.
    pub handshake_timeout_ms: u64,
    /// How long a connection may stay silent (nothing received, nothing
    /// sent) before it is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The most calls served at once, over all connections; a call beyond
    /// it is refused at once with RESOURCE_EXHAUSTED and a retry delay.
    pub max_concurrent_calls: usize,
    /// The longest a call may take, in milliseconds; a client's shorter
    /// `grpc-timeout` wins. A write whose deadline passes while it waits
    /// for the store is not applied.
    pub call_timeout_ms: u64,
    /// The most writes waiting for the store's committer; a write beyond it
    /// is refused at once with RESOURCE_EXHAUSTED and a retry delay.
    pub commit_queue_limit: usize,
    /// The largest request message accepted, in bytes (RESOURCE_EXHAUSTED
    /// beyond it).
    pub max_request_bytes: usize,
    /// The largest response message sent, in bytes.
    pub max_response_bytes: usize,
    /// Trust the development header naming the caller. Loopback only.
    pub dev_auth: bool,
    pub auth: AuthSettings,
    /// Serve TLS (and with `client_ca_file`, require client certificates).
    pub tls: Option<TlsSettings>,
}

/// How a replica follows a PostgreSQL store and shares timed work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Wake up on NOTIFY when another replica commits (false: polling only,
    /// for databases without LISTEN/NOTIFY).
    pub notify: bool,
    /// How often to look for other replicas' commits, and to retry an
    /// unreachable database, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long the lease on timed work lasts, in milliseconds: another
    /// replica takes timed work over this long after its holder died.
    pub lease_ms: u64,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            notify: true,
            poll_interval_ms: 200,
            lease_ms: 10_000,
        }
    }
}

/// How callers prove who they are: bearer JWTs verified with one of the
/// keys below, and who is special.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
    pub jwt_leeway_seconds: u64,
    /// Subjects that are service principals rather than people, with the
    /// roles they hold (e.g. "decision-reader").
    pub service_principals: Vec<ServicePrincipal>,
    /// Subjects that are global administrators from the start (in the
    /// environment also as a comma-separated list).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub global_admins: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_hs256_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: 60,
            service_principals: Vec::new(),
            global_admins: Vec::new(),
        }
    }
}

/// A list given as a list, or as one comma-separated text (what an
/// environment variable can hold: `ENTITLEMENTS_AUTH__GLOBAL_ADMINS=a,b`).
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrText::deserialize(deserializer)? {
        ListOrText::List(items) => items,
        ListOrText::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipal {
    pub id: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
            admin_listen: "127.0.0.1:9464".to_string(),
            scim_listen: "off".to_string(),
            otlp_endpoint: None,
            data_dir: PathBuf::from("data"),
            store: None,
            migrate: false,
            postgres: PostgresSettings::default(),
            log_format: LogFormat::Text,
            policies: None,
            scheduler_interval_ms: 1000,
            watch_retention: 100_000,
            audit_retention_days: 0,
            watch_checkpoint_ms: 1000,
            drain_deadline_ms: 30_000,
            max_connections: 512,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_concurrent_calls: 1024,
            call_timeout_ms: 30_000,
            commit_queue_limit: 4096,
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
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
    /// Admin HTTP address (metrics, probes), or "off" [env: ENTITLEMENTS_ADMIN_LISTEN] [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// SCIM 2.0 provisioning HTTP address, or "off" [env: ENTITLEMENTS_SCIM_LISTEN] [default: off]
    #[arg(long, value_name = "ADDR|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_listen: Option<String>,
    /// Export trace spans to this OTLP/gRPC collector [env: ENTITLEMENTS_OTLP_ENDPOINT] [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Data directory [env: ENTITLEMENTS_DATA_DIR] [default: ./data]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Store: sled, sled:DIR or a postgres:// URL [env: ENTITLEMENTS_STORE] [default: sled in the data directory]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Apply pending database migrations at start-up [env: ENTITLEMENTS_MIGRATE]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub migrate: bool,
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

const ENV_PREFIX: &str = "ENTITLEMENTS_";

/// figment reports an unknown key from the environment by its path
/// (`AUTH.JWT_AUDIANCE`); the operator needs the variable they set.
fn name_unknown_variable(error: figment::Error) -> anyhow::Error {
    let from_environment = error
        .metadata
        .as_ref()
        .is_some_and(|source| source.name.contains("environment"));
    if from_environment && matches!(error.kind, figment::error::Kind::UnknownField(..)) {
        let variable = format!("{ENV_PREFIX}{}", error.path.join("__").to_uppercase());
        return anyhow::anyhow!("unknown setting {variable} in the environment: {error}");
    }
    error.into()
}

/// `ENTITLEMENTS_*` variables that are not settings: the settings file,
/// the `audit export` client's token, and the test suites' store switch
/// and database (servers started by the tests inherit them).
const NOT_SETTINGS: [&str; 4] = ["config", "token", "test_store", "test_database_url"];

/// The address of a listener that may be switched off (`off` or empty).
fn optional_address(setting: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    match value.trim() {
        "" | "off" => Ok(None),
        address => address.parse().map(Some).map_err(|_| {
            anyhow::anyhow!("{setting}: {address:?} is neither an address (HOST:PORT) nor off")
        }),
    }
}

impl Settings {
    /// How long audit events are kept; None keeps everything.
    pub fn audit_retention(&self) -> Option<Duration> {
        (self.audit_retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.audit_retention_days) * 24 * 3600))
    }

    /// The admin listener's address; None when it is off (`off` or empty).
    pub fn admin_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        optional_address("admin_listen", &self.admin_listen)
    }

    /// The SCIM listener's address; None when it is off (`off` or empty).
    pub fn scim_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        optional_address("scim_listen", &self.scim_listen)
    }

    /// How long in-flight calls may take to finish after a shutdown signal.
    pub fn drain_deadline(&self) -> Duration {
        Duration::from_millis(self.drain_deadline_ms)
    }

    /// The longest a call may take (a client may ask for less).
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.max(1))
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
            .merge(Env::prefixed(ENV_PREFIX).ignore(&NOT_SETTINGS).split("__"))
            .merge(Serialized::defaults(args))
            .extract()
            .map_err(name_unknown_variable)?;
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

    /// Loads settings with only `env` set among `ENTITLEMENTS_*` variables
    /// and `file` as the settings file; the error text if refused.
    // figment's Jail takes closures returning its (large) error type.
    #[allow(clippy::result_large_err)]
    fn load_with(env: &[(&str, &str)], file: &str) -> Result<Settings, String> {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            for (name, value) in env {
                jail.set_env(name, value);
            }
            jail.create_file("settings.toml", file)?;
            let args = ServeArgs {
                config: Some(jail.directory().join("settings.toml")),
                ..Default::default()
            };
            loaded = Some(Settings::load(&args).map_err(|e| format!("{e:#}")));
            Ok(())
        });
        loaded.expect("the jail ran")
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_by_name() {
        let error = load_with(&[], "[auth]\njwt_audiance = \"api\"\n").unwrap_err();
        assert!(error.contains("jwt_audiance"), "{error}");
        let error = load_with(&[], "listen_address = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.contains("listen_address"), "{error}");
        let error = load_with(
            &[],
            "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nca = \"x\"\n",
        )
        .unwrap_err();
        assert!(error.contains("ca"), "{error}");
    }

    #[test]
    fn unknown_environment_variables_are_refused_by_name() {
        let error = load_with(&[("ENTITLEMENTS_AUTH__JWT_AUDIANCE", "api")], "").unwrap_err();
        assert!(error.contains("ENTITLEMENTS_AUTH__JWT_AUDIANCE"), "{error}");
        let error = load_with(&[("ENTITLEMENTS_LISTEN_ADDRESS", "127.0.0.1:1")], "").unwrap_err();
        assert!(error.contains("ENTITLEMENTS_LISTEN_ADDRESS"), "{error}");
        // The settings file variable and the export client's token are not
        // settings, and not refused.
        let settings = load_with(
            &[
                ("ENTITLEMENTS_TOKEN", "t"),
                ("ENTITLEMENTS_AUTH__JWT_AUDIENCE", "api"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(settings.auth.jwt_audience.as_deref(), Some("api"));
    }

    #[test]
    fn list_settings_take_a_comma_separated_environment_value() {
        let settings =
            load_with(&[("ENTITLEMENTS_AUTH__GLOBAL_ADMINS", "alice, bob")], "").unwrap();
        assert_eq!(settings.auth.global_admins, ["alice", "bob"]);
        let settings = load_with(&[("ENTITLEMENTS_AUTH__GLOBAL_ADMINS", "[carol]")], "").unwrap();
        assert_eq!(settings.auth.global_admins, ["carol"]);
        let settings = load_with(&[], "[auth]\nglobal_admins = [\"dave\", \"erin\"]\n").unwrap();
        assert_eq!(settings.auth.global_admins, ["dave", "erin"]);
    }

    #[test]
    fn jwt_leeway_defaults_to_a_minute() {
        let settings = load_with(&[], "").unwrap();
        assert_eq!(settings.auth.jwt_leeway_seconds, 60);
        let settings = load_with(&[("ENTITLEMENTS_AUTH__JWT_LEEWAY_SECONDS", "5")], "").unwrap();
        assert_eq!(settings.auth.jwt_leeway_seconds, 5);
    }

    #[test]
    fn the_admin_listener_takes_an_address_or_off() {
        let address = |value: &str| {
            let settings = Settings {
                admin_listen: value.to_string(),
                ..Settings::default()
            };
            settings.admin_address().map_err(|e| e.to_string())
        };
        assert_eq!(
            address("127.0.0.1:9464"),
            Ok(Some(([127, 0, 0, 1], 9464).into()))
        );
        assert_eq!(
            load_with(&[("ENTITLEMENTS_ADMIN_LISTEN", "off")], "")
                .unwrap()
                .admin_address()
                .unwrap(),
            None
        );
        assert_eq!(address(""), Ok(None));
        assert!(address("nine").unwrap_err().contains("admin_listen"));
    }

    #[test]
    fn the_scim_listener_is_off_unless_given_an_address() {
        let settings = load_with(&[], "").unwrap();
        assert_eq!(settings.scim_address().unwrap(), None);
        let settings = load_with(&[("ENTITLEMENTS_SCIM_LISTEN", "127.0.0.1:8443")], "").unwrap();
        assert_eq!(
            settings.scim_address().unwrap(),
            Some(([127, 0, 0, 1], 8443).into())
        );
        let settings = load_with(&[("ENTITLEMENTS_SCIM_LISTEN", "nine")], "").unwrap();
        assert!(
            settings
                .scim_address()
                .unwrap_err()
                .to_string()
                .contains("scim_listen")
        );
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
