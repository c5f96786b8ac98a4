//! Assembles and runs the gRPC server: health (per service: NOT_SERVING
//! until the store is open and the decision view loaded, SERVING while calls
//! are taken, NOT_SERVING again from the moment the server begins to stop),
//! reflection (v1 and v1alpha), and the entitlements services behind the
//! caller-identity interceptor, on connections accepted within limits.
//!
//! Beside it, on its own address, the admin HTTP listener serves metrics
//! and probes ([`admin`]); every call passes through [`calls`], which
//! gives it its request id, metrics, span and log line.
//!
//! The server stops on the shutdown signal, or on its own when the store
//! fails (fail-stop): either way health turns NOT_SERVING, accepting stops,
//! long-lived streams end with UNAVAILABLE and in-flight calls get the drain
//! deadline. After a store failure `run` returns an error, so the process
//! exits non-zero and a restart recovers exactly what was acknowledged.

mod admin;
mod audit_events;
mod calls;
mod health;
mod http_listener;
mod limits;
mod listener;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use crate::api::App;
use std::time::Duration;

use crate::api::access_packages::AccessPackagesApi;
use crate::api::assignments::AssignmentsApi;
use crate::api::audit::AuditLogApi;
use crate::api::reports::ReportsApi;
use anyhow::Context as _;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::caller::{Authenticator, DEV_USER_HEADER};
use crate::api::catalogs::CatalogsApi;
use crate::api::decisions::DecisionsApi;
use crate::api::directory::DirectoryApi;
use crate::api::jwt::JwtVerifier;
use crate::api::policies::AssignmentPoliciesApi;
use crate::api::requests::AssignmentRequestsApi;
use crate::api::scim::{self, Scim};
use crate::api::settings::SettingsApi;
use crate::config::{Settings, TlsSettings};
use crate::decision::state::DecisionState;
use crate::domain::catalog::ensure_general_catalog;
use crate::domain::migrations;
use crate::domain::settings::ensure_settings;
use crate::drain::{Drain, DrainSignal};
use crate::pb;
use crate::pb::access_packages_server::AccessPackagesServer;
use crate::pb::assignment_policies_server::AssignmentPoliciesServer;
use crate::pb::assignment_requests_server::AssignmentRequestsServer;
use crate::pb::assignments_server::AssignmentsServer;
use crate::pb::audit_log_server::AuditLogServer;
use crate::pb::catalogs_server::CatalogsServer;
use crate::pb::decisions_server::DecisionsServer;
use crate::pb::directory_server::DirectoryServer;
use crate::pb::reports_server::ReportsServer;
use crate::pb::settings_server::SettingsServer;
use crate::policy::PolicyEngine;
use crate::shared::actor::{Actor, SYSTEM_ACTOR};
use crate::shared::clock::Clock;
use crate::store::Store;
use crate::workflow::scheduler;
use health::DrainingHealth;
use http_listener::HttpListener;
use listener::{FirstBytes, Limits};

/// Names of every entitlements service, as health checks know them.
pub const SERVICE_NAMES: [&str; 10] = [
    <DirectoryServer<DirectoryApi> as NamedService>::NAME,
    <CatalogsServer<CatalogsApi> as NamedService>::NAME,
    <AccessPackagesServer<AccessPackagesApi> as NamedService>::NAME,
    <AssignmentPoliciesServer<AssignmentPoliciesApi> as NamedService>::NAME,
    <AssignmentRequestsServer<AssignmentRequestsApi> as NamedService>::NAME,
    <AssignmentsServer<AssignmentsApi> as NamedService>::NAME,
    <SettingsServer<SettingsApi> as NamedService>::NAME,
    <DecisionsServer<DecisionsApi> as NamedService>::NAME,
    <AuditLogServer<AuditLogApi> as NamedService>::NAME,
    <ReportsServer<ReportsApi> as NamedService>::NAME,
];

/// Checks who can call before anything is served: bearer JWTs when keys
/// are configured; the development header only with --dev-auth, and only on
/// loopback. A server nobody could call refuses to start.
pub fn authenticator(settings: &Settings, address: SocketAddr) -> anyhow::Result<Authenticator> {
    let jwt = JwtVerifier::from_settings(&settings.auth)?;
    ensure_dev_auth_on_loopback(settings, address)?;
    if settings.dev_auth {
        tracing::warn!(
            "development authentication: the {DEV_USER_HEADER} header names the caller, unchecked"
        );
    }
    anyhow::ensure!(
        settings.dev_auth || jwt.is_some(),
        "no way to authenticate callers: configure auth.jwt_hs256_secret_file, auth.jwt_public_key_file \
         or auth.jwt_jwks_file, or run with --dev-auth on loopback for development"
    );
    Authenticator::new(&settings.auth, jwt, settings.dev_auth)
}

/// `--dev-auth` trusts a plain header, so it is refused off loopback. The
/// binary checks this before it binds: a refused server never listens.
pub fn ensure_dev_auth_on_loopback(settings: &Settings, address: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        !settings.dev_auth || address.ip().is_loopback(),
        "--dev-auth trusts a plain header and works only on a loopback address, not {address}"
    );
    Ok(())
}

/// Starts the SCIM listener. It speaks plain HTTP: with TLS configured
/// for gRPC it must listen on loopback, behind a proxy that terminates
/// TLS, so that bearer tokens never cross a network in the clear.
async fn start_scim(
    settings: &Settings,
    address: SocketAddr,
    app: App,
    auth: Authenticator,
) -> anyhow::Result<HttpListener> {
    ensure_dev_auth_on_loopback(settings, address)?;
    anyhow::ensure!(
        settings.tls.is_none() || address.ip().is_loopback(),
        "scim_listen: the SCIM listener speaks plain HTTP; with tls configured it must listen on \
         loopback behind a proxy that terminates TLS, not on {address}"
    );
    let router = scim::router(Scim { app, auth });
    let listener =
        HttpListener::start("scim_listen", address, router, std::future::pending()).await?;
    let address = listener.address;
    tracing::info!(%address, "SCIM listening on http://{address}{}", scim::PREFIX);
    Ok(listener)
}

fn tls_config(tls: &TlsSettings) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert_file)?,
        read(&tls.key_file)?,
    ));
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Loads the operator's policies, or the built-in ones.
pub fn load_policies(settings: &Settings) -> anyhow::Result<PolicyEngine> {
    match &settings.policies {
        Some(dir) => PolicyEngine::from_dir(dir),
        None => PolicyEngine::builtin(),
    }
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Where a started server listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The admin HTTP address (None: switched off).
    pub admin: Option<SocketAddr>,
    /// The SCIM HTTP address (None: switched off).
    pub scim: Option<SocketAddr>,
}

/// Why the server stopped.
enum Stop {
    Requested,
    StoreFailed(String),
}

/// Runs the server on `listener` until `shutdown` resolves (or the store
/// fails), then drains in-flight calls and closes the store. `ready` is
/// called with the bound addresses once every service is SERVING.
pub async fn run(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Listening),
) -> anyhow::Result<()> {
    let (_, run_now) = scheduler::run_now();
    run_with(settings, clock, listener, shutdown, ready, run_now).await
}

/// Like [`run`], with background work also run whenever the
/// [`scheduler::RunNow`] paired with `run_now` asks (tests that move a
/// manual clock use it to know that due work has run).
pub async fn run_with(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Listening),
    run_now: scheduler::RunNowRequests,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    // Before anything records a metric: what comes earlier is lost.
    crate::observe::metrics::prometheus();
    let policies = Arc::new(load_policies(settings)?);
    // Settings are checked before the store is touched: a server that could
    // not serve must not write, run background work or announce itself.
    let auth = authenticator(settings, address)?;
    let admin = match settings.admin_address()? {
        Some(admin) => Some(admin::Admin::start(admin).await?),
        None => None,
    };
    // The per-call log line and metrics see every call, the ones the
    // limits refuse too.
    let mut server = Server::builder()
        .layer(calls::ObserveCalls)
        .layer(limits::layer(settings));
    if let Some(tls) = &settings.tls {
        server = server.tls_config(tls_config(tls)?)?;
    }
    let reporter = HealthReporter::new();
    report(&reporter, ServingStatus::NotServing).await;
    let (drain_signal, drain) = crate::drain::channel();
    let health = HealthServer::new(DrainingHealth::new(reporter.clone(), drain.clone()));

    let (store, app) = open_state(settings, clock.clone(), policies.clone()).await?;
    let (stop_background, background_stop) = tokio::sync::watch::channel(false);
    let background = scheduler::spawn(
        store.clone(),
        clock,
        policies,
        scheduler::Options {
            interval: Duration::from_millis(settings.scheduler_interval_ms.max(1)),
            audit_retention: settings.audit_retention(),
        },
        background_stop,
        run_now,
    );
    if let Some(admin) = &admin {
        admin.serving(admin::Serving::new(
            store.clone(),
            app.decisions.clone(),
            drain.clone(),
        ));
    }
    let scim = match settings.scim_address()? {
        Some(address) => Some(start_scim(settings, address, app.clone(), auth.clone()).await?),
        None => None,
    };
    let router = services(server, health, app, auth, settings, drain)?;

    report(&reporter, ServingStatus::Serving).await;
    tracing::info!(%address, store = %store_location(settings)?, "serving");
    ready(Listening {
        grpc: address,
        admin: admin.as_ref().map(|admin| admin.address),
        scim: scim.as_ref().map(|scim| scim.address),
    });

    let stopping = follow_availability(store.as_ref(), reporter.clone());
    let (stop, stop_began) = stop_signal(shutdown, store.clone(), reporter, drain_signal, stopping);
    let first_bytes = match settings.tls {
        Some(_) => FirstBytes::Any,
        None => FirstBytes::Http2Preface,
    };
    let incoming = listener::incoming(listener, Limits::from_settings(settings), first_bytes);
    let serving = router.serve_with_incoming_shutdown(incoming, stop);
    let stopped = drain_within(serving, stop_began, settings.drain_deadline()).await?;

    let _ = stop_background.send(true);
    background.await?;
    // The SCIM and admin listeners hold the store too: stop them before
    // the store.
    if let Some(scim) = scim {
        scim.stop(Duration::from_secs(5)).await;
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    let closed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.close()).await?
    };
    released(store, settings.drain_deadline()).await;
    if let Some(Stop::StoreFailed(reason)) = stopped {
        anyhow::bail!("stopped because the store failed: {reason}");
    }
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Waits, up to `within`, until nothing but this function holds `store`,
/// then lets it go: calls cut off at the drain deadline can still hold it
/// for a moment, and the data directory stays locked until the last holder
/// is gone. Once `run` returns, the same process can open it again.
async fn released<T: ?Sized>(store: Arc<T>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The store the settings name.
fn store_location(settings: &Settings) -> anyhow::Result<crate::store::Location> {
    Ok(crate::store::Location::parse(
        settings.store.as_deref(),
        &settings.data_dir,
    )?)
}

/// How the store is used, from the settings.
fn store_options(settings: &Settings) -> crate::store::Options {
    let postgres = &settings.postgres;
    crate::store::Options {
        commit_queue: settings.commit_queue_limit,
        postgres: crate::store::postgres::Options {
            migrate: settings.migrate,
            notify: postgres.notify,
            poll_interval: Duration::from_millis(postgres.poll_interval_ms.max(1)),
            lease: Duration::from_millis(postgres.lease_ms.max(30)),
            change_retention: settings.watch_retention.max(1) as u64,
        },
    }
}

/// Opens the store the settings name (sled under `settings.data_dir`, or
/// a PostgreSQL database), brings it up to date
/// (migrations, the General catalog, the tenant settings) and loads the
/// decision view, which then observes every commit.
async fn open_state(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    policies: Arc<PolicyEngine>,
) -> anyhow::Result<(Arc<dyn Store>, App)> {
    let location = store_location(settings)?;
    let options = store_options(settings);
    let store: Arc<dyn Store> =
        tokio::task::spawn_blocking(move || crate::store::open(&location, options)).await??;
    migrations::run(store.as_ref()).await?;
    let system = Actor::new(SYSTEM_ACTOR, clock.now());
    ensure_general_catalog(store.as_ref(), system.clone()).await?;
    ensure_settings(store.as_ref(), system).await?;
    let loading = store.clone();
    let retention = settings.watch_retention;
    let decisions = Arc::new(
        tokio::task::spawn_blocking(move || {
            DecisionState::load(loading.as_ref(), loading.revision(), retention)
        })
        .await??,
    );
    store.observe(decisions.clone());
    store.observe(Arc::new(audit_events::AuditEventCounter));
    // Only now, with the view loaded and observing: other replicas' commits.
    store.follow();
    let app = App::new(store.clone(), clock, policies, decisions);
    Ok((store, app))
}

/// Health, reflection, and every entitlements service behind the caller
/// interceptor `auth`.
fn services<L: Clone>(
    mut server: Server<L>,
    health: HealthServer<DrainingHealth>,
    app: App,
    auth: Authenticator,
    settings: &Settings,
    drain: Drain,
) -> anyhow::Result<Router<L>> {
    // Each service with the message-size limits, behind authentication.
    macro_rules! limited {
        ($server:ident, $api:expr, $auth:expr $(,)?) => {
            tonic::service::interceptor::InterceptedService::new(
                $server::new($api)
                    .max_decoding_message_size(settings.max_request_bytes)
                    .max_encoding_message_size(settings.max_response_bytes),
                $auth,
            )
        };
    }
    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    Ok(server
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(
            DirectoryServer,
            DirectoryApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            CatalogsServer,
            CatalogsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            AccessPackagesServer,
            AccessPackagesApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            AssignmentPoliciesServer,
            AssignmentPoliciesApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            AssignmentRequestsServer,
            AssignmentRequestsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            AssignmentsServer,
            AssignmentsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            AuditLogServer,
            AuditLogApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            ReportsServer,
            ReportsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            SettingsServer,
            SettingsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(limited!(
            DecisionsServer,
            DecisionsApi::new(
                app,
                Duration::from_millis(settings.watch_checkpoint_ms.max(1)),
                drain,
            ),
            auth,
        )))
}

/// The future that stops the server: it resolves when `shutdown` does or
/// the store fails, after turning health NOT_SERVING and starting the
/// drain; the receiver then tells why it stopped.
/// Health follows the store: NOT_SERVING while its database is
/// unreachable, SERVING again once it is back, until the server stops
/// (setting the returned flag ends it).
fn follow_availability(
    store: &dyn Store,
    reporter: HealthReporter,
) -> Arc<tokio::sync::Mutex<bool>> {
    let stopping = Arc::new(tokio::sync::Mutex::new(false));
    let mut availability = store.availability();
    let stopped = stopping.clone();
    tokio::spawn(async move {
        while availability.changed().await.is_ok() {
            let available = *availability.borrow_and_update();
            let stopping = stopped.lock().await;
            if *stopping {
                return;
            }
            let status = match available {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            report(&reporter, status).await;
        }
    });
    stopping
}

fn stop_signal(
    shutdown: impl Future<Output = ()> + Send + 'static,
    store: Arc<dyn Store>,
    reporter: HealthReporter,
    drain_signal: DrainSignal,
    stopping: Arc<tokio::sync::Mutex<bool>>,
) -> (
    impl Future<Output = ()> + Send + 'static,
    tokio::sync::oneshot::Receiver<Stop>,
) {
    let (began, stop_began) = tokio::sync::oneshot::channel::<Stop>();
    let stop = async move {
        let stop = tokio::select! {
            () = shutdown => Stop::Requested,
            reason = store.failure() => Stop::StoreFailed(reason.to_string()),
        };
        match &stop {
            Stop::Requested => tracing::info!("shutting down: finishing in-flight calls"),
            Stop::StoreFailed(reason) => tracing::error!(
                %reason,
                "the store failed; stopping so that a restart recovers exactly what was \
                 acknowledged"
            ),
        }
        {
            let mut stopping = stopping.lock().await;
            *stopping = true;
            report(&reporter, ServingStatus::NotServing).await;
        }
        drain_signal.start();
        let _ = began.send(stop);
    };
    (stop, stop_began)
}

/// Waits for `serving` to end. Once the stop has begun, in-flight calls get
/// `deadline`: a client that never lets go of its connection must not keep
/// the process (and the store) open forever. Returns why it stopped.
async fn drain_within(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    stop_began: tokio::sync::oneshot::Receiver<Stop>,
    deadline: Duration,
) -> anyhow::Result<Option<Stop>> {
    tokio::pin!(serving);
    let mut stop_began = stop_began;
    Ok(tokio::select! {
        served = &mut serving => {
            served?;
            stop_began.await.ok()
        }
        stop = &mut stop_began => {
            match tokio::time::timeout(deadline, &mut serving).await {
                Ok(served) => served?,
                Err(_) => tracing::warn!(?deadline, "in-flight calls did not finish in time; stopping anyway"),
            }
            stop.ok()
        }
    })
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}
