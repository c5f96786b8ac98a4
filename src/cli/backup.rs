//! `entitlements backup` (from a running server, over BackupStore) and
//! `entitlements restore` (into a new data directory, offline).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::client::ClientArgs;
use crate::pb::BackupStoreRequest;
use crate::pb::settings_client::SettingsClient;
use crate::store::backup::format::{self, Summary};
use crate::store::backup::restore;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The backup file to write (replaced only once the backup is complete
    /// and checked)
    #[arg(long, short)]
    pub output: PathBuf,
}

/// Takes a backup of the server's store into the output file; says what it
/// holds.
pub async fn backup(args: BackupArgs) -> anyhow::Result<String> {
    let channel = args.client.connect().await?;
    let request = args.client.request(BackupStoreRequest {})?;
    let mut stream = SettingsClient::new(channel)
        .backup_store(request)
        .await?
        .into_inner();
    // Written aside and moved into place once whole: an interrupted backup
    // never looks like a backup.
    let partial = partial_path(&args.output);
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let received: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)?;
        }
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
    .await;
    let summary = received.and_then(|()| {
        let summary = format::check(std::io::BufReader::new(std::fs::File::open(&partial)?))?;
        std::fs::rename(&partial, &args.output)?;
        Ok(summary)
    });
    if summary.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let summary = summary.context("taking the backup")?;
    Ok(format!(
        "{}: backup at revision {} ({} records)",
        args.output.display(),
        summary.revision,
        summary.records
    ))
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Restores the backup `file` into the new data directory `dir`.
pub fn restore(file: &Path, dir: &Path) -> anyhow::Result<String> {
    let Summary {
        revision, records, ..
    } = restore::restore(file, dir)
        .with_context(|| format!("restoring {} into {}", file.display(), dir.display()))?;
    Ok(format!(
        "restored {} ({records} records) into {} at revision {revision}",
        file.display(),
        dir.display()
    ))
}
