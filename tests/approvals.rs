//! Approval stages over gRPC: every kind of approver, multi-stage flows,
//! fallback approvers, timeouts, denials, self-approval, quorums, and
//! racing approvers.

mod common;

use std::time::Duration;

use common::world::{after, approval, days, group_approver, policy, stage, user_approver};
use common::{ADMIN, TestServer, eventually, expect_code};
use entitlements::pb::*;
use tonic::Code;

/// A catalog, a package "pkg" and members alice (the requestor), her
/// manager mary, mary's manager max, and approvers ann and bob; group
/// "approvers" holds bob through the nested group "inner". Partner
/// organization "partner" has internal sponsor ian and external sponsor
/// eve (a guest of the partner), and guest gus belongs to it.
async fn cast(server: &TestServer) {
    for user in ["max", "ann", "bob", "ian", "zed"] {
        server.add_member_user(user).await;
    }
    server
        .create_user(
            "mary",
            User {
                manager_id: "max".into(),
                ..common::user("Mary")
            },
        )
        .await;
    server
        .create_user(
            "alice",
            User {
                manager_id: "mary".into(),
                ..common::user("Alice")
            },
        )
        .await;
    server.add_group("inner", &["bob"]).await;
    server.add_group("approvers", &[]).await;
    server.nest_group("approvers", "inner").await;
    server
        .create_organization(
            "partner",
            ConnectedOrganization {
                internal_sponsor_ids: vec!["ian".into()],
                ..common::organization("Partner", "partner.example")
            },
        )
        .await;
    server.add_user("eve", UserKind::Guest, "partner").await;
    server.add_user("gus", UserKind::Guest, "partner").await;
    server
        .directory(ADMIN)
        .update_connected_organization(UpdateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                id: "partner".into(),
                external_sponsor_ids: vec!["eve".into()],
                ..Default::default()
            }),
            update_mask: common::mask(&["external_sponsor_ids"]),
        })
        .await
        .unwrap();
    server.add_catalog("cat", true).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
}

/// A policy into "pkg" for every directory user with `stages`.
async fn approval_policy(server: &TestServer, id: &str, stages: Vec<ApprovalStage>) {
    server
        .add_policy(AssignmentPolicy {
            approval_settings: Some(approval(stages, true)),
            ..policy(
                id,
                "pkg",
                AllowedTargetScope::AllDirectoryUsers,
                after(days(30)),
            )
        })
        .await;
}

/// Asserts that `caller`'s approval of `stage` is refused with `code`.
async fn refused(server: &TestServer, caller: &str, id: &str, stage: i32, code: Code) {
    let result = server.decide(caller, id, stage, true).await;
    expect_code(result.map(tonic::Response::new), code);
}

async fn get(server: &TestServer, id: &str) -> AssignmentRequest {
    server.get_request(id).await
}

#[tokio::test]
async fn each_kind_of_approver_decides_its_stage() {
    // (approver, requestor, who may decide, someone who may not)
    let rows: Vec<(approver::Approver, &str, &str, &str)> = vec![
        (user_approver("ann"), "alice", "ann", "bob"),
        (group_approver("approvers"), "alice", "bob", "ann"),
        (approver::Approver::ManagerLevel(1), "alice", "mary", "max"),
        (approver::Approver::ManagerLevel(2), "alice", "max", "mary"),
        (
            approver::Approver::InternalSponsors(true),
            "gus",
            "ian",
            "eve",
        ),
        (
            approver::Approver::ExternalSponsors(true),
            "gus",
            "eve",
            "ian",
        ),
    ];
    for (n, (kind, requestor, approver, outsider)) in rows.into_iter().enumerate() {
        let server = TestServer::start().await;
        cast(&server).await;
        approval_policy(&server, "pol", vec![stage(vec![kind.clone()])]).await;
        let request = server.request_add(requestor, "pol").await.unwrap();
        assert_eq!(request.state(), RequestState::PendingApproval, "row {n}");
        assert_eq!(
            server.pending_approvals(approver).await,
            vec![request.id.clone()],
            "row {n}: {kind:?}"
        );
        assert!(
            server.pending_approvals(outsider).await.is_empty(),
            "row {n}"
        );

        let denied = server
            .decide(outsider, &request.id, 1, true)
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "row {n}: {denied:?}");
        let done = server.decide(approver, &request.id, 1, true).await.unwrap();
        assert_eq!(done.state(), RequestState::Delivered, "row {n}");
        assert_eq!(done.approval_stages[0].state(), StageState::Approved);
        assert_eq!(done.approval_stages[0].decisions[0].approver_id, approver);
        assert!(
            server.pending_approvals(approver).await.is_empty(),
            "row {n}"
        );
        assert_eq!(
            server.assignment(&done.assignment_id).await.state(),
            AssignmentState::Delivered
        );
    }
}

#[tokio::test]
async fn three_stages_run_in_order() {
    let server = TestServer::start().await;
    cast(&server).await;
    let stages = vec![
        stage(vec![user_approver("ann")]),
        stage(vec![group_approver("approvers")]),
        stage(vec![approver::Approver::ManagerLevel(1)]),
    ];
    approval_policy(&server, "pol", stages).await;
    let id = server.request_add("alice", "pol").await.unwrap().id;

    // Only the current stage can be decided, and only by its approvers:
    // before stage 2 starts bob is nobody's approver and learns nothing
    // about the request.
    refused(&server, "bob", &id, 2, Code::PermissionDenied).await;
    assert!(server.pending_approvals("bob").await.is_empty());
    let after_first = server.decide("ann", &id, 1, true).await.unwrap();
    assert_eq!(after_first.state(), RequestState::PendingApproval);
    assert_eq!(after_first.approval_stages.len(), 2);
    refused(&server, "ann", &id, 1, Code::FailedPrecondition).await;
    assert_eq!(server.pending_approvals("bob").await, vec![id.clone()]);

    server.decide("bob", &id, 2, true).await.unwrap();
    assert_eq!(server.pending_approvals("mary").await, vec![id.clone()]);
    let done = server.decide("mary", &id, 3, true).await.unwrap();
    assert_eq!(done.state(), RequestState::Delivered);
    let states: Vec<_> = done.approval_stages.iter().map(|s| s.state()).collect();
    assert_eq!(states, vec![StageState::Approved; 3]);
    let history: Vec<_> = done.history.iter().map(|h| h.state()).collect();
    assert_eq!(
        history,
        vec![
            RequestState::Submitted,
            RequestState::PendingApproval,
            RequestState::Delivering,
            RequestState::Delivered
        ]
    );
    // Decisions on a finished request are refused, never silently accepted.
    refused(&server, "mary", &id, 3, Code::FailedPrecondition).await;
}

#[tokio::test]
async fn a_deny_in_stage_two_ends_the_request() {
    let server = TestServer::start().await;
    cast(&server).await;
    approval_policy(
        &server,
        "pol",
        vec![
            stage(vec![user_approver("ann")]),
            stage(vec![user_approver("bob")]),
        ],
    )
    .await;
    let id = server.request_add("alice", "pol").await.unwrap().id;
    server.decide("ann", &id, 1, true).await.unwrap();
    let denied = server.decide("bob", &id, 2, false).await.unwrap();
    assert_eq!(denied.state(), RequestState::Denied);
    assert_eq!(denied.approval_stages[1].state(), StageState::Denied);
    assert!(denied.assignment_id.is_empty());
    assert!(server.grants("alice").await.is_empty());
    refused(&server, "bob", &id, 2, Code::FailedPrecondition).await;
    // A denied request no longer blocks asking again.
    assert_eq!(
        server.request_add("alice", "pol").await.unwrap().state(),
        RequestState::PendingApproval
    );
}

#[tokio::test]
async fn fallback_approvers_decide_when_the_primaries_resolve_to_nobody() {
    let server = TestServer::start().await;
    cast(&server).await;
    let mut first = stage(vec![approver::Approver::ManagerLevel(1)]);
    first.fallback_approvers = vec![Approver {
        approver: Some(user_approver("zed")),
    }];
    approval_policy(&server, "pol", vec![first]).await;

    // ann has no manager: the fallback decides.
    let id = server.request_add("ann", "pol").await.unwrap().id;
    let request = get(&server, &id).await;
    assert!(request.approval_stages[0].fallback);
    assert_eq!(server.pending_approvals("zed").await, vec![id.clone()]);
    assert_eq!(
        server.decide("zed", &id, 1, true).await.unwrap().state(),
        RequestState::Delivered
    );

    // alice has a manager: the fallback may not decide.
    let id = server.request_add("alice", "pol").await.unwrap().id;
    assert!(!get(&server, &id).await.approval_stages[0].fallback);
    assert!(server.pending_approvals("zed").await.is_empty());
    refused(&server, "zed", &id, 1, Code::PermissionDenied).await;
    server.decide("mary", &id, 1, true).await.unwrap();
}

#[tokio::test]
async fn nobody_approves_their_own_request() {
    let server = TestServer::start().await;
    cast(&server).await;
    let mut only_self = stage(vec![user_approver("ann"), user_approver("alice")]);
    only_self.approvals_required = 1;
    approval_policy(&server, "pol", vec![only_self]).await;
    let id = server.request_add("alice", "pol").await.unwrap().id;
    assert!(server.pending_approvals("alice").await.is_empty());
    let ids = common::denied(server.decide("alice", &id, 1, true).await);
    assert_eq!(ids, vec!["invariant/no-self-approval"]);
    assert_eq!(
        get(&server, &id).await.state(),
        RequestState::PendingApproval
    );

    // When the target is the only primary approver, the fallback decides.
    let mut self_only = stage(vec![user_approver("bob")]);
    self_only.fallback_approvers = vec![Approver {
        approver: Some(user_approver("zed")),
    }];
    approval_policy(&server, "pol-bob", vec![self_only]).await;
    let id = server.request_add("bob", "pol-bob").await.unwrap().id;
    assert!(get(&server, &id).await.approval_stages[0].fallback);
    assert_eq!(server.pending_approvals("zed").await, vec![id]);
}

#[tokio::test]
async fn a_stage_times_out_with_the_manual_clock() {
    let server = TestServer::start().await;
    cast(&server).await;
    let mut timed = stage(vec![user_approver("ann")]);
    timed.decision_timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    approval_policy(&server, "pol", vec![timed]).await;
    let id = server.request_add("alice", "pol").await.unwrap().id;
    assert_eq!(
        get(&server, &id).await.approval_stages[0]
            .due_time
            .unwrap()
            .seconds,
        common::epoch_seconds() + 3600
    );

    server.clock.advance(Duration::from_secs(3599));
    server.run_due_work().await;
    assert_eq!(
        get(&server, &id).await.state(),
        RequestState::PendingApproval
    );
    server.clock.advance(Duration::from_secs(1));
    let denied = eventually("timeout", || async {
        let r = get(&server, &id).await;
        (r.state() == RequestState::Denied).then_some(r)
    })
    .await;
    assert_eq!(denied.approval_stages[0].state(), StageState::TimedOut);
    assert!(
        denied
            .history
            .last()
            .unwrap()
            .reason
            .starts_with("TIMED_OUT")
    );
    assert_eq!(denied.history.last().unwrap().actor, "system");
    refused(&server, "ann", &id, 1, Code::FailedPrecondition).await;
    assert!(server.pending_approvals("ann").await.is_empty());
}

#[tokio::test]
async fn a_quorum_of_two_needs_two_distinct_approvals() {
    let server = TestServer::start().await;
    cast(&server).await;
    let mut quorum = stage(vec![
        user_approver("ann"),
        user_approver("zed"),
        group_approver("approvers"),
    ]);
    quorum.approvals_required = 2;
    quorum.approver_justification_required = true;
    approval_policy(&server, "pol", vec![quorum]).await;
    let id = server.request_add("alice", "pol").await.unwrap().id;

    let unjustified = server
        .requests("ann")
        .approve_assignment_request(DecideAssignmentRequestRequest {
            id: id.clone(),
            stage: 1,
            justification: String::new(),
        })
        .await;
    assert_eq!(
        common::violated_fields(&expect_code(unjustified, Code::InvalidArgument)),
        vec!["justification"]
    );

    let one = server.decide("ann", &id, 1, true).await.unwrap();
    assert_eq!(one.state(), RequestState::PendingApproval);
    refused(&server, "ann", &id, 1, Code::FailedPrecondition).await;
    assert!(server.pending_approvals("ann").await.is_empty());
    let two = server.decide("bob", &id, 1, true).await.unwrap();
    assert_eq!(two.state(), RequestState::Delivered);
    assert_eq!(two.approval_stages[0].decisions.len(), 2);
    refused(&server, "zed", &id, 1, Code::FailedPrecondition).await;
}

#[tokio::test]
async fn extensions_need_approval_only_when_the_policy_says_so() {
    let server = TestServer::start().await;
    cast(&server).await;
    for (id, for_update, extension_state) in [
        ("ask", true, RequestState::PendingApproval),
        ("free", false, RequestState::Delivered),
    ] {
        let package = format!("pkg-{id}");
        server.add_package(&package, "cat", &["res"]).await;
        server
            .add_policy(AssignmentPolicy {
                approval_settings: Some(approval(
                    vec![stage(vec![user_approver("ann")])],
                    for_update,
                )),
                ..policy(
                    id,
                    &package,
                    AllowedTargetScope::AllDirectoryUsers,
                    after(days(30)),
                )
            })
            .await;
        let added = server.request_add("alice", id).await.unwrap();
        assert_eq!(added.state(), RequestState::PendingApproval, "{id}");
        // Ten days of waiting: the duration counts from the approval.
        server.clock.advance(Duration::from_secs(10 * 86_400));
        let delivered = server.decide("ann", &added.id, 1, true).await.unwrap();
        let assignment = server.assignment(&delivered.assignment_id).await;
        let approved_at = server.clock_seconds();
        assert_eq!(
            assignment.end_time.unwrap().seconds,
            approved_at + 30 * 86_400,
            "{id}"
        );

        server.clock.advance(Duration::from_secs(86_400));
        let extension = server
            .request(
                "alice",
                AssignmentRequest {
                    r#type: RequestType::UserUpdate as i32,
                    assignment_id: assignment.id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(extension.state(), extension_state, "{id}");
        if extension_state == RequestState::PendingApproval {
            server.clock.advance(Duration::from_secs(86_400));
            let done = server.decide("ann", &extension.id, 1, true).await.unwrap();
            assert_eq!(done.state(), RequestState::Delivered);
        }
        let extended = server.assignment(&assignment.id).await;
        assert_eq!(
            extended.end_time.unwrap().seconds,
            server.clock_seconds() + 30 * 86_400,
            "{id}"
        );
    }
}

/// Many real clients decide one stage at the same time: exactly the needed
/// number of approvals take effect, every other call is refused, and the
/// request ends in one state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approvers_on_one_stage() {
    let server = TestServer::start().await;
    cast(&server).await;
    let approvers: Vec<String> = (0..12).map(|i| format!("approver{i}")).collect();
    for approver in &approvers {
        server.add_member_user(approver).await;
    }
    for (quorum, with_deny) in [(1, false), (3, false), (3, true)] {
        let mut racing = stage(approvers.iter().map(|a| user_approver(a)).collect());
        racing.approvals_required = quorum;
        let policy_id = format!("race-{quorum}-{with_deny}");
        approval_policy(&server, &policy_id, vec![racing]).await;
        let id = server.request_add("alice", &policy_id).await.unwrap().id;

        let mut calls = Vec::new();
        for (i, approver) in approvers.iter().enumerate() {
            let approve = !(with_deny && i % 4 == 0);
            let mut client = server.requests(approver);
            let request = DecideAssignmentRequestRequest {
                id: id.clone(),
                stage: 1,
                justification: String::new(),
            };
            calls.push(tokio::spawn(async move {
                if approve {
                    client.approve_assignment_request(request).await
                } else {
                    client.deny_assignment_request(request).await
                }
            }));
        }
        let mut accepted = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
            }
        }
        let request = get(&server, &id).await;
        let decisions = &request.approval_stages[0].decisions;
        assert_eq!(
            decisions.len(),
            accepted,
            "every accepted call is recorded, no other"
        );
        let approvals = decisions.iter().filter(|d| d.approved).count() as i32;
        match request.state() {
            RequestState::Delivered => {
                assert_eq!(approvals, quorum);
                assert!(decisions.iter().all(|d| d.approved));
            }
            RequestState::Denied => {
                assert!(with_deny);
                assert!(approvals < quorum);
                assert!(
                    !decisions.last().unwrap().approved,
                    "the deny is the last decision"
                );
            }
            other => panic!("request ended {other:?}"),
        }
        // The request is finished either way: it leaves the assignment (if
        // any) to an extension, and nothing is pending.
        if request.state() == RequestState::Delivered {
            server
                .request(
                    ADMIN,
                    AssignmentRequest {
                        r#type: RequestType::AdminRemove as i32,
                        assignment_id: request.assignment_id.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    }
}

/// A stage whose primary and fallback approvers resolve to nobody but the
/// target could never be decided: a request whose first stage that is, is
/// refused at creation, saying which stage and why, and nothing is stored.
#[tokio::test]
async fn a_request_nobody_can_approve_is_refused_at_creation() {
    let server = TestServer::start().await;
    cast(&server).await;
    server.add_group("empty", &[]).await;
    server.set_user_state("zed", UserState::Blocked).await;
    let with_fallback = |primary: approver::Approver, fallback: approver::Approver| {
        let mut only = stage(vec![primary]);
        only.fallback_approvers = vec![Approver {
            approver: Some(fallback),
        }];
        only
    };
    // (policy, its only stage, who asks, why nobody can decide)
    let cases = [
        (
            "no-manager",
            stage(vec![approver::Approver::ManagerLevel(1)]),
            "ann",
            "primary: the target has no active manager; fallback: none named",
        ),
        (
            "no-sponsor",
            stage(vec![approver::Approver::InternalSponsors(true)]),
            "ann",
            "primary: the target has no active internal sponsor",
        ),
        (
            "empty-group",
            stage(vec![group_approver("empty")]),
            "ann",
            "primary: group \"empty\" has no active member other than the target",
        ),
        (
            "blocked",
            stage(vec![user_approver("zed")]),
            "ann",
            "primary: user \"zed\" is USER_STATE_BLOCKED",
        ),
        (
            "only-the-target",
            stage(vec![user_approver("ann")]),
            "ann",
            "primary: user \"ann\" is the target",
        ),
        (
            "empty-fallback",
            with_fallback(approver::Approver::ManagerLevel(2), group_approver("empty")),
            "mary",
            "primary: the target has no active second-level manager; fallback: group \"empty\"",
        ),
    ];
    for (id, only, _, _) in &cases {
        approval_policy(&server, id, vec![only.clone()]).await;
    }
    let mark = server.write_mark().await;
    for (id, _, requestor, why) in cases {
        let status = expect_code(
            server
                .request_add(requestor, id)
                .await
                .map(tonic::Response::new),
            Code::FailedPrecondition,
        );
        let violations = {
            use tonic_types::StatusExt;
            status
                .get_details_precondition_failure()
                .unwrap()
                .violations
        };
        assert_eq!(violations.len(), 1, "{id}: {status:?}");
        assert_eq!(violations[0].r#type, "NO_APPROVERS", "{id}");
        assert_eq!(
            violations[0].subject,
            format!("assignment_policy/{id}/stage/1")
        );
        assert!(
            violations[0].description.starts_with(why),
            "{id}: {:?}",
            violations[0].description
        );
        assert!(status.message().contains("stage 1"), "{id}: {status:?}");
    }
    server.assert_no_writes_since(mark).await;
    assert!(server.user_requests("ann").await.is_empty());

    // Extensions that need approval are refused the same way.
    let mut extended = stage(vec![approver::Approver::ManagerLevel(1)]);
    extended.decision_timeout = Some(days(1));
    server
        .add_policy(AssignmentPolicy {
            approval_settings: Some(ApprovalSettings {
                approval_required_for_add: false,
                approval_required_for_update: true,
                stages: vec![extended],
            }),
            ..policy(
                "extend",
                "pkg",
                AllowedTargetScope::AllDirectoryUsers,
                after(days(30)),
            )
        })
        .await;
    let held = server.request_add("ann", "extend").await.unwrap();
    let mark = server.write_mark().await;
    let extension = AssignmentRequest {
        r#type: RequestType::UserUpdate as i32,
        assignment_id: held.assignment_id,
        ..Default::default()
    };
    let refused = server.request("ann", extension).await;
    expect_code(refused.map(tonic::Response::new), Code::FailedPrecondition);
    server.assert_no_writes_since(mark).await;
}

/// A later stage that resolves to nobody when it starts ends the request
/// DENIED at once, with the reason in its history and the audit trail,
/// instead of leaving it in nobody's inbox until the timeout.
#[tokio::test]
async fn a_later_stage_nobody_can_approve_ends_the_request_denied() {
    let server = TestServer::start().await;
    cast(&server).await;
    approval_policy(
        &server,
        "pol",
        vec![
            stage(vec![user_approver("ann")]),
            stage(vec![approver::Approver::ManagerLevel(1)]),
        ],
    )
    .await;
    let id = server.request_add("alice", "pol").await.unwrap().id;
    // alice's manager leaves after the request was made.
    server.set_user_state("mary", UserState::Blocked).await;

    let denied = server.decide("ann", &id, 1, true).await.unwrap();
    assert_eq!(denied.state(), RequestState::Denied);
    let stages: Vec<_> = denied.approval_stages.iter().map(|s| s.state()).collect();
    assert_eq!(stages, [StageState::Approved, StageState::NoApprovers]);
    assert!(denied.approval_stages[1].approver_user_ids.is_empty());
    let last = denied.history.last().unwrap();
    assert!(
        last.reason
            .starts_with("NO_APPROVERS: stage 2 of policy \"pol\""),
        "{last:?}"
    );
    assert!(last.reason.contains("no active manager"), "{last:?}");
    assert!(denied.complete_time.is_some());
    assert!(server.pending_approvals("mary").await.is_empty());
    assert!(server.grants("alice").await.is_empty());

    let events = server
        .audit(ADMIN)
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                target_type: "request".into(),
                target_id: id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "request.created",
            "request.stage_decided",
            "request.no_approvers"
        ]
    );
    assert_eq!(events[2].actor, "ann");
    assert_eq!(events[2].outcome, "REQUEST_STATE_DENIED");

    // Once alice has a manager again, she may ask again and be approved.
    server.set_user_state("mary", UserState::Active).await;
    let again = server.request_add("alice", "pol").await.unwrap().id;
    server.decide("ann", &again, 1, true).await.unwrap();
    assert_eq!(
        server
            .decide("mary", &again, 2, true)
            .await
            .unwrap()
            .state(),
        RequestState::Delivered
    );
}

/// "What must I decide?" asked by an administrator or a service principal
/// that is not a directory user: nothing, not NOT_FOUND.
#[tokio::test]
async fn pending_approvals_of_a_caller_outside_the_directory_are_empty() {
    let server = TestServer::start_with_settings(|settings| {
        settings.auth.service_principals = vec![entitlements::config::ServicePrincipal {
            id: "portal".into(),
            roles: vec!["decision-reader".into()],
        }];
    })
    .await;
    cast(&server).await;
    approval_policy(&server, "pol", vec![stage(vec![user_approver("ann")])]).await;
    let id = server.request_add("alice", "pol").await.unwrap().id;
    assert_eq!(server.pending_approvals("ann").await, vec![id]);
    for outsider in [ADMIN, "portal", "nobody-at-all"] {
        assert!(
            server.pending_approvals(outsider).await.is_empty(),
            "{outsider}"
        );
    }
}

/// An approver resolved when a stage started who is blocked, or deleted,
/// before deciding may not decide it (`invariant/approver-active`): neither
/// approve nor deny. Unblocked, they may again.
#[tokio::test]
async fn a_blocked_or_deleted_approver_cannot_decide() {
    let server = TestServer::start().await;
    cast(&server).await;
    approval_policy(&server, "by-ann", vec![stage(vec![user_approver("ann")])]).await;
    approval_policy(
        &server,
        "by-manager",
        vec![stage(vec![approver::Approver::ManagerLevel(1)])],
    )
    .await;

    let request = server.request_add("alice", "by-ann").await.unwrap();
    assert_eq!(request.state(), RequestState::PendingApproval);
    server.set_user_state("ann", UserState::Blocked).await;
    for approve in [true, false] {
        let refused = server.decide("ann", &request.id, 1, approve).await;
        assert_eq!(
            common::denied(refused),
            ["invariant/approver-active"],
            "approve: {approve}"
        );
    }
    assert_eq!(
        get(&server, &request.id).await.state(),
        RequestState::PendingApproval
    );
    server.set_user_state("ann", UserState::Active).await;
    let done = server.decide("ann", &request.id, 1, true).await.unwrap();
    assert_eq!(done.state(), RequestState::Delivered);

    // Amy's manager Mary is resolved as the approver when the stage
    // starts; Amy then gets another manager (approvers are not resolved
    // again) and Mary is deleted: she decides nothing.
    server
        .create_user(
            "amy",
            User {
                manager_id: "mary".into(),
                ..common::user("Amy")
            },
        )
        .await;
    let request = server.request_add("amy", "by-manager").await.unwrap();
    assert_eq!(request.state(), RequestState::PendingApproval);
    server
        .directory(ADMIN)
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: "amy".into(),
                manager_id: "max".into(),
                ..Default::default()
            }),
            update_mask: common::mask(&["manager_id"]),
        })
        .await
        .expect("give amy another manager");
    server
        .directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: "mary".into(),
            etag: String::new(),
        })
        .await
        .expect("delete mary");
    let refused = server.decide("mary", &request.id, 1, true).await;
    assert_eq!(common::denied(refused), ["invariant/approver-active"]);
    assert_eq!(
        get(&server, &request.id).await.state(),
        RequestState::PendingApproval
    );
}
