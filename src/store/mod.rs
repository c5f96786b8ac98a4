//! Durable state. Everything the service knows lives in one ordered key-value
//! space behind the [`Store`] trait, implemented by [`sled_store::SledStore`]
//! (embedded) and [`postgres::PostgresStore`] (shared by replicas). All
//! writes go through [`write()`]: the closure runs as one job of a group
//! commit ([`batch`]) serialized with every other job, so it sees every
//! earlier write and no concurrent one, and its result is acknowledged only
//! once durable.

pub mod acknowledged;
pub mod backup;
pub mod batch;
pub mod codec;
pub mod idempotency;
pub mod keys;
pub mod postgres;
pub mod records;
pub mod sled_store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tracing::Instrument as _;

use acknowledged::Mark;

/// Writes that may wait for the committer unless the settings say otherwise
/// (see [`batch::Queue`]).
pub const DEFAULT_COMMIT_QUEUE: usize = 4096;

/// A point in the store's history. Every committed write gets the next one.
pub type Revision = u64;

pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An error of a storage backend, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// How the store fails. The variants speak of the contract, not of a
/// backend; what the backend said is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not read or write.
    #[error("storage backend: {0}")]
    Backend(#[source] BackendError),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    /// What the store holds cannot be read (a record that does not decode,
    /// a malformed key).
    #[error("stored data is unreadable: {what}")]
    Corrupt {
        what: String,
        #[source]
        cause: Option<BackendError>,
    },
    /// The store failed for good: a write could not be made durable (a
    /// full or failing disk), or a replica can no longer follow its
    /// database. It refuses everything from then on and the server stops,
    /// so that a restart recovers exactly what was acknowledged.
    #[error("the store failed and is stopping: {0}")]
    Failed(Failure),
    #[error(
        "{0}; refusing to start. Restore the data directory from a backup, or accept the loss \
         with `entitlements store accept-rollback --data-dir {dir}`",
        dir = .0.data_dir.display()
    )]
    RolledBack(Box<Rollback>),
    #[error("the store is closed")]
    Closed,
    /// The call's deadline passed before its write ran: nothing was
    /// written.
    #[error("the call's deadline passed before its write ran; nothing was written")]
    DeadlineExceeded,
    /// The commit queue is full ([`batch::Queue`]): nothing was written;
    /// retry shortly.
    #[error("the store has {limit} writes queued already; retry shortly")]
    Busy { limit: usize },
    /// The database could not be used just now (unreachable, or it refused
    /// the transaction): nothing was written, or for an interrupted commit
    /// the outcome is unknown. Retry later, with the same request_id.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema does not fit this binary.
    #[error("{0}")]
    Incompatible(String),
}

impl StoreError {
    /// Stored data that cannot be read, for the reason `what`.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            cause: None,
        }
    }
}

/// Why the store failed (fail-stop): the error that kept a write from
/// becoming durable. Every call refused from then on carries the same one.
#[derive(Debug, Clone)]
pub struct Failure(Arc<dyn std::error::Error + Send + Sync>);

impl Failure {
    pub fn new(cause: impl Into<BackendError>) -> Self {
        Self(Arc::from(cause.into()))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Transparent: the failure is its cause.
impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A store that lacks commits it acknowledged: what it holds and what
/// clients were told was durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub data_dir: PathBuf,
    pub store: Mark,
    pub acknowledged: Mark,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (holds, acknowledged) = (self.store.revision, self.acknowledged.revision);
        if holds < acknowledged {
            write!(
                f,
                "the store in {} is at revision {holds}, but revision {acknowledged} was \
                 acknowledged: revisions {} to {acknowledged} are missing (its log lost its \
                 tail, e.g. to a damaged record, or the directory was restored from an older copy)",
                self.data_dir.display(),
                holds + 1
            )
        } else {
            write!(
                f,
                "the store in {} is at revision {holds}, but its audit trail differs from the \
                 one acknowledged at that revision (the directory was replaced)",
                self.data_dir.display()
            )
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Reads of committed (or, inside a transaction, about-to-commit) state.
pub trait ReadView {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Keys under `prefix`, ascending, strictly after `start_after` if given.
    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a>;

    /// Keys under `prefix`, descending, strictly before `start_before` if
    /// given. This default reads the range forwards first; stores that can
    /// walk backwards override it.
    fn scan_back<'a>(
        &'a self,
        prefix: &[u8],
        start_before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        let before = start_before.map(<[u8]>::to_vec);
        let mut items: Vec<_> = self
            .scan(prefix, None)
            .take_while(|item| match (item, &before) {
                (Ok((key, _)), Some(before)) => key < before,
                _ => true,
            })
            .collect();
        items.reverse();
        Box::new(items.into_iter())
    }
}

/// One state change, applied atomically.
pub trait Txn: ReadView {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// The revision this transaction commits at.
    fn revision(&self) -> Revision;
}

/// One committed job's writes: the revision and each key's new value
/// (None: deleted).
pub struct Change<'a> {
    pub revision: Revision,
    pub writes: &'a [(Vec<u8>, Option<Vec<u8>>)],
}

impl Change<'_> {
    /// The records the commit wrote or removed, in the order it did; other
    /// keys (indexes, metadata) are left out.
    pub fn records(&self) -> impl Iterator<Item = records::RecordChange<'_>> {
        self.writes
            .iter()
            .filter_map(|(key, value)| records::RecordChange::parse(key, value.as_deref()))
    }
}

/// Told about every committed write, in revision order, once it is durable
/// and before it is acknowledged: in-memory views that follow the store
/// are therefore never behind what a client was told was written.
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, changes: &[Change<'_>]);
}

/// Runs on the committer; returns true to commit what it wrote, false to
/// discard it.
pub type WriteJob = Box<dyn FnOnce(&mut dyn Txn) -> bool + Send>;

pub trait Store: ReadView + Send + Sync + 'static {
    /// Queues a job; the receiver yields the revision once the job's writes
    /// are durable (or the job declined to commit).
    fn submit(&self, job: WriteJob) -> tokio::sync::oneshot::Receiver<StoreResult<Revision>>;
    /// The newest durable revision.
    fn revision(&self) -> Revision;
    /// Waits for queued writes and makes everything durable.
    fn flush(&self) -> StoreResult<()>;
    /// Adds an observer of every later commit.
    fn observe(&self, observer: std::sync::Arc<dyn CommitObserver>);

    /// Starts applying commits made by other processes sharing the store
    /// (replicas over one database). Until then the store changes only with
    /// this process's own writes, so views can be loaded from it and
    /// observers added without a commit slipping in between.
    fn follow(&self) {}

    /// Stops accepting writes, lets queued ones finish, and flushes (unless
    /// the store failed).
    fn close(&self) -> StoreResult<()>;

    /// Resolves with the reason once the store failed for good (it refuses
    /// every read and write from then on); never while it is healthy.
    fn failure(&self) -> Pin<Box<dyn Future<Output = Failure> + Send + '_>>;

    /// Whether the store can take writes now (false while its database is
    /// unreachable); changes as that does. An embedded store always can.
    fn availability(&self) -> tokio::sync::watch::Receiver<bool> {
        tokio::sync::watch::channel(true).1
    }

    /// Bytes the store takes on disk, where it knows (the embedded store;
    /// a database's size is the database's to report).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// Whether this process should run timed work now: with several
    /// replicas, one at a time does.
    fn runs_timed_work(&self) -> bool {
        true
    }
}

/// Which store to use.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// The embedded sled store in a directory.
    Sled(PathBuf),
    /// A PostgreSQL database, shared by replicas.
    Postgres(String),
}

impl Location {
    /// `store` as the settings give it: absent or `sled` (sled in
    /// `data_dir`), `sled:DIR`, or a `postgres://` URL.
    pub fn parse(store: Option<&str>, data_dir: &Path) -> StoreResult<Self> {
        match store.map(str::trim) {
            None | Some("") | Some("sled") => Ok(Self::Sled(data_dir.to_path_buf())),
            Some(url) if postgres::connect::is_postgres_url(url) => {
                Ok(Self::Postgres(url.to_string()))
            }
            Some(other) => match other.strip_prefix("sled:") {
                Some(dir) if !dir.is_empty() => Ok(Self::Sled(PathBuf::from(dir))),
                _ => Err(StoreError::Incompatible(format!(
                    "unknown store {other:?}: use sled, sled:DIR or a postgres:// URL"
                ))),
            },
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sled(dir) => write!(f, "sled:{}", dir.display()),
            Self::Postgres(url) => match postgres::connect::Target::parse(url) {
                Ok(target) => f.write_str(&target.display),
                Err(_) => f.write_str("postgres://(invalid)"),
            },
        }
    }
}

/// How the server uses its store, whichever it is.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most writes waiting for the committer (see [`batch::Queue`]).
    pub commit_queue: usize,
    /// For a PostgreSQL store.
    pub postgres: postgres::Options,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            commit_queue: DEFAULT_COMMIT_QUEUE,
            postgres: postgres::Options::default(),
        }
    }
}

/// Opens the store at `location` (blocking: call it off the async runtime).
pub fn open(location: &Location, options: Options) -> StoreResult<Arc<dyn Store>> {
    let queue = options.commit_queue;
    Ok(match location {
        Location::Sled(dir) => Arc::new(sled_store::SledStore::open_with(dir, queue)?),
        Location::Postgres(url) => {
            Arc::new(postgres::PostgresStore::open(url, options.postgres, queue)?)
        }
    })
}

/// The outcome of a committed write.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<T> {
    pub value: T,
    pub revision: Revision,
}

/// Runs `change` as one atomic, durable transaction. An `Err` from the
/// closure discards everything it wrote and is returned as is.
pub async fn write<T, E, F>(store: &dyn Store, change: F) -> Result<Committed<T>, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&mut dyn Txn) -> Result<T, E> + Send + 'static,
{
    // A caller that gave up (its deadline passed while the write queued)
    // is not answered, so the write must not happen either.
    let deadline = crate::shared::deadline::current();
    if crate::shared::deadline::passed(deadline) {
        return Err(E::from(StoreError::DeadlineExceeded));
    }
    let outcome: Arc<Mutex<Option<Result<T, E>>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&outcome);
    let job: WriteJob = Box::new(move |txn| {
        if crate::shared::deadline::passed(deadline) {
            *slot.lock().expect("outcome slot poisoned") =
                Some(Err(E::from(StoreError::DeadlineExceeded)));
            return false;
        }
        let result = change(txn);
        let commit = result.is_ok();
        *slot.lock().expect("outcome slot poisoned") = Some(result);
        commit
    });
    let durable = store
        .submit(job)
        .instrument(tracing::info_span!("store.commit"))
        .await
        .unwrap_or(Err(StoreError::Closed));
    let result = outcome.lock().expect("outcome slot poisoned").take();
    match (result, durable) {
        // The job's own refusal: it wrote nothing.
        (Some(Err(refused)), _) => Err(refused),
        (Some(Ok(value)), Ok(revision)) => Ok(Committed { value, revision }),
        // Not durable, or never run (the store failed or closed first).
        (_, Err(error)) => Err(E::from(error)),
        (None, Ok(_)) => Err(E::from(StoreError::Closed)),
    }
}
