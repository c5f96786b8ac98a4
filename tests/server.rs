//! The server surface: health per service, reflection (v1 and v1alpha),
//! caller authentication, and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use entitlements::pb::access_packages_client::AccessPackagesClient;
use entitlements::pb::catalogs_client::CatalogsClient;
use entitlements::pb::directory_client::DirectoryClient;
use entitlements::pb::*;
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const SERVICES: [&str; 10] = [
    "entitlements.v1.Directory",
    "entitlements.v1.Catalogs",
    "entitlements.v1.AccessPackages",
    "entitlements.v1.AssignmentPolicies",
    "entitlements.v1.AssignmentRequests",
    "entitlements.v1.Assignments",
    "entitlements.v1.Settings",
    "entitlements.v1.Decisions",
    "entitlements.v1.AuditLog",
    "entitlements.v1.Reports",
];

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

// ------------------------------------------------------------------ health

#[tokio::test]
async fn every_service_reports_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in std::iter::once("").chain(SERVICES) {
        let response = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    expect_code(
        health.check(check("entitlements.v1.Nope")).await,
        Code::NotFound,
    );
    // The server's own list of names matches the proto's.
    assert_eq!(entitlements::server::SERVICE_NAMES, SERVICES);
}

#[tokio::test]
async fn graceful_stop_reports_not_serving_and_returns_ok() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(entitlements::shared::clock::ManualClock::new(epoch()));
    let server = TestServer::start_in(dir.path(), clock.clone()).await;
    server.create_group("kept").await;
    let mut health = HealthClient::new(server.channel());
    let mut watch = health.watch(check(SERVICES[0])).await.unwrap().into_inner();
    let first: HealthCheckResponse = watch.message().await.unwrap().expect("initial status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let address = server.address;
    let stopping = tokio::spawn(server.stop());
    // While draining, health turns NOT_SERVING before the watch ends.
    let update = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status update while stopping")
        .unwrap()
        .expect("the watch is still open");
    assert_eq!(update.status(), ServingStatus::NotServing);
    drop(watch);
    drop(health);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops once its calls are done")
        .expect("server task")
        .expect("a clean stop");

    // Nothing listens any more, and the data is intact for the next start.
    let refused = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "still accepting connections after stop");
    let server = TestServer::start_in(dir.path(), clock).await;
    let kept = server
        .directory(ADMIN)
        .get_group(GetGroupRequest { id: "kept".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.display_name, "Group kept");
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------- draining

/// Reads `stream` until it ends; its final status (OK when it ended
/// without an error). Fails if it does not end within ten seconds.
async fn final_status<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    let ending = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::ok(""),
                Err(status) => return status,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ending)
        .await
        .expect("the stream ends")
}

#[tokio::test]
async fn an_open_watch_grants_stream_ends_unavailable_when_the_server_stops_and_does_not_hold_it() {
    // The default drain deadline (30 s): the stream must not use it up.
    let server = TestServer::start().await;
    let mut watch = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().expect("a first checkpoint");
    let mut health = HealthClient::new(server.channel());
    let mut health_watch = health.watch(check("")).await.unwrap().into_inner();
    let first = health_watch
        .message()
        .await
        .unwrap()
        .expect("initial status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let began = std::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    let status = final_status(&mut watch).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("resume from revision"),
        "{status:?}"
    );
    // A health watcher hears NOT_SERVING, then its stream ends too.
    let update = health_watch
        .message()
        .await
        .unwrap()
        .expect("a status update");
    assert_eq!(update.status(), ServingStatus::NotServing);
    assert_eq!(
        final_status(&mut health_watch).await.code(),
        Code::Unavailable
    );

    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops well before the drain deadline")
        .expect("server task")
        .expect("a clean stop");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_call_that_outlives_the_drain_deadline_is_cut_off_at_the_configured_deadline() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let server = TestServer::start_with_settings(|settings| settings.drain_deadline_ms = 300).await;
    // A reflection stream stays open for as long as the client keeps its
    // side open, which this one does.
    let (requests, outgoing) = tokio::sync::mpsc::channel(1);
    let mut reflection = ServerReflectionClient::new(server.channel());
    let mut responses = reflection
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .await
        .unwrap();
    responses.message().await.unwrap().expect("a service list");

    let began = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stops at the drain deadline")
        .expect("a stop with calls cut off is still clean");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "stopped before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(requests);
}

// ------------------------------------------------------------- connections

/// Waits for the server to close `stream` (end of stream or a reset).
async fn closed_by_the_server(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    let closing = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the server closes the connection");
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const HTTP2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

async fn connect(server: &TestServer) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap()
}

/// A call over a new connection.
async fn served_on_a_new_connection(server: &TestServer) -> Result<(), String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(check(""))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_handshake_timeout_and_clients_are_served_meanwhile()
 {
    let server =
        TestServer::start_with_settings(|settings| settings.handshake_timeout_ms = 300).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(connect(&server).await);
    }
    // Connections that do start with the HTTP/2 preface are served.
    server
        .directory(ADMIN)
        .list_users(ListUsersRequest::default())
        .await
        .expect("an open client is served");
    served_on_a_new_connection(&server)
        .await
        .expect("a new client is served");
    for stream in &mut silent {
        closed_by_the_server(stream).await;
    }
    // So is a connection that sends something else.
    let mut talker = connect(&server).await;
    tokio::io::AsyncWriteExt::write_all(&mut talker, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_the_server(&mut talker).await;
}

#[tokio::test]
async fn a_connection_that_goes_quiet_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with_settings(|settings| settings.idle_timeout_ms = 300).await;
    let mut quiet = connect(&server).await;
    tokio::io::AsyncWriteExt::write_all(&mut quiet, HTTP2_START)
        .await
        .unwrap();
    closed_by_the_server(&mut quiet).await;
    // The harness's client went quiet too and lost its connection; it
    // reconnects and is served (a call sent just as the server closes the
    // connection fails and is retried).
    eventually("the client to reconnect", || async {
        server
            .directory(ADMIN)
            .list_users(ListUsersRequest::default())
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_while_open_ones_are_served() {
    // The harness's own client holds one of the three.
    let server = TestServer::start_with_settings(|settings| settings.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        tokio::io::AsyncWriteExt::write_all(&mut stream, HTTP2_START)
            .await
            .unwrap();
        held.push(stream);
    }
    let mut beyond = connect(&server).await;
    closed_by_the_server(&mut beyond).await;
    server
        .directory(ADMIN)
        .list_users(ListUsersRequest::default())
        .await
        .expect("an open client is still served");

    // Once a connection closes, its place is free for a new one.
    drop(held.pop());
    eventually("a new connection to be served", || async {
        served_on_a_new_connection(&server).await.ok()
    })
    .await;
}

// -------------------------------------------------------------- reflection

mod reflection {
    use super::*;
    use tonic_reflection::pb::{v1, v1alpha};

    async fn ask_v1(
        server: &TestServer,
        request: v1::server_reflection_request::MessageRequest,
    ) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
        let mut client =
            v1::server_reflection_client::ServerReflectionClient::new(server.channel());
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        Ok(responses
            .message()
            .await?
            .unwrap()
            .message_response
            .unwrap())
    }

    async fn ask_v1alpha(
        server: &TestServer,
        request: v1alpha::server_reflection_request::MessageRequest,
    ) -> v1alpha::server_reflection_response::MessageResponse {
        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel());
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        responses
            .message()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
    }

    /// Every service, with the reflection service of the version asked
    /// (each endpoint describes itself only).
    fn expected_services(reflection: &str) -> Vec<String> {
        let mut expected: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
        expected.extend(["grpc.health.v1.Health".to_string(), reflection.to_string()]);
        expected.sort();
        expected
    }

    fn file_names(files: &[Vec<u8>]) -> Vec<String> {
        files
            .iter()
            .map(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn v1_lists_every_service_and_serves_descriptors() {
        let server = TestServer::start().await;
        use v1::server_reflection_request::MessageRequest as Ask;
        use v1::server_reflection_response::MessageResponse as Answer;

        let Answer::ListServicesResponse(list) = ask_v1(&server, Ask::ListServices(String::new()))
            .await
            .unwrap()
        else {
            panic!("expected a service list")
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(
            names,
            expected_services("grpc.reflection.v1.ServerReflection")
        );

        let Answer::FileDescriptorResponse(files) = ask_v1(
            &server,
            Ask::FileContainingSymbol("entitlements.v1.Directory".into()),
        )
        .await
        .unwrap() else {
            panic!("expected descriptors")
        };
        let names = file_names(&files.file_descriptor_proto);
        assert!(
            names.contains(&"entitlements/v1/directory.proto".to_string()),
            "{names:?}"
        );

        // The error detail types are described too, so clients can decode them.
        let Answer::FileDescriptorResponse(files) = ask_v1(
            &server,
            Ask::FileContainingSymbol("google.rpc.BadRequest".into()),
        )
        .await
        .unwrap() else {
            panic!("expected descriptors")
        };
        let described = files.file_descriptor_proto.iter().any(|bytes| {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            file.package() == "google.rpc"
                && file.message_type.iter().any(|m| m.name() == "BadRequest")
        });
        assert!(described, "google.rpc.BadRequest is not described");

        // tonic-reflection reports an unknown symbol as a stream error.
        let unknown = ask_v1(
            &server,
            Ask::FileContainingSymbol("entitlements.v1.Nope".into()),
        )
        .await;
        assert_eq!(unknown.map(|_| ()).unwrap_err().code(), Code::NotFound);
    }

    #[tokio::test]
    async fn v1alpha_lists_every_service() {
        let server = TestServer::start().await;
        use v1alpha::server_reflection_request::MessageRequest as Ask;
        use v1alpha::server_reflection_response::MessageResponse as Answer;

        let Answer::ListServicesResponse(list) =
            ask_v1alpha(&server, Ask::ListServices(String::new())).await
        else {
            panic!("expected a service list")
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(
            names,
            expected_services("grpc.reflection.v1alpha.ServerReflection")
        );

        let Answer::FileDescriptorResponse(files) = ask_v1alpha(
            &server,
            Ask::FileByFilename("entitlements/v1/catalogs.proto".into()),
        )
        .await
        else {
            panic!("expected descriptors")
        };
        let file =
            prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
                .unwrap();
        assert_eq!(file.package(), "entitlements.v1");
        assert_eq!(file.service[0].name(), "Catalogs");
    }
}

// ---------------------------------------------------------- authentication

#[tokio::test]
async fn calls_without_a_valid_caller_are_unauthenticated() {
    let server = TestServer::start().await;
    let mark = server.write_mark().await;
    let channel = server.channel();

    let status = expect_code(
        DirectoryClient::new(channel.clone())
            .create_group(CreateGroupRequest {
                group: Some(group("G")),
                group_id: "g".into(),
                request_id: String::new(),
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(
        status.message().contains("x-entitlements-user"),
        "{status:?}"
    );
    // Reads need a caller too, on every service.
    expect_code(
        DirectoryClient::new(channel.clone())
            .list_users(ListUsersRequest::default())
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        CatalogsClient::new(channel.clone())
            .get_catalog(GetCatalogRequest {
                id: "general".into(),
            })
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        AccessPackagesClient::new(channel.clone())
            .list_access_packages(ListAccessPackagesRequest::default())
            .await,
        Code::Unauthenticated,
    );
    // A header that is not a user id is no better than none.
    for bad in ["two words", "a/b", ""] {
        expect_code(
            server
                .catalogs(bad)
                .create_catalog(CreateCatalogRequest {
                    catalog: Some(catalog("C")),
                    catalog_id: "c".into(),
                    request_id: String::new(),
                })
                .await,
            Code::Unauthenticated,
        );
    }
    server.assert_no_writes_since(mark).await;

    // With a caller the same call works.
    server
        .catalogs(ADMIN)
        .get_catalog(GetCatalogRequest {
            id: "general".into(),
        })
        .await
        .unwrap();
}
