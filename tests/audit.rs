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
        got.sort();
        want.sort();
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

    // Deletes, including a user who still holds access.
    let held = s.request_add("bob", "self").await.unwrap();
    trail
        .step(
            "bob adds",
            &[
                ("request.created", "bob", &held.id),
                ("request.delivered", "bob", &held.id),
            ],
        )
        .await;
    s.directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: "bob".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    trail
        .step(
            "delete bob",
            &[
                ("assignment.removed", ADMIN, &held.assignment_id),
                ("user.deleted", ADMIN, "bob"),
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
