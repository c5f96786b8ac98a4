//! An online, consistent snapshot of a store that keeps serving writes.
//!
//! Neither store can read everything at one revision cheaply: sled has no
//! snapshots, and the PostgreSQL store's mirror is read in chunks. Copying
//! inside a write job would be consistent but would stop every write for as
//! long as the copy takes (and, on PostgreSQL, hold the revision lock of
//! every replica). Measured on sled (release build, a busy 2-core machine):
//! scanning and encoding 100k keys of 200 bytes (22 MB) took 0.11 s, so the
//! load generator's 0.1 scale dataset (about two million keys) would stop
//! writes for over two seconds. Instead, writes never wait (in the same
//! measurement a writer committing one key at a time went on during the
//! backup, its slowest commit 15 ms, an fsync's worth):
//!
//! 1. A recording of every commit starts (the [`ChangeTap`] observes the
//!    store from start-up and copies commits only while a recording is on).
//! 2. The key space is scanned while writes go on: each key is read at some
//!    revision between the start and the end of the scan.
//! 3. A job that writes nothing is queued once the scan ends. Its answer
//!    names the newest revision before it (`end`), and by then every commit
//!    up to `end` has been observed (observers hear of a batch before its
//!    jobs are answered) and every batch the scan may have read from came
//!    before it.
//! 4. The recorded commits up to `end` are appended, in order.
//!
//! Applying everything in order gives exactly the store at `end`: a key no
//! commit changed since the recording started was read at its final value;
//! for any other key its last recorded change up to `end` comes last. A
//! commit observed before the recording started was applied before the scan
//! began, so the scan read it. What is held in memory is only the commits
//! made during the scan.

use std::sync::{Arc, Mutex, Weak};

use super::format::Encoder;
use crate::store::batch::KeyWrite;
use crate::store::{Change, CommitObserver, Revision, Store, StoreError, StoreResult, keys};

/// Commits copied while a snapshot runs: each revision's writes.
type Recorded = Mutex<Vec<(Revision, Vec<KeyWrite>)>>;

/// Observes every commit and copies it into the recordings that are on.
#[derive(Default)]
pub struct ChangeTap {
    recordings: Mutex<Vec<Weak<Recorded>>>,
}

impl ChangeTap {
    /// A tap observing `store` from now on.
    pub fn attach(store: &dyn Store) -> Arc<Self> {
        let tap = Arc::new(Self::default());
        store.observe(tap.clone());
        tap
    }

    /// Starts recording; the recording ends when the returned value is
    /// dropped.
    fn record(&self) -> Arc<Recorded> {
        let recording = Arc::new(Recorded::default());
        self.recordings
            .lock()
            .expect("recordings lock poisoned")
            .push(Arc::downgrade(&recording));
        recording
    }
}

impl CommitObserver for ChangeTap {
    fn committed(&self, changes: &[Change<'_>]) {
        let mut recordings = self.recordings.lock().expect("recordings lock poisoned");
        recordings.retain(|recording| {
            let Some(recording) = recording.upgrade() else {
                return false;
            };
            let mut recorded = recording.lock().expect("recording lock poisoned");
            recorded.extend(
                changes
                    .iter()
                    .map(|change| (change.revision, change.writes.to_vec())),
            );
            true
        });
    }
}

/// Writes a consistent snapshot of `store` into `encoder`, calling `emit`
/// whenever at least `chunk` bytes are buffered (an error from `emit` stops
/// the snapshot). Returns the revision it is at and the audit head there,
/// for [`Encoder::finish`]. Blocking: run it off the async runtime.
pub fn write(
    store: &dyn Store,
    tap: &ChangeTap,
    encoder: &mut Encoder,
    chunk: usize,
    mut emit: impl FnMut(Vec<u8>) -> StoreResult<()>,
) -> StoreResult<(Revision, Vec<u8>)> {
    let recording = tap.record();
    // The embedded store keeps its revision among its keys; the backup
    // says the revision at its end instead.
    let revision_key = keys::revision_key();
    let audit_head_key = keys::audit_head_key();
    let mut audit_head = Vec::new();
    for entry in store.scan(b"", None) {
        let (key, value) = entry?;
        if key == revision_key {
            continue;
        }
        if key == audit_head_key {
            audit_head.clone_from(&value);
        }
        encoder.put(&key, &value);
        if encoder.buffered() >= chunk {
            emit(encoder.take())?;
        }
    }
    let end = store
        .submit(Box::new(|_| false))
        .blocking_recv()
        .unwrap_or(Err(StoreError::Closed))?;
    let recorded = std::mem::take(&mut *recording.lock().expect("recording lock poisoned"));
    drop(recording);
    for (_, writes) in recorded.iter().take_while(|(revision, _)| *revision <= end) {
        for (key, value) in writes {
            match value {
                Some(value) => encoder.put(key, value),
                None => encoder.delete(key),
            }
            if *key == audit_head_key {
                audit_head = value.clone().unwrap_or_default();
            }
            if encoder.buffered() >= chunk {
                emit(encoder.take())?;
            }
        }
    }
    Ok((end, audit_head))
}
