//! A request that waited (for approval, or for a scheduled start) is
//! decided again when it is delivered, in the transaction that delivers
//! it: separation of duties, a blocked target and the policy's scope hold
//! then as they held when the request was made. A refused delivery ends
//! DENIED with the deciding Cedar policy ids in the request's history and
//! in the audit trail; approvers see it coming in ListPendingApprovals.

mod common;

use std::time::Duration;

use common::world::{approval, never, policy, stage, user_approver};
use common::{ADMIN, TestServer, eventually};
use entitlements::pb::*;

use AllowedTargetScope as Scope;

const USER: &str = "u";
const BOSS: &str = "boss";
const BY_PACKAGE: &str = "b/incompatible/packages";
const BY_GROUP: &str = "b/incompatible/groups";

/// Packages `a` (resource ra) and `b` (resource rb), `b` incompatible with
/// package `a` and with group `g` (through the nested group `g-inner`).
/// Policies: `a-open` (members, no approval), `b-approved` (members,
/// approved by boss), `b-later` (members, own schedule, no approval).
async fn world(server: &TestServer) {
    for user in [USER, BOSS] {
        server.add_member_user(user).await;
    }
    server.add_group("g", &[]).await;
    server.add_group("g-inner", &[]).await;
    server.nest_group("g", "g-inner").await;
    server.add_catalog("c", false).await;
    server.add_resource("ra", "c", "application").await;
    server.add_resource("rb", "c", "application").await;
    server.add_package("a", "c", &["ra"]).await;
    server
        .create_package(
            "b",
            AccessPackage {
                incompatible_package_ids: vec!["a".into()],
                incompatible_group_ids: vec!["g".into()],
                ..common::package("c", "B", &[("rb", "member")])
            },
        )
        .await;
    server
        .add_policy(policy("a-open", "a", Scope::AllMemberUsers, never()))
        .await;
    let mut approved = policy("b-approved", "b", Scope::AllMemberUsers, never());
    approved.approval_settings = Some(approval(vec![stage(vec![user_approver(BOSS)])], false));
    server.add_policy(approved).await;
    let mut later = policy("b-later", "b", Scope::AllMemberUsers, never());
    later
        .requestor_settings
        .as_mut()
        .unwrap()
        .allow_custom_schedule = true;
    server.add_policy(later).await;
}

/// What makes `b` incompatible for the user while their request waits.
#[derive(Clone, Copy)]
enum Conflict {
    /// They get package `a` through a policy without approval.
    Package,
    /// An administrator adds them to `g-inner` (so they are in `g`).
    Group,
}

impl Conflict {
    async fn happen(self, server: &TestServer) {
        match self {
            Conflict::Package => {
                let a = server.request_add(USER, "a-open").await.expect("get a");
                assert_eq!(a.state(), RequestState::Delivered, "{a:?}");
            }
            Conflict::Group => {
                server
                    .add_member(
                        "g-inner",
                        add_group_member_request::Member::UserId(USER.into()),
                    )
                    .await;
            }
        }
    }

    fn policy_id(self) -> &'static str {
        match self {
            Conflict::Package => BY_PACKAGE,
            Conflict::Group => BY_GROUP,
        }
    }
}

async fn check(server: &TestServer, resource: &str) -> bool {
    server
        .decisions(ADMIN)
        .check_access(CheckAccessRequest {
            user_id: USER.into(),
            resource_id: resource.into(),
            role_id: "member".into(),
            min_revision: 0,
        })
        .await
        .expect("check access")
        .into_inner()
        .allowed
}

/// Asserts `request` ended DENIED at delivery by `policy_id`, that the
/// user holds nothing of `b`, and that the trail says so.
async fn assert_refused(server: &TestServer, request: &AssignmentRequest, policy_id: &str) {
    assert_eq!(request.state(), RequestState::Denied, "{request:?}");
    let last = request.history.last().expect("history");
    assert_eq!(last.policy_ids, [policy_id], "{last:?}");
    assert_eq!(
        last.reason,
        format!("refused at delivery: forbidden by {policy_id}")
    );
    assert!(request.assignment_id.is_empty(), "{request:?}");
    assert!(!check(server, "rb").await, "the user got b");
    assert!(
        server
            .user_assignments(USER)
            .await
            .iter()
            .all(|a| a.access_package_id != "b"),
        "an assignment of b was made"
    );
    let denied = server
        .audit(ADMIN)
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                target_type: "request".into(),
                target_id: request.id.clone(),
                action: "request.denied".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .events;
    assert_eq!(denied.len(), 1, "{denied:?}");
    let details = denied[0].details.clone().unwrap_or_default();
    let listed = |key: &str| match details.fields.get(key).and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::ListValue(list)) => list
            .values
            .into_iter()
            .filter_map(|v| match v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s),
                _ => None,
            })
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert_eq!(listed("policy_ids"), [policy_id], "{:?}", denied[0]);
}

/// The user asks for `b` with approval; `conflict` happens while it waits;
/// the approver is warned, approves, and the request ends DENIED.
async fn approved_after(conflict: Conflict) {
    let server = TestServer::start().await;
    world(&server).await;
    let pending = server
        .request_add(USER, "b-approved")
        .await
        .expect("ask for b");
    assert_eq!(pending.state(), RequestState::PendingApproval);
    let warnings = server
        .requests(BOSS)
        .list_pending_approvals(ListPendingApprovalsRequest::default())
        .await
        .expect("pending approvals")
        .into_inner()
        .refused_if_approved;
    assert!(warnings.is_empty(), "{warnings:?}");

    conflict.happen(&server).await;
    let pending_now = server
        .requests(BOSS)
        .list_pending_approvals(ListPendingApprovalsRequest::default())
        .await
        .expect("pending approvals")
        .into_inner();
    assert_eq!(pending_now.assignment_requests.len(), 1);
    let warning = &pending_now.refused_if_approved[&pending.id];
    assert_eq!(warning.policy_ids, [conflict.policy_id()], "{warning:?}");

    let approved = server
        .decide(BOSS, &pending.id, 1, true)
        .await
        .expect("the approval itself is accepted");
    assert_refused(&server, &approved, conflict.policy_id()).await;
    assert_eq!(server.get_request(&pending.id).await, approved);
}

#[tokio::test]
async fn an_approval_after_the_target_got_an_incompatible_package_is_denied_at_delivery() {
    approved_after(Conflict::Package).await;
}

#[tokio::test]
async fn an_approval_after_the_target_joined_an_incompatible_group_is_denied_at_delivery() {
    approved_after(Conflict::Group).await;
}

/// The user asks for `b` to start in an hour; `conflict` happens while it
/// is scheduled; when the start comes, the scheduler denies it.
async fn started_after(conflict: Conflict) {
    let server = TestServer::start().await;
    world(&server).await;
    use entitlements::shared::clock::Clock;
    let start = server.clock.now() + Duration::from_secs(3600);
    let scheduled = server
        .request(
            USER,
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: "b-later".into(),
                schedule: Some(Schedule {
                    start_time: Some(start.into()),
                    end_time: None,
                }),
                ..Default::default()
            },
        )
        .await
        .expect("schedule b");
    assert_eq!(scheduled.state(), RequestState::Scheduled);

    conflict.happen(&server).await;
    server.clock.advance(Duration::from_secs(3600));
    let ended = eventually("the scheduled start", || async {
        let request = server.get_request(&scheduled.id).await;
        (request.state() != RequestState::Scheduled).then_some(request)
    })
    .await;
    assert_refused(&server, &ended, conflict.policy_id()).await;
    assert_eq!(ended.history.last().unwrap().actor, "system");
}

#[tokio::test]
async fn a_scheduled_start_after_the_target_got_an_incompatible_package_is_denied() {
    started_after(Conflict::Package).await;
}

#[tokio::test]
async fn a_scheduled_start_after_the_target_joined_an_incompatible_group_is_denied() {
    started_after(Conflict::Group).await;
}

#[tokio::test]
async fn a_request_still_allowed_at_delivery_is_delivered() {
    let server = TestServer::start().await;
    world(&server).await;
    let pending = server.request_add(USER, "b-approved").await.unwrap();
    // Joining an unrelated group changes nothing.
    server.add_group("other", &[USER]).await;
    let approved = server.decide(BOSS, &pending.id, 1, true).await.unwrap();
    assert_eq!(approved.state(), RequestState::Delivered, "{approved:?}");
    assert!(check(&server, "rb").await);
}

#[tokio::test]
async fn an_approval_after_the_target_left_the_policys_scope_is_denied_at_delivery() {
    let server = TestServer::start().await;
    world(&server).await;
    server.add_group("sales", &[USER]).await;
    let mut sales_only = policy("b-sales", "b", Scope::SpecificDirectorySubjects, never());
    sales_only.specific_allowed_targets = Some(SubjectSet {
        group_ids: vec!["sales".into()],
        ..Default::default()
    });
    sales_only.approval_settings = Some(approval(vec![stage(vec![user_approver(BOSS)])], false));
    server.add_policy(sales_only).await;
    let pending = server.request_add(USER, "b-sales").await.unwrap();
    server
        .directory(ADMIN)
        .remove_group_member(RemoveGroupMemberRequest {
            group_id: "sales".into(),
            member: Some(remove_group_member_request::Member::UserId(USER.into())),
        })
        .await
        .unwrap();
    let approved = server.decide(BOSS, &pending.id, 1, true).await.unwrap();
    assert_eq!(approved.state(), RequestState::Denied, "{approved:?}");
    let last = approved.history.last().unwrap();
    assert!(last.policy_ids.is_empty(), "{last:?}");
    assert_eq!(last.reason, "refused at delivery: no policy permits it");
    assert!(!check(&server, "rb").await);
}
