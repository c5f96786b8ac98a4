//! Running a group commit's jobs, the same for every backend: each job
//! reads what is committed, then the writes of the batch's earlier jobs,
//! then its own; a job that commits and wrote something takes the next
//! revision. The backend then makes the batch durable and answers the
//! replies, or fails them all.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{KeyValue, ReadView, Revision, StoreError, StoreResult, Txn, WriteJob};

/// Keys written (Some) or deleted (None), by key.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key written (Some) or deleted (None) by a commit.
pub type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A queued job and where its answer goes.
pub struct Pending {
    pub job: WriteJob,
    pub reply: oneshot::Sender<StoreResult<Revision>>,
    /// Counts the job as queued until the committer takes it.
    _queued: Ticket,
}

/// The writes waiting for a committer, at most `limit` of them: past it a
/// write is refused at once ([`StoreError::Busy`], which callers may retry)
/// instead of queueing without end and answering late.
pub struct Queue {
    sender: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

/// One queued job, counted until dropped.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::observe::metrics::commit_dequeued();
    }
}

impl Queue {
    /// A queue of at most `limit` jobs (at least one), and the committer's
    /// end of it.
    pub fn new(limit: usize) -> (Self, mpsc::UnboundedReceiver<Pending>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queue = Self {
            sender: Mutex::new(Some(sender)),
            queued: Arc::default(),
            limit: limit.max(1),
        };
        (queue, receiver)
    }

    /// Queues `job`, unless the store `failed`, the queue is full or closed;
    /// the receiver yields its outcome.
    pub fn submit(
        &self,
        job: WriteJob,
        failed: Option<StoreError>,
    ) -> oneshot::Receiver<StoreResult<Revision>> {
        let (reply, receiver) = oneshot::channel();
        if let Some(failed) = failed {
            let _ = reply.send(Err(failed));
            return receiver;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = reply.send(Err(StoreError::Busy { limit: self.limit }));
            return receiver;
        }
        crate::observe::metrics::commit_queued();
        let ticket = Ticket(Arc::clone(&self.queued));
        let sender = self.sender.lock().expect("queue lock poisoned");
        if let Some(sender) = sender.as_ref() {
            // A send error drops `reply`, which the receiver reports as closed.
            let _ = sender.send(Pending {
                job,
                reply,
                _queued: ticket,
            });
        }
        receiver
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes no more jobs; the committer sees the end once it has taken the
    /// ones queued.
    pub fn close(&self) {
        drop(self.sender.lock().expect("queue lock poisoned").take());
    }
}

/// Takes the first job (waiting for it) and whatever else is queued, up to
/// `max` jobs; None once the queue is closed and empty. For committers on a
/// plain thread.
pub fn next_batch_blocking(
    queue: &mut mpsc::UnboundedReceiver<Pending>,
    max: usize,
) -> Option<Vec<Pending>> {
    let first = queue.blocking_recv()?;
    Some(with_queued(first, queue, max))
}

/// `first` and whatever else is queued, up to `max` jobs.
pub fn with_queued(
    first: Pending,
    queue: &mut mpsc::UnboundedReceiver<Pending>,
    max: usize,
) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// What a batch's jobs did, before it is made durable.
pub struct Ran {
    /// Every key the batch changes, at its last value.
    pub writes: Overlay,
    /// Each committing job's revision and writes, in order.
    pub committed: Vec<(Revision, Vec<KeyWrite>)>,
    /// Each job's reply and the revision to answer it with (the last
    /// revision before it, for a job that wrote nothing or declined).
    pub replies: Vec<(oneshot::Sender<StoreResult<Revision>>, Revision)>,
    /// The revision the batch commits at.
    pub revision: Revision,
}

/// Runs `pending` in order over `committed`, which is at `revision`. A job
/// that panics is declined (its writes are discarded).
pub fn run(committed: &dyn ReadView, revision: Revision, pending: Vec<Pending>) -> Ran {
    crate::observe::metrics::commit_batch_taken(pending.len());
    let mut ran = Ran {
        writes: Overlay::new(),
        committed: Vec::new(),
        replies: Vec::with_capacity(pending.len()),
        revision,
    };
    for Pending {
        job,
        reply,
        _queued,
    } in pending
    {
        // Running, so no longer waiting.
        drop(_queued);
        let mut txn = OverlayTxn {
            committed,
            batch: &ran.writes,
            own: Overlay::new(),
            revision: ran.revision + 1,
        };
        let commit = catch_unwind(AssertUnwindSafe(|| job(&mut txn))).unwrap_or_else(|_| {
            tracing::error!("a write job panicked; its writes are discarded");
            false
        });
        let own = txn.own;
        if commit && !own.is_empty() {
            ran.revision += 1;
            let writes = own.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            ran.committed.push((ran.revision, writes));
            ran.writes.extend(own);
        }
        ran.replies.push((reply, ran.revision));
    }
    ran
}

/// A job's view: what is committed, then earlier jobs of the batch, then its
/// own writes.
struct OverlayTxn<'a> {
    committed: &'a dyn ReadView,
    batch: &'a Overlay,
    own: Overlay,
    revision: Revision,
}

impl ReadView for OverlayTxn<'_> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some(value) = self.own.get(key).or_else(|| self.batch.get(key)) {
            return Ok(value.clone());
        }
        self.committed.get(key)
    }

    fn scan<'b>(
        &'b self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'b> {
        let start = match start_after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut pending = Overlay::new();
        for layer in [self.batch, &self.own] {
            for (k, v) in layer.range::<Vec<u8>, _>((start.clone(), Bound::Unbounded)) {
                if !k.starts_with(prefix) {
                    break;
                }
                pending.insert(k.clone(), v.clone());
            }
        }
        Box::new(MergeScan {
            committed: self.committed.scan(prefix, start_after).peekable(),
            pending: pending.into_iter().peekable(),
        })
    }
}

impl Txn for OverlayTxn<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.own.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.own.insert(key, None);
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}

/// Merges two ascending streams; on equal keys the pending write wins and a
/// pending deletion hides the committed value.
struct MergeScan<'a> {
    committed: std::iter::Peekable<Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a>>,
    pending: std::iter::Peekable<std::collections::btree_map::IntoIter<Vec<u8>, Option<Vec<u8>>>>,
}

impl Iterator for MergeScan<'_> {
    type Item = StoreResult<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.committed.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.committed.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(Ok((committed, _))), Some((pending, _))) => committed.cmp(pending),
            };
            match order {
                std::cmp::Ordering::Less => return self.committed.next(),
                std::cmp::Ordering::Equal => {
                    self.committed.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            if let Some((key, Some(value))) = self.pending.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}
