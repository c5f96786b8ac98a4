//! Writes cannot be used to probe: a caller who may not see a request, an
//! assignment, a policy or a package gets one answer from every write that
//! names it, whether it exists or not and whatever state it is in, and the
//! refusal changes nothing. Those who may see it (its approvers, its
//! target, whoever may read it) still learn why a write cannot go through.

mod common;

use common::world::{after, approval, days, policy, stage, user_approver};
use common::{ADMIN, TestServer, expect_code};
use entitlements::pb::*;
use tonic::{Code, Status};

use AllowedTargetScope as Scope;

/// The id no record has.
const MISSING: &str = "no-such-id";

/// Catalog "cat" with package "pkg": policy "open" delivers at once,
/// policy "approved" waits for ann. alice requests; mallory is a plain
/// member; "outsider" manages assignments of another catalog only.
async fn world(server: &TestServer) {
    for user in ["alice", "ann", "mallory", "outsider"] {
        server.add_member_user(user).await;
    }
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    server.add_package("pkg2", "cat", &["res"]).await;
    server.add_catalog("other", false).await;
    server
        .grant_role(
            AdminRole::AccessPackageAssignmentManager,
            "outsider",
            "other",
        )
        .await;
    server
        .add_policy(policy(
            "open",
            "pkg",
            Scope::AllMemberUsers,
            after(days(30)),
        ))
        .await;
    server
        .add_policy(AssignmentPolicy {
            approval_settings: Some(approval(vec![stage(vec![user_approver("ann")])], false)),
            ..policy("approved", "pkg2", Scope::AllMemberUsers, after(days(30)))
        })
        .await;
}

/// Requests of alice in different states (pending, delivered, denied,
/// canceled), and her active and ended assignments.
struct Records {
    requests: Vec<String>,
    assignments: Vec<String>,
}

async fn records(server: &TestServer) -> Records {
    let delivered = server.request_add("alice", "open").await.unwrap();
    let removal = AssignmentRequest {
        r#type: RequestType::UserRemove as i32,
        assignment_id: delivered.assignment_id.clone(),
        ..Default::default()
    };
    server.request("alice", removal).await.unwrap();
    let active = server.request_add("alice", "open").await.unwrap();
    let denied = server.request_add("alice", "approved").await.unwrap();
    server.decide("ann", &denied.id, 1, false).await.unwrap();
    let canceled = server.request_add("alice", "approved").await.unwrap();
    server.cancel_request("alice", &canceled.id).await.unwrap();
    let pending = server.request_add("alice", "approved").await.unwrap();
    Records {
        requests: vec![
            pending.id,
            delivered.id.clone(),
            denied.id,
            canceled.id,
            MISSING.into(),
        ],
        assignments: vec![
            active.assignment_id,
            delivered.assignment_id,
            MISSING.into(),
        ],
    }
}

/// What a caller sees of a refusal: code, message and details.
fn answer<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String, Vec<u8>) {
    let status = result.expect_err("refused");
    (
        status.code(),
        status.message().to_string(),
        status.details().to_vec(),
    )
}

/// Asserts that every answer is the same PERMISSION_DENIED.
#[track_caller]
fn one_answer(what: &str, answers: Vec<(Code, String, Vec<u8>)>) {
    assert_eq!(answers[0].0, Code::PermissionDenied, "{what}: {answers:?}");
    for other in &answers[1..] {
        assert_eq!(other, &answers[0], "{what}: {answers:?}");
    }
}

#[tokio::test]
async fn approving_denying_or_canceling_a_request_one_may_not_see_tells_nothing() {
    let server = TestServer::start().await;
    world(&server).await;
    let records = records(&server).await;
    let mark = server.write_mark().await;
    for stranger in ["mallory", "outsider"] {
        for approve in [true, false] {
            let mut answers = Vec::new();
            for id in &records.requests {
                answers.push(answer(server.decide(stranger, id, 1, approve).await));
            }
            one_answer(&format!("{stranger} approve={approve}"), answers);
        }
        let mut answers = Vec::new();
        for id in &records.requests {
            answers.push(answer(server.cancel_request(stranger, id).await));
        }
        one_answer(&format!("{stranger} cancels"), answers);
    }
    server.assert_no_writes_since(mark).await;

    // Who may see a request learns why a decision cannot be taken: its
    // approver hears that the one she denied is decided, its target that
    // the delivered one is no longer pending; whoever may read everything
    // learns that an id is unknown.
    let (delivered, denied) = (&records.requests[1], &records.requests[2]);
    for (knows, id) in [("ann", denied), ("alice", delivered)] {
        let refused = server.decide(knows, id, 1, true).await;
        expect_code(refused.map(tonic::Response::new), Code::FailedPrecondition);
    }
    let unknown = server.decide(ADMIN, MISSING, 1, true).await;
    expect_code(unknown.map(tonic::Response::new), Code::NotFound);
}

/// A change naming `assignment` as `caller`.
async fn change(
    server: &TestServer,
    caller: &str,
    kind: RequestType,
    assignment: &str,
) -> Result<AssignmentRequest, Status> {
    let schedule =
        matches!(kind, RequestType::UserUpdate | RequestType::AdminUpdate).then(|| Schedule {
            start_time: None,
            end_time: Some(prost_types::Timestamp {
                seconds: common::epoch_seconds() + 86_400,
                nanos: 0,
            }),
        });
    let request = AssignmentRequest {
        r#type: kind as i32,
        assignment_id: assignment.into(),
        schedule,
        ..Default::default()
    };
    server.request(caller, request).await
}

#[tokio::test]
async fn requests_naming_an_assignment_or_policy_one_may_not_see_tell_nothing() {
    let server = TestServer::start().await;
    world(&server).await;
    let records = records(&server).await;
    let mark = server.write_mark().await;
    let kinds = [
        RequestType::UserUpdate,
        RequestType::UserRemove,
        RequestType::AdminUpdate,
        RequestType::AdminRemove,
    ];
    for stranger in ["mallory", "outsider"] {
        for kind in kinds {
            let mut answers = Vec::new();
            for id in &records.assignments {
                answers.push(answer(change(&server, stranger, kind, id).await));
            }
            one_answer(&format!("{stranger} {kind:?}"), answers);
        }
        let mut answers = Vec::new();
        for policy in ["open", "approved", MISSING] {
            let add = AssignmentRequest {
                r#type: RequestType::AdminAdd as i32,
                target_id: "alice".into(),
                assignment_policy_id: policy.into(),
                ..Default::default()
            };
            answers.push(answer(server.request(stranger, add).await));
        }
        one_answer(&format!("{stranger} ADMIN_ADD"), answers);
    }
    server.assert_no_writes_since(mark).await;

    // Who may act everywhere learns that an id is unknown; the holder of
    // an assignment that ended learns that it ended.
    let unknown = change(&server, ADMIN, RequestType::AdminRemove, MISSING).await;
    expect_code(unknown.map(tonic::Response::new), Code::NotFound);
    let ended = change(
        &server,
        "alice",
        RequestType::UserRemove,
        &records.assignments[1],
    )
    .await;
    expect_code(ended.map(tonic::Response::new), Code::FailedPrecondition);
}

#[tokio::test]
async fn creating_a_policy_for_a_package_one_may_not_see_tells_nothing() {
    let server = TestServer::start().await;
    world(&server).await;
    let mark = server.write_mark().await;
    let create = |caller: &'static str, package: &'static str| {
        let server = &server;
        async move {
            server
                .policies(caller)
                .create_assignment_policy(CreateAssignmentPolicyRequest {
                    assignment_policy: Some(policy(
                        "",
                        package,
                        Scope::AllMemberUsers,
                        after(days(1)),
                    )),
                    assignment_policy_id: String::new(),
                    request_id: String::new(),
                })
                .await
        }
    };
    for stranger in ["mallory", "outsider"] {
        one_answer(
            stranger,
            vec![
                answer(create(stranger, "pkg").await),
                answer(create(stranger, MISSING).await),
            ],
        );
    }
    server.assert_no_writes_since(mark).await;
    expect_code(create(ADMIN, MISSING).await, Code::NotFound);
}
