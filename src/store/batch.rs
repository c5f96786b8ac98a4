//! Running a group commit's jobs, the same for every backend: each job
//! reads what is committed, then the writes of the batch's earlier jobs,
//! then its own; a job that commits and wrote something takes the next
//! revision. The backend then makes the batch durable and answers the
//! replies, or fails them all.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;

use super::{KeyValue, ReadView, Revision, StoreResult, Txn, WriteJob};

/// Keys written (Some) or deleted (None), by key.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key written (Some) or deleted (None) by a commit.
pub type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A queued job and where its answer goes.
pub struct Pending {
    pub job: WriteJob,
    pub reply: oneshot::Sender<StoreResult<Revision>>,
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
    let mut ran = Ran {
        writes: Overlay::new(),
        committed: Vec::new(),
        replies: Vec::with_capacity(pending.len()),
        revision,
    };
    for Pending { job, reply } in pending {
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
