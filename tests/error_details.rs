//! Errors a program can act on, over real gRPC: every FAILED_PRECONDITION
//! the API returns carries a google.rpc.PreconditionFailure naming what
//! blocks the change, and an eligibility refusal carries a
//! google.rpc.ErrorInfo naming the assignment policy, the deciding Cedar
//! policies and the reasons ExplainEligibility gives.

mod common;

use std::collections::HashMap;

use common::world::{after, approval, days, never, policy, stage, user_approver};
use common::*;
use entitlements::pb::*;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use AllowedTargetScope as Scope;

/// The (type, subject) of each violation, after checking that `result` is
/// FAILED_PRECONDITION with at least one violation, none of it empty.
#[track_caller]
fn blocked<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<(String, String)> {
    let status = match result {
        Ok(value) => panic!("expected FAILED_PRECONDITION, got OK: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let failure = status
        .get_details_precondition_failure()
        .unwrap_or_else(|| panic!("no PreconditionFailure in {status:?}"));
    assert!(
        !failure.violations.is_empty(),
        "no violations in {status:?}"
    );
    for v in &failure.violations {
        assert!(
            !v.r#type.is_empty() && !v.subject.is_empty() && !v.description.is_empty(),
            "incomplete violation {v:?} in {status:?}"
        );
    }
    failure
        .violations
        .into_iter()
        .map(|v| (v.r#type, v.subject))
        .collect()
}

/// The (type, subject) of the first violation.
#[track_caller]
fn first<T: std::fmt::Debug>(result: Result<T, Status>) -> (String, String) {
    blocked(result).remove(0)
}

fn pair(kind: &str, subject: impl Into<String>) -> (String, String) {
    (kind.to_string(), subject.into())
}

fn add(policy: &str, target: &str, kind: RequestType) -> AssignmentRequest {
    AssignmentRequest {
        r#type: kind as i32,
        assignment_policy_id: policy.into(),
        target_id: target.into(),
        ..Default::default()
    }
}

fn change(kind: RequestType, assignment: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: kind as i32,
        assignment_id: assignment.into(),
        ..Default::default()
    }
}

/// A catalog "cat" with resource "res"; users ann (approver), bob, carol.
async fn world(server: &TestServer) {
    for user in ["ann", "bob", "carol", "dave", "erin"] {
        server.add_member_user(user).await;
    }
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
}

#[tokio::test]
async fn every_failed_precondition_names_what_blocks_it() {
    let server = TestServer::start().await;
    world(&server).await;
    let mut directory = server.directory(ADMIN);
    let mut catalogs = server.catalogs(ADMIN);
    let mut packages = server.packages(ADMIN);
    let mut policies = server.policies(ADMIN);

    // Packages: "open" (no approval), "gated" (ann approves adds and
    // extensions), "staged" (two stages, ann then bob), "quorum" (two
    // approvals from ann, bob or dave).
    for id in ["open", "gated", "staged", "quorum"] {
        server.add_package(id, "cat", &["res"]).await;
    }
    server
        .add_policy(policy("open-pol", "open", Scope::AllMemberUsers, never()))
        .await;
    let gated = AssignmentPolicy {
        approval_settings: Some(approval(vec![stage(vec![user_approver("ann")])], true)),
        ..policy("gated-pol", "gated", Scope::AllMemberUsers, never())
    };
    server.add_policy(gated).await;
    let staged = AssignmentPolicy {
        approval_settings: Some(approval(
            vec![
                stage(vec![user_approver("ann")]),
                stage(vec![user_approver("bob")]),
            ],
            false,
        )),
        ..policy("staged-pol", "staged", Scope::AllMemberUsers, never())
    };
    server.add_policy(staged).await;
    let quorum = AssignmentPolicy {
        approval_settings: Some(approval(
            vec![ApprovalStage {
                approvals_required: 2,
                ..stage(vec![
                    user_approver("ann"),
                    user_approver("bob"),
                    user_approver("dave"),
                ])
            }],
            false,
        )),
        ..policy("quorum-pol", "quorum", Scope::AllMemberUsers, never())
    };
    server.add_policy(quorum).await;

    // IN_USE: a resource, a resource role, a policy with assignments.
    assert_eq!(
        first(
            catalogs
                .delete_resource(DeleteResourceRequest {
                    id: "res".into(),
                    etag: String::new(),
                })
                .await
        ),
        pair("IN_USE", "access_package/gated")
    );
    let role_dropped = catalogs
        .update_resource(UpdateResourceRequest {
            resource: Some(Resource {
                id: "res".into(),
                roles: vec![ResourceRole {
                    id: "other".into(),
                    display_name: "Other".into(),
                }],
                ..Default::default()
            }),
            update_mask: mask(&["roles"]),
        })
        .await;
    assert_eq!(first(role_dropped).0, "IN_USE");
    let held = server.request_add("carol", "open-pol").await.unwrap();
    assert_eq!(
        first(
            policies
                .delete_assignment_policy(DeleteAssignmentPolicyRequest {
                    id: "open-pol".into(),
                    etag: String::new(),
                })
                .await
        ),
        pair("IN_USE", format!("assignment/{}", held.assignment_id))
    );

    // BUILT_IN: the General catalog.
    assert_eq!(
        first(
            catalogs
                .delete_catalog(DeleteCatalogRequest {
                    id: "general".into(),
                    etag: String::new(),
                })
                .await
        ),
        pair("BUILT_IN", "catalog/general")
    );

    // NESTING_CYCLE.
    server.add_group("outer", &[]).await;
    server.add_group("inner", &[]).await;
    server.nest_group("outer", "inner").await;
    let cycle = directory
        .add_group_member(AddGroupMemberRequest {
            group_id: "inner".into(),
            member: Some(add_group_member_request::Member::MemberGroupId(
                "outer".into(),
            )),
        })
        .await;
    assert_eq!(first(cycle), pair("NESTING_CYCLE", "group/outer"));

    // ALREADY_ASSIGNED and REQUEST_OPEN.
    assert_eq!(
        first(server.request_add("carol", "open-pol").await),
        pair(
            "ALREADY_ASSIGNED",
            format!("assignment/{}", held.assignment_id)
        )
    );
    let pending = server.request_add("carol", "gated-pol").await.unwrap();
    assert_eq!(
        first(server.request_add("carol", "gated-pol").await),
        pair("REQUEST_OPEN", format!("assignment_request/{}", pending.id))
    );
    let gated_add = server
        .request(ADMIN, add("gated-pol", "bob", RequestType::AdminAdd))
        .await
        .unwrap();
    let extension = server
        .request(
            "bob",
            change(RequestType::UserUpdate, &gated_add.assignment_id),
        )
        .await
        .unwrap();
    assert_eq!(extension.state(), RequestState::PendingApproval);
    assert_eq!(
        first(
            server
                .request(
                    "bob",
                    change(RequestType::UserUpdate, &gated_add.assignment_id)
                )
                .await
        ),
        pair(
            "REQUEST_OPEN",
            format!("assignment_request/{}", extension.id)
        )
    );

    // STATE: an assignment that ended, requests that no longer wait.
    let removal = server
        .request(
            "carol",
            change(RequestType::UserRemove, &held.assignment_id),
        )
        .await
        .unwrap();
    assert_eq!(
        first(
            server
                .request(
                    "carol",
                    change(RequestType::UserUpdate, &held.assignment_id)
                )
                .await
        ),
        pair("STATE", format!("assignment/{}", held.assignment_id))
    );
    assert_eq!(
        first(server.cancel_request("carol", &removal.id).await),
        pair("STATE", format!("assignment_request/{}", removal.id))
    );
    server.cancel_request("carol", &pending.id).await.unwrap();
    assert_eq!(
        first(server.decide("ann", &pending.id, 1, true).await),
        pair("STATE", format!("assignment_request/{}", pending.id))
    );

    // STAGE_DECIDED, STAGE_NOT_STARTED, ALREADY_DECIDED.
    let staged = server.request_add("carol", "staged-pol").await.unwrap();
    let subject = format!("assignment_request/{}", staged.id);
    // An approver of the request (here of stage 1) learns that stage 2
    // has not started; anyone else would not learn that the request exists.
    assert_eq!(
        first(server.decide("ann", &staged.id, 2, true).await),
        pair("STAGE_NOT_STARTED", &subject)
    );
    server.decide("ann", &staged.id, 1, true).await.unwrap();
    assert_eq!(
        first(server.decide("ann", &staged.id, 1, true).await),
        pair("STAGE_DECIDED", &subject)
    );
    let quorum = server.request_add("carol", "quorum-pol").await.unwrap();
    server.decide("ann", &quorum.id, 1, true).await.unwrap();
    assert_eq!(
        first(server.decide("ann", &quorum.id, 1, true).await),
        pair(
            "ALREADY_DECIDED",
            format!("assignment_request/{}", quorum.id)
        )
    );

    // STATE: a deleted user is deleted, changed, added or given a role no
    // more.
    server.add_group("team", &[]).await;
    directory
        .delete_user(DeleteUserRequest {
            id: "erin".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let erin = pair("STATE", "user/erin");
    assert_eq!(
        first(
            directory
                .delete_user(DeleteUserRequest {
                    id: "erin".into(),
                    etag: String::new(),
                })
                .await
        ),
        erin
    );
    let renamed = directory
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: "erin".into(),
                display_name: "Erin again".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await;
    assert_eq!(first(renamed), erin);
    let joined = directory
        .add_group_member(AddGroupMemberRequest {
            group_id: "team".into(),
            member: Some(add_group_member_request::Member::UserId("erin".into())),
        })
        .await;
    assert_eq!(first(joined), erin);
    let granted = catalogs
        .grant_role(GrantRoleRequest {
            role_assignment: Some(RoleAssignment {
                role: AdminRole::CatalogOwner as i32,
                principal_id: "erin".into(),
                catalog_id: "cat".into(),
                info: None,
            }),
        })
        .await;
    assert_eq!(first(granted), erin);

    // Packages with assignments are in use too.
    let package_deleted = packages
        .delete_access_package(DeleteAccessPackageRequest {
            id: "gated".into(),
            etag: String::new(),
        })
        .await;
    assert!(
        blocked(package_deleted)
            .iter()
            .all(|(kind, _)| kind == "IN_USE")
    );
}

/// The ErrorInfo metadata of a PERMISSION_DENIED eligibility refusal.
#[track_caller]
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (String, HashMap<String, String>) {
    let status = match result {
        Ok(value) => panic!("expected PERMISSION_DENIED, got OK: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, "POLICY_DENIED");
    assert_eq!(info.domain, "entitlements");
    (status.message().to_string(), info.metadata)
}

#[tokio::test]
async fn an_eligibility_refusal_names_the_policy_the_deciding_policies_and_the_reasons() {
    let server = TestServer::start().await;
    world(&server).await;
    server.add_group("sales", &["bob"]).await;
    let legal = User {
        attributes: HashMap::from([("department".to_string(), "Legal".to_string())]),
        ..user("Dora")
    };
    server.create_user("dora", legal).await;
    let sales = User {
        attributes: HashMap::from([("department".to_string(), "Sales".to_string())]),
        ..user("Sam")
    };
    server.create_user("sam", sales).await;
    for id in ["gated", "open", "excl", "cond"] {
        server.add_package(id, "cat", &["res"]).await;
    }
    let gated = AssignmentPolicy {
        specific_allowed_targets: Some(SubjectSet {
            group_ids: vec!["sales".into()],
            ..Default::default()
        }),
        ..policy(
            "gated-pol",
            "gated",
            Scope::SpecificDirectorySubjects,
            never(),
        )
    };
    server.add_policy(gated).await;
    server
        .add_policy(policy("open-pol", "open", Scope::AllMemberUsers, never()))
        .await;
    server
        .packages(ADMIN)
        .update_access_package(UpdateAccessPackageRequest {
            access_package: Some(AccessPackage {
                id: "excl".into(),
                incompatible_package_ids: vec!["open".into()],
                ..Default::default()
            }),
            update_mask: mask(&["incompatible_package_ids"]),
        })
        .await
        .unwrap();
    server
        .add_policy(policy("excl-pol", "excl", Scope::AllMemberUsers, never()))
        .await;
    let conditional = AssignmentPolicy {
        extra_condition:
            r#"principal.attributes has department && principal.attributes.department == "Sales""#
                .into(),
        requestor_settings: Some(RequestorSettings {
            enable_self_add: true,
            ..Default::default()
        }),
        ..policy("cond-pol", "cond", Scope::AllMemberUsers, after(days(7)))
    };
    server.add_policy(conditional).await;
    server.request_add("bob", "open-pol").await.unwrap();
    let held = server
        .request(ADMIN, add("cond-pol", "sam", RequestType::AdminAdd))
        .await
        .unwrap();
    let explain = |user: &'static str, package: &'static str| {
        let mut client = server.decisions(ADMIN);
        async move {
            client
                .explain_eligibility(ExplainEligibilityRequest {
                    user_id: user.into(),
                    access_package_id: package.into(),
                    min_revision: 0,
                })
                .await
                .expect("explain")
                .into_inner()
                .policies
                .remove(0)
                .reasons
        }
    };

    let mark = server.write_mark().await;
    // Out of scope: no policy permits; the reason says why, in the same
    // words as ExplainEligibility.
    let (message, metadata) = refusal(server.request_add("carol", "gated-pol").await);
    assert_eq!(metadata["assignment_policy_id"], "gated-pol");
    assert_eq!(metadata["policy_ids"], "");
    assert_eq!(metadata["reasons"], "NOT_IN_SCOPE");
    let texts = explain("carol", "gated").await;
    assert_eq!(texts, ["not listed and not in group sales"]);
    assert!(message.contains(&texts[0]), "{message}");

    // The extra condition.
    let (_, metadata) = refusal(server.request_add("dora", "cond-pol").await);
    assert_eq!(metadata["assignment_policy_id"], "cond-pol");
    assert_eq!(metadata["reasons"], "CONDITION_NOT_MET");
    assert_eq!(explain("dora", "cond").await.len(), 1);

    // Separation of duties, for a requestor and for an administrator: the
    // forbid that decided is named.
    for result in [
        server.request_add("bob", "excl-pol").await,
        server
            .request(ADMIN, add("excl-pol", "bob", RequestType::AdminAdd))
            .await,
    ] {
        let (_, metadata) = refusal(result);
        assert_eq!(metadata["assignment_policy_id"], "excl-pol");
        assert_eq!(metadata["policy_ids"], "excl/incompatible/packages");
        assert_eq!(metadata["reasons"], "HOLDS_INCOMPATIBLE_PACKAGE");
    }
    assert_eq!(
        explain("bob", "excl").await,
        ["holds incompatible package open"]
    );

    // Removing one's own assignment when the policy does not allow it.
    let (_, metadata) = refusal(
        server
            .request("sam", change(RequestType::UserRemove, &held.assignment_id))
            .await,
    );
    assert_eq!(metadata["assignment_policy_id"], "cond-pol");
    assert_eq!(metadata["reasons"], "SELF_SERVICE_DISABLED");
    server.assert_no_writes_since(mark).await;

    // A blocked user: the invariant decided.
    server.set_user_state("carol", UserState::Blocked).await;
    let mark = server.write_mark().await;
    let (_, metadata) = refusal(server.request_add("carol", "open-pol").await);
    assert_eq!(metadata["policy_ids"], "invariant/target-active");
    assert_eq!(metadata["reasons"], "USER_NOT_ACTIVE");
    server.assert_no_writes_since(mark).await;
}
