//! The PostgreSQL implementation of [`Store`], for several replicas serving
//! one database.
//!
//! PostgreSQL holds the truth: the key space (`entitlements_kv`), the
//! revision (`entitlements_revision`, one row) and the change log
//! (`entitlements_changes`, every commit's writes by revision). Each replica
//! keeps a [`mirror::Mirror`] of the key space in memory, exactly at some
//! revision, and every read (jobs and handlers alike) reads the mirror.
//!
//! One thread per replica, the committer, owns the database connection and
//! is the only one to change the mirror. Per batch of queued jobs it:
//! BEGINs and locks the revision row (`SELECT ... FOR UPDATE`), which
//! serializes writers across replicas; brings the mirror (and the
//! observers, in order) up to the database's revision from the change log
//! if another replica committed; runs the jobs against the mirror plus the
//! batch's earlier writes; writes the keys (one statement for every key
//! written, one for every key deleted), the change-log rows and the new
//! revision, pipelined with the COMMIT; and only after COMMIT applies the
//! batch to the mirror, tells the observers and answers the jobs. So a job
//! sees every earlier commit of every replica and no concurrent one.
//!
//! Between batches the same thread follows the other replicas' commits:
//! woken by LISTEN/NOTIFY, and polling as well (the polling alone is enough,
//! for databases without LISTEN). Both paths apply through the same code, so
//! observers see every commit once, in revision order.
//!
//! When the database cannot be reached, writes are answered UNAVAILABLE
//! (nothing half-applied: the mirror changes only after COMMIT), the store
//! reports itself unavailable (health NOT_SERVING), and it reconnects on its
//! own. A COMMIT whose connection dies is ambiguous: its writers get
//! UNAVAILABLE, and whatever did commit reaches the mirror from the change
//! log (retries with the same request_id are answered from it).
//!
//! Unlike sled, a failed write does not stop the process: the database
//! either committed (and the mirror follows it from the log) or did not, and
//! nothing was applied locally. The store fails for good (as
//! [`Store::failure`] reports) only when its mirror can no longer follow:
//! the change log was pruned past it, or the database is behind it (restored
//! from an older backup).

mod changes;
pub mod connect;
pub mod copy;
mod mirror;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, Statement};

use super::batch::{self, KeyWrite, Overlay, Pending, Queue, Ran};
use super::{
    Change, CommitObserver, Failure, KeyValue, ReadView, Revision, Store, StoreError, StoreResult,
    WriteJob,
};
use connect::{Target, describe, unavailable};
use mirror::Mirror;

/// The most jobs one transaction covers.
pub const MAX_BATCH: usize = 1024;
/// The change log is pruned once every this many revisions.
const PRUNE_EVERY: u64 = 1024;
/// The most change-log rows read per query while catching up.
const CATCH_UP_ROWS: i64 = 1000;
/// How long one batch may take in the database (waiting for the revision
/// lock included) before the connection is given up as broken.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease on timed work.
const TIMED_WORK: &str = "timed-work";

/// How a replica uses the database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Apply pending migrations at start-up instead of refusing an old
    /// schema.
    pub migrate: bool,
    /// Wake up on NOTIFY from other replicas' commits (false: polling only,
    /// e.g. for databases without LISTEN).
    pub notify: bool,
    /// How often to look for other replicas' commits (and, while the
    /// database is unreachable, try to reconnect).
    pub poll_interval: Duration,
    /// How long the lease on timed work lasts without renewal; another
    /// replica takes the work over this long after its holder died.
    pub lease: Duration,
    /// How many revisions the change log keeps (a replica further behind
    /// than that cannot catch up and must restart).
    pub change_retention: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            migrate: false,
            notify: true,
            poll_interval: Duration::from_millis(200),
            lease: Duration::from_secs(10),
            change_retention: 100_000,
        }
    }
}

type Observers = RwLock<Vec<Arc<dyn CommitObserver>>>;

/// What the store's handle and its committer thread share.
struct Shared {
    mirror: Mirror,
    observers: Observers,
    /// Other replicas' commits are applied only once following started (see
    /// [`Store::follow`]).
    following: AtomicBool,
    /// Until when this replica holds the lease on timed work.
    leader_until: Mutex<Option<Instant>>,
}

pub struct PostgresStore {
    shared: Arc<Shared>,
    queue: Queue,
    committer: Mutex<Option<JoinHandle<()>>>,
    failure: watch::Receiver<Option<Failure>>,
    available: watch::Receiver<bool>,
}

/// Applies the pending migrations; returns the schema versions before and
/// after.
pub async fn migrate(url: &str) -> StoreResult<(i32, i32)> {
    let target = Target::parse(url)?;
    let (mut client, _) = target.connect().await?;
    schema::migrate(&mut client).await
}

impl PostgresStore {
    /// Connects, checks (or migrates) the schema, loads the mirror at the
    /// database's current revision, and starts the committer. Blocks until
    /// the store is ready.
    pub fn open(url: &str, options: Options, commit_queue: usize) -> StoreResult<Self> {
        let target = Target::parse(url)?;
        let (opened, ready) = std::sync::mpsc::channel();
        let (queue, jobs) = Queue::new(commit_queue);
        let handle = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened.send(Err(StoreError::Io(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Committer::start(target, options).await {
                        Ok((committer, handle)) => {
                            let _ = opened.send(Ok(handle));
                            committer.run(jobs).await;
                        }
                        Err(error) => {
                            let _ = opened.send(Err(error));
                        }
                    }
                });
            })?;
        let opened = ready.recv().unwrap_or(Err(StoreError::Closed));
        let (shared, failure, available) = match opened {
            Ok(parts) => parts,
            Err(error) => {
                let _ = handle.join();
                return Err(error);
            }
        };
        Ok(Self {
            shared,
            queue,
            committer: Mutex::new(Some(handle)),
            failure,
            available,
        })
    }

    fn failed(&self) -> Option<StoreError> {
        self.failure.borrow().clone().map(StoreError::Failed)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let _ = Store::close(self);
    }
}

impl ReadView for PostgresStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some(failed) = self.failed() {
            return Err(failed);
        }
        self.shared.mirror.get(key)
    }

    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        if let Some(failed) = self.failed() {
            return Box::new(std::iter::once(Err(failed)));
        }
        self.shared.mirror.scan(prefix, start_after)
    }

    fn scan_back<'a>(
        &'a self,
        prefix: &[u8],
        start_before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        if let Some(failed) = self.failed() {
            return Box::new(std::iter::once(Err(failed)));
        }
        self.shared.mirror.scan_back(prefix, start_before)
    }
}

impl Store for PostgresStore {
    fn submit(&self, job: WriteJob) -> oneshot::Receiver<StoreResult<Revision>> {
        self.queue.submit(job, self.failed())
    }

    fn revision(&self) -> Revision {
        self.shared.mirror.revision()
    }

    /// Everything acknowledged is committed in the database already.
    fn flush(&self) -> StoreResult<()> {
        match self.failed() {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    fn observe(&self, observer: Arc<dyn CommitObserver>) {
        self.shared
            .observers
            .write()
            .expect("observers lock poisoned")
            .push(observer);
    }

    fn follow(&self) {
        self.shared.following.store(true, Ordering::Release);
    }

    fn close(&self) -> StoreResult<()> {
        self.queue.close();
        if let Some(handle) = self
            .committer
            .lock()
            .expect("committer lock poisoned")
            .take()
        {
            let _ = handle.join();
        }
        match self.failed() {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    fn failure(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Failure> + Send + '_>> {
        let mut failure = self.failure.clone();
        Box::pin(async move {
            let reason = failure
                .wait_for(Option::is_some)
                .await
                .map(|reason| reason.clone());
            match reason {
                Ok(Some(reason)) => reason,
                _ => std::future::pending().await,
            }
        })
    }

    fn availability(&self) -> watch::Receiver<bool> {
        self.available.clone()
    }

    fn runs_timed_work(&self) -> bool {
        self.shared
            .leader_until
            .lock()
            .expect("lease lock poisoned")
            .is_some_and(|until| Instant::now() < until)
    }
}

/// Statements prepared once per connection.
struct Statements {
    lock: Statement,
    changes_after: Statement,
    upsert: Statement,
    delete: Statement,
    log: Statement,
    set_revision: Statement,
    notify: Statement,
    prune: Statement,
    lease: Statement,
    release: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            lock: client
                .prepare("SELECT revision FROM entitlements_revision WHERE id = 1 FOR UPDATE")
                .await?,
            changes_after: client
                .prepare(
                    "SELECT revision, writes FROM entitlements_changes \
                     WHERE revision > $1 AND revision <= $2 ORDER BY revision LIMIT $3",
                )
                .await?,
            upsert: client
                .prepare(
                    "INSERT INTO entitlements_kv (key, value) \
                     SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[]) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .await?,
            delete: client
                .prepare("DELETE FROM entitlements_kv WHERE key = ANY($1::BYTEA[])")
                .await?,
            log: client
                .prepare(
                    "INSERT INTO entitlements_changes (revision, writes) \
                     SELECT * FROM unnest($1::BIGINT[], $2::BYTEA[])",
                )
                .await?,
            set_revision: client
                .prepare("UPDATE entitlements_revision SET revision = $1 WHERE id = 1")
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
            prune: client
                .prepare("DELETE FROM entitlements_changes WHERE revision <= $1")
                .await?,
            lease: client
                .prepare(
                    "INSERT INTO entitlements_leases (name, holder, expires_at) \
                     VALUES ($1, $2, now() + $3::BIGINT * INTERVAL '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE \
                     SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE entitlements_leases.holder = excluded.holder \
                        OR entitlements_leases.expires_at < now() \
                     RETURNING holder",
                )
                .await?,
            release: client
                .prepare("DELETE FROM entitlements_leases WHERE name = $1 AND holder = $2")
                .await?,
        })
    }
}

struct Connection {
    client: Client,
    notifications: mpsc::UnboundedReceiver<String>,
    statements: Statements,
}

struct Committer {
    target: Target,
    options: Options,
    shared: Arc<Shared>,
    connection: Option<Connection>,
    /// No reconnect attempt before this (set after one failed).
    retry_after: Option<Instant>,
    /// The channel NOTIFY uses for this schema's commits.
    channel: String,
    /// Who this replica is, in the lease table.
    holder: String,
    failed: watch::Sender<Option<Failure>>,
    available: watch::Sender<bool>,
}

type Handle = (
    Arc<Shared>,
    watch::Receiver<Option<Failure>>,
    watch::Receiver<bool>,
);

impl Committer {
    async fn start(target: Target, options: Options) -> StoreResult<(Self, Handle)> {
        let (mut client, notifications) = target.connect().await?;
        if options.migrate {
            schema::migrate(&mut client).await?;
        }
        schema::check(schema::version(&client).await?)?;
        let (mirror, channel) = load(&mut client, &target.display).await?;
        let statements = Statements::prepare(&client)
            .await
            .map_err(|e| unavailable(&target.display, &e))?;
        if options.notify {
            listen(&client, &channel)
                .await
                .map_err(|e| unavailable(&target.display, &e))?;
        }
        tracing::info!(
            database = %target.display,
            revision = mirror.revision(),
            keys = mirror.len(),
            "store loaded from PostgreSQL"
        );
        let shared = Arc::new(Shared {
            mirror,
            observers: Observers::default(),
            following: AtomicBool::new(false),
            leader_until: Mutex::new(None),
        });
        let (failed, failure) = watch::channel(None);
        let (available, availability) = watch::channel(true);
        let holder = format!(
            "{}@{}/{}",
            std::process::id(),
            hostname(),
            uuid::Uuid::now_v7()
        );
        let committer = Self {
            target,
            options,
            shared: Arc::clone(&shared),
            connection: Some(Connection {
                client,
                notifications,
                statements,
            }),
            retry_after: None,
            channel,
            holder,
            failed,
            available,
        };
        Ok((committer, (shared, failure, availability)))
    }

    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Pending>) {
        let mut poll = tokio::time::interval(self.options.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(self.options.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.failed.borrow().is_some() {
                break;
            }
            tokio::select! {
                biased;
                pending = queue.recv() => {
                    let Some(first) = pending else { break };
                    self.commit(batch::with_queued(first, &mut queue, MAX_BATCH)).await;
                }
                () = notified(&mut self.connection) => self.follow().await,
                _ = poll.tick() => self.follow().await,
                _ = renew.tick() => self.renew_lease().await,
            }
        }
        let reason = self.failed.borrow().clone();
        if let Some(reason) = reason {
            queue.close();
            while let Ok(Pending { reply, .. }) = queue.try_recv() {
                let _ = reply.send(Err(StoreError::Failed(reason.clone())));
            }
        }
        self.release_lease().await;
    }

    /// Fails the store for good: it can no longer follow the database.
    /// Returns the error every later call gets.
    fn fail(&self, reason: String) -> StoreError {
        tracing::error!(%reason, "the store cannot follow the database any more");
        let failure = Failure::new(reason);
        self.failed.send_replace(Some(failure.clone()));
        StoreError::Failed(failure)
    }

    fn set_available(&self, available: bool) {
        self.available.send_if_modified(|current| {
            let changed = *current != available;
            *current = available;
            changed
        });
    }

    /// Makes sure there is a connection, reconnecting if it was lost (at
    /// most once per poll interval).
    async fn connected(&mut self) -> StoreResult<()> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            if let Some(after) = self.retry_after
                && Instant::now() < after
            {
                return Err(StoreError::Unavailable(format!(
                    "database {} is unreachable; retrying",
                    self.target.display
                )));
            }
            match self.reconnect().await {
                Ok(connection) => {
                    self.retry_after = None;
                    self.connection = Some(connection);
                    tracing::info!(database = %self.target.display, "connected to the database");
                }
                Err(error) => {
                    self.retry_after = Some(Instant::now() + self.options.poll_interval);
                    self.set_available(false);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    async fn reconnect(&self) -> StoreResult<Connection> {
        let (client, notifications) = self.target.connect().await?;
        let version = schema::version(&client).await?;
        if let Err(error) = schema::check(version) {
            // Someone migrated the database past this binary while it ran.
            self.fail(error.to_string());
            return Err(error);
        }
        let broken = |e: tokio_postgres::Error| unavailable(&self.target.display, &e);
        let statements = Statements::prepare(&client).await.map_err(broken)?;
        if self.options.notify {
            listen(&client, &self.channel).await.map_err(broken)?;
        }
        Ok(Connection {
            client,
            notifications,
            statements,
        })
    }

    /// The database failed us: drop the connection (a new one is made on
    /// the next use) and report the store unavailable.
    fn lost(&mut self, error: &StoreError) {
        tracing::warn!(%error, "the database is unavailable");
        self.connection = None;
        self.retry_after = Some(Instant::now() + self.options.poll_interval);
        self.set_available(false);
    }

    /// Applies other replicas' commits (when following), and checks the
    /// connection.
    async fn follow(&mut self) {
        if let Some(connection) = self.connection.as_mut() {
            while connection.notifications.try_recv().is_ok() {}
        }
        let result = async {
            self.connected().await?;
            if self.shared.following.load(Ordering::Acquire) {
                self.catch_up(i64::MAX).await
            } else {
                let connection = self.connection.as_ref().expect("connected");
                connection
                    .client
                    .simple_query("")
                    .await
                    .map(|_| ())
                    .map_err(|e| unavailable(&self.target.display, &e))
            }
        };
        match tokio::time::timeout(BATCH_TIMEOUT, result).await {
            Ok(Ok(())) => self.set_available(true),
            Ok(Err(error)) => self.lost(&error),
            Err(_) => self.lost(&StoreError::Unavailable(
                "the database did not answer".into(),
            )),
        }
    }

    /// Applies the change log from the mirror's revision up to `until`
    /// (inclusive) to the mirror and the observers.
    async fn catch_up(&self, until: i64) -> StoreResult<()> {
        loop {
            let from = self.shared.mirror.revision() as i64;
            if from >= until {
                return Ok(());
            }
            let connection = self.connection.as_ref().expect("connected");
            let rows = connection
                .client
                .query(
                    &connection.statements.changes_after,
                    &[&from, &until, &CATCH_UP_ROWS],
                )
                .await
                .map_err(|e| unavailable(&self.target.display, &e))?;
            let count = rows.len();
            let mut commits = Vec::with_capacity(count);
            for (expected, row) in (from + 1..).zip(rows) {
                let revision: i64 = row.get(0);
                if revision != expected {
                    let reason = format!(
                        "the change log lacks revision {expected} (it was pruned past this \
                         replica, which was at revision {from}); restart the replica to reload"
                    );
                    return Err(self.fail(reason));
                }
                let writes = changes::decode(row.get(1))?;
                commits.push((revision as Revision, writes));
            }
            self.apply(&commits);
            if (count as i64) < CATCH_UP_ROWS {
                if until != i64::MAX && self.shared.mirror.revision() < until as Revision {
                    let reason = format!(
                        "the change log ends at revision {}, before the database's revision \
                         {until}; restart the replica to reload",
                        self.shared.mirror.revision()
                    );
                    return Err(self.fail(reason));
                }
                return Ok(());
            }
        }
    }

    /// Applies committed revisions to the mirror, then tells the observers.
    fn apply(&self, commits: &[(Revision, Vec<KeyWrite>)]) {
        let Some((last, _)) = commits.last() else {
            return;
        };
        self.shared.mirror.apply(
            commits
                .iter()
                .flat_map(|(_, writes)| writes.iter().map(|(k, v)| (k, v))),
            *last,
        );
        let changes: Vec<Change<'_>> = commits
            .iter()
            .filter(|(_, writes)| !writes.is_empty())
            .map(|(revision, writes)| Change {
                revision: *revision,
                writes,
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        for observer in self
            .shared
            .observers
            .read()
            .expect("observers lock poisoned")
            .iter()
        {
            observer.committed(&changes);
        }
    }

    async fn commit(&mut self, pending: Vec<Pending>) {
        if let Some(reason) = self.failed.borrow().clone() {
            for Pending { reply, .. } in pending {
                let _ = reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return;
        }
        if let Err(error) = self.connected().await {
            for Pending { reply, .. } in pending {
                let _ = reply.send(Err(again(&error)));
            }
            return;
        }
        match tokio::time::timeout(BATCH_TIMEOUT, self.lock_and_catch_up()).await {
            Ok(Ok(())) => {}
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => error,
                    _ => StoreError::Unavailable("the database did not answer in time".into()),
                };
                self.rollback().await;
                if !matches!(error, StoreError::Failed(_)) {
                    self.lost(&error);
                }
                for Pending { reply, .. } in pending {
                    let _ = reply.send(Err(again(&error)));
                }
                return;
            }
        }
        // The revision row is ours: run the jobs against the mirror, which
        // is now at the database's revision.
        let base = self.shared.mirror.revision();
        let Ran {
            writes: batch,
            committed,
            replies,
            ..
        } = batch::run(&self.shared.mirror, base, pending);
        let outcome = if committed.is_empty() {
            // Nothing to write: release the lock. The jobs read a state that
            // was committed, whatever happens to this statement.
            self.rollback().await;
            Ok(())
        } else {
            match tokio::time::timeout(BATCH_TIMEOUT, self.write(&batch, &committed, base)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::Unavailable(
                    "the database did not answer the commit in time; it may or may not have \
                     committed"
                        .into(),
                )),
            }
        };
        match outcome {
            Ok(()) => {
                self.set_available(true);
                self.apply(&committed);
                for (reply, revision) in replies {
                    let _ = reply.send(Ok(revision));
                }
            }
            Err(error) => {
                // Not applied here; if the database did commit after all,
                // the change log brings it in.
                self.lost(&error);
                for (reply, _) in replies {
                    let _ = reply.send(Err(again(&error)));
                }
            }
        }
    }

    /// BEGIN, lock the revision row, and bring the mirror up to it.
    async fn lock_and_catch_up(&self) -> StoreResult<()> {
        let connection = self.connection.as_ref().expect("connected");
        let client = &connection.client;
        let (begun, locked) = futures_util::join!(
            client.batch_execute("BEGIN"),
            client.query_one(&connection.statements.lock, &[])
        );
        let broken = |e: tokio_postgres::Error| unavailable(&self.target.display, &e);
        begun.map_err(broken)?;
        let database: i64 = locked.map_err(broken)?.get(0);
        let mirror = self.shared.mirror.revision();
        if (database as Revision) < mirror {
            let reason = format!(
                "the database is at revision {database}, behind this replica's {mirror} (was it \
                 restored from an older backup?); refusing to write on top of it"
            );
            return Err(self.fail(reason));
        }
        self.catch_up(database).await
    }

    async fn rollback(&self) {
        if let Some(connection) = &self.connection {
            let _ = connection.client.batch_execute("ROLLBACK").await;
        }
    }

    /// Writes the batch and commits, in one round trip.
    async fn write(
        &self,
        batch: &Overlay,
        committed: &[(Revision, Vec<KeyWrite>)],
        base: Revision,
    ) -> StoreResult<()> {
        let _timing = crate::observe::metrics::CommitTiming::start();
        let connection = self.connection.as_ref().expect("connected");
        let (client, statements) = (&connection.client, &connection.statements);
        let (mut put_keys, mut put_values, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in batch {
            match value {
                Some(value) => {
                    put_keys.push(key.as_slice());
                    put_values.push(value.as_slice());
                }
                None => deleted.push(key.as_slice()),
            }
        }
        let revisions: Vec<i64> = committed.iter().map(|(r, _)| *r as i64).collect();
        let logged: Vec<Vec<u8>> = committed.iter().map(|(_, w)| changes::encode(w)).collect();
        let last = *revisions.last().expect("a non-empty batch");
        let payload = last.to_string();
        let prune_below = (last as u64 / PRUNE_EVERY != base / PRUNE_EVERY)
            .then(|| last - self.options.change_retention as i64)
            .filter(|below| *below > 0);

        let upsert = async {
            if put_keys.is_empty() {
                return Ok(0);
            }
            client
                .execute(&statements.upsert, &[&put_keys, &put_values])
                .await
        };
        let delete = async {
            if deleted.is_empty() {
                return Ok(0);
            }
            client.execute(&statements.delete, &[&deleted]).await
        };
        let notify = async {
            if !self.options.notify {
                return Ok(0);
            }
            client
                .execute(&statements.notify, &[&self.channel, &payload])
                .await
        };
        let prune = async {
            match prune_below {
                Some(below) => client.execute(&statements.prune, &[&below]).await,
                None => Ok(0),
            }
        };
        let log_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&revisions, &logged];
        let revision_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&last];
        let (upserted, deleted, logged, revised, notified, pruned, committed) = futures_util::join!(
            upsert,
            delete,
            client.execute(&statements.log, &log_params),
            client.execute(&statements.set_revision, &revision_params),
            notify,
            prune,
            client.batch_execute("COMMIT"),
        );
        let broken = |e: &tokio_postgres::Error| unavailable(&self.target.display, e);
        for statement in [upserted, deleted, logged, revised, notified, pruned] {
            // A failed statement turns the COMMIT into a ROLLBACK.
            if let Err(error) = statement {
                return Err(broken(&error));
            }
        }
        committed.map_err(|e| {
            StoreError::Unavailable(format!(
                "database {}: the commit's outcome is unknown (it may or may not have \
                 committed): {}",
                self.target.display,
                describe(&e)
            ))
        })
    }

    async fn renew_lease(&mut self) {
        if self.connected().await.is_err() {
            return;
        }
        let connection = self.connection.as_ref().expect("connected");
        let asked = Instant::now();
        let lease_ms = self.options.lease.as_millis() as i64;
        let held = connection
            .client
            .query_opt(
                &connection.statements.lease,
                &[&TIMED_WORK, &self.holder, &lease_ms],
            )
            .await;
        let until = match held {
            // Counted from before asking, and a quarter short: the database's
            // clock decides expiry, this replica's only whether it still holds.
            Ok(Some(_)) => Some(asked + self.options.lease - self.options.lease / 4),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error = %describe(&error), "renewing the lease on timed work failed");
                None
            }
        };
        let mut leader = self
            .shared
            .leader_until
            .lock()
            .expect("lease lock poisoned");
        if leader.is_some() != until.is_some() {
            match until {
                Some(_) => tracing::info!(holder = %self.holder, "this replica runs timed work"),
                None => tracing::info!("another replica runs timed work"),
            }
        }
        *leader = until;
    }

    /// Lets another replica take timed work over at once.
    async fn release_lease(&mut self) {
        let held = self
            .shared
            .leader_until
            .lock()
            .expect("lease lock poisoned")
            .take()
            .is_some();
        if !held {
            return;
        }
        if let Some(connection) = &self.connection {
            let _ = connection
                .client
                .execute(&connection.statements.release, &[&TIMED_WORK, &self.holder])
                .await;
        }
    }
}

/// The same error, for one more waiting writer.
fn again(error: &StoreError) -> StoreError {
    match error {
        StoreError::Failed(reason) => StoreError::Failed(reason.clone()),
        StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Resolves when a notification arrives (never without a connection).
async fn notified(connection: &mut Option<Connection>) {
    match connection {
        Some(connection) => {
            if connection.notifications.recv().await.is_none() {
                // The connection ended; the next poll reconnects.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn listen(client: &Client, channel: &str) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
}

/// Reads the whole key space and its revision from one snapshot; returns
/// the mirror and the NOTIFY channel of the connection's schema.
async fn load(client: &mut Client, database: &str) -> StoreResult<(Mirror, String)> {
    let broken = |e: tokio_postgres::Error| unavailable(database, &e);
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(broken)?;
    let row = transaction
        .query_one(
            "SELECT revision, current_schema()::TEXT FROM entitlements_revision WHERE id = 1",
            &[],
        )
        .await
        .map_err(broken)?;
    let revision: i64 = row.get(0);
    let schema: String = row.get(1);
    let rows = transaction
        .query_raw(
            "SELECT key, value FROM entitlements_kv",
            std::iter::empty::<i32>(),
        )
        .await
        .map_err(broken)?;
    futures_util::pin_mut!(rows);
    let mut entries = BTreeMap::new();
    while let Some(row) = rows.next().await {
        let row = row.map_err(broken)?;
        entries.insert(row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1));
    }
    transaction.commit().await.map_err(broken)?;
    let mut channel = format!("entitlements_{schema}");
    // Channel names are identifiers: at most 63 bytes.
    while channel.len() > 63 {
        channel.pop();
    }
    Ok((Mirror::new(entries, revision as Revision), channel))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
