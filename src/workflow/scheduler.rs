//! Background work derived from stored state: scheduled requests start,
//! assignments expire, approval stages time out, blocked guests are
//! deleted when their time comes, and audit events past their retention
//! are pruned. Due work is found through the
//! time indexes, so it survives restarts, and each item is re-checked in its
//! own transaction, so it never fires twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::audit;
use crate::domain::assignment::ACTIVE_BY_END;
use crate::domain::directory::USERS_BY_DELETE_TIME;
use crate::domain::request::{SCHEDULED_BY_START, STAGE_DUE, time_key};
use crate::error::Result;
use crate::pb::{Assignment, AssignmentRequest, User};
use crate::policy::PolicyEngine;
use crate::shared::actor::{Actor, SYSTEM_ACTOR};
use crate::shared::clock::{Clock, Moment};
use crate::store::records::{self, Record};
use crate::store::{Store, Txn, write};

use super::approval::timeout_if_due;
use super::lifecycle::{delete_guest_if_due, expire_if_due, start_if_due};

/// At most this many items per kind are handled per round.
const ROUND_LIMIT: usize = 500;

/// The items of `kind` due by `now` in its time index: (due time, id),
/// oldest first.
fn due(store: &dyn Store, kind: &str, index: &str, now: i64) -> Result<Vec<(i64, String)>> {
    records::index_up_to(store, kind, index, &time_key(now))
        .take(ROUND_LIMIT)
        .map(|item| {
            let (at, id) = item?;
            Ok((at.parse().unwrap_or(now), id))
        })
        .collect()
}

/// The kinds of timed work.
#[derive(Debug, Clone, Copy)]
enum Work {
    Start,
    Expire,
    TimeOut,
    DeleteGuest,
}

impl Work {
    /// Does the work on one item; false when it turned out not to be due.
    fn run(
        self,
        txn: &mut dyn Txn,
        engine: &PolicyEngine,
        id: &str,
        actor: &Actor,
    ) -> Result<bool> {
        match self {
            Work::Start => start_if_due(txn, engine, id, actor),
            Work::Expire => expire_if_due(txn, id, actor),
            Work::TimeOut => timeout_if_due(txn, id, actor),
            Work::DeleteGuest => delete_guest_if_due(txn, id, actor),
        }
    }
}

/// Each kind of timed work: the records, their time index, the work.
const DUE_WORK: [(&str, &str, Work); 4] = [
    (AssignmentRequest::KIND, SCHEDULED_BY_START, Work::Start),
    (Assignment::KIND, ACTIVE_BY_END, Work::Expire),
    (AssignmentRequest::KIND, STAGE_DUE, Work::TimeOut),
    (User::KIND, USERS_BY_DELETE_TIME, Work::DeleteGuest),
];

/// Runs everything due at the clock's current time; returns how many items
/// changed something.
pub async fn run_due(
    store: &dyn Store,
    clock: &dyn Clock,
    engine: &Arc<PolicyEngine>,
) -> Result<usize> {
    let actor = Actor::new(SYSTEM_ACTOR, clock.now());
    // The time indexes hold whole seconds: an item due later within this
    // second is found, re-checked at full precision and left for later.
    let now = Moment::of(actor.now).seconds();
    let mut done = 0;
    let (mut found, mut oldest) = (0, now);
    for (kind, index, work) in DUE_WORK {
        let items = due(store, kind, index, now)?;
        found += items.len();
        oldest = items.first().map_or(oldest, |(at, _)| oldest.min(*at));
        for (_, id) in items {
            let actor = actor.clone();
            let engine = engine.clone();
            if write(store, move |txn| work.run(txn, &engine, &id, &actor))
                .await?
                .value
            {
                done += 1;
            }
        }
    }
    let lag = Duration::from_secs(now.saturating_sub(oldest).max(0) as u64);
    crate::observe::metrics::scheduler_round(found, lag);
    Ok(done)
}

/// How the background work runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Time between rounds.
    pub interval: Duration,
    /// How long audit events are kept (None: forever).
    pub audit_retention: Option<Duration>,
}

/// Prunes audit events older than `keep`, one bounded batch per
/// transaction, until none is left.
async fn prune_audit(store: &dyn Store, clock: &dyn Clock, keep: Duration) -> Result<usize> {
    let mut pruned = 0;
    loop {
        let actor = Actor::new(SYSTEM_ACTOR, clock.now());
        let batch = write(store, move |txn| audit::retention::prune(txn, &actor, keep))
            .await?
            .value;
        pruned += batch;
        if batch < audit::retention::PRUNE_LIMIT {
            return Ok(pruned);
        }
    }
}

/// Asks the background task for a round now (see [`run_now`]).
#[derive(Clone)]
pub struct RunNow(mpsc::Sender<oneshot::Sender<()>>);

/// What the background task hears [`RunNow`] asks through.
pub struct RunNowRequests(mpsc::Receiver<oneshot::Sender<()>>);

/// A way to run due work at once instead of at the next interval, for
/// callers that must know it has run (tests with a manual clock): the
/// [`RunNow`] end asks, the [`RunNowRequests`] end goes to [`spawn`].
pub fn run_now() -> (RunNow, RunNowRequests) {
    let (sender, receiver) = mpsc::channel(1);
    (RunNow(sender), RunNowRequests(receiver))
}

impl RunNow {
    /// Runs a round of background work (everything due at the clock's
    /// now) and returns once it is done; false when the background task has
    /// stopped.
    pub async fn round(&self) -> bool {
        let (done, finished) = oneshot::channel();
        self.0.send(done).await.is_ok() && finished.await.is_ok()
    }
}

/// Runs due work (and audit retention) every `options.interval`, and
/// whenever `run_now` asks, until `stop` changes.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    engine: Arc<PolicyEngine>,
    options: Options,
    mut stop: watch::Receiver<bool>,
    run_now: RunNowRequests,
) -> tokio::task::JoinHandle<()> {
    let RunNowRequests(mut asked) = run_now;
    tokio::spawn(async move {
        let mut waiting: Option<oneshot::Sender<()>> = None;
        loop {
            // With replicas over one database, one of them at a time does
            // the work (each item is re-checked in its own transaction
            // anyway, so a hand-over never fires anything twice).
            let mut ours = store.runs_timed_work();
            // Asked for a round just after start-up, before this replica
            // took the lease on timed work: give it a moment to.
            let asked_at = std::time::Instant::now();
            while waiting.is_some() && !ours && asked_at.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ours = store.runs_timed_work();
            }
            if ours && let Err(error) = run_due(store.as_ref(), clock.as_ref(), &engine).await {
                tracing::error!(%error, "background work failed; retrying next round");
            }
            if ours
                && let Some(keep) = options.audit_retention
                && let Err(error) = prune_audit(store.as_ref(), clock.as_ref(), keep).await
            {
                tracing::error!(%error, "audit retention failed; retrying next round");
            }
            if let Some(done) = waiting.take() {
                let _ = done.send(());
            }
            tokio::select! {
                _ = tokio::time::sleep(options.interval) => {}
                Some(done) = asked.recv() => waiting = Some(done),
                _ = stop.changed() => return,
            }
        }
    })
}
