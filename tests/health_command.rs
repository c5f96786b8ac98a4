//! `entitlements health`, the probe for containers without grpcurl: exit 0
//! and SERVING from a serving server, non-zero with the reason otherwise.

mod common;

use common::*;

fn health(args: &[&str]) -> std::process::Output {
    binary::run_to_exit(binary::entitlements(&[&["health"], args].concat()))
}

#[tokio::test]
async fn a_serving_server_answers_serving_for_itself_and_each_service() {
    let server = TestServer::start().await;
    let address = format!("http://{}", server.address);
    for service in ["", "entitlements.v1.Decisions"] {
        let (address, service) = (address.clone(), service.to_string());
        let output = tokio::task::spawn_blocking(move || {
            health(&["--server", &address, "--service", &service])
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");
    }
    let unknown = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || health(&["--server", &address, "--service", "nope"]))
            .await
            .unwrap()
    };
    assert!(!unknown.status.success());
    server.stop().await.unwrap();
}

#[test]
fn an_unreachable_server_fails_the_check() {
    // Bound, then released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = health(&["--server", &format!("http://127.0.0.1:{port}")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to"), "{stderr}");
}
