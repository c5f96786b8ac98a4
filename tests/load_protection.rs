//! Load protection over real gRPC, under real overload from bounded bursts:
//! calls beyond `max_concurrent_calls` and writes beyond
//! `commit_queue_limit` are refused at once with RESOURCE_EXHAUSTED and a
//! RetryInfo, nothing acknowledged is lost (it is all there after a
//! restart), nothing refused is written, and the server serves normally
//! right after; a call ends at its deadline (`grpc-timeout` or
//! `call_timeout_ms`) with DEADLINE_EXCEEDED, one already past it is not
//! started; a request over `max_request_bytes` is RESOURCE_EXHAUSTED.

mod common;

use std::time::Duration;

use common::*;
use entitlements::pb::*;
use tokio::task::JoinSet;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const BURST: usize = 64;

/// Creates `BURST` groups at once, each on its own connection so that the
/// calls really are concurrent; returns (id, outcome) of each.
async fn burst(server: &TestServer, round: usize) -> Vec<(String, Result<(), Status>)> {
    let mut calls = JoinSet::new();
    for i in 0..BURST {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut directory = entitlements::pb::directory_client::DirectoryClient::with_interceptor(
            channel,
            AsUser::new(ADMIN),
        );
        let id = format!("burst-{round}-{i}");
        calls.spawn(async move {
            let created = directory
                .create_group(CreateGroupRequest {
                    group: Some(group(&id)),
                    group_id: id.clone(),
                    request_id: String::new(),
                })
                .await;
            (id, created.map(|_| ()))
        });
    }
    calls.join_all().await
}

/// Bursts until one is refused (at most 5 rounds); checks that every call
/// either succeeded or was refused as overloaded with a retry delay.
/// Returns the ids acknowledged and the ids refused.
async fn overload(server: &TestServer) -> (Vec<String>, Vec<String>) {
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    for round in 0..5 {
        for (id, outcome) in burst(server, round).await {
            match outcome {
                Ok(()) => acknowledged.push(id),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    let retry = status
                        .get_details_retry_info()
                        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"));
                    assert!(retry.retry_delay.is_some_and(|d| !d.is_zero()));
                    refused.push(id);
                }
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "five bursts of {BURST} were all served"
    );
    (acknowledged, refused)
}

async fn exists(server: &TestServer, id: &str) -> bool {
    match server
        .directory(ADMIN)
        .get_group(GetGroupRequest { id: id.into() })
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("get group {id}: {status:?}"),
    }
}

/// What an overloaded server must still be: everything acknowledged is
/// there, also after a restart, nothing refused is, and it serves again.
async fn recovers(server: TestServer, acknowledged: &[String], refused: &[String]) {
    server.create_group("after-the-burst").await;
    let server = server.restart().await;
    for id in acknowledged {
        assert!(exists(&server, id).await, "acknowledged group {id} is lost");
    }
    for id in refused {
        assert!(!exists(&server, id).await, "refused group {id} was written");
    }
    assert!(exists(&server, "after-the-burst").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_concurrency_limit_are_shed_and_the_server_recovers() {
    let server = TestServer::start_with_settings(|s| s.max_concurrent_calls = 2).await;
    let (acknowledged, refused) = overload(&server).await;
    recovers(server, &acknowledged, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_commit_queue_are_refused_and_the_server_recovers() {
    let server = TestServer::start_with_settings(|s| s.commit_queue_limit = 1).await;
    let (acknowledged, refused) = overload(&server).await;
    recovers(server, &acknowledged, &refused).await;
}

/// Calls `path` as `ADMIN` with `message` and a `grpc-timeout` header over
/// a bare HTTP/2 connection: unlike a tonic client, it does not give up at
/// the deadline itself, so the status is the server's. Returns the
/// grpc-status (from the headers of a trailers-only answer, or the
/// trailers) and how long the answer took.
async fn raw_call(
    server: &TestServer,
    path: &str,
    message: impl prost::Message,
    grpc_timeout: Option<&str>,
) -> (Code, Duration) {
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{}{path}", server.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-entitlements-user", ADMIN);
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let started = std::time::Instant::now();
    let (answer, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(bytes::Bytes::from(frame), true).unwrap();
    let answer = answer.await.unwrap();
    let code = |value: Option<&http::HeaderValue>| value.map(|v| Code::from_bytes(v.as_bytes()));
    if let Some(code) = code(answer.headers().get("grpc-status")) {
        return (code, started.elapsed());
    }
    let mut body = answer.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().expect("trailers");
    (
        code(trailers.get("grpc-status")).expect("grpc-status"),
        started.elapsed(),
    )
}

const CHECK_ACCESS: &str = "/entitlements.v1.Decisions/CheckAccess";

/// A CheckAccess that waits (up to its bounded consistency wait of 1 s)
/// for a revision far ahead.
fn waiting_check() -> CheckAccessRequest {
    CheckAccessRequest {
        user_id: "nobody".into(),
        resource_id: "r".into(),
        role_id: "reader".into(),
        min_revision: u64::MAX / 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_the_clients_deadline_or_the_servers_call_timeout() {
    let server = TestServer::start_with_settings(|s| s.call_timeout_ms = 300).await;
    // The client's deadline.
    let (code, took) = raw_call(&server, CHECK_ACCESS, waiting_check(), Some("100m")).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(took < Duration::from_millis(900), "{took:?}");
    // No deadline from the client: the server's call timeout.
    let (code, took) = raw_call(&server, CHECK_ACCESS, waiting_check(), None).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(took < Duration::from_millis(900), "{took:?}");
    // A client asking for more than the server allows gets the server's.
    let (code, took) = raw_call(&server, CHECK_ACCESS, waiting_check(), Some("60S")).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_already_past_its_deadline_is_not_started() {
    let server = TestServer::start().await;
    let mark = server.write_mark().await;
    let create = CreateGroupRequest {
        group: Some(group("late")),
        group_id: "late".into(),
        request_id: String::new(),
    };
    let path = "/entitlements.v1.Directory/CreateGroup";
    let (code, _) = raw_call(&server, path, create.clone(), Some("0n")).await;
    assert_eq!(code, Code::DeadlineExceeded);
    server.assert_no_writes_since(mark).await;
    assert!(!exists(&server, "late").await);
    // The same call with time to run is served.
    let (code, _) = raw_call(&server, path, create, Some("10S")).await;
    assert_eq!(code, Code::Ok);
    assert!(exists(&server, "late").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_resource_exhausted_and_changes_nothing() {
    let server = TestServer::start_with_settings(|s| s.max_request_bytes = 2048).await;
    let mark = server.write_mark().await;
    let mut large = group("large");
    large.description = chars('x', 4096);
    let status = server
        .directory(ADMIN)
        .create_group(CreateGroupRequest {
            group: Some(large),
            group_id: "large".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    server.assert_no_writes_since(mark).await;
    // A request within the limit is served.
    server.create_group("small").await;
}
