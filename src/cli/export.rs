//! `entitlements audit export`: streams ExportAuditEvents from a running
//! server and writes one JSON object per line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use prost_types::Timestamp;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::api::caller::DEV_USER_HEADER;
use crate::pb::audit_log_client::AuditLogClient;
use crate::pb::{AuditFilter, ExportAuditEventsRequest};

use crate::audit::json::event_json;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The server, e.g. http://127.0.0.1:50051 (https:// for TLS)
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// A bearer token [env: ENTITLEMENTS_TOKEN]
    #[arg(long, env = "ENTITLEMENTS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With a --dev-auth server: the caller to act as
    #[arg(long, conflicts_with = "token")]
    pub dev_user: Option<String>,
    /// CA certificate (PEM) to trust; required for https://
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present, for a server that requires
    /// mutual TLS; needs --client-key
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Write here instead of standard output
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub actor: String,
    #[arg(long, default_value = "")]
    pub action: String,
    #[arg(long, default_value = "")]
    pub target_type: String,
    #[arg(long, default_value = "")]
    pub target_id: String,
    #[arg(long, default_value = "")]
    pub catalog_id: String,
    #[arg(long, default_value = "")]
    pub access_package_id: String,
    #[arg(long, default_value = "")]
    pub user_id: String,
    /// Events at or after this time (RFC 3339)
    #[arg(long)]
    pub since: Option<Timestamp>,
    /// Events before this time (RFC 3339)
    #[arg(long)]
    pub until: Option<Timestamp>,
}

async fn connect(args: &ExportArgs) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(args.server.clone())
        .with_context(|| format!("{:?} is not a server address", args.server))?;
    if args.server.starts_with("https://") {
        // The binary carries no system roots: the CA must be named.
        let ca = args
            .ca_cert
            .as_ref()
            .context("an https:// server needs --ca-cert (the CA certificate to trust)")?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    } else if args.client_cert.is_some() {
        anyhow::bail!("--client-cert needs an https:// server");
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.server))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Exports every matching event the caller may see; returns how many.
pub async fn run(args: ExportArgs) -> anyhow::Result<u64> {
    let channel = connect(&args).await?;
    let mut request = tonic::Request::new(ExportAuditEventsRequest {
        filter: Some(AuditFilter {
            actor: args.actor.clone(),
            target_type: args.target_type.clone(),
            target_id: args.target_id.clone(),
            action: args.action.clone(),
            catalog_id: args.catalog_id.clone(),
            access_package_id: args.access_package_id.clone(),
            user_id: args.user_id.clone(),
            start_time: args.since,
            end_time: args.until,
        }),
    });
    if let Some(token) = &args.token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(user) = &args.dev_user {
        request
            .metadata_mut()
            .insert(DEV_USER_HEADER, user.parse()?);
    }
    let mut stream = AuditLogClient::new(channel)
        .export_audit_events(request)
        .await?
        .into_inner();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0;
    while let Some(event) = stream.message().await? {
        serde_json::to_writer(&mut out, &event_json(&event))?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        export: ExportArgs,
    }

    #[tokio::test]
    async fn https_without_a_ca_certificate_is_refused_before_connecting() {
        let cli = Cli::parse_from(["export", "--server", "https://127.0.0.1:1"]);
        let error = run(cli.export).await.unwrap_err();
        assert!(error.to_string().contains("--ca-cert"), "{error:#}");
    }

    #[test]
    fn a_client_certificate_comes_with_its_key() {
        let alone = Cli::try_parse_from(["export", "--client-cert", "client.pem"]);
        assert!(alone.is_err());
        let key_alone = Cli::try_parse_from(["export", "--client-key", "client.key"]);
        assert!(key_alone.is_err());
        Cli::try_parse_from([
            "export",
            "--client-cert",
            "client.pem",
            "--client-key",
            "client.key",
        ])
        .unwrap();
    }

    #[tokio::test]
    async fn a_client_certificate_over_plaintext_is_refused_before_connecting() {
        let cli = Cli::parse_from([
            "export",
            "--server",
            "http://127.0.0.1:1",
            "--client-cert",
            "client.pem",
            "--client-key",
            "client.key",
        ]);
        let error = run(cli.export).await.unwrap_err();
        assert!(error.to_string().contains("https://"), "{error:#}");
    }
}
