//! `entitlements health`: asks a server's grpc.health.v1 service whether it
//! serves, for probes and container health checks that have no grpcurl.
//! Exits non-zero unless the answer is SERVING.

use std::time::Duration;

use anyhow::Context as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::client::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service to ask about, e.g. entitlements.v1.Decisions (default:
    /// the server as a whole)
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many milliseconds
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// The server's answer if it is SERVING; an error otherwise.
pub async fn check(args: HealthArgs) -> anyhow::Result<String> {
    let limit = Duration::from_millis(args.timeout_ms);
    let asked = async {
        let channel = args.client.connect().await?;
        let request = HealthCheckRequest {
            service: args.service.clone(),
        };
        let answer = HealthClient::new(channel)
            .check(request)
            .await
            .with_context(|| format!("asking {} about {:?}", args.client.server, args.service))?;
        Ok::<_, anyhow::Error>(answer.into_inner().status())
    };
    let status = tokio::time::timeout(limit, asked)
        .await
        .with_context(|| format!("{} did not answer within {limit:?}", args.client.server))??;
    let name = status.as_str_name();
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{} is {name}",
        args.client.server
    );
    Ok(name.to_string())
}
