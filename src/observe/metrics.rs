//! Every metric the server exports, by name, and the one-line calls that
//! move them (`README.md`, "Metrics", lists the same names).
//!
//! The values go through the `metrics` facade to one process-wide
//! Prometheus recorder, installed by the first server a process starts
//! ([`prometheus`]). A global recorder can be installed only once per
//! process, and the store's committers, the scheduler and the decision
//! cache record from threads and tasks that belong to no particular call,
//! so a recorder per server (`metrics::with_local_recorder` is per thread
//! and per closure) cannot reach them. Several servers in one process (the
//! integration tests) therefore share these series; nothing is labelled
//! per server. One process runs one server in production.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Calls finished, by `service`, `method` and gRPC `code`.
pub const RPC_CALLS: &str = "entitlements_rpc_calls_total";
/// How long calls took, from the request to the end of the response, by
/// `service` and `method`.
pub const RPC_DURATION: &str = "entitlements_rpc_duration_seconds";
/// Calls started and not yet finished.
pub const RPC_IN_FLIGHT: &str = "entitlements_rpc_in_flight";
/// How long making a group commit durable took.
pub const COMMIT_DURATION: &str = "entitlements_store_commit_duration_seconds";
/// How many write jobs a group commit took off the queue together.
pub const COMMIT_BATCH_SIZE: &str = "entitlements_store_commit_batch_size";
/// Write jobs queued and not yet taken by the committer.
pub const COMMIT_QUEUE_DEPTH: &str = "entitlements_store_commit_queue_depth";
/// The store's newest durable revision.
pub const STORE_REVISION: &str = "entitlements_store_revision";
/// Bytes the store takes on disk (sled only).
pub const STORE_SIZE: &str = "entitlements_store_size_bytes";
/// The revision the decision view reflects.
pub const VIEW_REVISION: &str = "entitlements_decision_view_revision";
/// How many revisions the decision view is behind the store.
pub const VIEW_LAG: &str = "entitlements_decision_view_lag_revisions";
/// Authorization decisions looked up in the cache, by `result` (hit, miss).
pub const AUTHZ_CACHE: &str = "entitlements_authz_cache_lookups_total";
/// Rounds of background work run.
pub const SCHEDULER_RUNS: &str = "entitlements_scheduler_runs_total";
/// Items due at the last round of background work.
pub const SCHEDULER_DUE: &str = "entitlements_scheduler_due_items";
/// How late the oldest item due at the last round was, in seconds.
pub const SCHEDULER_LAG: &str = "entitlements_scheduler_lag_seconds";
/// Open WatchGrants streams.
pub const WATCH_SUBSCRIBERS: &str = "entitlements_watch_grants_subscribers";
/// Audit events committed.
pub const AUDIT_EVENTS: &str = "entitlements_audit_events_total";
/// Always 1, with the `version` and git `commit` the binary was built from.
pub const BUILD_INFO: &str = "entitlements_build_info";

/// Latency buckets, in seconds: from a cached decision to a slow commit.
const SECONDS_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Batch-size buckets, in jobs (the committers take at most a few hundred).
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_SIZE.into()), &BATCH_BUCKETS)
            })
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "another metrics recorder is installed in this process; /metrics stays empty"
            );
        }
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("BUILD_GIT_COMMIT"))
            .set(1.0);
        handle
    })
}

fn describe() {
    describe_counter!(
        RPC_CALLS,
        "gRPC calls finished, by service, method and status code."
    );
    describe_histogram!(RPC_DURATION, metrics::Unit::Seconds, "gRPC call latency.");
    describe_gauge!(RPC_IN_FLIGHT, "gRPC calls in flight.");
    describe_histogram!(
        COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Time to make a group commit durable."
    );
    describe_histogram!(COMMIT_BATCH_SIZE, "Write jobs per group commit.");
    describe_gauge!(COMMIT_QUEUE_DEPTH, "Write jobs waiting for the committer.");
    describe_gauge!(STORE_REVISION, "Newest durable store revision.");
    describe_gauge!(STORE_SIZE, metrics::Unit::Bytes, "Store size on disk.");
    describe_gauge!(VIEW_REVISION, "Revision the decision view reflects.");
    describe_gauge!(VIEW_LAG, "Revisions the decision view is behind the store.");
    describe_counter!(AUTHZ_CACHE, "Authorization cache lookups, by result.");
    describe_counter!(SCHEDULER_RUNS, "Rounds of background work.");
    describe_gauge!(
        SCHEDULER_DUE,
        "Items due at the last round of background work."
    );
    describe_gauge!(
        SCHEDULER_LAG,
        metrics::Unit::Seconds,
        "How late the oldest due item of the last round was."
    );
    describe_gauge!(WATCH_SUBSCRIBERS, "Open WatchGrants streams.");
    describe_counter!(AUDIT_EVENTS, "Audit events committed.");
    describe_gauge!(BUILD_INFO, "Version and git commit of the binary.");
}

/// One finished call.
pub fn rpc_finished(
    service: &'static str,
    method: &'static str,
    code: &'static str,
    took: Duration,
) {
    counter!(RPC_CALLS, "service" => service, "method" => method, "code" => code).increment(1);
    histogram!(RPC_DURATION, "service" => service, "method" => method).record(took);
}

/// Counts a call in flight while it lives.
pub fn rpc_in_flight() -> Held {
    Held::new(RPC_IN_FLIGHT)
}

/// A write job went into a commit queue.
pub fn commit_queued() {
    gauge!(COMMIT_QUEUE_DEPTH).increment(1.0);
}

/// A write job left its commit queue (to run, or refused).
pub fn commit_dequeued() {
    gauge!(COMMIT_QUEUE_DEPTH).decrement(1.0);
}

/// A committer runs `jobs` as one group commit.
pub fn commit_batch_taken(jobs: usize) {
    histogram!(COMMIT_BATCH_SIZE).record(jobs as f64);
}

/// Times making a group commit durable, until dropped.
pub struct CommitTiming(Instant);

impl CommitTiming {
    pub fn start() -> Self {
        Self(Instant::now())
    }
}

impl Drop for CommitTiming {
    fn drop(&mut self) {
        histogram!(COMMIT_DURATION).record(self.0.elapsed());
    }
}

/// The store and the decision view as of now (set when scraped).
pub fn store_state(revision: u64, view_revision: u64, size_on_disk: Option<u64>) {
    gauge!(STORE_REVISION).set(revision as f64);
    gauge!(VIEW_REVISION).set(view_revision as f64);
    gauge!(VIEW_LAG).set(revision.saturating_sub(view_revision) as f64);
    if let Some(size) = size_on_disk {
        gauge!(STORE_SIZE).set(size as f64);
    }
}

/// An authorization decision was (`hit`) or was not in the cache.
pub fn authz_cache_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!(AUTHZ_CACHE, "result" => result).increment(1);
}

/// A round of background work found `due` items, the oldest `lag` late.
pub fn scheduler_round(due: usize, lag: Duration) {
    counter!(SCHEDULER_RUNS).increment(1);
    gauge!(SCHEDULER_DUE).set(due as f64);
    gauge!(SCHEDULER_LAG).set(lag.as_secs_f64());
}

/// Counts an open WatchGrants stream while it lives.
pub fn watch_subscriber() -> Held {
    Held::new(WATCH_SUBSCRIBERS)
}

/// `events` audit events were committed.
pub fn audit_events(events: usize) {
    counter!(AUDIT_EVENTS).increment(events as u64);
}

/// One in a gauge for as long as it lives: what is counted may end in
/// many ways (a call cancelled, a stream dropped), and each must count.
pub struct Held(&'static str);

impl Held {
    fn new(name: &'static str) -> Self {
        gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}
