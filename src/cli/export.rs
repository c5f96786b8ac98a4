//! `entitlements audit export`: streams ExportAuditEvents from a running
//! server and writes one JSON object per line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use prost_types::Timestamp;

use super::client::ClientArgs;
use crate::pb::audit_log_client::AuditLogClient;
use crate::pb::{AuditFilter, ExportAuditEventsRequest};

use crate::audit::json::event_json;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
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

/// Exports every matching event the caller may see; returns how many.
pub async fn run(args: ExportArgs) -> anyhow::Result<u64> {
    let channel = args.client.connect().await?;
    let request = args.client.request(ExportAuditEventsRequest {
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
    })?;
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
