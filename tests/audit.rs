//! The audit trail over real gRPC: every action yields exactly one event
//! with the right actor and target, the hash chain finds tampering, the
//! export and listings page and filter as documented, and a catalog reader
//! sees only their catalogs.

mod common;

use std::time::Duration;

use common::world::{after, approval, days, external, never, policy, stage, user_approver};
use common::{ADMIN, TestServer, eventually, expect_code, mask};
use entitlements::pb::*;
use tonic::Code;

use AllowedTargetScope as Scope;

const DAY: u64 = 86_400;

/// Every event, oldest first, as `caller` sees them.
async fn all_events(server: &TestServer, caller: &str, filter: AuditFilter) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .audit(caller)
            .list_audit_events(ListAuditEventsRequest {
                filter: Some(filter.clone()),
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list audit events")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// Follows the trail: each step names the events the actions since the
/// last step must have added, as (action, actor, target id).
struct Trail<'a> {
    server: &'a TestServer,
    seen: u64,
}

impl<'a> Trail<'a> {
    async fn new(server: &'a TestServer) -> Self {
        let seen = all_events(server, ADMIN, AuditFilter::default())
            .await
            .last()
            .map_or(0, |e| e.sequence);
        Self { server, seen }
    }

    /// The events added since the last step; asserts they are exactly
    /// `expected` (in any order within the step).
    async fn step(&mut self, what: &str, expected: &[(&str, &str, &str)]) -> Vec<AuditEvent> {
        self.check(what, expected, false).await
    }

    /// Like [`Trail::step`], in the order of `expected`.
    async fn in_order(&mut self, what: &str, expected: &[(&str, &str, &str)]) -> Vec<AuditEvent> {
        self.check(what, expected, true).await
    }

    async fn check(
        &mut self,
        what: &str,
        expected: &[(&str, &str, &str)],
        ordered: bool,
    ) -> Vec<AuditEvent> {
        // Timed work lands a moment after the clock moves: wait for it.
        let events = eventually(what, || async {
            let events: Vec<AuditEvent> = all_events(self.server, ADMIN, AuditFilter::default())
                .await
                .into_iter()
                .filter(|e| e.sequence > self.seen)
                .collect();
            (events.len() >= expected.len()).then_some(events)
        })
        .await;
        let mut got: Vec<(String, String, String)> = events
            .iter()
            .map(|e| (e.action.clone(), e.actor.clone(), e.target_id.clone()))
            .collect();
        let mut want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        if !ordered {
            got.sort();
            want.sort();
        }
        assert_eq!(got, want, "{what}");
        for event in &events {
            assert!(!event.request_id.is_empty(), "{what}: {event:?}");
            assert_eq!(event.hash.len(), 32, "{what}");
        }
        self.seen = events.last().map_or(self.seen, |e| e.sequence);
        events
    }
}

fn advance_days(server: &TestServer, n: u64) {
    server.clock.advance(Duration::from_secs(n * DAY));
}

async fn verify(server: &TestServer) -> VerifyAuditLogResponse {
    server
        .audit(ADMIN)
        .verify_audit_log(VerifyAuditLogRequest {})
        .await
        .expect("verify")
        .into_inner()
}

fn user_remove(assignment: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: RequestType::UserRemove as i32,
        assignment_id: assignment.into(),
        ..Default::default()
    }
}

fn admin_remove(assignment: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: RequestType::AdminRemove as i32,
        assignment_id: assignment.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_action_records_exactly_one_event_with_its_actor_and_target() {
    let server = TestServer::start().await;
    let s = &server;
    let mut trail = Trail::new(s).await;

    // The directory.
    s.add_member_user("alice").await;
    trail
        .step("create user", &[("user.created", ADMIN, "alice")])
        .await;
    s.directory(ADMIN)
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: "alice".into(),
                display_name: "Alice A.".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .unwrap();
    let events = trail
        .step("update user", &[("user.updated", ADMIN, "alice")])
        .await;
    assert_eq!(events[0].user_id, "alice");
    for user in ["bob", "carol", "dave"] {
        s.add_member_user(user).await;
    }
    trail
        .step(
            "create users",
            &[
                ("user.created", ADMIN, "bob"),
                ("user.created", ADMIN, "carol"),
                ("user.created", ADMIN, "dave"),
            ],
        )
        .await;
    s.add_group("sales", &["alice"]).await;
    trail
        .step(
            "group with a member",
            &[
                ("group.created", ADMIN, "sales"),
                ("group.member_added", ADMIN, "sales"),
            ],
        )
        .await;
    s.directory(ADMIN)
        .remove_group_member(RemoveGroupMemberRequest {
            group_id: "sales".into(),
            member: Some(remove_group_member_request::Member::UserId("alice".into())),
        })
        .await
        .unwrap();
    trail
        .step("remove member", &[("group.member_removed", ADMIN, "sales")])
        .await;

    // Catalog content and roles.
    s.add_catalog("c1", true).await;
    s.add_resource("app", "c1", "application").await;
    s.add_package("pkg", "c1", &["app"]).await;
    trail
        .step(
            "catalog content",
            &[
                ("catalog.created", ADMIN, "c1"),
                ("resource.created", ADMIN, "app"),
                ("access_package.created", ADMIN, "pkg"),
            ],
        )
        .await;
    s.add_policy(policy(
        "self",
        "pkg",
        Scope::AllMemberUsers,
        after(days(30)),
    ))
    .await;
    let events = trail
        .step("policy", &[("assignment_policy.created", ADMIN, "self")])
        .await;
    assert_eq!(
        (
            events[0].catalog_id.as_str(),
            events[0].access_package_id.as_str()
        ),
        ("c1", "pkg")
    );
    let mut approved = policy("approved", "pkg", Scope::AllMemberUsers, never());
    approved.approval_settings = Some(approval(vec![stage(vec![user_approver("bob")])], false));
    s.add_policy(approved).await;
    trail
        .step(
            "approval policy",
            &[("assignment_policy.created", ADMIN, "approved")],
        )
        .await;
    s.grant_role(AdminRole::CatalogReader, "dave", "c1").await;
    let role_target = "c1/ADMIN_ROLE_CATALOG_READER/dave";
    let events = trail
        .step(
            "grant role",
            &[("role_assignment.granted", ADMIN, role_target)],
        )
        .await;
    assert_eq!(
        (events[0].catalog_id.as_str(), events[0].user_id.as_str()),
        ("c1", "dave")
    );
    s.catalogs(ADMIN)
        .revoke_role(RevokeRoleRequest {
            role: AdminRole::CatalogReader as i32,
            principal_id: "dave".into(),
            catalog_id: "c1".into(),
        })
        .await
        .unwrap();
    trail
        .step(
            "revoke role",
            &[("role_assignment.revoked", ADMIN, role_target)],
        )
        .await;
    s.add_catalog("c9", false).await;
    s.grant_role(AdminRole::CatalogOwner, "dave", "c9").await;
    s.catalogs(ADMIN)
        .delete_catalog(DeleteCatalogRequest {
            id: "c9".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let c9_owner = "c9/ADMIN_ROLE_CATALOG_OWNER/dave";
    trail
        .step(
            "a catalog with a role holder is deleted",
            &[
                ("catalog.created", ADMIN, "c9"),
                ("role_assignment.granted", ADMIN, c9_owner),
                ("catalog.deleted", ADMIN, "c9"),
                ("role_assignment.revoked", ADMIN, c9_owner),
            ],
        )
        .await;
    s.update_settings(
        TenantSettings {
            delete_after: Some(days(30)),
            external_user_lifecycle: ExternalUserLifecycle::BlockSignInAndDelete as i32,
            ..Default::default()
        },
        &["delete_after", "external_user_lifecycle"],
    )
    .await
    .unwrap();
    trail
        .step("settings", &[("settings.updated", ADMIN, "tenant")])
        .await;

    // Self-service: delivered at once, then given back.
    let added = s.request_add("alice", "self").await.unwrap();
    let events = trail
        .step(
            "self add",
            &[
                ("request.created", "alice", &added.id),
                ("request.delivered", "alice", &added.id),
            ],
        )
        .await;
    assert!(
        events
            .iter()
            .all(|e| e.user_id == "alice" && e.catalog_id == "c1")
    );
    let removal = s
        .request("alice", user_remove(&added.assignment_id))
        .await
        .unwrap();
    trail
        .step(
            "self remove",
            &[
                ("request.created", "alice", &removal.id),
                ("assignment.removed", "alice", &added.assignment_id),
            ],
        )
        .await;

    // Approval: approved, denied, canceled, timed out.
    let pending = s.request_add("alice", "approved").await.unwrap();
    trail
        .step("ask", &[("request.created", "alice", &pending.id)])
        .await;
    s.decide("bob", &pending.id, 1, true).await.unwrap();
    let events = trail
        .step(
            "approve",
            &[
                ("request.stage_decided", "bob", &pending.id),
                ("request.delivered", "bob", &pending.id),
            ],
        )
        .await;
    assert!(events.iter().any(|e| e.outcome == "APPROVED"));
    let denied = s.request_add("carol", "approved").await.unwrap();
    s.decide("bob", &denied.id, 1, false).await.unwrap();
    trail
        .step(
            "deny",
            &[
                ("request.created", "carol", &denied.id),
                ("request.stage_decided", "bob", &denied.id),
                ("request.denied", "bob", &denied.id),
            ],
        )
        .await;
    let canceled = s.request_add("carol", "approved").await.unwrap();
    s.cancel_request("carol", &canceled.id).await.unwrap();
    trail
        .step(
            "cancel",
            &[
                ("request.created", "carol", &canceled.id),
                ("request.canceled", "carol", &canceled.id),
            ],
        )
        .await;
    let forgotten = s.request_add("carol", "approved").await.unwrap();
    trail
        .step("ask again", &[("request.created", "carol", &forgotten.id)])
        .await;
    advance_days(s, 15);
    trail
        .step(
            "time out",
            &[("request.timed_out", "system", &forgotten.id)],
        )
        .await;

    // Expiry: dave's 30-day assignment ends on its own.
    let expiring = s.request_add("dave", "self").await.unwrap();
    trail
        .step(
            "dave adds",
            &[
                ("request.created", "dave", &expiring.id),
                ("request.delivered", "dave", &expiring.id),
            ],
        )
        .await;
    advance_days(s, 31);
    trail
        .step(
            "expiry",
            &[("assignment.expired", "system", &expiring.assignment_id)],
        )
        .await;

    // A partner becomes a governed guest, loses access, is blocked, then
    // deleted.
    s.add_organization(
        "fabrikam",
        "fabrikam.example",
        ConnectedOrganizationState::Configured,
    )
    .await;
    s.add_policy(policy(
        "partners",
        "pkg",
        Scope::AllConfiguredConnectedOrganizationUsers,
        never(),
    ))
    .await;
    trail
        .step(
            "partner setup",
            &[
                ("connected_organization.created", ADMIN, "fabrikam"),
                ("assignment_policy.created", ADMIN, "partners"),
            ],
        )
        .await;
    let erin = "erin@fabrikam.example";
    let guest_add = s
        .request_external(erin, "partners", external(erin, ""))
        .await
        .unwrap();
    trail
        .step(
            "guest joins",
            &[
                ("request.created", erin, &guest_add.id),
                ("user.created", erin, erin),
                ("request.delivered", erin, &guest_add.id),
            ],
        )
        .await;
    let guest_removal = s
        .request(ADMIN, admin_remove(&guest_add.assignment_id))
        .await
        .unwrap();
    trail
        .step(
            "guest loses access",
            &[
                ("request.created", ADMIN, &guest_removal.id),
                ("assignment.removed", ADMIN, &guest_add.assignment_id),
                ("user.blocked", ADMIN, erin),
            ],
        )
        .await;
    advance_days(s, 31);
    trail
        .step("guest deleted", &[("user.deleted", "system", erin)])
        .await;

    // Deletes, including a user who still holds access (carol: bob
    // approves for "approved" and cannot be deleted while it names him).
    let held = s.request_add("carol", "self").await.unwrap();
    trail
        .step(
            "carol adds",
            &[
                ("request.created", "carol", &held.id),
                ("request.delivered", "carol", &held.id),
            ],
        )
        .await;
    s.directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: "carol".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .step(
            "delete carol",
            &[
                ("assignment.removed", ADMIN, &held.assignment_id),
                ("user.deleted", ADMIN, "carol"),
            ],
        )
        .await;
    s.directory(ADMIN)
        .delete_group(DeleteGroupRequest {
            id: "sales".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .step("delete group", &[("group.deleted", ADMIN, "sales")])
        .await;

    // Refused changes leave no trace.
    let refused = s
        .directory(ADMIN)
        .delete_group(DeleteGroupRequest {
            id: "sales".into(),
            etag: String::new(),
        })
        .await;
    expect_code(refused, Code::NotFound);
    let last = all_events(s, ADMIN, AuditFilter::default()).await;
    assert_eq!(last.last().map(|e| e.sequence), Some(trail.seen));

    let check = verify(s).await;
    assert!(check.intact, "{check:?}");
    assert_eq!(check.events_checked, trail.seen);
}

#[tokio::test]
async fn multi_event_changes_record_cause_before_effect() {
    let server = TestServer::start().await;
    let s = &server;
    for user in ["alice", "bob", "carol", "dave"] {
        s.add_member_user(user).await;
    }
    s.add_organization(
        "fabrikam",
        "fabrikam.example",
        ConnectedOrganizationState::Configured,
    )
    .await;
    s.add_catalog("c1", true).await;
    s.add_resource("app", "c1", "application").await;
    s.add_package("pkg", "c1", &["app"]).await;
    s.add_package("pkg2", "c1", &["app"]).await;
    s.add_policy(policy("self", "pkg", Scope::AllMemberUsers, never()))
        .await;
    let approved_by_bob = |id: &str, package: &str, scope: Scope, expiration: Expiration| {
        let mut approved = policy(id, package, scope, expiration);
        approved.approval_settings = Some(approval(vec![stage(vec![user_approver("bob")])], false));
        approved
    };
    s.add_policy(approved_by_bob(
        "approved",
        "pkg2",
        Scope::AllMemberUsers,
        never(),
    ))
    .await;
    s.add_policy(approved_by_bob(
        "partners",
        "pkg",
        Scope::AllConfiguredConnectedOrganizationUsers,
        after(days(10)),
    ))
    .await;
    let mut trail = Trail::new(s).await;

    // An approved request is delivered, and only then does its external
    // requestor join the directory.
    let erin = "erin@fabrikam.example";
    let asked = s
        .request_external(erin, "partners", external(erin, ""))
        .await
        .unwrap();
    trail
        .in_order("guest asks", &[("request.created", erin, &asked.id)])
        .await;
    s.decide("bob", &asked.id, 1, true).await.unwrap();
    let delivered = s.get_request(&asked.id).await;
    trail
        .in_order(
            "guest approved",
            &[
                ("request.stage_decided", "bob", &asked.id),
                ("request.delivered", "bob", &asked.id),
                ("user.created", "bob", erin),
            ],
        )
        .await;

    // The guest's only assignment expires, and then they are blocked.
    advance_days(s, 11);
    trail
        .in_order(
            "expiry blocks the guest",
            &[
                ("assignment.expired", "system", &delivered.assignment_id),
                ("user.blocked", "system", erin),
            ],
        )
        .await;

    // A request that would now be refused is denied after its approval.
    let refused = s.request_add("dave", "approved").await.unwrap();
    s.set_user_state("dave", UserState::Blocked).await;
    s.decide("bob", &refused.id, 1, true).await.unwrap();
    trail
        .in_order(
            "refused at delivery",
            &[
                ("request.created", "dave", &refused.id),
                ("user.updated", ADMIN, "dave"),
                ("request.stage_decided", "bob", &refused.id),
                ("request.denied", "bob", &refused.id),
            ],
        )
        .await;

    // Deleting a user ends their assignments and cancels their requests.
    let held = s.request_add("alice", "self").await.unwrap();
    let waiting = s.request_add("alice", "approved").await.unwrap();
    trail
        .step(
            "alice asks",
            &[
                ("request.created", "alice", &held.id),
                ("request.delivered", "alice", &held.id),
                ("request.created", "alice", &waiting.id),
            ],
        )
        .await;
    s.directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: "alice".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .in_order(
            "delete alice",
            &[
                ("user.deleted", ADMIN, "alice"),
                ("assignment.removed", ADMIN, &held.assignment_id),
                ("request.canceled", ADMIN, &waiting.id),
            ],
        )
        .await;

    // Deleting a policy cancels the requests waiting on it.
    let orphan = s.request_add("carol", "approved").await.unwrap();
    trail
        .in_order("carol asks", &[("request.created", "carol", &orphan.id)])
        .await;
    s.policies(ADMIN)
        .delete_assignment_policy(DeleteAssignmentPolicyRequest {
            id: "approved".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .in_order(
            "delete the policy",
            &[
                ("assignment_policy.deleted", ADMIN, "approved"),
                ("request.canceled", ADMIN, &orphan.id),
            ],
        )
        .await;

    // Deleting a catalog revokes its roles.
    s.add_catalog("c9", false).await;
    s.grant_role(AdminRole::CatalogOwner, "dave", "c9").await;
    trail
        .in_order(
            "catalog with an owner",
            &[
                ("catalog.created", ADMIN, "c9"),
                (
                    "role_assignment.granted",
                    ADMIN,
                    "c9/ADMIN_ROLE_CATALOG_OWNER/dave",
                ),
            ],
        )
        .await;
    s.catalogs(ADMIN)
        .delete_catalog(DeleteCatalogRequest {
            id: "c9".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .in_order(
            "delete the catalog",
            &[
                ("catalog.deleted", ADMIN, "c9"),
                (
                    "role_assignment.revoked",
                    ADMIN,
                    "c9/ADMIN_ROLE_CATALOG_OWNER/dave",
                ),
            ],
        )
        .await;

    // A governed guest who gives up their last assignment is blocked after
    // the removal.
    s.set_user_state(erin, UserState::Active).await;
    trail
        .step("unblock erin", &[("user.updated", ADMIN, erin)])
        .await;
    let assigned = s
        .request(
            ADMIN,
            AssignmentRequest {
                r#type: RequestType::AdminAdd as i32,
                assignment_policy_id: "partners".into(),
                target_id: erin.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    trail
        .in_order(
            "erin assigned",
            &[
                ("request.created", ADMIN, &assigned.id),
                ("request.delivered", ADMIN, &assigned.id),
            ],
        )
        .await;
    let given_up = s
        .request(erin, user_remove(&assigned.assignment_id))
        .await
        .unwrap();
    trail
        .in_order(
            "erin gives up her last assignment",
            &[
                ("request.created", erin, &given_up.id),
                ("assignment.removed", erin, &assigned.assignment_id),
                ("user.blocked", erin, erin),
            ],
        )
        .await;
    let check = verify(s).await;
    assert!(check.intact, "{check:?}");
}

// ------------------------------------------------------------ tampering

#[tokio::test]
async fn verify_finds_an_altered_or_missing_event() {
    use entitlements::audit::event::sequence_key;
    use entitlements::store::records;
    use entitlements::store::{Txn, write};

    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(entitlements::shared::clock::ManualClock::new(
        common::epoch(),
    ));
    let server = TestServer::start_in(dir.path(), clock.clone()).await;
    for user in ["u1", "u2", "u3", "u4"] {
        server.add_member_user(user).await;
    }
    let intact = verify(&server).await;
    assert!(intact.intact, "{intact:?}");
    assert_eq!(intact.first_sequence, 1);
    assert!(intact.last_sequence >= 6, "{intact:?}");
    let last = intact.last_sequence;
    server.stop().await.unwrap();

    // Someone with access to the files rewrites who made event 4.
    let tamper = |change: fn(&mut dyn Txn, AuditEvent)| {
        let store = common::open_store(dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            write::<_, entitlements::error::Error, _>(store.as_ref(), move |txn| {
                let event: AuditEvent = records::require(txn, &sequence_key(4))?;
                change(txn, event);
                Ok(())
            })
            .await
            .unwrap();
        });
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            tamper(|txn, mut event| {
                event.actor = "mallory".into();
                records::save(txn, None, &event).unwrap();
            })
        });
    });
    let server = TestServer::start_in(dir.path(), clock.clone()).await;
    let broken = verify(&server).await;
    assert!(!broken.intact);
    assert_eq!(broken.broken_at_sequence, 4, "{broken:?}");
    assert!(broken.problem.contains("hash"), "{broken:?}");
    server.stop().await.unwrap();

    // Removing it instead leaves a gap.
    std::thread::scope(|s| {
        s.spawn(|| {
            tamper(|txn, event| {
                records::remove(txn, &event).unwrap();
            })
        });
    });
    let server = TestServer::start_in(dir.path(), clock).await;
    let broken = verify(&server).await;
    assert!(!broken.intact);
    assert_eq!(broken.broken_at_sequence, 4, "{broken:?}");
    assert!(broken.problem.contains("missing"), "{broken:?}");
    assert!(broken.events_checked < last);
    server.stop().await.unwrap();
}

// ------------------------------------------------------- point in time

/// Who holds `package` (or resource r1's member role) now, per the
/// decision API.
async fn holders_now(server: &TestServer, target: who_has_access_request::Target) -> Vec<String> {
    let role_id = match target {
        who_has_access_request::Target::ResourceId(_) => "member".to_string(),
        _ => String::new(),
    };
    let mut users: Vec<String> = server
        .decisions(ADMIN)
        .who_has_access(WhoHasAccessRequest {
            target: Some(target),
            role_id,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("who has access")
        .into_inner()
        .holders
        .into_iter()
        .map(|h| h.user_id)
        .collect();
    users.sort();
    users
}

async fn holders_at(
    server: &TestServer,
    at: i64,
    request: AccessAtTimeReportRequest,
) -> Vec<String> {
    let at = prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    };
    holders_at_time(server, at, request).await
}

async fn holders_at_time(
    server: &TestServer,
    at: prost_types::Timestamp,
    request: AccessAtTimeReportRequest,
) -> Vec<String> {
    let mut users = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .reports(ADMIN)
            .access_at_time_report(AccessAtTimeReportRequest {
                at: Some(at),
                page_size: 2,
                page_token,
                ..request.clone()
            })
            .await
            .expect("access at time")
            .into_inner();
        users.extend(page.rows.into_iter().map(|r| r.user_id));
        if page.next_page_token.is_empty() {
            users.sort();
            return users;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn point_in_time_answers_keep_sub_second_precision() {
    let server = TestServer::start().await;
    let s = &server;
    for user in ["early", "late"] {
        s.add_member_user(user).await;
    }
    s.add_catalog("c1", false).await;
    s.add_resource("r1", "c1", "application").await;
    s.add_package("p1", "c1", &["r1"]).await;
    s.add_policy(policy("open", "p1", Scope::AllMemberUsers, never()))
        .await;
    let t0 = s.clock_seconds();
    let at = |seconds: i64, millis: i32| prost_types::Timestamp {
        seconds: t0 + seconds,
        nanos: millis * 1_000_000,
    };
    let set_clock = |time: prost_types::Timestamp| {
        let since_epoch = Duration::new(time.seconds as u64, time.nanos as u32);
        s.clock.set(std::time::UNIX_EPOCH + since_epoch);
    };
    set_clock(at(5, 0));
    let early = s.request_add("early", "open").await.unwrap();
    set_clock(at(10, 171));
    let late = s.request_add("late", "open").await.unwrap();
    set_clock(at(12, 171));
    s.request("early", user_remove(&early.assignment_id))
        .await
        .unwrap();
    set_clock(at(20, 0));

    let package = AccessAtTimeReportRequest {
        access_package_id: "p1".into(),
        ..Default::default()
    };
    for (moment, holders) in [
        (at(10, 20), vec!["early"]),
        (at(10, 171), vec!["early", "late"]),
        (at(12, 20), vec!["early", "late"]),
        (at(12, 171), vec!["late"]),
    ] {
        assert_eq!(
            holders_at_time(s, moment, package.clone()).await,
            holders,
            "at {moment}"
        );
    }
    // The rows and the records carry the times to the nanosecond.
    let rows = s
        .reports(ADMIN)
        .access_at_time_report(AccessAtTimeReportRequest {
            at: Some(at(11, 0)),
            ..package
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let start_of = |user: &str| rows.iter().find(|r| r.user_id == user).unwrap().start_time;
    assert_eq!(start_of("late"), Some(at(10, 171)));
    assert_eq!(start_of("early"), Some(at(5, 0)));
    assert_eq!(
        s.assignment(&late.assignment_id).await.start_time,
        Some(at(10, 171))
    );
    assert_eq!(
        s.assignment(&early.assignment_id).await.ended_time,
        Some(at(12, 171))
    );
}

/// A replay of the trail from the first event: who held `package` at `at`.
fn replay(events: &[AuditEvent], package: &str, at: i64) -> Vec<String> {
    use entitlements::audit::event::{text_detail, time_detail};
    use entitlements::shared::clock::Moment;
    use std::collections::BTreeMap;
    let at = Moment::from_timestamp(prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    });
    // assignment -> (user, start, end)
    let mut held: BTreeMap<String, (String, Moment, Option<Moment>)> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.access_package_id == package)
        .filter(|e| e.time.is_some_and(|t| Moment::from_timestamp(t) <= at))
    {
        let assignment = text_detail(event, "assignment_id").to_string();
        match event.action.as_str() {
            "request.delivered" if text_detail(event, "request_type").ends_with("_ADD") => {
                let start = time_detail(event, "start").unwrap_or_default();
                let end = time_detail(event, "end");
                held.insert(assignment, (event.user_id.clone(), start, end));
            }
            "request.delivered" => {
                if let Some(entry) = held.get_mut(&assignment) {
                    entry.2 = time_detail(event, "end");
                }
            }
            "assignment.removed" | "assignment.expired" => {
                held.remove(&assignment);
            }
            _ => {}
        }
    }
    let mut users: Vec<String> = held
        .into_values()
        .filter(|(_, start, end)| *start <= at && end.is_none_or(|end| at < end))
        .map(|(user, _, _)| user)
        .collect();
    users.sort();
    users
}

fn scheduled(
    kind: RequestType,
    policy: &str,
    start: Option<i64>,
    end: Option<i64>,
) -> AssignmentRequest {
    let time = |s: i64| prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    };
    AssignmentRequest {
        r#type: kind as i32,
        assignment_policy_id: policy.into(),
        schedule: Some(Schedule {
            start_time: start.map(time),
            end_time: end.map(time),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn point_in_time_answers_equal_what_was_true_then_and_a_replay_of_the_trail() {
    let server = TestServer::start().await;
    let s = &server;
    let t0 = s.clock_seconds();
    let day = |n: i64| t0 + n * DAY as i64;
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        s.add_member_user(user).await;
    }
    s.add_catalog("c1", false).await;
    s.add_resource("r1", "c1", "application").await;
    s.add_resource("r2", "c1", "application").await;
    s.add_package("p1", "c1", &["r1"]).await;
    s.add_package("p2", "c1", &["r2"]).await;
    for (id, package) in [("open1", "p1"), ("open2", "p2")] {
        let mut open = policy(id, package, Scope::AllMemberUsers, never());
        open.requestor_settings = Some(RequestorSettings {
            allow_custom_schedule: true,
            ..common::world::self_service()
        });
        s.add_policy(open).await;
    }
    let p1 = || who_has_access_request::Target::AccessPackageId("p1".into());
    let r1 = || who_has_access_request::Target::ResourceId("r1".into());
    let mut snapshots: Vec<(i64, Vec<String>, Vec<String>)> = Vec::new();
    let mut snapshot = |at: i64, package: Vec<String>, grant: Vec<String>| {
        snapshots.push((at, package, grant));
    };

    // Day 0: u1 for good, u2 until day 3, u3 from day 2 to day 6.
    let u1 = s
        .request(
            ADMIN,
            AssignmentRequest {
                r#type: RequestType::AdminAdd as i32,
                target_id: "u1".into(),
                assignment_policy_id: "open1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.request(
        "u2",
        scheduled(RequestType::UserAdd, "open1", None, Some(day(3))),
    )
    .await
    .unwrap();
    let u3 = s
        .request(
            "u3",
            scheduled(RequestType::UserAdd, "open1", Some(day(2)), Some(day(6))),
        )
        .await
        .unwrap();
    assert_eq!(u3.state(), RequestState::Scheduled);
    snapshot(
        day(0),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 1: u4 gets p2 (not r1 yet).
    advance_days(s, 1);
    s.request_add("u4", "open2").await.unwrap();
    snapshot(
        day(1),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 2: u3's scheduled start.
    advance_days(s, 1);
    eventually("u3 starts", || async {
        holders_now(s, p1())
            .await
            .contains(&"u3".to_string())
            .then_some(())
    })
    .await;
    snapshot(
        day(2),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 3: u2's end passes; u1 sets an end of day 5.
    advance_days(s, 1);
    s.request(
        "u1",
        AssignmentRequest {
            assignment_id: u1.assignment_id.clone(),
            ..scheduled(RequestType::UserUpdate, "", None, Some(day(5)))
        },
    )
    .await
    .unwrap();
    snapshot(
        day(3),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 4: p2 also grants r1's member role; u5 joins p1 until day 8.
    advance_days(s, 1);
    s.packages(ADMIN)
        .update_access_package(UpdateAccessPackageRequest {
            access_package: Some(AccessPackage {
                id: "p2".into(),
                resource_roles: vec![
                    common::role_ref("r2", "member"),
                    common::role_ref("r1", "member"),
                ],
                ..Default::default()
            }),
            update_mask: mask(&["resource_roles"]),
        })
        .await
        .unwrap();
    let u5 = s
        .request(
            "u5",
            scheduled(RequestType::UserAdd, "open1", None, Some(day(8))),
        )
        .await
        .unwrap();
    snapshot(
        day(4),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 5: u1's new end passes; an administrator removes u5.
    advance_days(s, 1);
    s.request(ADMIN, admin_remove(&u5.assignment_id))
        .await
        .unwrap();
    snapshot(
        day(5),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );

    // Day 6: u3 ends; p2 stops granting r1.
    advance_days(s, 1);
    s.packages(ADMIN)
        .update_access_package(UpdateAccessPackageRequest {
            access_package: Some(AccessPackage {
                id: "p2".into(),
                resource_roles: vec![common::role_ref("r2", "member")],
                ..Default::default()
            }),
            update_mask: mask(&["resource_roles"]),
        })
        .await
        .unwrap();
    snapshot(
        day(6),
        holders_now(s, p1()).await,
        holders_now(s, r1()).await,
    );
    advance_days(s, 1);
    eventually("expiries run", || async {
        let expired = all_events(
            s,
            ADMIN,
            AuditFilter {
                action: "assignment.expired".into(),
                ..Default::default()
            },
        )
        .await;
        (expired.len() == 3).then_some(())
    })
    .await;

    // The story had every kind of change in it.
    let trail = all_events(s, ADMIN, AuditFilter::default()).await;
    assert_eq!(snapshots[0].1, ["u1", "u2"]);
    assert_eq!(snapshots[2].1, ["u1", "u2", "u3"]);
    assert_eq!(snapshots[4].2, ["u1", "u3", "u4", "u5"]);
    assert_eq!(snapshots[6].1, Vec::<String>::new());

    for (at, package, grant) in &snapshots {
        for moment in [*at, at + 3600] {
            let by_package = AccessAtTimeReportRequest {
                access_package_id: "p1".into(),
                ..Default::default()
            };
            let by_role = AccessAtTimeReportRequest {
                resource_id: "r1".into(),
                role_id: "member".into(),
                ..Default::default()
            };
            assert_eq!(
                &holders_at(s, moment, by_package).await,
                package,
                "p1 at {moment}"
            );
            assert_eq!(&replay(&trail, "p1", moment), package, "replay at {moment}");
            let mut grant_at = holders_at(s, moment, by_role).await;
            grant_at.dedup();
            assert_eq!(&grant_at, grant, "r1/member at {moment}");
        }
    }
    // Before anything happened nobody held anything; the future is refused.
    let before = AccessAtTimeReportRequest {
        access_package_id: "p1".into(),
        ..Default::default()
    };
    assert!(holders_at(s, t0 - 1, before.clone()).await.is_empty());
    let future = s
        .reports(ADMIN)
        .access_at_time_report(AccessAtTimeReportRequest {
            at: Some(prost_types::Timestamp {
                seconds: day(100),
                nanos: 0,
            }),
            ..before
        })
        .await;
    expect_code(future, Code::InvalidArgument);
}

// ------------------------------------------------- listings and reports

/// Pages of `page_size` through `fetch(token) -> (items, next token)`.
async fn paged<T, F, Fut>(mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await;
        pages.push(items);
        if next.is_empty() {
            return pages;
        }
        token = next;
    }
}

/// Catalogs c1 and c2, each with a package and a policy; u0..u6 hold c1's
/// package with ends a day apart, u0 also c2's.
async fn two_catalogs(server: &TestServer) {
    for n in 0..7 {
        server.add_member_user(&format!("u{n}")).await;
    }
    for catalog in ["c1", "c2"] {
        server.add_catalog(catalog, false).await;
        let resource = format!("{catalog}-app");
        server.add_resource(&resource, catalog, "application").await;
        server
            .add_package(&format!("{catalog}-pkg"), catalog, &[&resource])
            .await;
        let mut open = policy(
            &format!("{catalog}-open"),
            &format!("{catalog}-pkg"),
            Scope::AllMemberUsers,
            never(),
        );
        open.requestor_settings = Some(RequestorSettings {
            allow_custom_schedule: true,
            ..common::world::self_service()
        });
        server.add_policy(open).await;
    }
    let now = server.clock_seconds();
    for n in 0..7 {
        let end = now + (n + 1) * DAY as i64;
        server
            .request(
                &format!("u{n}"),
                scheduled(RequestType::UserAdd, "c1-open", None, Some(end)),
            )
            .await
            .unwrap();
    }
    server.request_add("u0", "c2-open").await.unwrap();
}

#[tokio::test]
async fn reports_and_listings_page_filter_and_order_correctly() {
    let server = TestServer::start().await;
    let s = &server;
    two_catalogs(s).await;

    let pages = paged(|page_token| async move {
        let page = s
            .reports(ADMIN)
            .package_access_report(PackageAccessReportRequest {
                access_package_id: "c1-pkg".into(),
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        (page.rows, page.next_page_token)
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let mut users: Vec<String> = pages.concat().into_iter().map(|r| r.user_id).collect();
    users.sort();
    assert_eq!(users, (0..7).map(|n| format!("u{n}")).collect::<Vec<_>>());
    assert!(
        pages
            .concat()
            .iter()
            .all(|r| r.assignment_policy_id == "c1-open"
                && !r.request_id.is_empty()
                && r.start_time.is_some()
                && r.end_time.is_some())
    );

    // Within 3.5 days: u0, u1, u2 end (soonest first), in pages of 2.
    let pages = paged(|page_token| async move {
        let page = s
            .reports(ADMIN)
            .expiring_assignments_report(ExpiringAssignmentsReportRequest {
                within: Some(common::world::seconds(3 * DAY as i64 + DAY as i64 / 2)),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (page.rows, page.next_page_token)
    })
    .await;
    let users: Vec<Vec<String>> = pages
        .into_iter()
        .map(|p| p.into_iter().map(|r| r.user_id).collect())
        .collect();
    assert_eq!(users, [vec!["u0", "u1"], vec!["u2"]]);
    expect_code(
        s.reports(ADMIN)
            .expiring_assignments_report(ExpiringAssignmentsReportRequest::default())
            .await,
        Code::InvalidArgument,
    );

    // What u0 holds (both catalogs) and may request; request history.
    let report = s
        .reports(ADMIN)
        .user_access_report(UserAccessReportRequest {
            user_id: "u0".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.held.len(), 1);
    assert!(!report.next_page_token.is_empty());
    let requestable: Vec<&str> = report
        .requestable
        .iter()
        .map(|p| p.access_package_id.as_str())
        .collect();
    assert_eq!(requestable, ["c1-pkg", "c2-pkg"]);
    let removal = s
        .request("u0", user_remove(&report.held[0].assignment_id))
        .await;
    removal.unwrap();
    let history = paged(|page_token| async move {
        let page = s
            .reports(ADMIN)
            .request_history_report(RequestHistoryReportRequest {
                user_id: "u0".into(),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (page.requests, page.next_page_token)
    })
    .await;
    assert_eq!(history.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let completed = history.concat();
    assert!(
        completed
            .iter()
            .all(|r| r.state() == RequestState::Delivered)
    );

    // The trail: newest first is oldest first reversed, page by page.
    let oldest_first = all_events(s, ADMIN, AuditFilter::default()).await;
    let newest_first = paged(|page_token| async move {
        let page = s
            .audit(ADMIN)
            .list_audit_events(ListAuditEventsRequest {
                order: AuditOrder::NewestFirst as i32,
                page_size: 4,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (page.events, page.next_page_token)
    })
    .await;
    assert!(newest_first.iter().all(|p| p.len() <= 4));
    let mut reversed: Vec<u64> = newest_first.concat().iter().map(|e| e.sequence).collect();
    reversed.reverse();
    let sequences: Vec<u64> = oldest_first.iter().map(|e| e.sequence).collect();
    assert_eq!(reversed, sequences);
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());

    // Filters: by action, by package and actor together, by time.
    let delivered = all_events(
        s,
        ADMIN,
        AuditFilter {
            action: "request.delivered".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(delivered.len(), 8);
    let by_u3 = all_events(
        s,
        ADMIN,
        AuditFilter {
            actor: "u3".into(),
            access_package_id: "c1-pkg".into(),
            ..Default::default()
        },
    )
    .await;
    let actions: Vec<&str> = by_u3.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["request.created", "request.delivered"]);
    let targeted = all_events(
        s,
        ADMIN,
        AuditFilter {
            target_type: "access_package".into(),
            target_id: "c2-pkg".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(targeted.len(), 1);
    let moment = |e: &AuditEvent| e.time.map(|t| (t.seconds, t.nanos));
    let later = oldest_first[10].time;
    let since = all_events(
        s,
        ADMIN,
        AuditFilter {
            start_time: later,
            ..Default::default()
        },
    )
    .await;
    let later_key = later.map(|t| (t.seconds, t.nanos));
    assert!(since.iter().all(|e| moment(e) >= later_key));
    assert_eq!(
        since.len(),
        oldest_first
            .iter()
            .filter(|e| moment(e) >= later_key)
            .count()
    );
    let bad = s
        .audit(ADMIN)
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                target_id: "c2-pkg".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    expect_code(bad, Code::InvalidArgument);
}

#[tokio::test]
async fn a_catalog_reader_sees_only_their_catalogs_events_and_reports() {
    let server = TestServer::start().await;
    let s = &server;
    two_catalogs(s).await;
    s.add_member_user("reader").await;
    s.grant_role(AdminRole::CatalogReader, "reader", "c1").await;

    let seen = all_events(s, "reader", AuditFilter::default()).await;
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e.catalog_id == "c1"), "{seen:?}");
    let everything = all_events(s, ADMIN, AuditFilter::default()).await;
    assert_eq!(
        seen.len(),
        everything.iter().filter(|e| e.catalog_id == "c1").count()
    );
    assert!(all_events(s, "u1", AuditFilter::default()).await.is_empty());

    let report = s
        .reports("reader")
        .package_access_report(PackageAccessReportRequest {
            access_package_id: "c1-pkg".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.rows.len(), 7);
    let other = s
        .reports("reader")
        .package_access_report(PackageAccessReportRequest {
            access_package_id: "c2-pkg".into(),
            ..Default::default()
        })
        .await;
    expect_code(other, Code::PermissionDenied);
    let u0 = s
        .reports("reader")
        .user_access_report(UserAccessReportRequest {
            user_id: "u0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(u0.held.iter().all(|r| r.catalog_id == "c1"));
    assert_eq!(u0.held.len(), 1);
    assert!(u0.requestable.iter().all(|p| p.catalog_id == "c1"));
    expect_code(
        s.audit("reader")
            .verify_audit_log(VerifyAuditLogRequest {})
            .await,
        Code::PermissionDenied,
    );
}

// --------------------------------------------------- export and retention

/// Runs `entitlements audit export` with `args` (off the test's runtime,
/// which serves the server).
async fn export(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_entitlements"))
            .args(["audit", "export"])
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_export_subcommand_writes_every_visible_event_as_a_json_line() {
    let server = TestServer::start().await;
    two_catalogs(&server).await;
    let expected = all_events(&server, ADMIN, AuditFilter::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let address = format!("http://{}", server.address);
    let output = export(&[
        "--server",
        &address,
        "--dev-user",
        ADMIN,
        "--output",
        file.to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len());
    for (line, event) in lines.iter().zip(&expected) {
        assert_eq!(line["sequence"], event.sequence);
        assert_eq!(line["action"], event.action.as_str());
        assert_eq!(line["hash"], hex::encode(&event.hash));
    }

    // Filtered, to standard output.
    let output = export(&[
        "--server",
        &address,
        "--dev-user",
        ADMIN,
        "--action",
        "request.delivered",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 8);
}

#[tokio::test]
async fn retention_prunes_old_events_but_keeps_the_chain_and_completed_requests() {
    let server = TestServer::start_with_settings(|s| s.audit_retention_days = 10).await;
    let s = &server;
    two_catalogs(s).await;
    let before = all_events(s, ADMIN, AuditFilter::default()).await;
    let early = s.clock_seconds();
    advance_days(s, 11);
    s.add_member_user("late").await;
    let pruned = eventually("old events pruned", || async {
        let events = all_events(s, ADMIN, AuditFilter::default()).await;
        (events.first().is_some_and(|e| e.sequence > 1)).then_some(events)
    })
    .await;
    assert!(
        pruned
            .iter()
            .all(|e| e.sequence > before.last().unwrap().sequence)
    );
    assert!(pruned.iter().any(|e| e.action == "audit_log.pruned"));
    let check = verify(s).await;
    assert!(check.intact, "{check:?}");
    assert_eq!(check.first_sequence, before.last().unwrap().sequence + 1);

    // Moments whose later history was pruned are out of range; requests
    // stay on record.
    let gone = s
        .reports(ADMIN)
        .access_at_time_report(AccessAtTimeReportRequest {
            at: Some(prost_types::Timestamp {
                seconds: early - 1,
                nanos: 0,
            }),
            access_package_id: "c1-pkg".into(),
            ..Default::default()
        })
        .await;
    expect_code(gone, Code::OutOfRange);
    let history = s
        .reports(ADMIN)
        .request_history_report(RequestHistoryReportRequest {
            access_package_id: "c1-pkg".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The seven adds, and the seven expiries of their assignments.
    assert_eq!(history.requests.len(), 14);
    assert!(
        history
            .requests
            .iter()
            .all(|r| r.state() == RequestState::Delivered)
    );
}
