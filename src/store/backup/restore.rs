//! Restoring a backup file into a new sled data directory, offline.
//!
//! The file is read twice: once to check it end to end (a truncated or
//! damaged file is refused before anything is written), then to apply its
//! records. The store gets the backup's revision and an acknowledged mark at
//! that revision and audit head, so the server starts on it as on the store
//! the backup was taken from.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::format::{self, Decoder, Summary};
use crate::store::acknowledged::{AcknowledgedFile, Mark};
use crate::store::{StoreError, StoreResult, keys};

/// Records applied per sled batch.
const BATCH: usize = 10_000;

/// Restores the backup at `file` into `dir`, which must not exist or be
/// empty. Returns what the backup held.
pub fn restore(file: &Path, dir: &Path) -> StoreResult<Summary> {
    let summary = format::check(open(file)?)?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(StoreError::Incompatible(format!(
            "{} is not empty: restore only into a new or empty data directory",
            dir.display()
        )));
    }
    let created = !dir.exists();
    let restored = apply(file, dir, &summary);
    if restored.is_err() {
        // Leave the directory as it was found, so that a retry is not
        // refused for what the failed attempt left behind.
        let _ = if created {
            std::fs::remove_dir_all(dir)
        } else {
            clear(dir)
        };
    }
    restored.map(|()| summary)
}

fn open(file: &Path) -> StoreResult<BufReader<File>> {
    let opened = File::open(file).map_err(|error| {
        StoreError::Io(std::io::Error::new(
            error.kind(),
            format!("opening {}: {error}", file.display()),
        ))
    })?;
    Ok(BufReader::new(opened))
}

fn clear(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn apply(file: &Path, dir: &Path, expected: &Summary) -> StoreResult<()> {
    std::fs::create_dir_all(dir)?;
    let db = sled::Config::new().path(dir).open()?;
    let mut decoder = Decoder::new(open(file)?)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    while let Some((key, value)) = decoder.next_record()? {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
        pending += 1;
        if pending == BATCH {
            db.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    // The file may have changed since it was checked: what is restored is
    // what this pass read, and it must be the same backup.
    if decoder.summary() != Some(expected) {
        return Err(StoreError::corrupt(
            "the backup file changed while it was restored",
        ));
    }
    batch.insert(
        keys::revision_key(),
        expected.revision.to_be_bytes().to_vec(),
    );
    db.apply_batch(batch)?;
    db.flush()?;
    let head = db.get(keys::audit_head_key())?.map(|head| head.to_vec());
    if head.unwrap_or_default() != expected.audit_head {
        return Err(StoreError::corrupt(
            "the backup's records end at another audit head than the backup names",
        ));
    }
    // sled releases its directory lock only once its background thread is
    // gone, so the restored store is not opened again here: the mark is
    // what the server checks when it opens it.
    let (mut acknowledged, _) = AcknowledgedFile::open(dir)?;
    acknowledged.record(&Mark {
        revision: expected.revision,
        audit_head: expected.audit_head.clone(),
    })?;
    Ok(())
}
