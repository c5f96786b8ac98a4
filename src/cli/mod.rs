//! The command line: `serve` runs the server; the other commands are
//! clients of a running server (`audit export`, `backup`, `health`) or
//! tools for a stopped one (`restore`, `store accept-rollback`, `store
//! copy`), for a store offline (`migrate`) and for development (`token`).
//! They sit above every layer of the library and use it as any other
//! program would.

pub mod backup;
pub mod client;
pub mod export;
pub mod health;
pub mod rollback;
pub mod serve;
pub mod store;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, ServeArgs};
use backup::BackupArgs;
use export::ExportArgs;
use health::HealthArgs;
use token::TokenArgs;

/// Entitlement management: catalogs, access packages, policies, requests,
/// approvals and assignments, over gRPC.
#[derive(Parser)]
#[command(name = "entitlements", version)]
pub struct Cli {
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
    /// Write a consistent backup of a running server's store to a file
    /// (global administrators only).
    Backup(Box<BackupArgs>),
    /// Restore a backup file into a new data directory (offline: no server
    /// may use the directory).
    Restore {
        /// The backup file
        file: PathBuf,
        /// The data directory to create; it must not exist or be empty
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Ask a server whether it is SERVING (grpc.health.v1); exits non-zero
    /// otherwise. For container health checks and probes.
    Health(Box<HealthArgs>),
    /// Work with a stopped server's store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Upgrade a store offline: a PostgreSQL store's schema, and the stored
    /// data of either store (the server also upgrades the data when it
    /// starts).
    Migrate {
        /// The store: sled:DIR (its server stopped) or a postgres:// URL
        /// [env: ENTITLEMENTS_STORE]
        #[arg(long, env = "ENTITLEMENTS_STORE")]
        store: String,
    },
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
    /// Copy a sled store into an empty PostgreSQL database: every key, the
    /// revision and the metadata, so revisions and the audit chain carry
    /// over. The server on the sled store must be stopped.
    Copy {
        /// The sled store: sled:DIR
        #[arg(long)]
        from: String,
        /// The database: a postgres:// URL (its schema is created)
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write the audit events the caller may see as JSON lines, oldest
    /// first.
    Export(Box<ExportArgs>),
}

/// Runs the command the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token(args) => token::mint(args),
        Command::Audit(AuditCommand::Export(args)) => {
            let written = export::run(*args).await?;
            eprintln!("exported {written} audit events");
            Ok(())
        }
        Command::Backup(args) => {
            println!("{}", backup::backup(*args).await?);
            Ok(())
        }
        Command::Health(args) => {
            println!("{}", health::check(*args).await?);
            Ok(())
        }
        Command::Restore { file, data_dir } => {
            serve::init_logging(LogFormat::Text);
            println!("{}", backup::restore(&file, &data_dir)?);
            Ok(())
        }
        Command::Store(StoreCommand::AcceptRollback { data_dir }) => {
            serve::init_logging(LogFormat::Text);
            println!("{}", rollback::accept(&data_dir)?);
            Ok(())
        }
        Command::Store(StoreCommand::Copy { from, to }) => {
            serve::init_logging(LogFormat::Text);
            println!("{}", store::copy(&from, &to).await?);
            Ok(())
        }
        Command::Migrate { store } => {
            serve::init_logging(LogFormat::Text);
            println!("{}", store::migrate(&store).await?);
            Ok(())
        }
        Command::Serve(args) => serve::serve(args).await,
    }
}
