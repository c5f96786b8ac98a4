//! Backup and restore: `entitlements backup` takes a consistent backup of a
//! serving store while writes go on, `entitlements restore` puts it into a
//! new data directory, and a server started there holds exactly the data of
//! the backup's revision, with an intact audit chain. Damaged backups and
//! occupied directories are refused.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::world::{group, user};
use common::*;
use entitlements::pb::{
    CreateGroupRequest, CreateUserRequest, ListUsersRequest, VerifyAuditLogRequest,
};

/// The global administrator of a server started from the binary.
const LOADER: &str = "loader";

/// Runs `entitlements backup` against `server` into `file`; returns the
/// revision it reports.
async fn backup(server: &TestServer, file: &Path) -> u64 {
    let mut command = binary::entitlements(&["backup", "--dev-user", ADMIN, "--server"]);
    command
        .arg(format!("http://{}", server.address))
        .arg("-o")
        .arg(file);
    let output = tokio::task::spawn_blocking(move || binary::run_to_exit(command))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "backup failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let revision = stdout
        .split("backup at revision ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no revision in {stdout:?}"));
    revision.parse().unwrap()
}

/// Runs `entitlements restore file --data-dir dir`.
fn restore(file: &Path, dir: &Path) -> std::process::Output {
    let mut command = binary::entitlements(&["restore"]);
    command.arg(file).arg("--data-dir").arg(dir);
    binary::run_to_exit(command)
}

/// Every user id, page by page.
async fn user_ids(server: &TestServer, caller: &str) -> Vec<String> {
    let directory = server.directory(caller);
    let pages = pages(|token| {
        let mut directory = directory.clone();
        async move {
            let page = directory
                .list_users(ListUsersRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let ids = page.users.into_iter().map(|u| u.id).collect();
            Ok((ids, page.next_page_token))
        }
    })
    .await;
    let mut ids: Vec<String> = pages.into_iter().flatten().collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_concurrent_writes_restores_exactly_its_revision() {
    let server = TestServer::start().await;
    for n in 0..20 {
        server
            .create_user(&format!("before-{n}"), user("Before"))
            .await;
    }
    // Writers create users until told to stop, noting the revision each
    // creation was acknowledged at.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut directory = server.directory(ADMIN);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w{writer}-{n}");
                let created = directory
                    .create_user(CreateUserRequest {
                        user: Some(user("Written")),
                        user_id: id.clone(),
                        request_id: String::new(),
                    })
                    .await
                    .expect("create a user")
                    .into_inner();
                written.push((id, created.info.unwrap().revision));
            }
            written
        }));
    }
    eventually("the writers to be writing", || async {
        (server.write_mark().await > 60).then_some(())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let revision = backup(&server, &file).await;
    // Let the writers go on past the backup before stopping them.
    let after = server.write_mark().await;
    assert!(after > revision);
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    assert!(written.iter().any(|(_, at)| *at > revision));
    let mut expected: Vec<String> = (0..20).map(|n| format!("before-{n}")).collect();
    expected.extend(
        written
            .iter()
            .filter(|(_, at)| *at <= revision)
            .map(|(id, _)| id.clone()),
    );
    expected.sort();
    let original = user_ids(&server, ADMIN).await;
    assert!(original.len() > expected.len());

    let restored_dir = dir.path().join("restored");
    let (file_arg, restored_arg) = (file.clone(), restored_dir.clone());
    let output = tokio::task::spawn_blocking(move || restore(&file_arg, &restored_arg))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains(&format!("at revision {revision}")), "{said}");

    let (child, address) = binary::start(binary::serve(&restored_dir));
    let restored = TestServer::attach(&address).await;
    let restored_ids = user_ids(&restored, LOADER).await;
    let verified = restored
        .audit(LOADER)
        .verify_audit_log(VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner();
    // The restored store goes on from the backup's revision.
    let next = restored
        .directory(LOADER)
        .create_group(CreateGroupRequest {
            group: Some(group("After restore")),
            group_id: "after-restore".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .revision;
    drop(restored);
    let status = tokio::task::spawn_blocking(move || binary::terminate(child))
        .await
        .unwrap();
    assert!(status.success());

    assert_eq!(restored_ids, expected);
    assert!(verified.intact, "{verified:?}");
    assert!(verified.events_checked as usize >= expected.len());
    assert_eq!(next, revision + 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_truncated_or_damaged_backup_is_refused_and_leaves_no_store() {
    let server = TestServer::start().await;
    server.create_user("someone", user("Someone")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    backup(&server, &file).await;
    server.stop().await.unwrap();
    let bytes = std::fs::read(&file).unwrap();

    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let mut damaged_bytes = bytes.clone();
    damaged_bytes[bytes.len() / 2] ^= 0x01;
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, damaged_bytes).unwrap();

    for (file, expected) in [
        (truncated, "the backup file is truncated"),
        (damaged, "the backup file is damaged"),
    ] {
        let target = dir.path().join("target");
        let output = restore(&file, &target);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{file:?}: {stderr}");
        assert!(!target.exists(), "a refused restore created {target:?}");
    }
}

#[tokio::test]
async fn restore_refuses_a_directory_that_is_not_empty() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    backup(&server, &file).await;
    server.stop().await.unwrap();

    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let output = restore(&file, &occupied);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&occupied).unwrap().count(),
        1,
        "the directory was touched"
    );
}

#[tokio::test]
async fn a_refused_backup_leaves_no_file_behind() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let mut command = binary::entitlements(&["backup", "--dev-user", "nobody", "--server"]);
    command
        .arg(format!("http://{}", server.address))
        .arg("-o")
        .arg(&file);
    let output = tokio::task::spawn_blocking(move || binary::run_to_exit(command))
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("may not call BackupStore"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    server.stop().await.unwrap();
}
