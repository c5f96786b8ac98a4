//! Stored-data migrations, on a store written in the previous data format:
//! `tests/fixtures/store-v1.backup`, a backup of a store from before data
//! version 2 (no reverse references from assignment policies, connected
//! organizations and users to what they name, and no data version). Both
//! `entitlements migrate` (offline) and a server starting on it upgrade it;
//! afterwards the server reads it as any other store and refuses to delete
//! what is still referred to.
//!
//! The fixture is made by the ignored test below:
//! `cargo test --test migrations -- --ignored write_the_version_1_fixture`.

mod common;

use std::path::{Path, PathBuf};

use common::world::{after, days, policy};
use common::*;
use entitlements::pb::*;
use tonic::Code;

/// The global administrator of a server started from the binary.
const LOADER: &str = "loader";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.backup")
}

/// What the fixture holds: a package whose policy names user "ann" and
/// group "team" as requestors, organization "partner" sponsored by "bob",
/// and guest "gus" sponsored by "bob" too.
async fn populate(server: &TestServer) {
    server.add_catalog("cat", true).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    server.add_member_user("ann").await;
    server.add_member_user("bob").await;
    server.add_group("team", &["ann"]).await;
    server
        .create_organization(
            "partner",
            ConnectedOrganization {
                internal_sponsor_ids: vec!["bob".into()],
                ..world::organization("Partner", "partner.example")
            },
        )
        .await;
    server
        .create_user(
            "gus",
            User {
                kind: UserKind::Guest as i32,
                email: "gus@partner.example".into(),
                connected_organization_id: "partner".into(),
                sponsor_ids: vec!["bob".into()],
                ..world::user("Gus")
            },
        )
        .await;
    server
        .add_policy(AssignmentPolicy {
            specific_allowed_targets: Some(SubjectSet {
                user_ids: vec!["ann".into()],
                group_ids: vec!["team".into()],
                ..Default::default()
            }),
            ..policy(
                "requestors",
                "pkg",
                AllowedTargetScope::SpecificDirectorySubjects,
                after(days(30)),
            )
        })
        .await;
}

/// Writes the fixture: a store populated by this version, taken back to
/// data version 1 (the reverse references version 2 added, and the data
/// version, removed), as a backup file.
#[tokio::test]
#[ignore = "writes tests/fixtures/store-v1.backup"]
async fn write_the_version_1_fixture() {
    use entitlements::store::backup::format::Encoder;
    use entitlements::store::backup::snapshot::{self, ChangeTap};
    use entitlements::store::{Txn, keys, write};

    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(entitlements::shared::clock::ManualClock::new(epoch()));
    let server = TestServer::start_in(dir.path(), clock).await;
    populate(&server).await;
    server.stop().await.unwrap();

    let store = open_store(dir.path());
    write(store.as_ref(), |txn: &mut dyn Txn| {
        let added_by_version_2: Vec<Vec<u8>> = txn
            .scan(&keys::prefix(&[keys::REFERENCE]), None)
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|key| {
                let parts: Vec<&[u8]> = key.split(|b| *b == keys::SEP).collect();
                matches!(
                    parts.get(3).copied(),
                    Some(b"assignment_policy" | b"connected_organization" | b"user")
                )
            })
            .collect();
        assert!(!added_by_version_2.is_empty());
        for key in added_by_version_2 {
            txn.delete(key);
        }
        txn.delete(keys::key(&[keys::META, "data_version"]));
        Ok::<_, entitlements::store::StoreError>(())
    })
    .await
    .unwrap();
    // Blocking: the snapshot waits for the store's answers.
    let bytes = tokio::task::spawn_blocking(move || {
        let tap = ChangeTap::attach(store.as_ref());
        let mut encoder = Encoder::new();
        let mut bytes = Vec::new();
        let (revision, head) = snapshot::write(store.as_ref(), &tap, &mut encoder, 1 << 20, |b| {
            bytes.extend(b);
            Ok(())
        })
        .unwrap();
        bytes.extend(encoder.take());
        bytes.extend(encoder.finish(revision, &head));
        store.close().unwrap();
        bytes
    })
    .await
    .unwrap();
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    std::fs::write(fixture(), bytes).unwrap();
}

/// Restores the fixture into `dir`.
fn restore_fixture(dir: &Path) {
    let mut command = binary::entitlements(&["restore"]);
    command.arg(fixture()).arg("--data-dir").arg(dir);
    let output = binary::run_to_exit(command);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `entitlements migrate --store sled:DIR`; returns what it printed.
fn migrate(dir: &Path) -> String {
    let mut command = binary::entitlements(&["migrate", "--store"]);
    command.arg(format!("sled:{}", dir.display()));
    let output = binary::run_to_exit(command);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The subjects of the IN_USE violations of a refused deletion, sorted.
fn in_use_by<T: std::fmt::Debug>(
    refused: Result<tonic::Response<T>, tonic::Status>,
) -> Vec<String> {
    let status = expect_code(refused, Code::FailedPrecondition);
    let mut subjects: Vec<String> = precondition_violations(&status)
        .into_iter()
        .map(|(_, subject)| subject)
        .collect();
    subjects.sort();
    subjects
}

/// Starts a server on the upgraded store in `dir` and checks it reads the
/// fixture's data and knows every reference.
async fn serves_the_upgraded_data(dir: &Path) {
    let (child, address) = binary::start(binary::serve(dir));
    let server = TestServer::attach(&address).await;
    let read = server
        .policies(LOADER)
        .get_assignment_policy(GetAssignmentPolicyRequest {
            id: "requestors".into(),
        })
        .await
        .map(|r| r.into_inner());
    let mut directory = server.directory(LOADER);
    let delete_user = |id: &str| DeleteUserRequest {
        id: id.into(),
        etag: String::new(),
    };
    let ann = in_use_by(directory.delete_user(delete_user("ann")).await);
    let bob = in_use_by(directory.delete_user(delete_user("bob")).await);
    let team = in_use_by(
        directory
            .delete_group(DeleteGroupRequest {
                id: "team".into(),
                etag: String::new(),
            })
            .await,
    );
    let verified = server
        .audit(LOADER)
        .verify_audit_log(VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner();
    drop((directory, server));
    let status = tokio::task::spawn_blocking(move || binary::terminate(child))
        .await
        .unwrap();
    assert!(status.success());

    let read = read.expect("read the policy");
    let targets = read.specific_allowed_targets.unwrap_or_default();
    assert_eq!(targets.user_ids, ["ann"]);
    assert_eq!(targets.group_ids, ["team"]);
    assert_eq!(ann, ["assignment_policy/requestors"]);
    assert_eq!(bob, ["connected_organization/partner", "user/gus"]);
    assert_eq!(team, ["assignment_policy/requestors"]);
    assert!(verified.intact, "{verified:?}");
}

#[tokio::test]
async fn migrate_upgrades_a_store_written_in_the_previous_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    restore_fixture(&data);
    let said = migrate(&data);
    assert!(said.contains("data version 1 -> 2"), "{said}");
    let again = migrate(&data);
    assert!(again.contains("data version 2 -> 2"), "{again}");
    serves_the_upgraded_data(&data).await;
}

#[tokio::test]
async fn the_server_upgrades_a_store_written_in_the_previous_format_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    restore_fixture(&data);
    serves_the_upgraded_data(&data).await;
    let said = migrate(&data);
    assert!(said.contains("data version 2 -> 2"), "{said}");
}

#[tokio::test]
async fn migrate_upgrades_the_data_of_a_postgresql_store_written_in_the_previous_format() {
    let Some(server) = postgres::database("migrate_upgrades_the_data_of_a_postgresql_store") else {
        return;
    };
    let url = postgres::fresh_schema(&server);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    restore_fixture(&data);
    let mut copy = binary::entitlements(&["store", "copy", "--to", &url, "--from"]);
    copy.arg(format!("sled:{}", data.display()));
    let copied = binary::run_to_exit(copy);
    assert!(copied.status.success(), "{copied:?}");

    let mut command = binary::entitlements(&["migrate", "--store", &url]);
    let said = binary::run_to_exit(command);
    let stdout = String::from_utf8_lossy(&said.stdout);
    assert!(said.status.success(), "{said:?}");
    assert!(stdout.contains("data version 1 -> 2"), "{stdout}");
    command = binary::entitlements(&["migrate", "--store", &url]);
    let again = binary::run_to_exit(command);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("data version 2 -> 2"),
        "{again:?}"
    );
}
