//! Nothing dangles: a group, connected organization or user that an
//! assignment policy names (as requestors or as approvers, primary or
//! fallback), or that sponsors an organization or a user, cannot be
//! deleted; the refusal names every referrer and changes nothing. Were it
//! deleted, re-creating the id would silently hand the policy to whoever
//! then held it. Stores written before policies recorded these references
//! get them at start-up.

mod common;

use std::time::Duration;

use common::world::{
    after, approval, days, external, group_approver, policy, stage, user_approver,
};
use common::{ADMIN, TestServer, eventually, expect_code, mask, precondition_violations};
use entitlements::pb::*;
use tonic::{Code, Status};

use AllowedTargetScope as Scope;

/// A catalog "cat" with package "pkg".
async fn package(server: &TestServer) {
    server.add_catalog("cat", true).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
}

/// A policy into "pkg" for `scope`.
fn into_pkg(id: &str, scope: Scope) -> AssignmentPolicy {
    policy(id, "pkg", scope, after(days(30)))
}

/// Requestors: these users and members of these groups.
fn for_subjects(id: &str, users: &[&str], groups: &[&str]) -> AssignmentPolicy {
    AssignmentPolicy {
        specific_allowed_targets: Some(SubjectSet {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            group_ids: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }),
        ..into_pkg(id, Scope::SpecificDirectorySubjects)
    }
}

/// Every member may request; one stage decided by `primary`, with
/// `fallback` when the primaries resolve to nobody.
fn approved_by(
    id: &str,
    primary: approver::Approver,
    fallback: Option<approver::Approver>,
) -> AssignmentPolicy {
    let mut only = stage(vec![primary]);
    only.fallback_approvers = fallback
        .into_iter()
        .map(|a| Approver { approver: Some(a) })
        .collect();
    AssignmentPolicy {
        approval_settings: Some(approval(vec![only], false)),
        ..into_pkg(id, Scope::AllMemberUsers)
    }
}

/// The subjects of the IN_USE violations of a refusal, sorted.
fn in_use_by(status: &Status) -> Vec<String> {
    let mut subjects: Vec<String> = precondition_violations(status)
        .into_iter()
        .map(|(kind, subject)| {
            assert_eq!(kind, "IN_USE", "{status:?}");
            subject
        })
        .collect();
    subjects.sort();
    subjects
}

type Answer<T> = Result<tonic::Response<T>, Status>;

async fn delete_group(server: &TestServer, id: &str) -> Answer<DeleteResponse> {
    server
        .directory(ADMIN)
        .delete_group(DeleteGroupRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
}

async fn delete_organization(server: &TestServer, id: &str) -> Answer<DeleteResponse> {
    server
        .directory(ADMIN)
        .delete_connected_organization(DeleteConnectedOrganizationRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
}

async fn delete_user(server: &TestServer, id: &str) -> Answer<User> {
    server
        .directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
}

async fn delete_policy(server: &TestServer, id: &str) {
    server
        .policies(ADMIN)
        .delete_assignment_policy(DeleteAssignmentPolicyRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("delete policy {id}: {s:?}"));
}

/// Lets every member request through a policy, which then names no
/// requestors.
async fn open_to_members(server: &TestServer, id: &str) {
    server
        .policies(ADMIN)
        .update_assignment_policy(UpdateAssignmentPolicyRequest {
            assignment_policy: Some(AssignmentPolicy {
                id: id.into(),
                allowed_target_scope: Scope::AllMemberUsers as i32,
                ..Default::default()
            }),
            update_mask: mask(&["allowed_target_scope", "specific_allowed_targets"]),
        })
        .await
        .unwrap_or_else(|s| panic!("update policy {id}: {s:?}"));
}

/// Replaces the approval stages of a policy.
async fn set_stages(server: &TestServer, id: &str, stages: Vec<ApprovalStage>) {
    server
        .policies(ADMIN)
        .update_assignment_policy(UpdateAssignmentPolicyRequest {
            assignment_policy: Some(AssignmentPolicy {
                id: id.into(),
                approval_settings: Some(approval(stages, false)),
                ..Default::default()
            }),
            update_mask: mask(&["approval_settings"]),
        })
        .await
        .unwrap_or_else(|s| panic!("update policy {id}: {s:?}"));
}

#[tokio::test]
async fn deleting_a_group_a_policy_names_is_refused() {
    let server = TestServer::start().await;
    package(&server).await;
    server.add_member_user("ann").await;
    server.add_group("team", &["ann"]).await;
    server
        .add_policy(for_subjects("requestors", &[], &["team"]))
        .await;
    server
        .add_policy(approved_by("primary", group_approver("team"), None))
        .await;
    server
        .add_policy(approved_by(
            "fallback",
            approver::Approver::ManagerLevel(1),
            Some(group_approver("team")),
        ))
        .await;

    let mark = server.write_mark().await;
    let status = expect_code(
        delete_group(&server, "team").await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        in_use_by(&status),
        [
            "assignment_policy/fallback",
            "assignment_policy/primary",
            "assignment_policy/requestors",
        ]
    );
    for policy in ["requestors", "primary", "fallback"] {
        assert!(status.message().contains(policy), "{status:?}");
    }
    server.assert_no_writes_since(mark).await;
    // The group keeps its members.
    assert!(server.request_add("ann", "requestors").await.is_ok());

    // A policy that stops naming the group releases it; deleting the
    // others does too.
    set_stages(
        &server,
        "fallback",
        vec![stage(vec![approver::Approver::ManagerLevel(1)])],
    )
    .await;
    delete_policy(&server, "primary").await;
    let status = expect_code(
        delete_group(&server, "team").await,
        Code::FailedPrecondition,
    );
    assert_eq!(in_use_by(&status), ["assignment_policy/requestors"]);
    open_to_members(&server, "requestors").await;
    delete_group(&server, "team").await.unwrap();
}

#[tokio::test]
async fn deleting_a_connected_organization_a_policy_names_is_refused() {
    let server = TestServer::start().await;
    package(&server).await;
    server
        .add_organization(
            "fabrikam",
            "fabrikam.example",
            ConnectedOrganizationState::Configured,
        )
        .await;
    server
        .add_policy(AssignmentPolicy {
            specific_allowed_targets: Some(SubjectSet {
                connected_organization_ids: vec!["fabrikam".into()],
                ..Default::default()
            }),
            ..into_pkg("partners", Scope::SpecificConnectedOrganizationUsers)
        })
        .await;

    let mark = server.write_mark().await;
    let status = expect_code(
        delete_organization(&server, "fabrikam").await,
        Code::FailedPrecondition,
    );
    assert_eq!(in_use_by(&status), ["assignment_policy/partners"]);
    assert!(status.message().contains("partners"), "{status:?}");
    server.assert_no_writes_since(mark).await;

    delete_policy(&server, "partners").await;
    delete_organization(&server, "fabrikam").await.unwrap();
}

#[tokio::test]
async fn deleting_a_user_who_is_a_named_approver_requestor_or_sponsor_is_refused() {
    let server = TestServer::start().await;
    package(&server).await;
    for user in ["ann", "bob"] {
        server.add_member_user(user).await;
    }
    server
        .create_organization(
            "fabrikam",
            ConnectedOrganization {
                internal_sponsor_ids: vec!["ann".into()],
                ..common::organization("Fabrikam", "fabrikam.example")
            },
        )
        .await;
    server
        .create_user(
            "gus",
            User {
                kind: UserKind::Guest as i32,
                connected_organization_id: "fabrikam".into(),
                sponsor_ids: vec!["ann".into()],
                ..common::user("Gus")
            },
        )
        .await;
    server
        .add_policy(for_subjects("requestors", &["ann"], &[]))
        .await;
    server
        .add_policy(approved_by("primary", user_approver("ann"), None))
        .await;
    server
        .add_policy(approved_by(
            "fallback",
            approver::Approver::ManagerLevel(1),
            Some(user_approver("ann")),
        ))
        .await;
    // ann holds the package: a refused deletion must not end it.
    let held = server.request_add("ann", "requestors").await.unwrap();
    assert_eq!(held.state(), RequestState::Delivered);

    let mark = server.write_mark().await;
    let status = expect_code(delete_user(&server, "ann").await, Code::FailedPrecondition);
    assert_eq!(
        in_use_by(&status),
        [
            "assignment_policy/fallback",
            "assignment_policy/primary",
            "assignment_policy/requestors",
            "connected_organization/fabrikam",
            "user/gus",
        ]
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(server.get_user("ann").await.state(), UserState::Active);
    assert_eq!(
        server.assignment(&held.assignment_id).await.state(),
        AssignmentState::Delivered
    );

    // A user who only sponsors themselves, or is only in groups, is free
    // to go.
    server
        .directory(ADMIN)
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: "bob".into(),
                sponsor_ids: vec!["bob".into()],
                ..Default::default()
            }),
            update_mask: mask(&["sponsor_ids"]),
        })
        .await
        .unwrap();
    server.add_group("team", &["bob"]).await;
    delete_user(&server, "bob").await.unwrap();

    // Once nothing names ann any more, she can be deleted.
    open_to_members(&server, "requestors").await;
    for policy in ["primary", "fallback"] {
        delete_policy(&server, policy).await;
    }
    server
        .directory(ADMIN)
        .update_connected_organization(UpdateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                id: "fabrikam".into(),
                ..Default::default()
            }),
            update_mask: mask(&["internal_sponsor_ids"]),
        })
        .await
        .unwrap();
    let status = expect_code(delete_user(&server, "ann").await, Code::FailedPrecondition);
    assert_eq!(in_use_by(&status), ["user/gus"]);
    server
        .directory(ADMIN)
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: "gus".into(),
                ..Default::default()
            }),
            update_mask: mask(&["sponsor_ids"]),
        })
        .await
        .unwrap();
    assert_eq!(
        delete_user(&server, "ann")
            .await
            .unwrap()
            .into_inner()
            .state(),
        UserState::Deleted
    );
}

#[tokio::test]
async fn a_deleted_user_cannot_be_named_as_approver_requestor_or_sponsor() {
    let server = TestServer::start().await;
    package(&server).await;
    server.add_member_user("gone").await;
    delete_user(&server, "gone").await.unwrap();
    let mark = server.write_mark().await;
    let refusals = [
        server
            .try_add_policy(for_subjects("requestors", &["gone"], &[]))
            .await,
        server
            .try_add_policy(approved_by("primary", user_approver("gone"), None))
            .await,
    ];
    for refused in refusals {
        let status = expect_code(refused.map(tonic::Response::new), Code::FailedPrecondition);
        assert_eq!(
            precondition_violations(&status),
            [("DELETED".to_string(), "user/gone".to_string())]
        );
    }
    let sponsored = server
        .directory(ADMIN)
        .create_connected_organization(CreateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                external_sponsor_ids: vec!["gone".into()],
                ..common::organization("Fabrikam", "fabrikam.example")
            }),
            connected_organization_id: "fabrikam".into(),
            request_id: String::new(),
        })
        .await;
    expect_code(sponsored, Code::FailedPrecondition);
    server.assert_no_writes_since(mark).await;
}

/// A store written before policies recorded the users, groups and
/// organizations they name gets those references on its next start.
#[tokio::test]
async fn references_missing_from_an_older_store_are_rebuilt_at_start_up() {
    use entitlements::store::{Txn, keys, write};

    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(entitlements::shared::clock::ManualClock::new(
        common::epoch(),
    ));
    let server = TestServer::start_in(dir.path(), clock.clone()).await;
    package(&server).await;
    server.add_member_user("ann").await;
    server.add_group("team", &["ann"]).await;
    server
        .add_policy(approved_by("primary", group_approver("team"), None))
        .await;
    server.stop().await.unwrap();

    // Make the store look like one written before: no reference from the
    // policy to the group, and no record of the upgrade.
    {
        let store = common::open_store(dir.path());
        write(store.as_ref(), |txn: &mut dyn Txn| {
            txn.delete(keys::key(&[
                keys::REFERENCE,
                "group",
                "team",
                "assignment_policy",
                "primary",
            ]));
            txn.delete(keys::key(&[keys::META, "data_version"]));
            Ok::<_, entitlements::store::StoreError>(())
        })
        .await
        .unwrap();
        store.close().unwrap();
    }
    let server = TestServer::start_in(dir.path(), clock).await;
    let mark = server.write_mark().await;
    let status = expect_code(
        delete_group(&server, "team").await,
        Code::FailedPrecondition,
    );
    assert_eq!(in_use_by(&status), ["assignment_policy/primary"]);
    server.assert_no_writes_since(mark).await;
    server.stop().await.unwrap();
}

/// A governed guest due for deletion whom a policy still names is left
/// blocked: the deletion is called off, with the reason in the audit trail.
#[tokio::test]
async fn a_governed_guest_still_named_by_a_policy_is_blocked_but_not_deleted() {
    let server = TestServer::start().await;
    package(&server).await;
    server
        .add_policy(into_pkg("anyone", Scope::AllExternalUsers))
        .await;
    let guest = "gia@newco.example";
    let request = server
        .request_external(guest, "anyone", external(guest, ""))
        .await
        .unwrap();
    assert_eq!(request.state(), RequestState::Delivered);
    server
        .add_policy(approved_by("by-gia", user_approver(guest), None))
        .await;
    let removal = AssignmentRequest {
        r#type: RequestType::AdminRemove as i32,
        assignment_id: request.assignment_id.clone(),
        ..Default::default()
    };
    server.request(ADMIN, removal).await.unwrap();
    let blocked = server.get_user(guest).await;
    assert_eq!(blocked.state(), UserState::Blocked);
    assert!(blocked.scheduled_delete_time.is_some());

    server.clock.advance(Duration::from_secs(31 * 86_400));
    let kept = eventually("the deletion to be called off", || async {
        let user = server.get_user(guest).await;
        user.scheduled_delete_time.is_none().then_some(user)
    })
    .await;
    assert_eq!(kept.state(), UserState::Blocked);
    let events = server
        .audit(ADMIN)
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                target_type: "user".into(),
                target_id: guest.into(),
                ..Default::default()
            }),
            order: AuditOrder::NewestFirst as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let called_off = &events[0];
    assert_eq!(called_off.action, "user.updated");
    assert_eq!(called_off.actor, "system");
    let details = format!("{:?}", called_off.details);
    assert!(details.contains("by-gia"), "{details}");
}
