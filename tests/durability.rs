//! Acknowledged writes survive restarts and crashes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{AsUser, TestServer, binary};
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

/// Starts the real binary on `data_dir`; returns it with its address.
fn spawn_binary(data_dir: &std::path::Path) -> (std::process::Child, String) {
    binary::start(binary::serve(data_dir))
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
    let (child, address) = spawn_binary(dir.path());
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
    // Wait off the runtime: the client's connection must keep being
    // served while the server drains.
    let status = tokio::task::spawn_blocking(move || binary::terminate(child))
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

async fn create_group(address: &str, id: &str) -> Group {
    client(address)
        .await
        .create_group(CreateGroupRequest {
            group: Some(Group {
                display_name: format!("Group {id}"),
                ..Default::default()
            }),
            group_id: id.into(),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("create group {id}: {status:?}"))
        .into_inner()
}

fn revision(group: &Group) -> u64 {
    group.info.as_ref().expect("record info").revision
}

/// Copies the store's own files (not the acknowledged mark) from `from`
/// into `to`, replacing what `to` had of them.
fn copy_store_files(from: &std::path::Path, to: &std::path::Path) {
    const MARK: &str = entitlements::store::acknowledged::FILE_NAME;
    if to.exists() {
        for entry in std::fs::read_dir(to).unwrap() {
            let path = entry.unwrap().path();
            match path.file_name().and_then(|n| n.to_str()) {
                Some(MARK) => {}
                _ if path.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
                _ => std::fs::remove_file(&path).unwrap(),
            }
        }
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == MARK {
            continue;
        }
        if path.is_dir() {
            copy_store_files(&path, &to.join(name));
        } else {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// Asserts that `serve` on `data` refuses to start, naming the missing
/// revisions and the way to accept the loss.
fn assert_refused_as_rolled_back(data: &std::path::Path, holds: u64, acknowledged: u64) {
    let refused = binary::run_to_exit(binary::serve(data));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "it started: {stderr}");
    assert!(
        String::from_utf8_lossy(&refused.stdout).is_empty(),
        "it listened"
    );
    let expected = format!("is at revision {holds}, but revision {acknowledged} was acknowledged");
    assert!(stderr.contains(&expected), "{expected:?} not in: {stderr}");
    assert!(stderr.contains("store accept-rollback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_what_it_acknowledged_is_refused_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (data, older) = (dir.path().join("data"), dir.path().join("older"));
    let (child, address) = spawn_binary(&data);
    let kept = create_group(&address, "kept").await;
    assert!(binary::terminate(child).success());
    copy_store_files(&data, &older);

    let (child, address) = spawn_binary(&data);
    let mut last = kept.clone();
    for n in 0..5 {
        last = create_group(&address, &format!("lost-{n}")).await;
    }
    assert!(binary::terminate(child).success());
    // What sled does with a damaged record (it drops the log from there
    // on), done by putting the older copy back beside the newer mark.
    copy_store_files(&older, &data);
    assert_refused_as_rolled_back(&data, revision(&kept), revision(&last));

    let mut accept = binary::entitlements(&["store", "accept-rollback", "--data-dir"]);
    accept.arg(&data);
    let accepted = binary::run_to_exit(accept);
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(accepted.status.success(), "{accepted:?}");
    let expected = format!(
        "accepted the loss of revisions {} to {}",
        revision(&kept) + 1,
        revision(&last)
    );
    assert!(stdout.contains(&expected), "{expected:?} not in: {stdout}");
    // Five groups, five audit events.
    assert!(stdout.contains("and of audit events"), "{stdout}");

    let (mut child, address) = spawn_binary(&data);
    let mut directory = client(&address).await;
    directory
        .get_group(GetGroupRequest { id: "kept".into() })
        .await
        .expect("what the store holds is served");
    let lost = directory
        .get_group(GetGroupRequest {
            id: "lost-0".into(),
        })
        .await;
    assert_eq!(lost.unwrap_err().code(), tonic::Code::NotFound);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_recent_log_record_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (child, address) = spawn_binary(dir.path());
    let mut groups = Vec::new();
    for n in 0..20 {
        groups.push(create_group(&address, &format!("flip-target-{n:02}")).await);
    }
    assert!(binary::terminate(child).success());

    // Damage the newest record of the tenth group in sled's log.
    let log = dir.path().join("db");
    let mut bytes = std::fs::read(&log).unwrap();
    let needle = b"Group flip-target-10";
    let at = bytes
        .windows(needle.len())
        .rposition(|window| window == needle)
        .expect("the group's record is in the log");
    bytes[at] ^= 0x01;
    std::fs::write(&log, bytes).unwrap();

    let refused = binary::run_to_exit(binary::serve(dir.path()));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "it started: {stderr}");
    let expected = format!("but revision {} was acknowledged", revision(&groups[19]));
    assert!(stderr.contains(&expected), "{expected:?} not in: {stderr}");
}

/// A small tmpfs, the disk that fills up, unmounted when dropped. Mounting
/// needs root (as the project's machines and CI run).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            mounted.success(),
            "mounting a 16 MiB tmpfs failed (this test needs root)"
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills what is left of the disk; returns the file to remove to free
    /// it again.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_store_write_that_cannot_be_made_durable_fails_the_store_and_hides_its_batch() {
    use entitlements::store::sled_store::SledStore;
    use entitlements::store::{ReadView, StoreError, Txn, write};

    let disk = SmallDisk::mount();
    let store = SledStore::open(&disk.path().join("data")).unwrap();
    let put = |key: String| {
        move |txn: &mut dyn Txn| -> Result<(), StoreError> {
            txn.put(key.into_bytes(), vec![7u8; 2048]);
            Ok(())
        }
    };
    write(&store, put("before".into())).await.unwrap();
    let _filler = disk.fill();
    let mut written = 0;
    let (failed_key, error) = loop {
        let key = format!("k{written}");
        match write(&store, put(key.clone())).await {
            Ok(_) => written += 1,
            Err(error) => break (key, error),
        }
        assert!(written < 100_000, "writes kept succeeding on a full disk");
    };
    assert!(matches!(error, StoreError::Failed(_)), "{error:?}");
    assert!(!error.to_string().contains("unreadable"), "{error}");

    // sled applied the failed batch in memory; it must not be readable.
    let read = store.get(failed_key.as_bytes());
    assert!(
        matches!(read, Err(StoreError::Failed(_))),
        "the failed write is readable: {:?}",
        read.map(|value| value.map(|v| v.len()))
    );
    assert!(matches!(store.get(b"before"), Err(StoreError::Failed(_))));
    // Nothing more is accepted, and the failure is announced.
    let later = write(&store, put("later".into())).await;
    assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
    let reason = tokio::time::timeout(std::time::Duration::from_secs(5), store.failure())
        .await
        .expect("the failure is announced");
    assert!(!reason.to_string().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_and_a_restart_recovers_exactly_what_was_acknowledged() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let disk = SmallDisk::mount();
    let data = disk.path().join("data");
    let (mut child, address) = spawn_binary(&data);
    let mut acknowledged = std::collections::BTreeSet::new();
    for n in 0..5 {
        acknowledged.insert(create_group(&address, &format!("g{n}")).await.id);
    }
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "entitlements.v1.Directory".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = health.message().await.unwrap().expect("a status");
    assert_eq!(serving.status(), ServingStatus::Serving);

    let filler = disk.fill();
    let mut directory = client(&address).await;
    let refused = loop {
        let id = format!("g{}", acknowledged.len());
        let created = directory
            .create_group(CreateGroupRequest {
                group: Some(Group {
                    display_name: format!("Group {id} with a longer name to fill pages faster"),
                    ..Default::default()
                }),
                group_id: id.clone(),
                request_id: String::new(),
            })
            .await;
        match created {
            Ok(_) => assert!(acknowledged.insert(id)),
            Err(status) => break status,
        }
        assert!(
            acknowledged.len() < 100_000,
            "writes kept succeeding on a full disk"
        );
    };
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let update = health.message().await.unwrap().expect("a status update");
    assert_eq!(update.status(), ServingStatus::NotServing);

    let status = tokio::task::spawn_blocking(move || {
        binary::exit_within(&mut child, std::time::Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert!(
        !status.success(),
        "a failed store must stop the process with an error"
    );

    // With space again, a restart serves exactly what was acknowledged.
    std::fs::remove_file(filler).unwrap();
    let (mut child, address) = spawn_binary(&data);
    let mut stored = std::collections::BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = client(&address)
            .await
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
    assert_eq!(stored, acknowledged);
    child.kill().unwrap();
    child.wait().unwrap();
}
