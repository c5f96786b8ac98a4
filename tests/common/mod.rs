//! Test harness: starts the real server in-process on an ephemeral loopback
//! port with its own data directory and a manual clock, and builds gRPC
//! clients that call it as a given user.
#![allow(dead_code)]

pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use entitlements::api::caller::DEV_USER_HEADER;
use entitlements::clock::ManualClock;
use entitlements::config::Settings;
use entitlements::pb::access_packages_client::AccessPackagesClient;
use entitlements::pb::assignment_policies_client::AssignmentPoliciesClient;
use entitlements::pb::assignment_requests_client::AssignmentRequestsClient;
use entitlements::pb::assignments_client::AssignmentsClient;
use entitlements::pb::catalogs_client::CatalogsClient;
use entitlements::pb::directory_client::DirectoryClient;
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
    pub data_dir: PathBuf,
    pub clock: Arc<ManualClock>,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server on a fresh, temporary data directory.
    pub async fn start() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(temp.path(), Arc::new(ManualClock::new(epoch()))).await;
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir` (which outlives it), with `clock`.
    pub async fn start_in(data_dir: &Path, clock: Arc<ManualClock>) -> Self {
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            scheduler_interval_ms: 5,
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let server_clock = clock.clone();
        let task = tokio::spawn(async move {
            entitlements::server::run(
                &settings,
                server_clock,
                listener,
                async move {
                    let _ = stopped.await;
                },
                move |address| {
                    let _ = ready_tx.send(address);
                },
            )
            .await
        });
        let address = ready_rx.await.expect("server failed to start");
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        Self {
            address,
            data_dir: data_dir.to_path_buf(),
            clock,
            channel,
            stop: Some(stop),
            task: Some(task),
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
        let mut next = Self::start_in(&self.data_dir, self.clock.clone()).await;
        next._temp = temp;
        next
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
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
