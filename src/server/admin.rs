//! The admin HTTP listener, on its own address (never the gRPC port), for
//! what cannot speak gRPC: Prometheus scrapes `GET /metrics`, probes ask
//! `GET /healthz` (the process is alive) and `GET /readyz` (it can serve:
//! the store is open and available, the server is not draining, and the
//! decision view has caught up with the store).
//!
//! It listens from before the store opens (a liveness probe must not kill
//! a server that is still opening or migrating a large store; readiness
//! says "starting" meanwhile) until the server has stopped.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::decision::state::DecisionState;
use crate::drain::Drain;
use crate::observe::metrics;
use crate::store::Store;

use super::http_listener::HttpListener;

/// How long readiness waits for the decision view to reach the store's
/// revision: a commit is durable a moment before the view has applied it.
const CATCH_UP: Duration = Duration::from_millis(250);

/// How often histograms are folded and idle series trimmed (the exporter's
/// own listener would do it; this one does it itself).
const UPKEEP: Duration = Duration::from_secs(5);

/// What readiness and the store gauges look at, once the store is open.
pub struct Serving {
    store: Arc<dyn Store>,
    /// The store's availability, as gRPC health follows it.
    available: watch::Receiver<bool>,
    decisions: Arc<DecisionState>,
    drain: Drain,
}

impl Serving {
    pub fn new(store: Arc<dyn Store>, decisions: Arc<DecisionState>, drain: Drain) -> Self {
        Self {
            available: store.availability(),
            store,
            decisions,
            drain,
        }
    }
}

type Shared = Arc<OnceLock<Serving>>;

/// The running admin listener; dropping it stops it at once.
pub struct Admin {
    pub address: SocketAddr,
    serving: Shared,
    listener: HttpListener,
}

impl Admin {
    /// Binds `address` and serves; readiness says "starting" until
    /// [`Admin::serving`].
    pub async fn start(address: SocketAddr) -> anyhow::Result<Self> {
        let serving = Shared::default();
        let router = Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readiness))
            .with_state(serving.clone());
        let listener = HttpListener::start("admin_listen", address, router, upkeep()).await?;
        let address = listener.address;
        tracing::info!(%address, "admin listening on {address}");
        Ok(Self {
            address,
            serving,
            listener,
        })
    }

    /// The store is open and the view loaded: readiness follows them now.
    pub fn serving(&self, serving: Serving) {
        let _ = self.serving.set(serving);
    }

    /// Stops listening, letting answers under way finish (briefly).
    pub async fn stop(self) {
        self.listener.stop(Duration::from_secs(1)).await;
    }
}

async fn upkeep() {
    let mut every = tokio::time::interval(UPKEEP);
    loop {
        every.tick().await;
        metrics::prometheus().run_upkeep();
    }
}

/// The metrics in Prometheus' text format, with the store's gauges read
/// now.
async fn scrape(State(serving): State<Shared>) -> impl IntoResponse {
    if let Some(serving) = serving.get() {
        metrics::store_state(
            serving.store.revision(),
            serving.decisions.revision(),
            serving.store.size_on_disk(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::prometheus().render(),
    )
}

/// 200 when the server can serve; 503 with the reason when not.
async fn readiness(State(serving): State<Shared>) -> (StatusCode, String) {
    match unready(serving.get()).await {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Why the server cannot serve now, if it cannot.
async fn unready(serving: Option<&Serving>) -> Option<String> {
    let Some(serving) = serving else {
        return Some("starting: the store is opening".to_string());
    };
    if serving.drain.has_started() {
        return Some("draining: the server is shutting down".to_string());
    }
    if !*serving.available.borrow() {
        return Some("the store is unavailable".to_string());
    }
    let revision = serving.store.revision();
    if !serving.decisions.wait_for(revision, CATCH_UP).await {
        return Some(format!(
            "the decision view is at revision {}, behind the store at {revision}",
            serving.decisions.revision()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    #[tokio::test]
    async fn ready_only_when_open_not_draining_and_caught_up() {
        assert!(unready(None).await.unwrap().starts_with("starting"));

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let decisions =
            Arc::new(DecisionState::load(store.as_ref(), store.revision(), 10).unwrap());
        let (drain_signal, drain) = crate::drain::channel();
        let (availability, available) = watch::channel(true);
        let serving = Serving {
            store: store.clone(),
            available,
            decisions,
            drain,
        };
        assert_eq!(unready(Some(&serving)).await, None);

        // A database out of reach, and back.
        availability.send_replace(false);
        let unavailable = unready(Some(&serving)).await.unwrap();
        assert_eq!(unavailable, "the store is unavailable");
        availability.send_replace(true);
        assert_eq!(unready(Some(&serving)).await, None);

        // A commit the view never hears of (it is not observing).
        crate::store::write(store.as_ref(), |txn| {
            txn.put(b"k".to_vec(), b"v".to_vec());
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .unwrap();
        let behind = unready(Some(&serving)).await.unwrap();
        assert!(behind.contains("behind the store at 1"), "{behind}");

        drain_signal.start();
        assert!(
            unready(Some(&serving))
                .await
                .unwrap()
                .starts_with("draining")
        );
        store.close().unwrap();
    }
}
