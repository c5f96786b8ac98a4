//! The example of the entitlement-management overview, end to end over gRPC:
//! access package 1 holds one group and is requestable by a set of directory
//! users; access package 2 holds a group, an application and a site, with
//! one policy for directory users and one for a connected organization's
//! users. Each requestor gets exactly what their policy allows, and access
//! ends when the policy's duration runs out.

mod common;

use std::time::Duration;

use common::world::{after, days, policy};
use common::{TestServer, eventually};
use entitlements::pb::*;
use tonic::Code;

/// The grants a user should hold, sorted.
fn grants(resources: &[&str]) -> Vec<(String, String)> {
    let mut grants: Vec<_> = resources
        .iter()
        .map(|r| (r.to_string(), "member".to_string()))
        .collect();
    grants.sort();
    grants
}

async fn expect_denied(server: &TestServer, user: &str, policy: &str) {
    let status = server
        .request_add(user, policy)
        .await
        .expect_err("must be denied");
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{user} via {policy}: {status:?}"
    );
}

async fn wait_until_expired(server: &TestServer, assignment: &str) -> Assignment {
    eventually("expiry", || async {
        let a = server.assignment(assignment).await;
        (a.state() == AssignmentState::Expired).then_some(a)
    })
    .await
}

#[tokio::test]
async fn the_overview_example_runs_end_to_end() {
    let server = TestServer::start().await;
    // The directory: internal users, a group of them, and a partner.
    for user in ["alice", "bob", "carol", "dave"] {
        server.add_member_user(user).await;
    }
    server.add_group("engineering", &["bob", "carol"]).await;
    server
        .add_organization(
            "fabrikam",
            "fabrikam.example",
            ConnectedOrganizationState::Configured,
        )
        .await;
    server.add_user("fiona", UserKind::Guest, "fabrikam").await;

    // The catalog and its resources.
    server.add_catalog("project", true).await;
    server.add_resource("p1-group", "project", "group").await;
    server.add_resource("team-group", "project", "group").await;
    server
        .add_resource("crm-app", "project", "application")
        .await;
    server.add_resource("wiki-site", "project", "site").await;

    // Access package 1: one group, for a set of directory users.
    server
        .add_package("package-1", "project", &["p1-group"])
        .await;
    server
        .add_policy(AssignmentPolicy {
            specific_allowed_targets: Some(SubjectSet {
                user_ids: vec!["alice".into(), "dave".into()],
                ..Default::default()
            }),
            ..policy(
                "p1-directory",
                "package-1",
                AllowedTargetScope::SpecificDirectorySubjects,
                after(days(30)),
            )
        })
        .await;

    // Access package 2: a group, an application and a site; one policy for
    // directory users (engineering), one for the partner's users.
    server
        .add_package(
            "package-2",
            "project",
            &["team-group", "crm-app", "wiki-site"],
        )
        .await;
    server
        .add_policy(AssignmentPolicy {
            specific_allowed_targets: Some(SubjectSet {
                group_ids: vec!["engineering".into()],
                ..Default::default()
            }),
            ..policy(
                "p2-internal",
                "package-2",
                AllowedTargetScope::SpecificDirectorySubjects,
                after(days(90)),
            )
        })
        .await;
    server
        .add_policy(AssignmentPolicy {
            specific_allowed_targets: Some(SubjectSet {
                connected_organization_ids: vec!["fabrikam".into()],
                ..Default::default()
            }),
            ..policy(
                "p2-partners",
                "package-2",
                AllowedTargetScope::SpecificConnectedOrganizationUsers,
                after(days(180)),
            )
        })
        .await;

    // Each requestor gets exactly what their policy allows.
    let alice = server.request_add("alice", "p1-directory").await.unwrap();
    assert_eq!(alice.state(), RequestState::Delivered);
    expect_denied(&server, "alice", "p2-internal").await;
    expect_denied(&server, "alice", "p2-partners").await;

    let bob = server.request_add("bob", "p2-internal").await.unwrap();
    assert_eq!(bob.state(), RequestState::Delivered);
    expect_denied(&server, "bob", "p1-directory").await;

    let fiona = server.request_add("fiona", "p2-partners").await.unwrap();
    assert_eq!(fiona.state(), RequestState::Delivered);
    expect_denied(&server, "fiona", "p1-directory").await;

    expect_denied(&server, "carol", "p1-directory").await;
    expect_denied(&server, "carol", "p2-partners").await;
    for policy in ["p1-directory", "p2-internal", "p2-partners"] {
        if policy != "p1-directory" {
            expect_denied(&server, "dave", policy).await;
        }
    }

    assert_eq!(server.grants("alice").await, grants(&["p1-group"]));
    assert_eq!(
        server.grants("bob").await,
        grants(&["team-group", "crm-app", "wiki-site"])
    );
    assert_eq!(
        server.grants("fiona").await,
        grants(&["team-group", "crm-app", "wiki-site"])
    );
    assert_eq!(server.grants("carol").await, grants(&[]));

    // Access ends when each policy's duration runs out: 30, 90, 180 days.
    let day = Duration::from_secs(86_400);
    server.clock.advance(30 * day);
    let ended = wait_until_expired(&server, &alice.assignment_id).await;
    assert_eq!(ended.end_reason(), EndReason::Expired);
    assert_eq!(server.grants("alice").await, grants(&[]));
    assert_eq!(
        server.assignment(&bob.assignment_id).await.state(),
        AssignmentState::Delivered
    );

    server.clock.advance(60 * day);
    wait_until_expired(&server, &bob.assignment_id).await;
    assert_eq!(server.grants("bob").await, grants(&[]));
    assert_eq!(
        server.assignment(&fiona.assignment_id).await.state(),
        AssignmentState::Delivered
    );

    server.clock.advance(90 * day);
    wait_until_expired(&server, &fiona.assignment_id).await;
    assert_eq!(server.grants("fiona").await, grants(&[]));
}
