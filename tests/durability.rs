//! Acknowledged writes survive restarts and crashes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{AsUser, TestServer};
use entitlements::pb::directory_client::DirectoryClient;
use entitlements::pb::{CreateGroupRequest, GetGroupRequest, Group, ListGroupsRequest};
use tonic::transport::Channel;

#[tokio::test]
async fn data_persists_across_a_graceful_restart() {
    let server = TestServer::start().await;
    let created = server
        .directory("admin")
        .create_group(CreateGroupRequest {
            group: Some(Group {
                display_name: "Sales".into(),
                ..Default::default()
            }),
            group_id: "sales".into(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let server = server.restart().await;
    let mut directory = server.directory("admin");
    let read = directory
        .get_group(GetGroupRequest { id: "sales".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, created);

    // The request id is remembered across the restart too.
    let retried = directory
        .create_group(CreateGroupRequest {
            group: Some(Group {
                display_name: "Sales".into(),
                ..Default::default()
            }),
            group_id: "sales".into(),
            request_id: "req-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, created);
    server.stop().await.unwrap();
}

/// Starts the real binary on an ephemeral port and returns it with its
/// address, read from the line it prints.
fn spawn_binary(data_dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_entitlements"))
        .args([
            "serve",
            "--dev-auth",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .env("ENTITLEMENTS_AUTH__GLOBAL_ADMINS", "[loader]")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("the server prints its address")
        .to_string();
    (child, address)
}

async fn client(
    address: &str,
) -> DirectoryClient<tonic::service::interceptor::InterceptedService<Channel, AsUser>> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    DirectoryClient::with_interceptor(channel, AsUser::new("loader"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = spawn_binary(dir.path());

    // Writers create groups as fast as they can; each records the ids the
    // server acknowledged. The server is killed while they run.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let mut directory = client(&address).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w{writer}-{n}");
                let result = directory
                    .create_group(CreateGroupRequest {
                        group: Some(Group {
                            display_name: id.clone(),
                            ..Default::default()
                        }),
                        group_id: id.clone(),
                        request_id: String::new(),
                    })
                    .await;
                match result {
                    Ok(_) => acknowledged.push(id),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    child.kill().expect("SIGKILL the server");
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let (mut child, address) = spawn_binary(dir.path());
    let mut directory = client(&address).await;
    let mut stored = std::collections::HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = directory
            .list_groups(ListGroupsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.groups.into_iter().map(|g| g.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = spawn_binary(dir.path());
    let mut directory = client(&address).await;
    directory
        .create_group(CreateGroupRequest {
            group: Some(Group {
                display_name: "Before the signal".into(),
                ..Default::default()
            }),
            group_id: "before".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    // Wait off the runtime: the client's connection must keep being
    // served while the server drains.
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    drop(directory);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");

    let (mut child, address) = spawn_binary(dir.path());
    let found = client(&address)
        .await
        .get_group(GetGroupRequest {
            id: "before".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.display_name, "Before the signal");
    child.kill().unwrap();
    child.wait().unwrap();
}
