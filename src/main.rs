use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use entitlements::api::jwt::{TokenClaims, mint_hs256};
use entitlements::audit::export::ExportArgs;
use entitlements::config::{LogFormat, ServeArgs, Settings};
use entitlements::shared::clock::SystemClock;
use tracing_subscriber::EnvFilter;

/// Entitlement management: catalogs, access packages, policies, requests,
/// approvals and assignments, over gRPC.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Mint an HS256 bearer token for development and testing.
    Token(TokenArgs),
    /// Work with a running server's audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with a stopped server's store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Accept that the store lost acknowledged writes (the server refuses
    /// to start on it otherwise): record what it holds now as acknowledged,
    /// and print what was lost.
    AcceptRollback {
        /// The server's data directory (the server must be stopped).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write the audit events the caller may see as JSON lines, oldest
    /// first.
    Export(Box<ExportArgs>),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The HS256 secret file the server verifies with.
    #[arg(long)]
    secret_file: PathBuf,
    /// The caller the token names (its `sub`).
    #[arg(long)]
    subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_seconds: u64,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    audience: Option<String>,
}

fn mint(args: TokenArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = TokenClaims {
        sub: args.subject,
        exp: now + args.ttl_seconds,
        nbf: now,
        iat: now,
        iss: args.issuer,
        aud: args.audience,
    };
    println!("{}", mint_hs256(&args.secret_file, &claims)?);
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: logs piped to a file or
    // a collector stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => mint(args),
        Command::Audit(AuditCommand::Export(args)) => {
            let written = entitlements::audit::export::run(*args).await?;
            eprintln!("exported {written} audit events");
            Ok(())
        }
        Command::Store(StoreCommand::AcceptRollback { data_dir }) => {
            init_logging(LogFormat::Text);
            println!("{}", entitlements::audit::rollback::accept(&data_dir)?);
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::load(&args)?;
            init_logging(settings.log_format);
            entitlements::server::ensure_dev_auth_on_loopback(&settings, settings.listen)?;
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            entitlements::server::run(
                &settings,
                Arc::new(SystemClock),
                listener,
                shutdown_signal(),
                |address| println!("entitlements listening on {address}"),
            )
            .await
        }
    }
}
