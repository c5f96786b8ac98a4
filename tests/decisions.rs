//! The Decisions service over real gRPC: every way of asking agrees with a
//! brute-force reference computed from the assignments (blocked users
//! holding nothing, ends applied before the scheduler records them),
//! WatchGrants replays, resumes, checkpoints and refuses what it no longer
//! retains or has not reached, consistency tokens are honored, eligibility
//! is explained, and callers may only ask what they are allowed to.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::world::{after, approval, days, never, policy, seconds, stage, user_approver};
use common::*;
use entitlements::config::ServicePrincipal;
use entitlements::pb::*;
use tokio_stream::StreamExt;
use tonic::Code;

type Triple = (String, String, String);

const ROLES: [&str; 2] = ["member", "owner"];

/// A tiny deterministic generator (splitmix64), so fixtures are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

async fn revision(server: &TestServer) -> u64 {
    server
        .decisions(ADMIN)
        .ping(PingRequest {})
        .await
        .expect("ping")
        .into_inner()
        .revision
}

/// A resource in `catalog` offering both [`ROLES`].
async fn add_two_role_resource(server: &TestServer, id: &str, catalog: &str) {
    server
        .create_resource(id, resource(catalog, &format!("origin-{id}"), &ROLES))
        .await;
}

async fn add_policy_with_schedule(server: &TestServer, id: &str, pkg: &str, exp: Expiration) {
    let mut p = policy(id, pkg, AllowedTargetScope::AllMemberUsers, exp);
    p.requestor_settings.as_mut().unwrap().allow_custom_schedule = true;
    server.add_policy(p).await;
}

async fn request_scheduled(server: &TestServer, user: &str, pol: &str, start_in: u64) {
    let start = server.clock_now() + Duration::from_secs(start_in);
    let request = server
        .request(
            user,
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: pol.into(),
                schedule: Some(Schedule {
                    start_time: Some(start.into()),
                    end_time: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|s| panic!("{user} schedules {pol}: {s:?}"));
    assert_eq!(request.state(), RequestState::Scheduled, "{request:?}");
}

async fn add(server: &TestServer, user: &str, pol: &str) -> AssignmentRequest {
    let request = server
        .request_add(user, pol)
        .await
        .unwrap_or_else(|s| panic!("{user} requests {pol}: {s:?}"));
    assert_eq!(request.state(), RequestState::Delivered, "{request:?}");
    request
}

async fn remove(server: &TestServer, user: &str, assignment: &str) -> AssignmentRequest {
    server
        .request(
            user,
            AssignmentRequest {
                r#type: RequestType::UserRemove as i32,
                assignment_id: assignment.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|s| panic!("{user} removes {assignment}: {s:?}"))
}

trait ClockNow {
    fn clock_now(&self) -> std::time::SystemTime;
}

impl ClockNow for TestServer {
    fn clock_now(&self) -> std::time::SystemTime {
        use entitlements::shared::clock::Clock;
        self.clock.now()
    }
}

/// Every assignment on record, across pages.
async fn all_assignments(server: &TestServer) -> Vec<Assignment> {
    let client = server.assignments(ADMIN);
    pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_assignments(ListAssignmentsRequest {
                    page_size: 7,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.assignments, page.next_page_token))
        }
    })
    .await
    .concat()
}

/// Waits until background work has caught up with the clock: nothing
/// delivered is past its end and nothing scheduled is due.
async fn quiesce(server: &TestServer) {
    let now = server.clock_seconds();
    eventually("background work to catch up", || async {
        let overdue = all_assignments(server).await.iter().any(|a| {
            a.state() == AssignmentState::Delivered && a.end_time.is_some_and(|e| e.seconds <= now)
        });
        let due = server
            .list_requests(ListAssignmentRequestsRequest::default())
            .await
            .iter()
            .any(|r| {
                r.state() == RequestState::Scheduled
                    && r.schedule
                        .as_ref()
                        .and_then(|s| s.start_time)
                        .is_some_and(|t| t.seconds <= now)
            });
        (!overdue && !due).then_some(())
    })
    .await;
    server.run_due_work().await;
}

/// Reads a WatchGrants stream from `from` until a checkpoint at or past
/// `until`; returns the messages with events (in order) and checkpoints.
async fn watch_until(server: &TestServer, from: u64, until: u64) -> Vec<WatchGrantsResponse> {
    let mut stream = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest {
            from_revision: from,
        })
        .await
        .expect("watch grants")
        .into_inner();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no checkpoint at {until} within 5 s: {messages:?}"))
            .expect("stream ended")
            .expect("watch message");
        let done = message.checkpoint && message.revision >= until;
        if !message.checkpoint {
            messages.push(message);
        }
        if done {
            return messages;
        }
    }
}

/// Folds grant events into the set of grants they describe, asserting each
/// event is a change (no ADDED of a held grant, no REMOVED of an absent
/// one) and revisions increase.
fn fold(messages: &[WatchGrantsResponse]) -> BTreeSet<Triple> {
    let mut grants = BTreeSet::new();
    let mut last = 0;
    for message in messages {
        assert!(
            message.revision > last,
            "revisions out of order: {messages:?}"
        );
        last = message.revision;
        assert!(!message.events.is_empty(), "{message:?}");
        for event in &message.events {
            let triple = (
                event.user_id.clone(),
                event.resource_id.clone(),
                event.role_id.clone(),
            );
            match event.kind() {
                grant_event::Kind::Added => {
                    assert!(
                        grants.insert(triple),
                        "ADDED twice: {event:?} in {message:?}"
                    )
                }
                grant_event::Kind::Removed => assert!(
                    grants.remove(&triple),
                    "REMOVED without ADDED: {event:?} in {message:?}"
                ),
                other => panic!("event kind {other:?}"),
            }
        }
    }
    grants
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

// ---------------------------------------------------------------- consistency

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    None,
    Long,
    /// Expires when the clock moves on.
    Short,
    /// Starts after the checks.
    Future,
    /// Starts when the clock moves on.
    Starts,
    /// Added, then removed.
    Removed,
}

const PLANS: [Plan; 10] = [
    Plan::None,
    Plan::None,
    Plan::None,
    Plan::Long,
    Plan::Long,
    Plan::Short,
    Plan::Short,
    Plan::Future,
    Plan::Starts,
    Plan::Removed,
];

async fn consistency_case(seed: u64) {
    let mut rng = Rng(seed);
    let server = TestServer::start_with_settings(|s| s.watch_checkpoint_ms = 20).await;
    let users: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
    let resources: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    for user in &users {
        server.add_member_user(user).await;
    }
    server.add_catalog("cat", false).await;
    for r in &resources {
        add_two_role_resource(&server, r, "cat").await;
    }
    let pairs: Vec<(String, String)> = resources
        .iter()
        .flat_map(|r| ROLES.iter().map(move |role| (r.clone(), role.to_string())))
        .collect();
    let mut packages: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for p in 0..4 {
        let id = format!("p{p}");
        let mut roles = BTreeSet::new();
        for _ in 0..1 + rng.below(3) {
            roles.insert(pairs[rng.below(pairs.len())].clone());
        }
        if p == 1 {
            // At least one grant two packages give.
            roles.insert(packages["p0"].iter().next().unwrap().clone());
        }
        let refs: Vec<(&str, &str)> = roles
            .iter()
            .map(|(r, role)| (r.as_str(), role.as_str()))
            .collect();
        server
            .create_package(&id, package("cat", &id.to_uppercase(), &refs))
            .await;
        add_policy_with_schedule(&server, &format!("{id}-long"), &id, after(days(30))).await;
        add_policy_with_schedule(&server, &format!("{id}-short"), &id, after(seconds(60))).await;
        packages.insert(id, roles);
    }

    // Phase one: adds of every kind, then removals.
    let mut plans = BTreeMap::new();
    let mut to_remove = Vec::new();
    for user in &users {
        for pkg in packages.keys() {
            let plan = PLANS[rng.below(PLANS.len())];
            plans.insert((user.clone(), pkg.clone()), plan);
            match plan {
                Plan::None => {}
                Plan::Long => {
                    add(&server, user, &format!("{pkg}-long")).await;
                }
                Plan::Short => {
                    add(&server, user, &format!("{pkg}-short")).await;
                }
                Plan::Future => {
                    request_scheduled(&server, user, &format!("{pkg}-long"), 86_400).await
                }
                Plan::Starts => request_scheduled(&server, user, &format!("{pkg}-long"), 30).await,
                Plan::Removed => {
                    let r = add(&server, user, &format!("{pkg}-long")).await;
                    to_remove.push((user.clone(), r.assignment_id));
                }
            }
        }
    }
    for (user, assignment) in to_remove {
        remove(&server, &user, &assignment).await;
    }
    server.clock.advance(Duration::from_secs(120));
    // Phase two, after the clock moved: new short and long assignments for
    // some of those who had none, and some long ones removed.
    let mut expected_active = BTreeSet::new();
    for ((user, pkg), plan) in plans.clone() {
        match plan {
            Plan::None => match rng.below(3) {
                0 => {
                    add(&server, &user, &format!("{pkg}-short")).await;
                    expected_active.insert((user, pkg));
                }
                1 => {
                    add(&server, &user, &format!("{pkg}-long")).await;
                    expected_active.insert((user, pkg));
                }
                _ => {}
            },
            Plan::Long => {
                if rng.below(4) == 0 {
                    let held = server.user_assignments(&user).await;
                    let a = held
                        .iter()
                        .find(|a| {
                            a.access_package_id == pkg && a.state() == AssignmentState::Delivered
                        })
                        .expect("the long assignment");
                    remove(&server, &user, &a.id).await;
                } else {
                    expected_active.insert((user, pkg));
                }
            }
            Plan::Starts => {
                expected_active.insert((user, pkg));
            }
            Plan::Short | Plan::Future | Plan::Removed => {}
        }
    }
    quiesce(&server).await;
    // A blocked user holds nothing; one blocked and unblocked again holds
    // what they held.
    let blocked = users[rng.below(users.len())].clone();
    let toggled = users[rng.below(users.len())].clone();
    if toggled != blocked {
        server.set_user_state(&toggled, UserState::Blocked).await;
        server.set_user_state(&toggled, UserState::Active).await;
    }
    server.set_user_state(&blocked, UserState::Blocked).await;
    let now = server.clock_seconds();
    let rev = revision(&server).await;

    // The reference: delivered assignments in effect, joined with packages.
    let mut reference: BTreeMap<Triple, BTreeSet<String>> = BTreeMap::new();
    let mut by_package: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut active_pairs = BTreeSet::new();
    for a in all_assignments(&server).await {
        let in_effect = a.state() == AssignmentState::Delivered
            && a.start_time.is_none_or(|t| t.seconds <= now)
            && a.end_time.is_none_or(|t| now < t.seconds);
        if !in_effect {
            continue;
        }
        active_pairs.insert((a.target_id.clone(), a.access_package_id.clone()));
        if a.target_id == blocked {
            continue;
        }
        by_package
            .entry(a.access_package_id.clone())
            .or_default()
            .entry(a.target_id.clone())
            .or_default()
            .insert(a.id.clone());
        for (res, role) in &packages[&a.access_package_id] {
            reference
                .entry((a.target_id.clone(), res.clone(), role.clone()))
                .or_default()
                .insert(a.id.clone());
        }
    }
    assert_eq!(
        active_pairs, expected_active,
        "seed {seed}: the workflow did not make the planned assignments"
    );

    let mut triples = Vec::new();
    for user in &users {
        for (res, role) in &pairs {
            triples.push((user.clone(), res.clone(), role.clone()));
        }
    }
    let expected = |t: &Triple| -> Vec<String> {
        reference
            .get(t)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    };

    let mut decisions = server.decisions(ADMIN);
    // CheckAccess.
    for t in &triples {
        let answer = decisions
            .check_access(CheckAccessRequest {
                user_id: t.0.clone(),
                resource_id: t.1.clone(),
                role_id: t.2.clone(),
                min_revision: rev,
            })
            .await
            .expect("check access")
            .into_inner();
        assert_eq!(answer.revision, rev, "seed {seed}: state moved on");
        assert_eq!(
            sorted(answer.assignment_ids),
            expected(t),
            "seed {seed}: CheckAccess {t:?}"
        );
        assert_eq!(
            answer.allowed,
            reference.contains_key(t),
            "seed {seed} {t:?}"
        );
    }
    // BatchCheckAccess.
    let batch = decisions
        .batch_check_access(BatchCheckAccessRequest {
            checks: triples
                .iter()
                .map(|t| AccessCheck {
                    user_id: t.0.clone(),
                    resource_id: t.1.clone(),
                    role_id: t.2.clone(),
                })
                .collect(),
            min_revision: rev,
        })
        .await
        .expect("batch check")
        .into_inner();
    assert_eq!(batch.revision, rev);
    assert_eq!(batch.results.len(), triples.len());
    for (t, result) in triples.iter().zip(batch.results) {
        assert_eq!(
            result.allowed,
            reference.contains_key(t),
            "seed {seed}: {t:?}"
        );
        assert_eq!(
            sorted(result.assignment_ids),
            expected(t),
            "seed {seed}: {t:?}"
        );
    }
    // ListEffectiveGrants.
    let mut from_grants: BTreeMap<Triple, BTreeSet<String>> = BTreeMap::new();
    for user in &users {
        let answer = decisions
            .list_effective_grants(ListEffectiveGrantsRequest {
                user_id: user.clone(),
                min_revision: rev,
            })
            .await
            .expect("effective grants")
            .into_inner();
        assert_eq!(answer.revision, rev);
        let keys: Vec<_> = answer
            .grants
            .iter()
            .map(|g| (g.resource_id.clone(), g.role_id.clone()))
            .collect();
        let mut ordered = keys.clone();
        ordered.sort();
        ordered.dedup();
        assert_eq!(keys, ordered, "grants not ordered by (resource, role)");
        for grant in answer.grants {
            assert!(!grant.sources.is_empty(), "{grant:?}");
            for source in grant.sources {
                assert!(
                    packages[&source.access_package_id]
                        .contains(&(grant.resource_id.clone(), grant.role_id.clone())),
                    "seed {seed}: source {source:?} does not give {}/{}",
                    grant.resource_id,
                    grant.role_id
                );
                from_grants
                    .entry((
                        user.clone(),
                        grant.resource_id.clone(),
                        grant.role_id.clone(),
                    ))
                    .or_default()
                    .insert(source.assignment_id);
            }
        }
    }
    assert_eq!(from_grants, reference, "seed {seed}: ListEffectiveGrants");
    // WhoHasAccess by package, by resource, by resource and role (paged).
    let who = |target: who_has_access_request::Target, role: &str| {
        let client = server.decisions(ADMIN);
        let role = role.to_string();
        async move {
            let holders = pages(|page_token| {
                let mut client = client.clone();
                let request = WhoHasAccessRequest {
                    target: Some(target.clone()),
                    role_id: role.clone(),
                    page_size: 2,
                    page_token,
                    min_revision: rev,
                };
                async move {
                    let page = client.who_has_access(request).await?.into_inner();
                    assert_eq!(page.revision, rev);
                    Ok((page.holders, page.next_page_token))
                }
            })
            .await
            .concat();
            let users: Vec<_> = holders.iter().map(|h| h.user_id.clone()).collect();
            let mut ordered = users.clone();
            ordered.sort();
            ordered.dedup();
            assert_eq!(users, ordered, "holders not ordered by user id");
            holders
                .into_iter()
                .map(|h| (h.user_id, h.assignment_ids.into_iter().collect()))
                .collect::<BTreeMap<String, BTreeSet<String>>>()
        }
    };
    for pkg in packages.keys() {
        let holders = who(
            who_has_access_request::Target::AccessPackageId(pkg.clone()),
            "",
        )
        .await;
        assert_eq!(
            holders,
            by_package.get(pkg).cloned().unwrap_or_default(),
            "seed {seed}: WhoHasAccess package {pkg}"
        );
    }
    for res in &resources {
        for role in ["", ROLES[0], ROLES[1]] {
            let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for ((u, r, ro), ids) in &reference {
                if r == res && (role.is_empty() || ro == role) {
                    wanted.entry(u.clone()).or_default().extend(ids.clone());
                }
            }
            let holders = who(
                who_has_access_request::Target::ResourceId(res.clone()),
                role,
            )
            .await;
            assert_eq!(
                holders, wanted,
                "seed {seed}: WhoHasAccess resource {res} role {role:?}"
            );
        }
    }
    // A replay of the whole history, folded.
    let replayed = fold(&watch_until(&server, 0, rev).await);
    let held: BTreeSet<Triple> = reference.keys().cloned().collect();
    assert_eq!(replayed, held, "seed {seed}: WatchGrants replay from 0");
    assert_eq!(revision(&server).await, rev, "seed {seed}: state moved on");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_asking_agrees_with_the_assignments() {
    for seed in 1..=6u64 {
        consistency_case(seed * 7919).await;
    }
}

// ---------------------------------------------------------------- watching

/// Users `a`..`h`, packages `p` (r0) and `q` (r0, r1), self-service
/// policies `p-pol` and `q-pol` lasting 30 days.
async fn watch_world(server: &TestServer) {
    for user in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        server.add_member_user(user).await;
    }
    server.add_catalog("cat", false).await;
    server.add_resource("r0", "cat", "group").await;
    server.add_resource("r1", "cat", "group").await;
    server.add_package("p", "cat", &["r0"]).await;
    server.add_package("q", "cat", &["r0", "r1"]).await;
    for pkg in ["p", "q"] {
        server
            .add_policy(policy(
                &format!("{pkg}-pol"),
                pkg,
                AllowedTargetScope::AllMemberUsers,
                after(days(30)),
            ))
            .await;
    }
}

#[tokio::test]
async fn a_resumed_watch_loses_and_repeats_nothing() {
    let server = TestServer::start_with_settings(|s| s.watch_checkpoint_ms = 20).await;
    watch_world(&server).await;
    add(&server, "a", "p-pol").await;
    add(&server, "b", "p-pol").await;
    let a_q = add(&server, "a", "q-pol").await;

    let mut stream = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = stream.next().await.unwrap().unwrap();
        if !message.checkpoint {
            seen.push(message);
        }
    }
    drop(stream);
    let last = seen.last().unwrap().revision;

    add(&server, "c", "q-pol").await;
    remove(&server, "a", &a_q.assignment_id).await;
    add(&server, "d", "p-pol").await;
    server.create_group("unrelated").await;
    let rev = revision(&server).await;

    let resumed = watch_until(&server, last, rev).await;
    assert!(resumed.iter().all(|m| m.revision > last), "{resumed:?}");
    let whole = [seen, resumed].concat();
    let fresh = watch_until(&server, 0, rev).await;
    assert_eq!(whole, fresh);
    // a's q assignment came and went: a keeps r0 through p, loses r1.
    let removal = fresh.iter().rev().nth(1).unwrap();
    assert_eq!(
        removal.events,
        vec![GrantEvent {
            kind: grant_event::Kind::Removed as i32,
            user_id: "a".into(),
            resource_id: "r1".into(),
            role_id: "member".into(),
        }]
    );
    let folded = fold(&fresh);
    let t = |u: &str, r: &str| (u.to_string(), r.to_string(), "member".to_string());
    assert_eq!(
        folded,
        BTreeSet::from([
            t("a", "r0"),
            t("b", "r0"),
            t("c", "r0"),
            t("c", "r1"),
            t("d", "r0")
        ])
    );
}

#[tokio::test]
async fn checkpoints_arrive_while_idle_and_never_precede_an_event() {
    let server = TestServer::start_with_settings(|s| s.watch_checkpoint_ms = 20).await;
    watch_world(&server).await;
    add(&server, "a", "p-pol").await;
    let mut stream = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("a message within 2 s")
            .unwrap()
            .unwrap()
    };
    // Idle: checkpoints keep coming, and reach the applied revision.
    let idle_rev = revision(&server).await;
    let mut checkpoints = 0;
    while checkpoints < 3 {
        let m = next().await;
        checkpoints += m.checkpoint as usize;
        messages.push(m);
    }
    assert!(
        messages
            .iter()
            .any(|m| m.checkpoint && m.revision == idle_rev),
        "no checkpoint at the applied revision {idle_rev}: {messages:?}"
    );
    // A write without grant changes moves the checkpoints on too.
    server.create_group("unrelated").await;
    let group_rev = revision(&server).await;
    loop {
        let m = next().await;
        let done = m.checkpoint && m.revision >= group_rev;
        messages.push(m);
        if done {
            break;
        }
    }
    // Changes interleaved with checkpoints.
    for user in ["b", "c", "d"] {
        add(&server, user, "q-pol").await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let rev = revision(&server).await;
    loop {
        let m = next().await;
        let done = m.checkpoint && m.revision >= rev;
        messages.push(m);
        if done {
            break;
        }
    }
    let events: Vec<u64> = messages
        .iter()
        .filter(|m| !m.checkpoint)
        .map(|m| m.revision)
        .collect();
    assert_eq!(events.len(), 4, "{messages:?}");
    for (i, m) in messages.iter().enumerate() {
        if !m.checkpoint {
            continue;
        }
        assert!(m.events.is_empty(), "{m:?}");
        for (j, other) in messages.iter().enumerate() {
            if other.checkpoint {
                if j < i {
                    assert!(other.revision <= m.revision, "checkpoints went back");
                }
                continue;
            }
            if j < i {
                assert!(other.revision <= m.revision, "{messages:?}");
            } else {
                assert!(other.revision > m.revision, "{messages:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_watch_past_retention_is_out_of_range_and_resyncs() {
    let server = TestServer::start_with_settings(|s| {
        s.watch_checkpoint_ms = 20;
        s.watch_retention = 5;
    })
    .await;
    watch_world(&server).await;
    for user in ["a", "b", "c", "d", "e", "f", "g"] {
        add(&server, user, "p-pol").await;
    }
    let status = expect_code(
        server
            .decisions(ADMIN)
            .watch_grants(WatchGrantsRequest { from_revision: 0 })
            .await,
        Code::OutOfRange,
    );
    assert!(
        status.message().contains("ListEffectiveGrants"),
        "{status:?}"
    );

    // The documented resync: read the state, resume from its revision.
    let grants = server
        .decisions(ADMIN)
        .list_effective_grants(ListEffectiveGrantsRequest {
            user_id: "a".into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grants.grants.len(), 1);
    let mut stream = server
        .decisions(ADMIN)
        .watch_grants(WatchGrantsRequest {
            from_revision: grants.revision,
        })
        .await
        .expect("resume from the resync revision")
        .into_inner();
    let h = add(&server, "h", "q-pol").await;
    let revision_of_h = h.info.unwrap().revision;
    let message = loop {
        let m = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        if !m.checkpoint {
            break m;
        }
        assert!(m.revision < revision_of_h, "checkpoint {m:?} skipped h");
    };
    assert_eq!(message.revision, revision_of_h);
    let users: BTreeSet<_> = message.events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(users, BTreeSet::from(["h"]));
    assert_eq!(message.events.len(), 2);
}

// ---------------------------------------------------------------- consistency tokens

#[tokio::test]
async fn a_writes_revision_is_answered_at_once_and_a_future_one_is_aborted() {
    let server = TestServer::start().await;
    watch_world(&server).await;
    let request = add(&server, "a", "q-pol").await;
    let written = request.info.unwrap().revision;
    let started = Instant::now();
    let answer = server
        .decisions("a")
        .check_access(CheckAccessRequest {
            user_id: "a".into(),
            resource_id: "r1".into(),
            role_id: "member".into(),
            min_revision: written,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(answer.allowed);
    assert_eq!(answer.assignment_ids, vec![request.assignment_id.clone()]);
    assert!(answer.revision >= written);
    let grants = server
        .decisions("a")
        .list_effective_grants(ListEffectiveGrantsRequest {
            user_id: "a".into(),
            min_revision: written,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grants.grants.len(), 2);

    let started = Instant::now();
    let status = expect_code(
        server
            .decisions("a")
            .check_access(CheckAccessRequest {
                user_id: "a".into(),
                resource_id: "r1".into(),
                role_id: "member".into(),
                min_revision: written + 1_000_000,
            })
            .await,
        Code::Aborted,
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "waited {waited:?}: {status:?}"
    );
    expect_code(
        server
            .decisions(ADMIN)
            .who_has_access(WhoHasAccessRequest {
                target: Some(who_has_access_request::Target::AccessPackageId("q".into())),
                min_revision: written + 1_000_000,
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );
}

// ---------------------------------------------------------------- eligibility

#[tokio::test]
async fn requestable_packages_and_eligibility_explain_the_policies() {
    let server = TestServer::start().await;
    for user in ["alice", "bob", "carol"] {
        server.add_member_user(user).await;
    }
    server.add_group("sales", &["alice"]).await;
    server.add_catalog("cat", false).await;
    server.add_resource("r0", "cat", "group").await;
    server.add_package("open", "cat", &["r0"]).await;
    server.add_package("gated", "cat", &["r0"]).await;
    server.add_package("excl", "cat", &["r0"]).await;
    server.add_package("ext", "cat", &["r0"]).await;
    let mut hidden = package("cat", "HIDDEN", &[("r0", "member")]);
    hidden.hidden = true;
    server.create_package("hidden", hidden).await;
    // "open": anyone; with approval, justification and a question.
    let mut open = policy(
        "open-pol",
        "open",
        AllowedTargetScope::AllMemberUsers,
        after(days(7)),
    );
    open.approval_settings = Some(approval(vec![stage(vec![user_approver("bob")])], false));
    open.requestor_settings
        .as_mut()
        .unwrap()
        .justification_required = true;
    open.questions = vec![Question {
        id: "why".into(),
        text: "Why?".into(),
        required: true,
        kind: Some(question::Kind::TextInput(TextQuestion { max_length: 100 })),
    }];
    server.add_policy(open).await;
    // "gated": only bob, or the sales group.
    let mut gated = policy(
        "gated-pol",
        "gated",
        AllowedTargetScope::SpecificDirectorySubjects,
        after(days(1)),
    );
    gated.specific_allowed_targets = Some(SubjectSet {
        user_ids: vec!["bob".into()],
        group_ids: vec!["sales".into()],
        ..Default::default()
    });
    server.add_policy(gated).await;
    server
        .add_policy(policy(
            "hidden-pol",
            "hidden",
            AllowedTargetScope::AllMemberUsers,
            after(days(1)),
        ))
        .await;
    server
        .add_policy(policy(
            "ext-pol",
            "ext",
            AllowedTargetScope::AllExternalUsers,
            after(days(1)),
        ))
        .await;
    // "excl" cannot be held with "open".
    let mut excl = server
        .packages(ADMIN)
        .get_access_package(GetAccessPackageRequest { id: "excl".into() })
        .await
        .unwrap()
        .into_inner();
    excl.incompatible_package_ids = vec!["open".into()];
    server
        .packages(ADMIN)
        .update_access_package(UpdateAccessPackageRequest {
            access_package: Some(excl),
            update_mask: mask(&["incompatible_package_ids"]),
        })
        .await
        .expect("make excl incompatible with open");
    server
        .add_policy(policy(
            "excl-pol",
            "excl",
            AllowedTargetScope::AllMemberUsers,
            never(),
        ))
        .await;

    let requestable = |user: &'static str, only: Vec<&'static str>| {
        let mut client = server.decisions(user);
        async move {
            client
                .list_requestable_packages(ListRequestablePackagesRequest {
                    user_id: user.into(),
                    access_package_ids: only.into_iter().map(String::from).collect(),
                    min_revision: 0,
                })
                .await
                .expect("list requestable")
                .into_inner()
                .packages
        }
    };
    let ids = |packages: &[RequestablePackage]| -> Vec<String> {
        packages
            .iter()
            .map(|p| p.access_package_id.clone())
            .collect()
    };
    let alice = requestable("alice", vec![]).await;
    assert_eq!(ids(&alice), ["excl", "gated", "open"]);
    let bob = requestable("bob", vec![]).await;
    assert_eq!(ids(&bob), ["excl", "gated", "open"]);
    let carol = requestable("carol", vec![]).await;
    assert_eq!(ids(&carol), ["excl", "open"]);
    let open = &alice[2];
    assert_eq!(open.catalog_id, "cat");
    assert_eq!(open.policies.len(), 1);
    let requirements = &open.policies[0];
    assert_eq!(requirements.assignment_policy_id, "open-pol");
    assert_eq!(requirements.approval_stages, 1);
    assert!(requirements.justification_required);
    assert_eq!(requirements.questions.len(), 1);
    assert_eq!(requirements.questions[0].id, "why");
    assert_eq!(requirements.max_duration, Some(days(7)));
    assert_eq!(requirements.end_time, None);
    let excl = &alice[0];
    assert_eq!(excl.policies[0].max_duration, None);
    assert_eq!(excl.policies[0].approval_stages, 0);
    // Hidden packages only by name; named packages only if requestable.
    let named = requestable("carol", vec!["hidden", "gated", "open"]).await;
    assert_eq!(ids(&named), ["hidden", "open"]);
    assert!(named[0].hidden);

    let explain = |user: &'static str, pkg: &'static str| {
        let mut client = server.decisions(user);
        async move {
            client
                .explain_eligibility(ExplainEligibilityRequest {
                    user_id: user.into(),
                    access_package_id: pkg.into(),
                    min_revision: 0,
                })
                .await
                .expect("explain")
                .into_inner()
        }
    };
    let yes = explain("alice", "gated").await;
    assert!(yes.allowed);
    assert_eq!(yes.policies.len(), 1);
    assert!(yes.policies[0].allowed);
    assert!(!yes.policies[0].policy_ids.is_empty(), "{yes:?}");
    assert!(yes.policies[0].reasons.is_empty());
    let no = explain("carol", "gated").await;
    assert!(!no.allowed);
    assert!(!no.policies[0].allowed);
    assert_eq!(
        no.policies[0].reasons,
        ["not listed and not in group sales"],
        "{no:?}"
    );
    let external = explain("carol", "ext").await;
    assert!(!external.allowed);
    assert!(
        external.policies[0]
            .reasons
            .contains(&"catalog cat is not externally visible".to_string()),
        "{external:?}"
    );

    // Once carol holds "open" (after approval), "excl" is out of reach.
    let request = server.request_add("carol", "open-pol").await;
    assert!(request.is_err(), "justification and answer are required");
    let request = server
        .request(
            "carol",
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: "open-pol".into(),
                justification: "work".into(),
                answers: vec![Answer {
                    question_id: "why".into(),
                    values: vec!["because".into()],
                }],
                ..Default::default()
            },
        )
        .await
        .expect("carol requests open");
    assert_eq!(
        request.state(),
        RequestState::PendingApproval,
        "{request:?}"
    );
    server
        .decide("bob", &request.id, 1, true)
        .await
        .expect("bob approves");
    assert_eq!(
        server.get_request(&request.id).await.state(),
        RequestState::Delivered
    );
    let blocked = explain("carol", "excl").await;
    assert!(!blocked.allowed);
    assert_eq!(
        blocked.policies[0].reasons,
        ["holds incompatible package open"],
        "{blocked:?}"
    );
    assert!(!ids(&requestable("carol", vec![]).await).contains(&"excl".to_string()));
}

// ---------------------------------------------------------------- authorization

#[tokio::test]
async fn callers_may_ask_about_themselves_unless_trusted_with_everyone() {
    let server = TestServer::start_with_settings(|s| {
        s.auth.service_principals = vec![ServicePrincipal {
            id: "svc".into(),
            roles: vec!["decision-reader".into()],
        }]
    })
    .await;
    watch_world(&server).await;
    add(&server, "a", "p-pol").await;
    let check = |caller: &'static str, about: &'static str| {
        let mut client = server.decisions(caller);
        async move {
            client
                .check_access(CheckAccessRequest {
                    user_id: about.into(),
                    resource_id: "r0".into(),
                    role_id: "member".into(),
                    min_revision: 0,
                })
                .await
        }
    };
    assert!(check("a", "a").await.unwrap().into_inner().allowed);
    expect_code(check("b", "a").await, Code::PermissionDenied);
    assert!(check("svc", "a").await.unwrap().into_inner().allowed);
    assert!(check(ADMIN, "a").await.unwrap().into_inner().allowed);
    // The other questions about a user follow the same rule.
    assert!(
        server
            .decisions("a")
            .list_effective_grants(ListEffectiveGrantsRequest {
                user_id: "a".into(),
                min_revision: 0,
            })
            .await
            .is_ok()
    );
    expect_code(
        server
            .decisions("b")
            .list_effective_grants(ListEffectiveGrantsRequest {
                user_id: "a".into(),
                min_revision: 0,
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        server
            .decisions("b")
            .explain_eligibility(ExplainEligibilityRequest {
                user_id: "a".into(),
                access_package_id: "p".into(),
                min_revision: 0,
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        server
            .decisions("b")
            .list_requestable_packages(ListRequestablePackagesRequest {
                user_id: "a".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        server
            .decisions("svc")
            .list_requestable_packages(ListRequestablePackagesRequest {
                user_id: "b".into(),
                ..Default::default()
            })
            .await
            .is_ok()
    );
    // Questions about everyone: the service principal, not a plain user.
    let who = WhoHasAccessRequest {
        target: Some(who_has_access_request::Target::AccessPackageId("p".into())),
        ..Default::default()
    };
    expect_code(
        server.decisions("b").who_has_access(who.clone()).await,
        Code::PermissionDenied,
    );
    let holders = server
        .decisions("svc")
        .who_has_access(who)
        .await
        .unwrap()
        .into_inner()
        .holders;
    assert_eq!(holders.len(), 1);
    expect_code(
        server
            .decisions("b")
            .watch_grants(WatchGrantsRequest::default())
            .await,
        Code::PermissionDenied,
    );

    // Batch sizes.
    let one = AccessCheck {
        user_id: "a".into(),
        resource_id: "r0".into(),
        role_id: "member".into(),
    };
    let batch = |n: usize| BatchCheckAccessRequest {
        checks: vec![one.clone(); n],
        min_revision: 0,
    };
    expect_invalid(
        server.decisions("svc").batch_check_access(batch(0)).await,
        &["checks"],
    );
    expect_invalid(
        server
            .decisions("svc")
            .batch_check_access(batch(1001))
            .await,
        &["checks"],
    );
    let full = server
        .decisions("svc")
        .batch_check_access(batch(1000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.results.len(), 1000);
    assert!(full.results.iter().all(|r| r.allowed));
}

// ---------------------------------------------------------------- one answer

/// Whether each way of asking "who holds what now" says `user` holds
/// `package` (which gives `resource`'s member role), by API.
async fn answers(
    server: &TestServer,
    user: &str,
    package: &str,
    resource: &str,
) -> BTreeMap<&'static str, bool> {
    let mut decisions = server.decisions(ADMIN);
    let check = AccessCheck {
        user_id: user.into(),
        resource_id: resource.into(),
        role_id: "member".into(),
    };
    let mut found = BTreeMap::new();
    let checked = decisions
        .check_access(CheckAccessRequest {
            user_id: user.into(),
            resource_id: resource.into(),
            role_id: "member".into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    found.insert("CheckAccess", checked.allowed);
    let batch = decisions
        .batch_check_access(BatchCheckAccessRequest {
            checks: vec![check],
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    found.insert("BatchCheckAccess", batch.results[0].allowed);
    let effective = decisions
        .list_effective_grants(ListEffectiveGrantsRequest {
            user_id: user.into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    found.insert(
        "ListEffectiveGrants",
        effective.grants.iter().any(|g| g.resource_id == resource),
    );
    found.insert(
        "ListUserGrants",
        server
            .user_grants(user)
            .await
            .iter()
            .any(|g| g.resource_id == resource),
    );
    for (name, target) in [
        (
            "WhoHasAccess(package)",
            who_has_access_request::Target::AccessPackageId(package.into()),
        ),
        (
            "WhoHasAccess(resource)",
            who_has_access_request::Target::ResourceId(resource.into()),
        ),
    ] {
        let holders = decisions
            .who_has_access(WhoHasAccessRequest {
                target: Some(target),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .holders;
        found.insert(name, holders.iter().any(|h| h.user_id == user));
    }
    let mut reports = server.reports(ADMIN);
    let by_package = reports
        .package_access_report(PackageAccessReportRequest {
            access_package_id: package.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    found.insert(
        "PackageAccessReport",
        by_package.rows.iter().any(|r| r.user_id == user),
    );
    let by_user = reports
        .user_access_report(UserAccessReportRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    found.insert(
        "UserAccessReport",
        by_user.held.iter().any(|r| r.access_package_id == package),
    );
    found
}

#[track_caller]
fn assert_all(answers: &BTreeMap<&'static str, bool>, holds: bool, what: &str) {
    let disagreeing: Vec<_> = answers.iter().filter(|(_, h)| **h != holds).collect();
    assert!(
        disagreeing.is_empty(),
        "{what}: expected holds={holds}, but {disagreeing:?}"
    );
}

#[tokio::test]
async fn a_blocked_user_holds_nothing_until_unblocked_and_watchers_see_both() {
    let server = TestServer::start_with_settings(|s| s.watch_checkpoint_ms = 20).await;
    watch_world(&server).await;
    let held = add(&server, "a", "q-pol").await;
    add(&server, "b", "q-pol").await;
    assert_all(&answers(&server, "a", "q", "r1").await, true, "active");
    let before = revision(&server).await;

    let blocked = server.set_user_state("a", UserState::Blocked).await;
    assert_all(&answers(&server, "a", "q", "r1").await, false, "blocked");
    assert_all(&answers(&server, "b", "q", "r1").await, true, "b meanwhile");
    // The assignment stays: unblocking gives the same access back.
    let unblocked = server.set_user_state("a", UserState::Active).await;
    assert_all(&answers(&server, "a", "q", "r1").await, true, "unblocked");
    let assignments = server.user_assignments("a").await;
    assert_eq!(assignments.len(), 1);
    assert_eq!(assignments[0].id, held.assignment_id);
    assert_eq!(assignments[0].state(), AssignmentState::Delivered);

    let until = unblocked.info.as_ref().unwrap().revision;
    let messages = watch_until(&server, before, until).await;
    let grant = |added: bool, resource: &str| GrantEvent {
        kind: if added {
            grant_event::Kind::Added
        } else {
            grant_event::Kind::Removed
        } as i32,
        user_id: "a".into(),
        resource_id: resource.into(),
        role_id: "member".into(),
    };
    assert_eq!(
        messages,
        vec![
            WatchGrantsResponse {
                revision: blocked.info.unwrap().revision,
                events: vec![grant(false, "r0"), grant(false, "r1")],
                checkpoint: false,
            },
            WatchGrantsResponse {
                revision: until,
                events: vec![grant(true, "r0"), grant(true, "r1")],
                checkpoint: false,
            },
        ]
    );
}

#[tokio::test]
async fn grant_reads_agree_past_an_end_before_the_scheduler_runs() {
    // The scheduler ran once at start and does not run again in this test.
    let server = TestServer::start_with_settings(|s| s.scheduler_interval_ms = 3_600_000).await;
    watch_world(&server).await;
    server
        .add_policy(policy(
            "q-short",
            "q",
            AllowedTargetScope::AllMemberUsers,
            after(seconds(60)),
        ))
        .await;
    let short = add(&server, "a", "q-short").await;
    server.clock.advance(Duration::from_millis(59_900));
    assert_all(
        &answers(&server, "a", "q", "r1").await,
        true,
        "before the end",
    );
    server.clock.advance(Duration::from_millis(100));
    assert_all(&answers(&server, "a", "q", "r1").await, false, "at the end");
    // Nothing recorded the expiry yet: the reads applied the end themselves.
    let assignment = server.assignment(&short.assignment_id).await;
    assert_eq!(assignment.state(), AssignmentState::Delivered);
}

#[tokio::test]
async fn a_watch_from_a_revision_the_server_has_not_reached_is_out_of_range() {
    let server = TestServer::start_with_settings(|s| s.watch_checkpoint_ms = 20).await;
    watch_world(&server).await;
    add(&server, "a", "p-pol").await;
    let current = revision(&server).await;
    let status = expect_code(
        server
            .decisions(ADMIN)
            .watch_grants(WatchGrantsRequest {
                from_revision: current + 1,
            })
            .await,
        Code::OutOfRange,
    );
    assert!(
        status.message().contains(&format!("(at {current})")),
        "{status:?}"
    );
    // The current revision itself is fine: nothing is still to come.
    assert!(watch_until(&server, current, current).await.is_empty());
}
