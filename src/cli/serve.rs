//! `entitlements serve`: settings, logging, trace export and signals
//! around [`crate::server::run`].

use std::sync::Arc;

use anyhow::Context as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, ServeArgs, Settings};
use crate::observe::traces;
use crate::shared::clock::SystemClock;

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    // Kept until the server has stopped: dropping it sends the last spans.
    let _traces = init_telemetry(&settings)?;
    crate::server::ensure_dev_auth_on_loopback(&settings, settings.listen)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    crate::server::run(
        &settings,
        Arc::new(SystemClock),
        listener,
        shutdown_signal(),
        |listening| println!("entitlements listening on {}", listening.grpc),
    )
    .await
}

pub fn init_logging(format: LogFormat) {
    logs(format).init();
}

/// Logging, and with `otlp_endpoint` set trace export, whose exporter the
/// caller keeps while it serves.
fn init_telemetry(settings: &Settings) -> anyhow::Result<Option<traces::Exporter>> {
    let Some(endpoint) = &settings.otlp_endpoint else {
        init_logging(settings.log_format);
        return Ok(None);
    };
    let (export, exporter) = traces::otlp(endpoint)?;
    // Spans at info and above (a call, its decisions and commits; not
    // health checks), whatever RUST_LOG lets through to the log.
    logs(settings.log_format)
        .with(export.with_filter(LevelFilter::INFO))
        .init();
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Some(exporter))
}

/// Log lines to stderr, filtered by RUST_LOG (default: info); the filter
/// is the log's alone, not the trace export's.
fn logs(
    format: LogFormat,
) -> impl tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: logs piped to a file or
    // a collector stay plain text.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines.json().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(lines)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives just
/// after the server announced itself must stop it cleanly, not kill it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
