//! Several real server processes over one PostgreSQL database (a fresh
//! schema per test). Needs `ENTITLEMENTS_TEST_STORE=postgres` and a server
//! (see tests/common/postgres.rs); skipped, saying so, without.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::world::*;
use common::{ADMIN, TestServer, binary};
use entitlements::pb::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A server process over the test's database, killed when dropped.
struct Replica {
    child: Option<Child>,
    server: TestServer,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Replica {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Replica {
    async fn start(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = binary::serve(dir.path());
        command
            .args(["--store", url, "--migrate"])
            .env(
                "ENTITLEMENTS_AUTH__GLOBAL_ADMINS",
                format!("{ADMIN},loader"),
            )
            .env("ENTITLEMENTS_POSTGRES__POLL_INTERVAL_MS", "20")
            .env("ENTITLEMENTS_POSTGRES__LEASE_MS", "1000")
            .env("ENTITLEMENTS_SCHEDULER_INTERVAL_MS", "50");
        let (child, address) = tokio::task::spawn_blocking(move || binary::start(command))
            .await
            .unwrap();
        Self {
            child: Some(child),
            server: TestServer::attach(&address).await,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown, no flush, no lease released.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    async fn health(&self) -> ServingStatus {
        match HealthClient::new(self.channel())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            Ok(answer) => answer.into_inner().status(),
            Err(_) => ServingStatus::Unknown,
        }
    }

    /// CheckAccess at `revision` (waiting for it, as a client would).
    async fn check(&self, user: &str, resource: &str, revision: u64) -> CheckAccessResponse {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self
                .decisions(ADMIN)
                .check_access(CheckAccessRequest {
                    user_id: user.into(),
                    resource_id: resource.into(),
                    role_id: "member".into(),
                    min_revision: revision,
                })
                .await;
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    assert!(answer.revision >= revision);
                    return answer;
                }
                // Not there yet after the call's own wait: ask again.
                Err(status) if status.code() == Code::Aborted && Instant::now() < deadline => {}
                Err(status) => panic!("check {user} on {resource} at {revision}: {status:?}"),
            }
        }
    }
}

/// The test's database (a fresh schema), or None: skipped.
fn database(test: &str) -> Option<(String, String)> {
    let server = common::postgres::database(test)?;
    let schema = common::postgres::fresh_schema(&server);
    Some((server, schema))
}

/// `count` replicas: the first creates the schema, the others join it.
async fn replicas(url: &str, count: usize) -> Vec<Replica> {
    let mut all = vec![Replica::start(url).await];
    let rest: Vec<_> = (1..count)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { Replica::start(&url).await })
        })
        .collect();
    for replica in rest {
        all.push(replica.await.unwrap());
    }
    all
}

async fn world(server: &TestServer, users: &[&str]) {
    for user in users {
        server.add_member_user(user).await;
    }
    server.add_catalog("cat", false).await;
    server.add_resource("r1", "cat", "group").await;
    server.add_package("p1", "cat", &["r1"]).await;
    server
        .add_policy(policy(
            "pol",
            "p1",
            AllowedTargetScope::AllMemberUsers,
            never(),
        ))
        .await;
}

fn admin_remove(assignment: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: RequestType::AdminRemove as i32,
        assignment_id: assignment.into(),
        ..Default::default()
    }
}

/// A write acknowledged by one replica is read at its revision on every
/// other, and they all give the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_is_read_at_its_revision_on_every_other() {
    let Some((_, url)) = database("a_write_on_one_replica_is_read_at_its_revision") else {
        return;
    };
    let replicas = replicas(&url, 3).await;
    world(&replicas[0], &["alice", "bob"]).await;
    for round in 0..6 {
        let writer = &replicas[round % 3];
        let added = writer.request_add("alice", "pol").await.unwrap();
        assert_eq!(added.state(), RequestState::Delivered, "{added:?}");
        let revision = added.info.as_ref().unwrap().revision;
        for replica in &replicas {
            let answer = replica.check("alice", "r1", revision).await;
            assert!(answer.allowed, "round {round}: {answer:?}");
            assert_eq!(answer.assignment_ids, vec![added.assignment_id.clone()]);
            assert!(!replica.check("bob", "r1", revision).await.allowed);
        }
        let remover = &replicas[(round + 1) % 3];
        // The remover has seen the assignment: it was checked there.
        let removed = remover
            .request(ADMIN, admin_remove(&added.assignment_id))
            .await
            .unwrap();
        let revision = removed.info.as_ref().unwrap().revision;
        for replica in &replicas {
            let answer = replica.check("alice", "r1", revision).await;
            assert!(!answer.allowed, "round {round}: {answer:?}");
        }
    }
}

/// Twenty approvers decide one stage at once through three replicas:
/// exactly one approval takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_approvers_racing_across_replicas_one_wins() {
    let Some((_, url)) = database("twenty_approvers_racing_across_replicas") else {
        return;
    };
    let replicas = replicas(&url, 3).await;
    let approvers: Vec<String> = (0..20).map(|i| format!("approver{i}")).collect();
    let mut users: Vec<&str> = approvers.iter().map(String::as_str).collect();
    users.push("alice");
    world(&replicas[0], &users).await;
    replicas[0]
        .add_policy(AssignmentPolicy {
            approval_settings: Some(approval(
                vec![stage(approvers.iter().map(|a| user_approver(a)).collect())],
                false,
            )),
            ..policy(
                "approved",
                "p1",
                AllowedTargetScope::AllMemberUsers,
                never(),
            )
        })
        .await;
    for round in 0..3 {
        let request = replicas[round]
            .request_add("alice", "approved")
            .await
            .unwrap();
        assert_eq!(request.state(), RequestState::PendingApproval);
        let revision = request.info.as_ref().unwrap().revision;
        for replica in &replicas {
            replica.check("alice", "r1", revision).await;
        }
        let calls: Vec<_> = approvers
            .iter()
            .enumerate()
            .map(|(i, approver)| {
                let mut client = replicas[i % 3].requests(approver);
                let decide = DecideAssignmentRequestRequest {
                    id: request.id.clone(),
                    stage: 1,
                    justification: String::new(),
                };
                tokio::spawn(async move { client.approve_assignment_request(decide).await })
            })
            .collect();
        let mut won = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(answer) => won.push(answer.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}")
                }
            }
        }
        assert_eq!(won.len(), 1, "exactly one approval wins");
        let decided = &won[0];
        let revision = decided.info.as_ref().unwrap().revision;
        for replica in &replicas {
            assert!(replica.check("alice", "r1", revision).await.allowed);
            let seen = replica
                .requests(ADMIN)
                .get_assignment_request(GetAssignmentRequestRequest {
                    id: request.id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(seen.state(), RequestState::Delivered);
            assert_eq!(seen.approval_stages[0].decisions.len(), 1);
        }
        let removed = replicas[0]
            .request(ADMIN, admin_remove(&decided.assignment_id))
            .await
            .unwrap();
        let revision = removed.info.as_ref().unwrap().revision;
        for replica in &replicas {
            assert!(!replica.check("alice", "r1", revision).await.allowed);
        }
    }
}

/// The replica holding the lease on timed work, as the database records it.
fn lease_holder(server: &str, url: &str) -> Option<u32> {
    let schema = url
        .split("search_path%3D")
        .nth(1)
        .expect("a schema URL")
        .to_string();
    let (server, query) = (
        server.to_string(),
        format!("SELECT holder FROM {schema}.entitlements_leases WHERE expires_at > now()"),
    );
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let rows = client.query(&query, &[]).await.ok()?;
                let holder: String = rows.first()?.get(0);
                holder.split('@').next()?.parse().ok()
            })
    })
    .join()
    .unwrap()
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SYSTEM_REMOVE requests for an assignment.
async fn expiries(server: &TestServer, assignment: &str) -> usize {
    server
        .package_requests("p1")
        .await
        .iter()
        .filter(|r| r.r#type() == RequestType::SystemRemove && r.assignment_id == assignment)
        .count()
}

/// The replica running timed work dies by SIGKILL in the middle of writes:
/// everything it acknowledged is there on the other, which takes the timed
/// work over and expires what was due, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_nothing_acknowledged_and_its_timed_work_moves_on() {
    let Some((server, url)) = database("a_killed_replica_loses_nothing_acknowledged") else {
        return;
    };
    let mut replicas = replicas(&url, 2).await;
    let leader_pid = wait_for("a lease holder", async || lease_holder(&server, &url)).await;
    let leader = replicas.iter().position(|r| r.pid() == leader_pid).unwrap();
    let other = 1 - leader;
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    world(&replicas[leader], &names).await;
    replicas[leader]
        .add_policy(policy(
            "short",
            "p1",
            AllowedTargetScope::AllMemberUsers,
            after(seconds(3)),
        ))
        .await;
    // Due in three seconds, on the leader's watch.
    let mut expiring = Vec::new();
    for user in &users[..4] {
        expiring.push(replicas[leader].request_add(user, "short").await.unwrap());
    }
    // Writes in flight when it dies.
    let (acknowledged, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for user in &users[4..] {
        let (server, user, acknowledged) = (
            TestServer::attach(&replicas[leader].address.to_string()).await,
            user.clone(),
            acknowledged.clone(),
        );
        writers.push(tokio::spawn(async move {
            if let Ok(request) = server.request_add(&user, "pol").await {
                let _ = acknowledged.send(request);
            }
        }));
    }
    drop(acknowledged);
    let mut done = Vec::new();
    while done.len() < 10 {
        done.push(received.recv().await.expect("ten acknowledged writes"));
    }
    replicas[leader].kill();
    for writer in writers {
        writer.await.unwrap();
    }
    while let Some(request) = received.recv().await {
        done.push(request);
    }
    let survivor = &replicas[other];
    let newest = done
        .iter()
        .map(|r| r.info.as_ref().unwrap().revision)
        .max()
        .unwrap();
    survivor.check("user0", "r1", newest).await;
    for request in &done {
        let user = &request.target_id;
        let answer = survivor.check(user, "r1", newest).await;
        assert!(answer.allowed, "{user}'s acknowledged assignment is lost");
        assert!(answer.assignment_ids.contains(&request.assignment_id));
    }
    // The survivor takes the lease over and expires what was due, once.
    for request in &expiring {
        let assignment = request.assignment_id.clone();
        wait_for("expiry on the survivor", async || {
            let state = survivor.assignment(&assignment).await.state();
            (state == AssignmentState::Expired).then_some(())
        })
        .await;
        assert_eq!(expiries(survivor, &assignment).await, 1);
    }
    assert_eq!(lease_holder(&server, &url), Some(survivor.pid()));
}

/// With three replicas running, timed work fires once per item, and the
/// audit chain, written by all three, verifies on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_fires_once_and_the_audit_chain_verifies_across_replicas() {
    let Some((_, url)) = database("expiry_fires_once_and_the_audit_chain_verifies") else {
        return;
    };
    let replicas = replicas(&url, 3).await;
    let users: Vec<String> = (0..12).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    world(&replicas[0], &names).await;
    replicas[1]
        .add_policy(policy(
            "short",
            "p1",
            AllowedTargetScope::AllMemberUsers,
            after(seconds(2)),
        ))
        .await;
    // Requests from every replica at once.
    let calls: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let (address, user) = (replicas[i % 3].address.to_string(), user.clone());
            tokio::spawn(async move {
                TestServer::attach(&address)
                    .await
                    .request_add(&user, "short")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut assignments = Vec::new();
    for call in calls {
        assignments.push(call.await.unwrap().assignment_id);
    }
    for assignment in &assignments {
        wait_for("expiry", async || {
            let state = replicas[2].assignment(assignment).await.state();
            (state == AssignmentState::Expired).then_some(())
        })
        .await;
    }
    for replica in &replicas {
        for assignment in &assignments {
            assert_eq!(expiries(replica, assignment).await, 1, "{assignment}");
        }
    }
    // Every replica verifies the same, intact chain once it has caught up.
    let written = replicas[0]
        .create_user("latecomer", user("Latecomer"))
        .await;
    let revision = written.info.as_ref().unwrap().revision;
    let mut ends = BTreeSet::new();
    for replica in &replicas {
        replica.check("latecomer", "r1", revision).await;
        let verified = replica
            .audit(ADMIN)
            .verify_audit_log(VerifyAuditLogRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(verified.intact, "{verified:?}");
        assert_eq!(verified.first_sequence, 1);
        ends.insert(verified.last_sequence);
    }
    assert_eq!(
        ends.len(),
        1,
        "the replicas verified different chains: {ends:?}"
    );
}

/// A TCP proxy in front of the database that can cut every connection and
/// refuse new ones, as a network partition would.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (cut, is_cut) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut is_cut = is_cut.clone();
            if *is_cut.borrow() {
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = is_cut.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    (address, cut)
}

/// While its database is unreachable a replica is NOT_SERVING and refuses
/// writes as UNAVAILABLE; once it is back, the replica serves again without
/// a restart, and nothing was half-applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_makes_a_replica_not_serving_until_it_is_back() {
    let Some((_, url)) = database("an_unreachable_database_makes_a_replica_not_serving") else {
        return;
    };
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test database must be reached over TCP: {other:?}"),
    };
    let port = config.get_ports()[0];
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let (through, cut) = proxy(upstream).await;
    let proxied = url.replacen(&format!("@{host}:{port}"), &format!("@{through}"), 1);
    assert_ne!(proxied, url, "the URL names {host}:{port}");

    let direct = Replica::start(&url).await;
    world(&direct, &["alice"]).await;
    let cut_off = Arc::new(Replica::start(&proxied).await);
    assert_eq!(cut_off.health().await, ServingStatus::Serving);

    cut.send_replace(true);
    wait_for("NOT_SERVING", async || {
        (cut_off.health().await == ServingStatus::NotServing).then_some(())
    })
    .await;
    let refused = cut_off
        .directory(ADMIN)
        .create_user(CreateUserRequest {
            user_id: "bob".into(),
            user: Some(user("Bob")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // The other replica goes on meanwhile.
    let added = direct.request_add("alice", "pol").await.unwrap();
    assert_eq!(direct.health().await, ServingStatus::Serving);

    cut.send_replace(false);
    wait_for("SERVING again", async || {
        (cut_off.health().await == ServingStatus::Serving).then_some(())
    })
    .await;
    // It caught up with what happened meanwhile, and takes writes again.
    let revision = added.info.as_ref().unwrap().revision;
    assert!(cut_off.check("alice", "r1", revision).await.allowed);
    let bob = cut_off.create_user("bob", user("Bob")).await;
    let revision = bob.info.as_ref().unwrap().revision;
    direct.check("bob", "r1", revision).await;
    let bobs = direct.get_user("bob").await;
    assert_eq!(bobs.display_name, "Bob");
}

/// A sled store copied into PostgreSQL with `entitlements store copy`
/// serves the same data at the same revision, and its audit chain still
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_copied_into_postgres_keeps_its_revisions_and_audit_chain() {
    let Some((_, url)) = database("a_sled_store_copied_into_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut command = binary::serve(dir.path());
    command.env(
        "ENTITLEMENTS_AUTH__GLOBAL_ADMINS",
        format!("{ADMIN},loader"),
    );
    let (child, address) = tokio::task::spawn_blocking(move || binary::start(command))
        .await
        .unwrap();
    let on_sled = TestServer::attach(&address).await;
    world(&on_sled, &["alice", "bob"]).await;
    let added = on_sled.request_add("alice", "pol").await.unwrap();
    let revision = added.info.as_ref().unwrap().revision;
    let on_sled_chain = on_sled
        .audit(ADMIN)
        .verify_audit_log(VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(on_sled_chain.intact);
    drop(on_sled);
    let stopped = tokio::task::spawn_blocking(move || binary::terminate(child))
        .await
        .unwrap();
    assert!(stopped.success());

    let from = format!("sled:{}", dir.path().display());
    let copy = binary::entitlements(&["store", "copy", "--from", &from, "--to", &url]);
    let copied = tokio::task::spawn_blocking(move || binary::run_to_exit(copy))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success() && said.contains(&format!("at revision {revision}")),
        "{said}\n{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    let on_postgres = Replica::start(&url).await;
    let answer = on_postgres.check("alice", "r1", revision).await;
    assert!(answer.allowed);
    assert_eq!(answer.assignment_ids, vec![added.assignment_id.clone()]);
    let chain = on_postgres
        .audit(ADMIN)
        .verify_audit_log(VerifyAuditLogRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(chain.intact, "{chain:?}");
    assert_eq!(chain.last_sequence, on_sled_chain.last_sequence);
    // And it goes on from there.
    let next = on_postgres.request_add("bob", "pol").await.unwrap();
    assert!(next.info.as_ref().unwrap().revision > revision);
}
