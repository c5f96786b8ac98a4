//! Expiry and scheduled starts, driven by the manual clock: they happen on
//! time, once, leave a SYSTEM_REMOVE request behind, and survive restarts.

mod common;

use std::time::Duration;

use common::world::{after, days, policy, seconds};
use common::{ADMIN, TestServer, eventually};
use entitlements::pb::*;

async fn setup(server: &TestServer, expiration: Expiration, custom_schedule: bool) {
    server.add_member_user("alice").await;
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    let mut policy = policy("pol", "pkg", AllowedTargetScope::AllMemberUsers, expiration);
    policy
        .requestor_settings
        .as_mut()
        .unwrap()
        .allow_custom_schedule = custom_schedule;
    server.add_policy(policy).await;
}

/// Every request about `user`, oldest first.
async fn requests_of(server: &TestServer, user: &str) -> Vec<AssignmentRequest> {
    server
        .requests(ADMIN)
        .list_assignment_requests(ListAssignmentRequestsRequest {
            target_id: user.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assignment_requests
}

async fn state_of(server: &TestServer, assignment: &str) -> AssignmentState {
    server.assignment(assignment).await.state()
}

async fn wait_for(server: &TestServer, assignment: &str, state: AssignmentState) {
    eventually("assignment state", || async {
        (state_of(server, assignment).await == state).then_some(())
    })
    .await;
}

/// Runs the background work due now, so what has not happened is not due.
async fn settle(server: &TestServer) {
    server.run_due_work().await;
}

#[tokio::test]
async fn an_assignment_expires_once_when_its_duration_runs_out() {
    let server = TestServer::start().await;
    setup(&server, after(seconds(90)), false).await;
    let request = server.request_add("alice", "pol").await.unwrap();
    let id = request.assignment_id.clone();

    server.clock.advance(Duration::from_secs(89));
    settle(&server).await;
    assert_eq!(state_of(&server, &id).await, AssignmentState::Delivered);

    server.clock.advance(Duration::from_secs(1));
    wait_for(&server, &id, AssignmentState::Expired).await;
    let assignment = server.assignment(&id).await;
    assert_eq!(assignment.end_reason(), EndReason::Expired);
    assert_eq!(
        assignment.ended_time.unwrap().seconds,
        assignment.end_time.unwrap().seconds
    );

    // Exactly one SYSTEM_REMOVE, by the service, delivered; even after more
    // rounds of background work.
    server.clock.advance(Duration::from_secs(3600));
    settle(&server).await;
    let removals: Vec<_> = requests_of(&server, "alice")
        .await
        .into_iter()
        .filter(|r| r.r#type() == RequestType::SystemRemove)
        .collect();
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0].state(), RequestState::Delivered);
    assert_eq!(removals[0].requestor_id, "system");
    assert_eq!(removals[0].assignment_id, id);
    assert!(server.grants("alice").await.is_empty());
}

#[tokio::test]
async fn expiry_fires_after_a_restart_between_scheduling_and_expiry() {
    let server = TestServer::start().await;
    setup(&server, after(days(7)), false).await;
    let id = server
        .request_add("alice", "pol")
        .await
        .unwrap()
        .assignment_id;

    let server = server.restart().await;
    assert_eq!(state_of(&server, &id).await, AssignmentState::Delivered);
    server.clock.advance(Duration::from_secs(7 * 86_400));
    wait_for(&server, &id, AssignmentState::Expired).await;

    // And the removal is not repeated by the next process either.
    let server = server.restart().await;
    settle(&server).await;
    let removals = requests_of(&server, "alice")
        .await
        .into_iter()
        .filter(|r| r.r#type() == RequestType::SystemRemove)
        .count();
    assert_eq!(removals, 1);
}

#[tokio::test]
async fn a_scheduled_request_starts_on_time_across_a_restart_and_then_expires() {
    let server = TestServer::start().await;
    setup(&server, after(days(1)), true).await;
    let start = common::epoch() + Duration::from_secs(3600);
    let request = server
        .request(
            "alice",
            AssignmentRequest {
                r#type: RequestType::UserAdd as i32,
                assignment_policy_id: "pol".into(),
                schedule: Some(Schedule {
                    start_time: Some(start.into()),
                    end_time: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(request.state(), RequestState::Scheduled);
    assert!(request.assignment_id.is_empty());

    let server = server.restart().await;
    server.clock.advance(Duration::from_secs(3600));
    let delivered = eventually("scheduled start", || async {
        let r = server
            .requests(ADMIN)
            .get_assignment_request(GetAssignmentRequestRequest {
                id: request.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        (r.state() == RequestState::Delivered).then_some(r)
    })
    .await;
    let assignment = server.assignment(&delivered.assignment_id).await;
    assert_eq!(assignment.start_time.unwrap().seconds, start_seconds(start));
    // The policy's day counts from the start, not from the request.
    assert_eq!(
        assignment.end_time.unwrap().seconds,
        start_seconds(start) + 86_400
    );

    server.clock.advance(Duration::from_secs(86_400));
    wait_for(&server, &assignment.id, AssignmentState::Expired).await;
}

fn start_seconds(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn an_extension_moves_expiry_and_keeps_the_assignment() {
    let server = TestServer::start().await;
    setup(&server, after(days(10)), false).await;
    let id = server
        .request_add("alice", "pol")
        .await
        .unwrap()
        .assignment_id;

    server.clock.advance(Duration::from_secs(9 * 86_400));
    let extended = server
        .request(
            "alice",
            AssignmentRequest {
                r#type: RequestType::UserUpdate as i32,
                assignment_id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(extended.state(), RequestState::Delivered);
    assert_eq!(extended.assignment_id, id);

    // Day 10 passes: the old end is gone, the assignment stays.
    server.clock.advance(Duration::from_secs(2 * 86_400));
    settle(&server).await;
    assert_eq!(state_of(&server, &id).await, AssignmentState::Delivered);
    // Ten days after the extension it ends.
    server.clock.advance(Duration::from_secs(8 * 86_400));
    wait_for(&server, &id, AssignmentState::Expired).await;
}
