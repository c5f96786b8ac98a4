//! Running it like infrastructure: the admin listener's metrics and
//! probes after real gRPC calls, and the per-call log line (from the real
//! binary) with the request id that the response and the audit trail
//! carry.
//!
//! Metrics are process-wide and the tests of this file run side by side,
//! so they compare before and after, never absolute values.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ADMIN, TestServer, binary, eventually, expect_code, group};
use entitlements::api::rpc::Rpc;
use entitlements::pb::{
    AuditFilter, CheckAccessRequest, CreateGroupRequest, GetGroupRequest, ListAuditEventsRequest,
    WatchGrantsRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// GET `path` from the admin listener: (status, body).
async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status.expect("a status line"), body.to_string())
}

/// One scrape: each series (name and labels as written) and its value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn of(server: &TestServer) -> Self {
        let (status, body) = get(admin(server), "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let series = body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Self(series)
    }

    /// The value of the series `name` whose labels include `labels`
    /// (summed over the rest); 0 when there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
                series_name == name
                    && labels
                        .iter()
                        .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|series| {
            series
                .split_once('{')
                .map_or(series.as_str(), |(name, _)| name)
                == name
        })
    }
}

fn admin(server: &TestServer) -> SocketAddr {
    server.admin.expect("the admin listener is on")
}

fn rpc_labels(rpc: Rpc) -> [(&'static str, &'static str); 2] {
    [("service", rpc.service()), ("method", rpc.name())]
}

#[tokio::test]
async fn metrics_move_with_real_calls() {
    let server = TestServer::start().await;
    let before = Scrape::of(&server).await;

    server.create_group("observed").await;
    let missing = server
        .directory(ADMIN)
        .get_group(GetGroupRequest {
            id: "nobody-has-this".into(),
        })
        .await;
    expect_code(missing, Code::NotFound);

    let after = Scrape::of(&server).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let calls = "entitlements_rpc_calls_total";
    let get_group = rpc_labels(Rpc::GetGroup);
    let create_group = rpc_labels(Rpc::CreateGroup);
    assert!(moved(calls, &[get_group[0], get_group[1], ("code", "NotFound")]) >= 1.0);
    assert!(moved(calls, &[create_group[0], create_group[1], ("code", "Ok")]) >= 1.0);
    let latency = "entitlements_rpc_duration_seconds_count";
    assert!(moved(latency, &get_group) >= 1.0);
    assert!(
        moved(
            "entitlements_rpc_duration_seconds_bucket",
            &[get_group[1], ("le", "+Inf")]
        ) >= 1.0
    );
    assert!(after.has("entitlements_rpc_in_flight"));

    // The write: a group commit, its batch, its audit event.
    assert!(moved("entitlements_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(moved("entitlements_store_commit_batch_size_count", &[]) >= 1.0);
    assert!(after.has("entitlements_store_commit_queue_depth"));
    assert!(moved("entitlements_audit_events_total", &[]) >= 1.0);
    assert!(after.value("entitlements_store_revision", &[]) >= 1.0);
    assert!(after.has("entitlements_decision_view_revision"));
    assert!(after.has("entitlements_decision_view_lag_revisions"));
    // Only sled knows its size on disk.
    if !common::postgres::enabled() {
        assert!(after.value("entitlements_store_size_bytes", &[]) > 0.0);
    }
    assert!(after.has("entitlements_authz_cache_lookups_total"));

    server.run_due_work().await;
    let later = Scrape::of(&server).await;
    assert!(
        later.value("entitlements_scheduler_runs_total", &[])
            > before.value("entitlements_scheduler_runs_total", &[])
    );
    assert!(later.has("entitlements_scheduler_due_items"));
    assert!(later.has("entitlements_scheduler_lag_seconds"));

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        later.value("entitlements_build_info", &[("version", version)]),
        1.0
    );
    assert!(
        later
            .0
            .keys()
            .any(|s| s.starts_with("entitlements_build_info") && s.contains("commit=\"")),
        "build info names the commit"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn watch_grants_streams_are_counted_while_open_and_a_dropped_one_is_cancelled() {
    let server = TestServer::start().await;
    let subscribers = "entitlements_watch_grants_subscribers";
    let watch = rpc_labels(Rpc::WatchGrants);
    let cancelled = [watch[0], watch[1], ("code", "Cancelled")];
    let calls = "entitlements_rpc_calls_total";
    let scrape = Scrape::of(&server).await;
    let (before, cancelled_before) = (
        scrape.value(subscribers, &[]),
        scrape.value(calls, &cancelled),
    );
    let stream = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest { from_revision: 0 })
        .await
        .expect("watch")
        .into_inner();
    eventually("the stream to be counted", || async {
        (Scrape::of(&server).await.value(subscribers, &[]) > before).then_some(())
    })
    .await;
    drop(stream);
    eventually(
        "the closed stream to be uncounted, as a cancelled call",
        || async {
            let scrape = Scrape::of(&server).await;
            (scrape.value(subscribers, &[]) <= before
                && scrape.value(calls, &cancelled) > cancelled_before)
                .then_some(())
        },
    )
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn probes_say_alive_and_ready_and_not_ready_while_draining() {
    let server = TestServer::start().await;
    let admin = admin(&server);
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_string()));

    // A call waiting (up to a second) for a revision the server has not
    // reached keeps the drain open while readiness is asked.
    let mut decisions = server.decisions(ADMIN);
    let waiting = tokio::spawn(async move {
        decisions
            .check_access(CheckAccessRequest {
                user_id: "someone".into(),
                resource_id: "r".into(),
                role_id: "member".into(),
                min_revision: 1_000_000,
            })
            .await
    });
    eventually("the waiting call to be in flight", || async {
        let in_flight = Scrape::of(&server)
            .await
            .value("entitlements_rpc_in_flight", &[]);
        (in_flight >= 1.0).then_some(())
    })
    .await;
    let stopping = tokio::spawn(server.stop());
    let (status, reason) = eventually("readiness to turn 503", || async {
        let answer = get(admin, "/readyz").await;
        (answer.0 != 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("draining"), "{reason}");
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive while draining");
    expect_code(waiting.await.unwrap(), Code::Aborted);
    stopping.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin listener closes with the server"
    );
}

#[tokio::test]
async fn the_admin_listener_can_be_switched_off() {
    let server =
        TestServer::start_with_settings(|settings| settings.admin_listen = "off".into()).await;
    assert_eq!(server.admin, None);
    server.stop().await.unwrap();
}

/// The JSON log lines of a server process, read as it writes them.
struct Logs {
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    /// The fields of every line read so far.
    seen: Vec<serde_json::Value>,
}

impl Logs {
    /// The fields of the next line whose fields satisfy `wanted`, within
    /// five seconds.
    fn find(&mut self, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).expect("no such log line");
            let fields = line["fields"].clone();
            self.seen.push(fields.clone());
            if wanted(&fields) {
                return fields;
            }
        }
    }

    fn logged(&self, request_id: &str) -> bool {
        self.seen
            .iter()
            .any(|fields| fields["request_id"] == request_id)
    }
}

fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("the response carries x-request-id")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn each_call_logs_one_json_line_with_the_request_id_its_audit_events_carry() {
    let data = tempfile::tempdir().unwrap();
    let mut command = binary::serve(data.path());
    command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info");
    let (mut child, address) = binary::start_with(command, Stdio::piped());
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(json) = serde_json::from_str(&line) {
                let _ = lines.send(json);
            }
        }
    });
    let mut logs = Logs {
        lines: received,
        seen: Vec::new(),
    };
    let server = TestServer::attach(&address).await;
    let mut directory = server.directory("loader");

    // Sent: kept, echoed, logged, and carried by the audit event.
    let mut create = tonic::Request::new(CreateGroupRequest {
        group: Some(group("Logged")),
        group_id: "logged".into(),
        request_id: String::new(),
    });
    create
        .metadata_mut()
        .insert("x-request-id", "req-observe-1".parse().unwrap());
    let created = directory
        .create_group(create)
        .await
        .expect("create a group");
    assert_eq!(request_id_of(created.metadata()), "req-observe-1");
    let line = logs.find(|f| f["request_id"] == "req-observe-1");
    assert_eq!(line["method"], Rpc::CreateGroup.path());
    assert_eq!(line["code"], "Ok");
    assert_eq!(line["caller"], "loader");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    let peer: SocketAddr = line["peer"]
        .as_str()
        .unwrap()
        .parse()
        .expect("the peer's address");
    assert!(peer.ip().is_loopback(), "{line}");
    let events = server
        .audit("loader")
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                target_type: "group".into(),
                target_id: "logged".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("list audit events")
        .into_inner()
        .events;
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e.request_id == "req-observe-1"),
        "{events:?}"
    );

    // Not sent: one is made up, echoed and logged.
    let found = directory
        .get_group(GetGroupRequest {
            id: "logged".into(),
        })
        .await
        .expect("get the group");
    let generated = request_id_of(found.metadata());
    assert!(!generated.is_empty() && generated != "req-observe-1");
    let line = logs.find(|f| f["request_id"] == generated.as_str());
    assert_eq!(line["method"], Rpc::GetGroup.path());

    // Health checks log at debug level: not at info, which this server
    // logs. Lines come in call order, so once the next call's line is in,
    // the check's would be too.
    let mut check = tonic::Request::new(HealthCheckRequest::default());
    check
        .metadata_mut()
        .insert("x-request-id", "req-health".parse().unwrap());
    let checked = HealthClient::new(server.channel())
        .check(check)
        .await
        .expect("health");
    assert_eq!(request_id_of(checked.metadata()), "req-health");

    // Errors echo it too, and log their code.
    let mut missing = tonic::Request::new(GetGroupRequest {
        id: "missing".into(),
    });
    missing
        .metadata_mut()
        .insert("x-request-id", "req-observe-2".parse().unwrap());
    let status = expect_code(directory.get_group(missing).await, Code::NotFound);
    assert_eq!(request_id_of(status.metadata()), "req-observe-2");
    let line = logs.find(|f| f["request_id"] == "req-observe-2");
    assert_eq!(line["code"], "NotFound");
    assert!(!logs.logged("req-health"), "a health check logged at info");

    // Waiting for the exit blocks: off the runtime, which still has to
    // close the client's connection for the server to finish draining.
    drop((directory, server));
    let exited = tokio::task::spawn_blocking(move || binary::terminate(child)).await;
    assert!(exited.unwrap().success());
}

/// A stand-in OTLP collector: keeps every span exported to it.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    fn named(&self, name: &str) -> Vec<Span> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

#[tokio::test]
async fn call_spans_continue_the_callers_trace_and_reach_the_collector() {
    let collector = Collector::default();
    let endpoint = format!("http://{}", collector.start().await);
    let data = tempfile::tempdir().unwrap();
    let mut command = binary::serve(data.path());
    command.args(["--otlp-endpoint", &endpoint]);
    let (child, address) = binary::start(command);
    let server = TestServer::attach(&address).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut create = tonic::Request::new(CreateGroupRequest {
        group: Some(group("Traced")),
        group_id: "traced".into(),
        request_id: String::new(),
    });
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    server
        .directory("loader")
        .create_group(create)
        .await
        .expect("create a group");

    // Stopping sends what is still batched.
    drop(server);
    let exited = tokio::task::spawn_blocking(move || binary::terminate(child)).await;
    assert!(exited.unwrap().success());

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let calls: Vec<Span> = collector
        .named(Rpc::CreateGroup.path().trim_start_matches('/'))
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    assert_eq!(calls.len(), 1, "one call span in the caller's trace");
    let call = &calls[0];
    assert_eq!(hex(&call.parent_span_id), caller_span);
    let code = call
        .attributes
        .iter()
        .find(|a| a.key == "rpc.grpc.status_code")
        .and_then(|a| a.value.clone()?.value);
    assert_eq!(code, Some(AnyValue::IntValue(0)), "the call's status code");
    for child in ["store.commit", "cedar.decide"] {
        let children = collector.named(child);
        assert!(
            children
                .iter()
                .any(|s| s.trace_id == call.trace_id && s.parent_span_id == call.span_id),
            "no {child} span under the call span"
        );
    }
}
