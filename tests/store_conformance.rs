//! The store contract, tested the same way against every backend: sled in a
//! temporary directory, and PostgreSQL in a fresh schema (with
//! `ENTITLEMENTS_TEST_STORE=postgres`; see tests/common/postgres.rs).
//!
//! What every store promises (src/store/mod.rs): scans are ordered both
//! ways; a job commits atomically or not at all, and a declined job writes
//! nothing; revisions strictly increase; a job reads its own writes and
//! every earlier commit, and no concurrent one; a write is acknowledged only
//! once durable (a reopened store holds it); observers see every commit
//! once, in order; a write whose caller's deadline passed while it queued is
//! not applied; a full commit queue refuses a write at once.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use entitlements::shared::deadline;
use entitlements::store::{
    self, Change, CommitObserver, Location, ReadView, Revision, Store, StoreError, Txn,
};
use tempfile::TempDir;

/// A store to test, and how to open it again.
struct Backend {
    location: Location,
    _dir: Option<TempDir>,
}

impl Backend {
    fn sled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            location: Location::Sled(dir.path().to_path_buf()),
            _dir: Some(dir),
        }
    }

    /// A fresh schema, or None (the test is skipped) without PostgreSQL.
    fn postgres(test: &str) -> Option<Self> {
        let server = common::postgres::database(test)?;
        Some(Self {
            location: Location::Postgres(common::postgres::fresh_schema(&server)),
            _dir: None,
        })
    }

    /// The store setting that names it.
    fn spec(&self) -> String {
        match &self.location {
            Location::Sled(dir) => format!("sled:{}", dir.display()),
            Location::Postgres(url) => url.clone(),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        self.open_with(store::DEFAULT_COMMIT_QUEUE).await
    }

    /// Opened with at most `commit_queue` writes waiting.
    async fn open_with(&self, commit_queue: usize) -> Arc<dyn Store> {
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || {
            let options = store::Options {
                commit_queue,
                postgres: store::postgres::Options {
                    migrate: true,
                    poll_interval: std::time::Duration::from_millis(20),
                    ..Default::default()
                },
            };
            store::open(&location, options)
        })
        .await
        .unwrap()
        .expect("open the store")
    }
}

async fn close(store: Arc<dyn Store>) {
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap()
        .expect("close the store");
}

/// A job's own refusal, as opposed to the store's errors.
#[derive(Debug)]
enum Outcome {
    Declined,
    // Read through Debug when a test fails.
    #[allow(dead_code)]
    Store(StoreError),
}

impl From<StoreError> for Outcome {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Runs `change` as one job; Ok with the revision it committed at.
async fn write<T: Send + 'static>(
    store: &Arc<dyn Store>,
    change: impl FnOnce(&mut dyn Txn) -> Result<T, Outcome> + Send + 'static,
) -> Result<(T, Revision), Outcome> {
    store::write(store.as_ref(), change)
        .await
        .map(|c| (c.value, c.revision))
}

fn put(txn: &mut dyn Txn, key: &str, value: &str) {
    txn.put(key.as_bytes().to_vec(), value.as_bytes().to_vec());
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn get(view: &dyn ReadView, key: &str) -> Option<String> {
    view.get(key.as_bytes()).unwrap().map(text)
}

fn keys(items: impl Iterator<Item = store::StoreResult<store::KeyValue>>) -> Vec<String> {
    items.map(|item| text(item.unwrap().0)).collect()
}

/// One commit as an observer sees it: each key's new value (None: deleted).
type Commit = (Revision, BTreeMap<String, Option<String>>);

/// Every commit an observer was told of.
#[derive(Default)]
struct Recorder(Mutex<Vec<Commit>>);

impl CommitObserver for Recorder {
    fn committed(&self, changes: &[Change<'_>]) {
        let mut seen = self.0.lock().unwrap();
        for change in changes {
            let writes = change
                .writes
                .iter()
                .map(|(k, v)| (text(k.clone()), v.clone().map(text)))
                .collect();
            seen.push((change.revision, writes));
        }
    }
}

// ---- the contract ----------------------------------------------------------

async fn scans_are_ordered_both_ways(backend: Backend) {
    let store = backend.open().await;
    // Written out of order, with neighbours outside the prefix.
    write(&store, |txn| {
        for key in ["p/c", "p/a", "p/e", "p0", "o/z", "p/b", "p/d"] {
            put(txn, key, key);
        }
        Ok(())
    })
    .await
    .unwrap();
    let view: &dyn ReadView = store.as_ref();
    assert_eq!(
        keys(view.scan(b"p/", None)),
        ["p/a", "p/b", "p/c", "p/d", "p/e"]
    );
    assert_eq!(keys(view.scan(b"p/", Some(b"p/b"))), ["p/c", "p/d", "p/e"]);
    assert_eq!(
        keys(view.scan_back(b"p/", None)),
        ["p/e", "p/d", "p/c", "p/b", "p/a"]
    );
    assert_eq!(
        keys(view.scan_back(b"p/", Some(b"p/d"))),
        ["p/c", "p/b", "p/a"]
    );
    assert!(keys(view.scan(b"q/", None)).is_empty());

    // Inside a job: its own writes and deletions merge into the order.
    let (seen, _) = write(&store, |txn| {
        put(txn, "p/bb", "new");
        txn.delete(b"p/c".to_vec());
        put(txn, "p/0", "new");
        let forward = keys(txn.scan(b"p/", None));
        let after = keys(txn.scan(b"p/", Some(b"p/b")));
        let backward = keys(txn.scan_back(b"p/", None));
        let before = keys(txn.scan_back(b"p/", Some(b"p/d")));
        Ok((forward, after, backward, before))
    })
    .await
    .unwrap();
    assert_eq!(seen.0, ["p/0", "p/a", "p/b", "p/bb", "p/d", "p/e"]);
    assert_eq!(seen.1, ["p/bb", "p/d", "p/e"]);
    assert_eq!(seen.2, ["p/e", "p/d", "p/bb", "p/b", "p/a", "p/0"]);
    assert_eq!(seen.3, ["p/bb", "p/b", "p/a", "p/0"]);
    let view: &dyn ReadView = store.as_ref();
    assert_eq!(
        keys(view.scan(b"p/", None)),
        ["p/0", "p/a", "p/b", "p/bb", "p/d", "p/e"]
    );
    close(store).await;
}

async fn a_job_is_atomic(backend: Backend) {
    let store = backend.open().await;
    let recorder = Arc::new(Recorder::default());
    store.observe(recorder.clone());
    write(&store, |txn| {
        put(txn, "gone", "x");
        Ok(())
    })
    .await
    .unwrap();
    let (_, revision) = write(&store, |txn| {
        for i in 0..200 {
            put(txn, &format!("k/{i:03}"), &i.to_string());
        }
        txn.delete(b"gone".to_vec());
        Ok(())
    })
    .await
    .unwrap();
    // One revision for all of it, all of it visible.
    assert_eq!(store.revision(), revision);
    assert_eq!(keys(store.scan(b"k/", None)).len(), 200);
    assert_eq!(get(store.as_ref(), "gone"), None);
    let last = recorder.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, revision);
    assert_eq!(last.1.len(), 201, "the observer sees the whole job at once");
    close(store).await;
}

async fn a_declined_job_writes_nothing(backend: Backend) {
    let store = backend.open().await;
    let recorder = Arc::new(Recorder::default());
    store.observe(recorder.clone());
    let (_, before) = write(&store, |txn| {
        put(txn, "kept", "1");
        Ok(())
    })
    .await
    .unwrap();
    let declined = write(&store, |txn| {
        put(txn, "kept", "2");
        put(txn, "new", "1");
        txn.delete(b"kept".to_vec());
        Err::<(), _>(Outcome::Declined)
    })
    .await;
    assert!(matches!(declined, Err(Outcome::Declined)), "{declined:?}");
    // A job that panics is declined too.
    let panicked = store::write::<(), Outcome, _>(store.as_ref(), |txn| {
        put(txn, "new", "1");
        panic!("a bug in a job");
    })
    .await;
    assert!(panicked.is_err());
    assert_eq!(get(store.as_ref(), "kept").as_deref(), Some("1"));
    assert_eq!(get(store.as_ref(), "new"), None);
    assert_eq!(store.revision(), before);
    // The next job reads the state before the declined ones.
    let (seen, after) = write(&store, |txn| Ok((get(txn, "kept"), get(txn, "new"))))
        .await
        .unwrap();
    assert_eq!(seen, (Some("1".into()), None));
    assert_eq!(after, before, "a job that writes nothing takes no revision");
    assert_eq!(recorder.0.lock().unwrap().len(), 1);
    close(store).await;
}

async fn revisions_strictly_increase(backend: Backend) {
    let store = backend.open().await;
    let start = store.revision();
    let mut last = start;
    for i in 0..5 {
        let (inside, revision) = write(&store, move |txn| {
            put(txn, &format!("s/{i}"), "x");
            Ok(txn.revision())
        })
        .await
        .unwrap();
        assert_eq!(inside, revision, "the job knows its revision");
        assert!(revision > last);
        assert_eq!(store.revision(), revision);
        last = revision;
    }
    // Concurrent jobs: all different, all above, the newest is the store's.
    let jobs: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                write(&store, move |txn| {
                    put(txn, &format!("c/{i}"), "x");
                    Ok(())
                })
                .await
                .unwrap()
                .1
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for job in jobs {
        revisions.push(job.await.unwrap());
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), 40);
    assert!(revisions[0] > last);
    assert_eq!(store.revision(), *revisions.last().unwrap());
    close(store).await;
}

async fn a_job_reads_its_own_writes_and_every_earlier_commit(backend: Backend) {
    let store = backend.open().await;
    let (seen, _) = write(&store, |txn| {
        put(txn, "a", "1");
        let first = get(txn, "a");
        put(txn, "a", "2");
        let second = get(txn, "a");
        txn.delete(b"a".to_vec());
        let deleted = get(txn, "a");
        put(txn, "a", "3");
        Ok((first, second, deleted))
    })
    .await
    .unwrap();
    assert_eq!(seen, (Some("1".into()), Some("2".into()), None));
    assert_eq!(get(store.as_ref(), "a").as_deref(), Some("3"));

    // Read-modify-write from many tasks at once: jobs are serialized, so
    // no increment is lost.
    let jobs: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                write(&store, |txn| {
                    let n: u64 = get(txn, "counter").map_or(0, |n| n.parse().unwrap());
                    put(txn, "counter", &(n + 1).to_string());
                    Ok(n + 1)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for job in jobs {
        seen.push(job.await.unwrap());
    }
    assert_eq!(get(store.as_ref(), "counter").as_deref(), Some("50"));
    // Counted in revision order: each job saw exactly the ones before it.
    seen.sort_by_key(|(_, revision)| *revision);
    let counts: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, (1..=50).collect::<Vec<_>>());
    close(store).await;
}

async fn an_acknowledged_write_survives_a_crash(backend: Backend) {
    // A child process writes from eight tasks at once, prints each write
    // once it is acknowledged, and aborts (no close, no flush) after 200.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crashing_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_STORE, backend.spec())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let acknowledged: Vec<(String, Revision)> = stdout
        .lines()
        // (The harness may print the test's name on the same line.)
        .filter_map(|line| line.split_once("acknowledged ").map(|(_, rest)| rest))
        .map(|line| {
            let (key, revision) = line.split_once(' ').unwrap();
            (key.to_string(), revision.parse().unwrap())
        })
        .collect();
    assert!(
        acknowledged.len() >= 200 && !output.status.success(),
        "the writer did not write and crash: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let store = backend.open().await;
    let newest = acknowledged.iter().map(|(_, r)| *r).max().unwrap();
    assert!(store.revision() >= newest);
    for (key, revision) in &acknowledged {
        assert_eq!(
            get(store.as_ref(), key).as_deref(),
            Some(revision.to_string().as_str()),
            "{key}, acknowledged at revision {revision}, is lost"
        );
    }
    // And it goes on from there.
    let (_, next) = write(&store, |txn| {
        put(txn, "after", "x");
        Ok(())
    })
    .await
    .unwrap();
    assert!(next > newest);
    drop(store);
    // Dropping a store closes it; that too keeps everything.
    let store = backend.open().await;
    assert_eq!(get(store.as_ref(), "after").as_deref(), Some("x"));
    assert_eq!(store.revision(), next);
    close(store).await;
}

const CRASH_STORE: &str = "CONFORMANCE_CRASH_STORE";

/// Not a test by itself: the child process of
/// `an_acknowledged_write_survives_a_crash` (it does nothing unless that
/// test runs it).
#[test]
fn crashing_writer() {
    let Ok(spec) = std::env::var(CRASH_STORE) else {
        return;
    };
    let location = Location::parse(Some(&spec), std::path::Path::new(".")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let backend = Backend {
            location,
            _dir: None,
        };
        let store = backend.open().await;
        let (count, done) = tokio::sync::mpsc::unbounded_channel::<()>();
        for task in 0..8 {
            let (store, count) = (store.clone(), count.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("d/{task}/{n:05}");
                    let written = key.clone();
                    let (_, revision) = write(&store, move |txn| {
                        let revision = txn.revision().to_string();
                        put(txn, &written, &revision);
                        Ok(())
                    })
                    .await
                    .unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acknowledged {key} {revision}").unwrap();
                    out.flush().unwrap();
                    drop(out);
                    let _ = count.send(());
                }
            });
        }
        let mut done = done;
        for _ in 0..200 {
            done.recv().await;
        }
        std::process::abort();
    });
}

async fn observers_see_every_commit_once_in_order(backend: Backend) {
    let store = backend.open().await;
    let recorder = Arc::new(Recorder::default());
    store.observe(recorder.clone());
    let jobs: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                write(&store, move |txn| {
                    if i % 7 == 3 {
                        return Err(Outcome::Declined);
                    }
                    if i % 5 == 0 {
                        return Ok(()); // writes nothing
                    }
                    put(txn, &format!("o/{i:02}"), &i.to_string());
                    Ok(())
                })
                .await
                .map(|(_, revision)| (i, revision))
            })
        })
        .collect();
    let mut acknowledged = BTreeMap::new();
    for job in jobs {
        if let Ok((i, revision)) = job.await.unwrap()
            && i % 5 != 0
        {
            acknowledged.insert(revision, i);
        }
    }
    let seen = recorder.0.lock().unwrap().clone();
    let revisions: Vec<Revision> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions,
        acknowledged.keys().copied().collect::<Vec<_>>(),
        "every acknowledged commit once, in revision order, and nothing else"
    );
    for (revision, writes) in &seen {
        let i = acknowledged[revision];
        let expected = BTreeMap::from([(format!("o/{i:02}"), Some(i.to_string()))]);
        assert_eq!(writes, &expected);
    }
    close(store).await;
}

/// A job that holds the committer until the returned sender is used (or
/// dropped): later jobs queue behind it meanwhile. Returns once it runs.
async fn hold_committer(store: &Arc<dyn Store>) -> (std::sync::mpsc::Sender<()>, JoinHandle) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (running, runs) = tokio::sync::oneshot::channel();
    let held = {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            write(&store, move |txn| {
                put(txn, "held", "1");
                let _ = running.send(());
                let _ = released.recv_timeout(std::time::Duration::from_secs(10));
                Ok(())
            })
            .await
            .map(|_| ())
        })
    };
    runs.await.expect("the holding job runs");
    (release, held)
}

type JoinHandle = tokio::task::JoinHandle<Result<(), Outcome>>;

async fn a_write_whose_deadline_passes_while_queued_is_not_applied(backend: Backend) {
    let store = backend.open().await;
    let (release, held) = hold_committer(&store).await;
    let late = {
        let store = Arc::clone(&store);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        tokio::spawn(deadline::within(deadline, async move {
            write(&store, |txn| {
                put(txn, "late", "1");
                Ok(())
            })
            .await
        }))
    };
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let late = late.await.unwrap();
    assert!(
        matches!(late, Err(Outcome::Store(StoreError::DeadlineExceeded))),
        "{late:?}"
    );
    assert_eq!(get(store.as_ref(), "late"), None);
    assert_eq!(get(store.as_ref(), "held").as_deref(), Some("1"));
    // A deadline that passed before the write was submitted: not queued.
    let past = tokio::time::Instant::now();
    let refused = deadline::within(
        past,
        write(&store, |txn| {
            put(txn, "past", "1");
            Ok(())
        }),
    )
    .await;
    assert!(matches!(
        refused,
        Err(Outcome::Store(StoreError::DeadlineExceeded))
    ));
    assert_eq!(get(store.as_ref(), "past"), None);
    close(store).await;
}

async fn a_full_commit_queue_refuses_writes_at_once(backend: Backend) {
    const LIMIT: usize = 3;
    let store = backend.open_with(LIMIT).await;
    let (release, held) = hold_committer(&store).await;
    // Submitted here and now, so they are queued before anything else.
    let queued: Vec<_> = (0..LIMIT)
        .map(|i| {
            store.submit(Box::new(move |txn| {
                put(txn, &format!("q{i}"), "1");
                true
            }))
        })
        .collect();
    // The queue is full now; a probe (declining, so harmless if queued)
    // shows the limit.
    let limit = common::eventually("the commit queue to fill", || {
        let mut probe = store.submit(Box::new(|_| false));
        async move {
            match probe.try_recv() {
                Ok(Err(StoreError::Busy { limit })) => Some(limit),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(limit, LIMIT);
    let over = write(&store, |txn| {
        put(txn, "over", "1");
        Ok(())
    })
    .await;
    assert!(
        matches!(over, Err(Outcome::Store(StoreError::Busy { .. }))),
        "{over:?}"
    );
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for write in queued {
        write
            .await
            .unwrap()
            .expect("a queued write commits once the committer is free");
    }
    // Nothing refused was written, and the store takes writes again.
    assert_eq!(get(store.as_ref(), "over"), None);
    write(&store, |txn| {
        put(txn, "after", "1");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(get(store.as_ref(), "after").as_deref(), Some("1"));
    close(store).await;
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::sled()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(backend) = super::Backend::postgres(stringify!($test)) {
                        super::$test(backend).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    scans_are_ordered_both_ways,
    a_job_is_atomic,
    a_declined_job_writes_nothing,
    revisions_strictly_increase,
    a_job_reads_its_own_writes_and_every_earlier_commit,
    an_acknowledged_write_survives_a_crash,
    observers_see_every_commit_once_in_order,
    a_write_whose_deadline_passes_while_queued_is_not_applied,
    a_full_commit_queue_refuses_writes_at_once,
);

// ---- PostgreSQL only: several replicas over one database ------------------

/// Jobs from two replicas are serialized by the database: every
/// read-modify-write counts, and each replica follows the other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_serialize_jobs_and_follow_each_other() {
    let Some(backend) = Backend::postgres("postgres_replicas_serialize_jobs") else {
        return;
    };
    let first = backend.open().await;
    let second = backend.open().await;
    let recorders = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
    for (store, recorder) in [&first, &second].into_iter().zip(&recorders) {
        store.observe(recorder.clone());
        store.follow();
    }
    let mut jobs = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { &first } else { &second }.clone();
        jobs.push(tokio::spawn(async move {
            write(&store, |txn| {
                let n: u64 = get(txn, "counter").map_or(0, |n| n.parse().unwrap());
                put(txn, "counter", &(n + 1).to_string());
                Ok(n + 1)
            })
            .await
            .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for job in jobs {
        seen.push(job.await.unwrap());
    }
    seen.sort_by_key(|(_, revision)| *revision);
    let counts: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, (1..=60).collect::<Vec<_>>());
    let last = seen.last().unwrap().1;
    // Each replica catches up with the other's commits, and its observers
    // see all 60, once, in order.
    for (store, recorder) in [&first, &second].into_iter().zip(&recorders) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.revision() < last {
            assert!(
                std::time::Instant::now() < deadline,
                "a replica did not catch up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(get(store.as_ref(), "counter").as_deref(), Some("60"));
        let revisions: Vec<Revision> = recorder.0.lock().unwrap().iter().map(|c| c.0).collect();
        assert_eq!(revisions, seen.iter().map(|s| s.1).collect::<Vec<_>>());
    }
    close(first).await;
    close(second).await;
}
