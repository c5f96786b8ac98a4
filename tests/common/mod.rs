//! Test harness: starts the real server in-process on an ephemeral loopback
//! port with its own data directory and a manual clock, and builds gRPC
//! clients that call it as a given user.
#![allow(dead_code)]

pub mod binary;
pub mod postgres;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use entitlements::api::caller::DEV_USER_HEADER;
use entitlements::config::{AuthSettings, Settings};
use entitlements::pb::access_packages_client::AccessPackagesClient;
use entitlements::pb::assignment_policies_client::AssignmentPoliciesClient;
use entitlements::pb::assignment_requests_client::AssignmentRequestsClient;
use entitlements::pb::assignments_client::AssignmentsClient;
use entitlements::pb::audit_log_client::AuditLogClient;
use entitlements::pb::catalogs_client::CatalogsClient;
use entitlements::pb::decisions_client::DecisionsClient;
use entitlements::pb::directory_client::DirectoryClient;
use entitlements::pb::reports_client::ReportsClient;
use entitlements::shared::clock::ManualClock;
use entitlements::workflow::scheduler::{self, RunNow};
use tokio::sync::oneshot;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A fixed start time so tests are repeatable: 2030-01-01T00:00:00Z.
pub fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

pub struct TestServer {
    pub address: std::net::SocketAddr,
    /// The admin HTTP listener's address (None when switched off).
    pub admin: Option<std::net::SocketAddr>,
    /// The SCIM listener's address (None when switched off, the default).
    pub scim: Option<std::net::SocketAddr>,
    pub data_dir: PathBuf,
    pub clock: Arc<ManualClock>,
    channel: Channel,
    admins: Vec<String>,
    run_now: RunNow,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server on a fresh, temporary data directory.
    pub async fn start() -> Self {
        Self::start_with_admins(&[]).await
    }

    /// A server whose global administrators include `admins` (besides
    /// [`ADMIN`] and the write-mark probe).
    pub async fn start_with_admins(admins: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server =
            Self::launch(temp.path(), Arc::new(ManualClock::new(epoch())), admins).await;
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir` (which outlives it), with `clock`.
    pub async fn start_in(data_dir: &Path, clock: Arc<ManualClock>) -> Self {
        Self::launch(data_dir, clock, &[]).await
    }

    async fn launch(data_dir: &Path, clock: Arc<ManualClock>, admins: &[&str]) -> Self {
        Self::launch_with(data_dir, clock, admins, |_| {}).await
    }

    /// A server on a fresh data directory with settings changed by `tweak`
    /// (authentication, TLS, ...). The harness's own client speaks plain
    /// gRPC, so with TLS build clients from [`TestServer::address`].
    pub async fn start_with_settings(tweak: impl FnOnce(&mut Settings)) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(epoch()));
        let mut server = Self::launch_with(temp.path(), clock, &[], tweak).await;
        server._temp = Some(temp);
        server
    }

    async fn launch_with(
        data_dir: &Path,
        clock: Arc<ManualClock>,
        admins: &[&str],
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut global_admins = vec![ADMIN.to_string(), PROBE.to_string()];
        global_admins.extend(admins.iter().map(|a| a.to_string()));
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".to_string(),
            data_dir: data_dir.to_path_buf(),
            scheduler_interval_ms: 5,
            dev_auth: true,
            auth: AuthSettings {
                global_admins,
                ..AuthSettings::default()
            },
            ..Settings::default()
        };
        if let Some(store) = postgres::store_for(data_dir) {
            settings.store = Some(store);
            settings.migrate = true;
            settings.postgres.poll_interval_ms = 20;
        }
        tweak(&mut settings);
        let tls = settings.tls.is_some();
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let server_clock = clock.clone();
        let (run_now, run_now_requests) = scheduler::run_now();
        let task = tokio::spawn(async move {
            entitlements::server::run_with(
                &settings,
                server_clock,
                listener,
                async move {
                    let _ = stopped.await;
                },
                move |listening| {
                    let _ = ready_tx.send(listening);
                },
                run_now_requests,
            )
            .await
        });
        let listening: entitlements::server::Listening =
            ready_rx.await.expect("server failed to start");
        let address = listening.grpc;
        let endpoint = Channel::from_shared(format!("http://{address}")).unwrap();
        let channel = if tls {
            endpoint.connect_lazy()
        } else {
            endpoint.connect().await.expect("connect")
        };
        Self {
            address,
            admin: listening.admin,
            scim: listening.scim,
            data_dir: data_dir.to_path_buf(),
            clock,
            channel,
            admins: admins.iter().map(|a| a.to_string()).collect(),
            run_now,
            stop: Some(stop),
            task: Some(task),
            _temp: None,
        }
    }

    /// Clients of a server running elsewhere (a server process): the same
    /// helpers, none of the lifecycle.
    pub async fn attach(address: &str) -> Self {
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        Self {
            address: address.parse().expect("a socket address"),
            admin: None,
            scim: None,
            data_dir: PathBuf::new(),
            clock: Arc::new(ManualClock::new(epoch())),
            channel,
            admins: Vec::new(),
            // Nothing answers it: a process runs its own background work.
            run_now: scheduler::run_now().0,
            stop: None,
            task: None,
            _temp: None,
        }
    }

    /// Graceful shutdown; returns the server's own result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }

    /// Stops this server and starts a new one on the same data directory and
    /// clock.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await.expect("clean shutdown");
        let temp = self._temp.take();
        let admins: Vec<&str> = self.admins.iter().map(String::as_str).collect();
        let mut next = Self::launch(&self.data_dir, self.clock.clone(), &admins).await;
        next._temp = temp;
        next
    }

    /// Runs the background work due at the clock's now (expiry, approval
    /// timeouts, scheduled starts, guest lifecycle) and returns once it has
    /// run: after `clock.advance`, what is not done now is not due.
    pub async fn run_due_work(&self) {
        assert!(self.run_now.round().await, "the scheduler has stopped");
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn directory(&self, user: &str) -> DirectoryClient<InterceptedService<Channel, AsUser>> {
        DirectoryClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn catalogs(&self, user: &str) -> CatalogsClient<InterceptedService<Channel, AsUser>> {
        CatalogsClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn packages(
        &self,
        user: &str,
    ) -> AccessPackagesClient<InterceptedService<Channel, AsUser>> {
        AccessPackagesClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn policies(
        &self,
        user: &str,
    ) -> AssignmentPoliciesClient<InterceptedService<Channel, AsUser>> {
        AssignmentPoliciesClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn requests(
        &self,
        user: &str,
    ) -> AssignmentRequestsClient<InterceptedService<Channel, AsUser>> {
        AssignmentRequestsClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn assignments(
        &self,
        user: &str,
    ) -> AssignmentsClient<InterceptedService<Channel, AsUser>> {
        AssignmentsClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn decisions(&self, user: &str) -> DecisionsClient<InterceptedService<Channel, AsUser>> {
        DecisionsClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn audit(&self, user: &str) -> AuditLogClient<InterceptedService<Channel, AsUser>> {
        AuditLogClient::with_interceptor(self.channel(), AsUser::new(user))
    }

    pub fn reports(&self, user: &str) -> ReportsClient<InterceptedService<Channel, AsUser>> {
        ReportsClient::with_interceptor(self.channel(), AsUser::new(user))
    }
}

/// Opens the store a test server on `data_dir` uses (sled in the
/// directory, or its PostgreSQL schema), with the server stopped. Blocks.
pub fn open_store(data_dir: &Path) -> Arc<dyn entitlements::store::Store> {
    let location = match postgres::store_for(data_dir) {
        Some(url) => entitlements::store::Location::Postgres(url),
        None => entitlements::store::Location::Sled(data_dir.to_path_buf()),
    };
    entitlements::store::open(&location, Default::default()).expect("open the test store")
}

/// Adds the development identity header to every call.
#[derive(Clone)]
pub struct AsUser(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl AsUser {
    pub fn new(user: &str) -> Self {
        Self(user.parse().expect("ascii user id"))
    }
}

impl Interceptor for AsUser {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(DEV_USER_HEADER, self.0.clone());
        Ok(request)
    }
}

/// Asserts a call failed with `code` and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
) -> Status {
    match result {
        Ok(response) => panic!("expected {code:?}, got OK: {:?}", response.get_ref()),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Asserts a call was PERMISSION_DENIED with google.rpc.ErrorInfo reason
/// POLICY_DENIED; returns its "policy_ids", sorted.
#[track_caller]
pub fn denied<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    use tonic_types::StatusExt;
    let status = match result {
        Ok(value) => panic!("expected PERMISSION_DENIED, got OK: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, "POLICY_DENIED", "{status:?}");
    assert_eq!(info.domain, "entitlements", "{status:?}");
    let ids = info
        .metadata
        .get("policy_ids")
        .unwrap_or_else(|| panic!("no policy_ids in {status:?}"));
    let mut ids: Vec<String> = ids
        .split(',')
        .filter(|id| !id.is_empty())
        .map(String::from)
        .collect();
    ids.sort();
    ids
}

/// [`epoch`] in seconds.
pub fn epoch_seconds() -> i64 {
    epoch()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The field paths of a status's google.rpc.BadRequest violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Polls `check` until it returns Some, for up to five seconds: background
/// work runs every few milliseconds in tests.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Shared helpers for the API tests: client aliases, object builders, creators
// for fixtures, error-detail readers, paging, and a "nothing was written"
// check.

use entitlements::pb::DeleteGroupRequest;

pub type Directory = DirectoryClient<InterceptedService<Channel, AsUser>>;
pub type Catalogs = CatalogsClient<InterceptedService<Channel, AsUser>>;
pub type Packages = AccessPackagesClient<InterceptedService<Channel, AsUser>>;

/// The caller the fixtures are created as (a global administrator).
pub const ADMIN: &str = "admin";
/// The caller of write marks (a global administrator).
const PROBE: &str = "probe";

// The entity builders and their creating fixtures live in `world`.
#[allow(unused_imports)]
pub use world::{
    catalog, domain_source, group, mask, organization, package, resource, role_ref, tenant_source,
    user,
};

/// Write marks: what proves that a call wrote nothing.
impl TestServer {
    /// Writes and removes a scratch group; returns the revision of the
    /// removal, a mark for [`TestServer::assert_no_writes_since`].
    pub async fn write_mark(&self) -> u64 {
        let mut directory = self.directory(PROBE);
        let probe = self.create_group("~probe").await;
        directory
            .delete_group(DeleteGroupRequest {
                id: probe.id,
                etag: String::new(),
            })
            .await
            .expect("delete the probe group")
            .into_inner()
            .revision
    }

    /// The sequence number of the newest audit event: unchanged when a
    /// call recorded nothing.
    pub async fn audit_head(&self) -> u64 {
        self.audit(ADMIN)
            .verify_audit_log(entitlements::pb::VerifyAuditLogRequest {})
            .await
            .expect("verify the audit log")
            .into_inner()
            .last_sequence
    }

    /// Asserts that the store committed nothing since `mark` (the revision
    /// of the next write is the one after it); returns a fresh mark.
    #[track_caller]
    pub fn assert_no_writes_since(&self, mark: u64) -> impl std::future::Future<Output = u64> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let probe = self.create_group("~probe").await;
            let next = probe.info.expect("record info").revision;
            assert_eq!(
                next,
                mark + 1,
                "something was written since revision {mark} (checked at {caller})"
            );
            self.directory(PROBE)
                .delete_group(DeleteGroupRequest {
                    id: probe.id,
                    etag: String::new(),
                })
                .await
                .expect("delete the probe group")
                .into_inner()
                .revision
        }
    }
}

/// Asserts a call failed with INVALID_ARGUMENT whose BadRequest names exactly
/// `fields`, in order.
#[track_caller]
pub fn expect_invalid<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    fields: &[&str],
) -> Status {
    let status = expect_code(result, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), fields, "violations of {status:?}");
    status
}

/// The (type, subject) pairs of a status's google.rpc.PreconditionFailure.
pub fn precondition_violations(status: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_precondition_failure()
        .map(|p| {
            p.violations
                .into_iter()
                .map(|v| (v.r#type, v.subject))
                .collect()
        })
        .unwrap_or_default()
}

/// The (resource_type, resource_name) of a status's google.rpc.ResourceInfo.
pub fn resource_info(status: &Status) -> Option<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_resource_info()
        .map(|r| (r.resource_type, r.resource_name))
}

/// Asserts NOT_FOUND for the object (`kind`, `id`), per its ResourceInfo.
#[track_caller]
pub fn expect_not_found<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    kind: &str,
    id: &str,
) -> Status {
    let status = expect_code(result, Code::NotFound);
    assert_eq!(
        resource_info(&status),
        Some((kind.to_string(), id.to_string())),
        "resource info of {status:?}"
    );
    status
}

/// Fetches every page of a listing: `fetch` gets a page token and returns the
/// page's items and next token. Returns the pages.
pub async fn pages<T, F, Fut>(mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await.expect("list a page");
        pages.push(items);
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
        token = next;
    }
}

/// Asserts `pages` have `sizes` and together list `expected` in order.
#[track_caller]
pub fn assert_pages(pages: &[Vec<String>], sizes: &[usize], expected: &[&str]) {
    let actual: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(actual, sizes, "page sizes of {pages:?}");
    assert_eq!(pages.concat(), expected, "items across pages");
}

/// `n` characters of `c`.
pub fn chars(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}
