//! The sled implementation of [`Store`], with pipelined group commit.
//!
//! One committer thread applies every write. It drains whatever jobs are
//! queued (up to [`MAX_BATCH`]), runs them one after another against the
//! applied state plus the writes of earlier jobs in the same batch, and
//! applies the batch as one atomic sled batch. A syncer thread then makes it
//! durable and only then publishes it (the store's revision, the commit
//! observers) and answers every job, strictly in order. While one batch
//! syncs, the committer runs the next; batches that queue up meanwhile share
//! the next sync. Durable means `flush` and an `fdatasync` of the log file:
//! sled 0.34's flush uses `sync_file_range` on Linux, which neither persists
//! file metadata nor drains the device's write cache. Concurrent writers
//! thus share one sync, and because jobs run one at a time, a job that
//! checks a precondition (an etag, a request still pending) sees no
//! concurrent change.
//!
//! After each sync, and before answering, the syncer records the last
//! synced revision and the audit chain's head in the acknowledged mark (see
//! [`super::acknowledged`]); opening refuses a store that is behind it.
//!
//! A batch that cannot be applied or made durable is not retried: sled may
//! hold it in memory already, and a later sync might or might not carry it
//! to disk. The store fails instead: that batch, every batch applied after
//! it and every queued or later write is refused, reads are refused (they
//! could show the failed batch), and [`SledStore::failure`] resolves so the
//! server can stop. A restart recovers what was acknowledged.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::sync::{Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::acknowledged::{AcknowledgedFile, Mark};
use super::batch::{self, KeyWrite, Overlay, Pending, Queue, Ran};
use super::{
    Change, CommitObserver, Failure, KeyValue, ReadView, Revision, Rollback, Store, StoreError,
    StoreResult, WriteJob, keys,
};

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

/// The most jobs one batch runs.
pub const MAX_BATCH: usize = 1024;

/// Batches applied but not yet handed to a sync, at most: enough for the
/// committer to work on the next batch while one syncs, few enough that
/// the committer does not run far ahead of what is durable.
const PIPELINE_DEPTH: usize = 2;

const REVISION_KEY: &str = "revision";

type Observers = Arc<RwLock<Vec<Arc<dyn CommitObserver>>>>;

pub struct SledStore {
    tree: sled::Db,
    revision: Arc<AtomicU64>,
    observers: Observers,
    queue: Queue,
    /// The committer, then the syncer: joined in that order on close.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Why the store failed, once a batch could not be made durable.
    failure: watch::Receiver<Option<Failure>>,
}

/// The store as found on disk, before anything is served from it.
struct OnDisk {
    dir: PathBuf,
    db: sled::Db,
    /// What the store holds: its revision and audit head.
    holds: Mark,
    acknowledged: AcknowledgedFile,
    /// What clients were last told was durable, if ever recorded.
    mark: Option<Mark>,
}

impl OnDisk {
    fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).open()?;
        let revision = match db.get(keys::key(&[keys::META, REVISION_KEY]))? {
            Some(bytes) => decode_revision(&bytes)?,
            None => 0,
        };
        let audit_head = db
            .get(keys::audit_head_key())?
            .map_or_else(Vec::new, |head| head.to_vec());
        let (acknowledged, mark) = AcknowledgedFile::open(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            holds: Mark {
                revision,
                audit_head,
            },
            acknowledged,
            mark,
        })
    }

    /// What the store lacks of what was acknowledged, if anything.
    fn rollback(&self) -> Option<Rollback> {
        let mark = self.mark.as_ref()?;
        let behind = self.holds.revision < mark.revision
            || (self.holds.revision == mark.revision && self.holds.audit_head != mark.audit_head);
        behind.then(|| Rollback {
            data_dir: self.dir.clone(),
            store: self.holds.clone(),
            acknowledged: mark.clone(),
        })
    }

    /// Brings the mark up to what the store holds.
    fn mark_as_acknowledged(&mut self) -> StoreResult<()> {
        if self.mark.as_ref() != Some(&self.holds) {
            self.acknowledged.record(&self.holds)?;
            self.mark = Some(self.holds.clone());
        }
        Ok(())
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A store that is behind what
    /// it acknowledged is refused with [`StoreError::RolledBack`].
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, super::DEFAULT_COMMIT_QUEUE)
    }

    /// Like [`SledStore::open`], with at most `commit_queue` writes queued.
    pub fn open_with(dir: &Path, commit_queue: usize) -> StoreResult<Self> {
        let mut on_disk = OnDisk::open(dir)?;
        if let Some(rollback) = on_disk.rollback() {
            return Err(StoreError::RolledBack(Box::new(rollback)));
        }
        if on_disk.mark.is_none() && on_disk.holds.revision > 0 {
            tracing::warn!(
                revision = on_disk.holds.revision,
                "the store has no acknowledged mark (it predates it, or the file was removed); \
                 starting one at its current revision"
            );
        }
        on_disk.mark_as_acknowledged()?;
        Self::start(on_disk, commit_queue)
    }

    /// Accepts that the store in `dir` lost acknowledged commits: the mark
    /// is set back to what the store holds, so it opens again. Returns what
    /// was lost, or None when nothing was.
    pub fn accept_rollback(dir: &Path) -> StoreResult<Option<Rollback>> {
        let mut on_disk = OnDisk::open(dir)?;
        let lost = on_disk.rollback();
        on_disk.mark_as_acknowledged()?;
        Ok(lost)
    }

    fn start(on_disk: OnDisk, commit_queue: usize) -> StoreResult<Self> {
        let OnDisk {
            dir,
            db,
            holds,
            acknowledged,
            ..
        } = on_disk;
        // sled keeps its log in `<dir>/db`; syncing it makes a flush durable.
        let log = File::open(dir.join("db"))?;
        File::open(&dir)?.sync_all()?;
        let revision = Arc::new(AtomicU64::new(holds.revision));
        let observers = Observers::default();
        let (failed, failure) = watch::channel(None);
        let failed = Arc::new(failed);
        let (queue, jobs) = Queue::new(commit_queue);
        let (to_syncer, applied) = mpsc::sync_channel(PIPELINE_DEPTH);
        let syncer = Syncer {
            tree: db.clone(),
            log,
            acknowledged,
            revision: Arc::clone(&revision),
            observers: Arc::clone(&observers),
            failed: Arc::clone(&failed),
        };
        let committer = Committer {
            tree: db.clone(),
            applied: holds.revision,
            audit_head: holds.audit_head,
            syncer: to_syncer,
            failed,
        };
        let syncer = std::thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || syncer.run(applied))?;
        let committer = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || committer.run(jobs))?;
        Ok(Self {
            tree: db,
            revision,
            observers,
            queue,
            threads: Mutex::new(vec![committer, syncer]),
            failure,
        })
    }

    /// Resolves with the reason once a write could not be made durable;
    /// never while the store is healthy.
    pub async fn failure(&self) -> Failure {
        let mut failure = self.failure.clone();
        let reason = failure
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone());
        match reason {
            Ok(Some(reason)) => reason,
            Ok(None) => unreachable!("waited for a failure"),
            // The committer stopped without failing: the store was closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// The failure that stopped the store, as the error every call now gets.
    fn failed(&self) -> Option<StoreError> {
        self.failure.borrow().clone().map(StoreError::Failed)
    }

    /// Stops accepting writes, lets queued ones finish, and flushes (unless
    /// the store failed: nothing after the failure may reach the disk).
    pub fn close(&self) -> StoreResult<()> {
        self.queue.close();
        // The committer ends when the queue does, and the syncer when the
        // committer has handed it everything.
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock poisoned"));
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(failed) = self.failed() {
            return Err(failed);
        }
        self.tree.flush()?;
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl ReadView for SledStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some(failed) = self.failed() {
            return Err(failed);
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        if let Some(failed) = self.failed() {
            return Box::new(std::iter::once(Err(failed)));
        }
        Box::new(sled_scan(&self.tree, prefix, start_after))
    }

    fn scan_back<'a>(
        &'a self,
        prefix: &[u8],
        start_before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        if let Some(failed) = self.failed() {
            return Box::new(std::iter::once(Err(failed)));
        }
        // Every key under the prefix sorts below the prefix with its last
        // byte (the separator) raised by one.
        let mut past_prefix = prefix.to_vec();
        if let Some(last) = past_prefix.last_mut() {
            *last += 1;
        }
        let end = match start_before {
            Some(before) if before < past_prefix.as_slice() => Bound::Excluded(before.to_vec()),
            _ => Bound::Excluded(past_prefix),
        };
        let range = self
            .tree
            .range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), end));
        Box::new(within_prefix(range.rev(), prefix))
    }
}

impl Store for SledStore {
    fn submit(&self, job: WriteJob) -> oneshot::Receiver<StoreResult<Revision>> {
        self.queue.submit(job, self.failed())
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn flush(&self) -> StoreResult<()> {
        if let Some(failed) = self.failed() {
            return Err(failed);
        }
        self.tree.flush()?;
        Ok(())
    }

    fn observe(&self, observer: Arc<dyn CommitObserver>) {
        self.observers
            .write()
            .expect("observers lock poisoned")
            .push(observer);
    }

    fn close(&self) -> StoreResult<()> {
        SledStore::close(self)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.tree.size_on_disk().ok()
    }

    fn failure(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = super::Failure> + Send + '_>> {
        Box::pin(SledStore::failure(self))
    }
}

fn sled_scan<'a>(
    tree: &sled::Tree,
    prefix: &[u8],
    start_after: Option<&[u8]>,
) -> impl Iterator<Item = StoreResult<KeyValue>> + 'a {
    let start = match start_after {
        Some(after) => Bound::Excluded(after.to_vec()),
        None => Bound::Included(prefix.to_vec()),
    };
    within_prefix(tree.range::<Vec<u8>, _>((start, Bound::Unbounded)), prefix)
}

/// Owned key-value pairs from a sled range, for as long as keys stay under
/// `prefix`.
fn within_prefix<'a>(
    range: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    prefix: &[u8],
) -> impl Iterator<Item = StoreResult<KeyValue>> + 'a {
    let prefix = prefix.to_vec();
    range
        .map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
        .take_while(move |item| match item {
            Ok((k, _)) => k.starts_with(&prefix),
            Err(_) => true,
        })
}

fn decode_revision(bytes: &[u8]) -> StoreResult<Revision> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("store revision is not 8 bytes"))?;
    Ok(u64::from_be_bytes(raw))
}

/// Runs the jobs and applies each batch to sled, then hands it to the
/// [`Syncer`] and goes on with the next batch while that one syncs: the
/// sync of one batch overlaps the jobs of the next.
struct Committer {
    tree: sled::Db,
    /// The revision of the last batch applied (durable or not yet).
    applied: Revision,
    /// The audit head as of the last batch applied.
    audit_head: Vec<u8>,
    syncer: mpsc::SyncSender<Applied>,
    failed: FailureSignal,
}

/// A batch applied to sled, on its way to becoming durable.
struct Applied {
    /// From the start of the apply until the batch is published.
    _timing: crate::observe::metrics::CommitTiming,
    revision: Revision,
    audit_head: Vec<u8>,
    /// Each committing job's revision and writes, in order.
    committed: Vec<(Revision, Vec<KeyWrite>)>,
    replies: Vec<(oneshot::Sender<StoreResult<Revision>>, Revision)>,
}

/// Sets the store's failure, once; shared by the committer and the syncer.
type FailureSignal = Arc<watch::Sender<Option<Failure>>>;

/// Why a sled store fails.
#[derive(Debug, thiserror::Error)]
#[error("a write could not be made durable: {0}")]
struct NotDurable(#[source] StoreError);

/// Fails the store: from now on every read and write is refused.
fn fail(signal: &FailureSignal, error: StoreError) -> Failure {
    let reason = Failure::new(NotDurable(error));
    tracing::error!(%reason, "the store failed; it accepts no more reads or writes");
    signal.send_if_modified(|failure| {
        let first = failure.is_none();
        if first {
            *failure = Some(reason.clone());
        }
        first
    });
    signal.borrow().clone().unwrap_or(reason)
}

impl Committer {
    fn run(mut self, mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
        while let Some(pending) = batch::next_batch_blocking(&mut queue, MAX_BATCH) {
            let failure = self.failed.borrow().clone();
            if let Some(reason) = failure {
                // Nothing is applied on top of a batch that failed.
                let queued = std::iter::from_fn(|| queue.try_recv().ok());
                for Pending { reply, .. } in pending.into_iter().chain(queued) {
                    let _ = reply.send(Err(StoreError::Failed(reason.clone())));
                }
                continue;
            }
            match self.apply(pending) {
                Ok(applied) => {
                    if self.syncer.send(applied).is_err() {
                        return;
                    }
                }
                Err(replies) => {
                    let reason = self.failed.borrow().clone().expect("failed");
                    for (reply, _) in replies {
                        let _ = reply.send(Err(StoreError::Failed(reason.clone())));
                    }
                }
            }
        }
    }

    /// Runs a batch's jobs and applies what they wrote as one atomic sled
    /// batch (in memory and in sled's log, not yet synced). When sled
    /// refuses it, the store fails and the replies are handed back.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        pending: Vec<Pending>,
    ) -> Result<Applied, Vec<(oneshot::Sender<StoreResult<Revision>>, Revision)>> {
        let timing = crate::observe::metrics::CommitTiming::start();
        let Ran {
            writes,
            committed,
            replies,
            revision,
        } = batch::run(&Committed(&self.tree), self.applied, pending);
        if !writes.is_empty() {
            if let Err(error) = self.apply_to_sled(writes, revision) {
                fail(&self.failed, error);
                return Err(replies);
            }
            self.applied = revision;
        }
        Ok(Applied {
            _timing: timing,
            revision: self.applied,
            audit_head: self.audit_head.clone(),
            committed,
            replies,
        })
    }

    fn apply_to_sled(&mut self, overlay: Overlay, revision: Revision) -> StoreResult<()> {
        if let Some(head) = overlay.get(&keys::audit_head_key()) {
            self.audit_head = head.clone().unwrap_or_default();
        }
        let mut batch = sled::Batch::default();
        for (key, value) in overlay {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch.insert(
            keys::key(&[keys::META, REVISION_KEY]),
            revision.to_be_bytes().to_vec(),
        );
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Makes applied batches durable, in order, and only then publishes and
/// acknowledges them. Batches that queued up while a sync ran share the
/// next one.
struct Syncer {
    tree: sled::Db,
    log: File,
    acknowledged: AcknowledgedFile,
    /// The durable revision readers see.
    revision: Arc<AtomicU64>,
    observers: Observers,
    failed: FailureSignal,
}

impl Syncer {
    fn run(mut self, applied: mpsc::Receiver<Applied>) {
        while let Ok(first) = applied.recv() {
            let mut group = vec![first];
            group.extend(applied.try_iter());
            let last = group.last().expect("one at least");
            let (revision, audit_head) = (last.revision, last.audit_head.clone());
            let failure = self.failed.borrow().clone();
            let synced = match failure {
                Some(reason) => Err(reason),
                None if group.iter().all(|a| a.committed.is_empty()) => Ok(()),
                None => self
                    .make_durable(revision, audit_head)
                    .map_err(|error| fail(&self.failed, error)),
            };
            match synced {
                Ok(()) => group.into_iter().for_each(|batch| self.publish(batch)),
                Err(reason) => {
                    // Failed before anyone hears of it: a caller told its
                    // write failed must not then read that write.
                    let replies = group.into_iter().flat_map(|batch| batch.replies);
                    for (reply, _) in replies {
                        let _ = reply.send(Err(StoreError::Failed(reason.clone())));
                    }
                }
            }
        }
    }

    /// Syncs sled's log, then records the batch as about to be
    /// acknowledged: one sync of the log and one of the mark.
    fn make_durable(&mut self, revision: Revision, audit_head: Vec<u8>) -> StoreResult<()> {
        self.tree.flush()?;
        self.log.sync_data()?;
        self.acknowledged.record(&Mark {
            revision,
            audit_head,
        })?;
        Ok(())
    }

    /// A durable batch: readers and observers see it, then its callers
    /// hear of it.
    fn publish(&self, batch: Applied) {
        self.revision.store(batch.revision, Ordering::Release);
        if !batch.committed.is_empty() {
            let changes: Vec<Change<'_>> = batch
                .committed
                .iter()
                .map(|(revision, writes)| Change {
                    revision: *revision,
                    writes,
                })
                .collect();
            for observer in self
                .observers
                .read()
                .expect("observers lock poisoned")
                .iter()
            {
                observer.committed(&changes);
            }
        }
        for (reply, revision) in batch.replies {
            let _ = reply.send(Ok(revision));
        }
    }
}

/// What sled holds, as jobs read it: the committer is the only writer.
struct Committed<'a>(&'a sled::Db);

impl ReadView for Committed<'_> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn scan<'b>(
        &'b self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'b> {
        Box::new(sled_scan(self.0, prefix, start_after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::write;

    #[tokio::test]
    async fn later_jobs_see_earlier_writes_and_revisions_grow() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let first = write::<_, StoreError, _>(&store, |txn| {
            txn.put(b"a/1".to_vec(), b"x".to_vec());
            txn.put(b"a/3".to_vec(), b"z".to_vec());
            Ok(())
        })
        .await
        .unwrap();
        let second = write::<_, StoreError, _>(&store, |txn| {
            txn.put(b"a/2".to_vec(), b"y".to_vec());
            txn.delete(b"a/3".to_vec());
            let seen: Vec<_> = txn.scan(b"a/", None).map(|kv| kv.unwrap().0).collect();
            Ok(seen)
        })
        .await
        .unwrap();
        assert_eq!(first.revision + 1, second.revision);
        assert_eq!(second.value, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        assert_eq!(store.revision(), second.revision);
    }

    #[tokio::test]
    async fn backward_scans_stay_in_their_prefix_in_the_store_and_in_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let keys = |items: Vec<StoreResult<KeyValue>>| -> Vec<Vec<u8>> {
            items.into_iter().map(|kv| kv.unwrap().0).collect()
        };
        let in_job = write::<_, StoreError, _>(&store, move |txn| {
            for key in ["a/1", "a/2", "a/3", "b/1", "a"] {
                txn.put(key.as_bytes().to_vec(), b"v".to_vec());
            }
            Ok((
                keys(txn.scan_back(b"a/", None).collect()),
                keys(txn.scan_back(b"a/", Some(b"a/3")).collect()),
            ))
        })
        .await
        .unwrap()
        .value;
        let committed = (
            keys(store.scan_back(b"a/", None).collect()),
            keys(store.scan_back(b"a/", Some(b"a/3")).collect()),
        );
        let expected = (
            vec![b"a/3".to_vec(), b"a/2".to_vec(), b"a/1".to_vec()],
            vec![b"a/2".to_vec(), b"a/1".to_vec()],
        );
        assert_eq!(in_job, expected);
        assert_eq!(committed, expected);
    }

    #[tokio::test]
    async fn a_failed_job_writes_nothing_and_revision_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            write::<_, StoreError, _>(&store, |txn| {
                txn.put(b"k".to_vec(), b"v".to_vec());
                Ok(())
            })
            .await
            .unwrap();
            let failed = write::<(), _, _>(&store, |txn| {
                txn.put(b"k2".to_vec(), b"v".to_vec());
                Err(StoreError::corrupt("no"))
            })
            .await;
            assert!(failed.is_err());
            assert_eq!(store.get(b"k2").unwrap(), None);
        }
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(reopened.revision(), 1);
        assert_eq!(reopened.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
}
