//! Assembles and runs the gRPC server: health (per service, tied to the
//! store), reflection (v1 and v1alpha), and the entitlements services behind
//! the caller-identity interceptor.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
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
use crate::api::settings::SettingsApi;
use crate::clock::Clock;
use crate::config::{Settings, TlsSettings};
use crate::decision::state::DecisionState;
use crate::domain::catalog::ensure_general_catalog;
use crate::domain::entity::{Actor, SYSTEM_ACTOR};
use crate::domain::settings::ensure_settings;
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
use crate::store::Store;
use crate::store::sled_store::SledStore;
use crate::workflow::scheduler;

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
    if settings.dev_auth {
        anyhow::ensure!(
            address.ip().is_loopback(),
            "--dev-auth trusts a plain header and works only on a loopback address, not {address}"
        );
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

/// How long in-flight calls may take to finish after a shutdown signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

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

/// Runs the server on `listener` until `shutdown` resolves, then drains
/// in-flight calls and closes the store. `ready` is called with the bound
/// address once every service is SERVING.
pub async fn run(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let policies = Arc::new(load_policies(settings)?);
    // Settings are checked before the store is touched: a server that could
    // not serve must not write, run background work or announce itself.
    let auth = authenticator(settings, address)?;
    let mut server = Server::builder();
    if let Some(tls) = &settings.tls {
        server = server.tls_config(tls_config(tls)?)?;
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    report(&reporter, ServingStatus::NotServing).await;

    let data_dir = settings.data_dir.clone();
    let store = Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&data_dir)).await??);
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
    let app = App::new(store.clone(), clock.clone(), policies, decisions);
    let (stop_background, background_stop) = tokio::sync::watch::channel(false);
    let background = scheduler::spawn(
        store.clone(),
        clock,
        scheduler::Options {
            interval: Duration::from_millis(settings.scheduler_interval_ms.max(1)),
            audit_retention: settings.audit_retention(),
        },
        background_stop,
    );

    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    report(&reporter, ServingStatus::Serving).await;
    tracing::info!(%address, data_dir = %settings.data_dir.display(), "serving");
    ready(address);

    let draining = reporter.clone();
    let (began, shutdown_began) = tokio::sync::oneshot::channel::<()>();
    let serving = server
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DirectoryServer::with_interceptor(
            DirectoryApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(CatalogsServer::with_interceptor(
            CatalogsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(AccessPackagesServer::with_interceptor(
            AccessPackagesApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(AssignmentPoliciesServer::with_interceptor(
            AssignmentPoliciesApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(AssignmentRequestsServer::with_interceptor(
            AssignmentRequestsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(AssignmentsServer::with_interceptor(
            AssignmentsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(AuditLogServer::with_interceptor(
            AuditLogApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(ReportsServer::with_interceptor(
            ReportsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(SettingsServer::with_interceptor(
            SettingsApi::new(app.clone()),
            auth.clone(),
        ))
        .add_service(DecisionsServer::with_interceptor(
            DecisionsApi::new(
                app,
                Duration::from_millis(settings.watch_checkpoint_ms.max(1)),
            ),
            auth,
        ))
        // Without TCP_NODELAY, Nagle's algorithm holds back the last
        // segment of multi-frame responses until the peer's delayed ack
        // (~40 ms on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight calls");
                report(&draining, ServingStatus::NotServing).await;
                let _ = began.send(());
            },
        );
    // In-flight calls get a deadline: a client that never lets go of its
    // connection must not keep the process (and the store) open forever.
    let deadline = async {
        match shutdown_began.await {
            Ok(()) => tokio::time::sleep(DRAIN_DEADLINE).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serving => served?,
        _ = deadline => tracing::warn!(?DRAIN_DEADLINE, "in-flight calls did not finish in time; stopping anyway"),
    }

    let _ = stop_background.send(true);
    background.await?;
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}
