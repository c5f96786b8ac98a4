//! External users over gRPC: callers who are not in the directory request
//! access as external requestors, are matched to a connected organization
//! (or propose one), join the directory as governed guests when their
//! request is delivered, and are blocked and deleted by the tenant's
//! external-user lifecycle once they hold no assignment.

mod common;

use std::time::Duration;

use common::world::{after, approval, days, external, policy, seconds, stage};
use common::{
    ADMIN, TestServer, chars, denied, domain_source, eventually, expect_code, expect_invalid,
    expect_not_found, mask, tenant_source,
};
use entitlements::pb::*;
use tonic::Code;

use AllowedTargetScope as Scope;
use ConnectedOrganizationState as OrgState;

const DAY: i64 = 86_400;

fn advance_days(server: &TestServer, n: i64) {
    server.clock.advance(Duration::from_secs((n * DAY) as u64));
}

/// Waits until the background work has put user `id` in `state`.
async fn user_reaches(server: &TestServer, id: &str, state: UserState) -> User {
    eventually(&format!("user {id} to be {state:?}"), || async {
        let user = server.get_user(id).await;
        (user.state() == state).then_some(user)
    })
    .await
}

/// An ADMIN_ADD of the package behind `policy` for `target`.
async fn admin_add(
    server: &TestServer,
    target: &str,
    policy: &str,
) -> Result<AssignmentRequest, tonic::Status> {
    let request = AssignmentRequest {
        r#type: RequestType::AdminAdd as i32,
        target_id: target.into(),
        assignment_policy_id: policy.into(),
        ..Default::default()
    };
    server.request(ADMIN, request).await
}

/// An ADMIN_REMOVE of assignment `id`.
async fn admin_remove(server: &TestServer, id: &str) {
    let request = AssignmentRequest {
        r#type: RequestType::AdminRemove as i32,
        assignment_id: id.into(),
        ..Default::default()
    };
    let removed = server.request(ADMIN, request).await.expect("admin remove");
    assert_eq!(removed.state(), RequestState::Delivered);
}

/// Ids of the active assignments of `user`.
async fn active_assignments(server: &TestServer, user: &str) -> Vec<String> {
    server
        .user_assignments(user)
        .await
        .into_iter()
        .filter(|a| a.state() == AssignmentState::Delivered)
        .map(|a| a.id)
        .collect()
}

fn member_of(resource: &str) -> Vec<(String, String)> {
    vec![(resource.to_string(), "member".to_string())]
}

/// The domains an organization is identified by.
fn domains(organization: &ConnectedOrganization) -> Vec<String> {
    organization
        .identity_sources
        .iter()
        .filter_map(|s| match &s.source {
            Some(identity_source::Source::DomainName(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

async fn organization_ids(server: &TestServer) -> Vec<String> {
    server
        .organizations(OrgState::Unspecified)
        .await
        .into_iter()
        .map(|o| o.id)
        .collect()
}

/// A catalog with one resource ("<catalog>-app") and a package
/// ("<catalog>-pkg") granting its member role.
async fn catalog_with_package(server: &TestServer, catalog: &str, externally_visible: bool) {
    server.add_catalog(catalog, externally_visible).await;
    let resource = format!("{catalog}-app");
    server.add_resource(&resource, catalog, "application").await;
    server
        .add_package(&format!("{catalog}-pkg"), catalog, &[&resource])
        .await;
}

fn for_organizations(ids: &[&str], policy: AssignmentPolicy) -> AssignmentPolicy {
    AssignmentPolicy {
        specific_allowed_targets: Some(SubjectSet {
            connected_organization_ids: ids.iter().map(|id| id.to_string()).collect(),
            ..Default::default()
        }),
        ..policy
    }
}

// ---------------------------------------------------------------------------
// The overview's external-user story.

/// The partner organization fabrikam with an external sponsor (sam, a
/// guest of fabrikam), and a package in an externally visible catalog that
/// fabrikam's users may request for 180 days once their sponsor approves.
async fn partner_world(server: &TestServer) {
    server
        .add_organization("fabrikam", "fabrikam.example", OrgState::Configured)
        .await;
    server.add_user("sam", UserKind::Guest, "fabrikam").await;
    server
        .directory(ADMIN)
        .update_connected_organization(UpdateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                id: "fabrikam".into(),
                external_sponsor_ids: vec!["sam".into()],
                ..Default::default()
            }),
            update_mask: mask(&["external_sponsor_ids"]),
        })
        .await
        .expect("make sam fabrikam's external sponsor");
    catalog_with_package(server, "partners", true).await;
    server
        .add_policy(AssignmentPolicy {
            approval_settings: Some(approval(
                vec![stage(vec![approver::Approver::ExternalSponsors(true)])],
                false,
            )),
            ..for_organizations(
                &["fabrikam"],
                policy(
                    "fabrikam-partners",
                    "partners-pkg",
                    Scope::SpecificConnectedOrganizationUsers,
                    after(days(180)),
                ),
            )
        })
        .await;
}

#[tokio::test]
async fn a_partner_is_approved_by_their_sponsor_then_blocked_and_deleted_when_access_ends() {
    let server = TestServer::start().await;
    partner_world(&server).await;
    let start = server.clock_seconds();
    let erin = "erin@fabrikam.example";
    let gus = "gus@fabrikam.example";

    // Two partners who are not in the directory ask for access; the
    // request waits for fabrikam's external sponsor.
    let mut requests = Vec::new();
    for (caller, name) in [(erin, "Erin"), (gus, "Gus")] {
        let requestor = ExternalRequestor {
            display_name: name.into(),
            ..external(caller, "")
        };
        let request = server
            .request_external(caller, "fabrikam-partners", requestor)
            .await
            .unwrap_or_else(|s| panic!("{caller} requests: {s:?}"));
        assert_eq!(request.state(), RequestState::PendingApproval, "{caller}");
        assert_eq!(request.target_id, caller);
        assert_eq!(request.requestor_id, caller);
        let matched = request.external_requestor.clone().expect("requestor");
        assert_eq!(matched.connected_organization_id, "fabrikam", "{caller}");
        let stage = &request.approval_stages[0];
        assert_eq!(stage.external_sponsor_ids, ["sam"], "{caller}");
        assert_eq!(stage.approver_user_ids, ["sam"], "{caller}");
        expect_not_found(
            server
                .directory(ADMIN)
                .get_user(GetUserRequest { id: caller.into() })
                .await,
            "user",
            caller,
        );
        requests.push(request);
    }
    let ids: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
    assert_eq!(server.pending_approvals("sam").await, ids);

    // The sponsor approves: each requestor joins the directory as a
    // governed guest of fabrikam holding the package for 180 days.
    let mut assignments = Vec::new();
    for request in &requests {
        let caller = request.target_id.as_str();
        let delivered = server
            .decide("sam", &request.id, 1, true)
            .await
            .unwrap_or_else(|s| panic!("sam approves {caller}: {s:?}"));
        assert_eq!(delivered.state(), RequestState::Delivered, "{caller}");
        let guest = server.get_user(caller).await;
        assert_eq!(guest.kind(), UserKind::Guest, "{guest:?}");
        assert_eq!(guest.state(), UserState::Active, "{guest:?}");
        assert!(guest.governed, "{guest:?}");
        assert_eq!(guest.connected_organization_id, "fabrikam");
        assert_eq!(guest.email, caller);
        assert_eq!(guest.scheduled_delete_time, None);
        assert_eq!(server.grants(caller).await, member_of("partners-app"));
        let assignment = server.assignment(&delivered.assignment_id).await;
        let end = assignment.end_time.expect("an end").seconds;
        assert_eq!(end, start + 180 * DAY, "{assignment:?}");
        assignments.push(delivered.assignment_id);
    }
    assert_eq!(server.get_user(erin).await.display_name, "Erin");
    assert!(server.pending_approvals("sam").await.is_empty());

    // 180 days on, access expires: each guest is blocked at once and
    // scheduled for deletion 30 days later.
    advance_days(&server, 180);
    for (caller, assignment) in [erin, gus].into_iter().zip(&assignments) {
        let blocked = user_reaches(&server, caller, UserState::Blocked).await;
        assert_eq!(
            blocked.scheduled_delete_time.map(|t| t.seconds),
            Some(start + 210 * DAY),
            "{blocked:?}"
        );
        let expired = server.assignment(assignment).await;
        assert_eq!(expired.state(), AssignmentState::Expired);
        assert_eq!(expired.end_reason(), EndReason::Expired);
        assert!(server.grants(caller).await.is_empty());
    }

    // Blocked guests can neither ask again nor be assigned.
    let again = server
        .request_external(erin, "fabrikam-partners", external(erin, ""))
        .await;
    assert_eq!(denied(again), ["invariant/target-active"]);
    assert_eq!(
        denied(admin_add(&server, gus, "fabrikam-partners").await),
        ["invariant/target-active"]
    );

    // Gus is unblocked (which calls off his deletion) and assigned again.
    let unblocked = server.set_user_state(gus, UserState::Active).await;
    assert_eq!(unblocked.scheduled_delete_time, None, "{unblocked:?}");
    let readded = admin_add(&server, gus, "fabrikam-partners")
        .await
        .expect("assign gus again");
    assert_eq!(readded.state(), RequestState::Delivered);

    // 30 days after the block, erin is deleted; gus is not.
    advance_days(&server, 30);
    let deleted = user_reaches(&server, erin, UserState::Deleted).await;
    assert_eq!(
        deleted.delete_time.map(|t| t.seconds),
        Some(start + 210 * DAY)
    );
    assert_eq!(deleted.scheduled_delete_time, None);
    let gus_now = server.get_user(gus).await;
    assert_eq!(gus_now.state(), UserState::Active, "{gus_now:?}");
    assert_eq!(gus_now.scheduled_delete_time, None);
    assert_eq!(
        active_assignments(&server, gus).await,
        [readded.assignment_id]
    );
    assert_eq!(server.grants(gus).await, member_of("partners-app"));
}

#[tokio::test]
async fn an_approval_that_comes_after_the_block_delivers_nothing() {
    let server = TestServer::start().await;
    partner_world(&server).await;
    server
        .add_package("partners-trial-pkg", "partners", &["partners-app"])
        .await;
    server
        .add_policy(for_organizations(
            &["fabrikam"],
            policy(
                "fabrikam-trial",
                "partners-trial-pkg",
                Scope::SpecificConnectedOrganizationUsers,
                after(days(10)),
            ),
        ))
        .await;
    let start = server.clock_seconds();
    let erin = "erin@fabrikam.example";

    // A ten-day trial at once, and the full package once sam approves.
    let trial = server
        .request_external(erin, "fabrikam-trial", external(erin, ""))
        .await
        .expect("trial");
    assert_eq!(trial.state(), RequestState::Delivered);
    let full = server
        .request_external(erin, "fabrikam-partners", external(erin, ""))
        .await
        .expect("full access");
    assert_eq!(full.state(), RequestState::PendingApproval);

    // The trial ends before sam decides: erin is blocked and scheduled
    // for deletion.
    advance_days(&server, 10);
    let blocked = user_reaches(&server, erin, UserState::Blocked).await;
    assert_eq!(
        blocked.scheduled_delete_time.map(|t| t.seconds),
        Some(start + 40 * DAY)
    );

    // Sam approves the request that was waiting, but a blocked guest gets
    // nothing: decided again at delivery, the request is denied by the
    // invariant, and the deletion goes ahead on time.
    let approved = server
        .decide("sam", &full.id, 1, true)
        .await
        .expect("approve");
    assert_eq!(approved.state(), RequestState::Denied);
    let last = approved.history.last().unwrap();
    assert_eq!(
        last.reason,
        "refused at delivery: forbidden by invariant/target-active"
    );
    assert_eq!(last.policy_ids, ["invariant/target-active"]);
    assert!(active_assignments(&server, erin).await.is_empty());
    advance_days(&server, 30);
    user_reaches(&server, erin, UserState::Deleted).await;
}

// ---------------------------------------------------------------------------
// Matching requestors to connected organizations.

#[tokio::test]
async fn requestors_match_by_tenant_then_domain_and_unknown_domains_are_proposed_once() {
    let server = TestServer::start().await;
    server
        .create_organization(
            "contoso",
            ConnectedOrganization {
                identity_sources: vec![
                    domain_source("contoso.example"),
                    tenant_source("contoso-tenant"),
                ],
                ..common::organization("Contoso", "contoso.example")
            },
        )
        .await;
    catalog_with_package(&server, "open", true).await;
    server
        .add_package("open-partner-pkg", "open", &["open-app"])
        .await;
    server
        .add_policy(policy(
            "any-external",
            "open-pkg",
            Scope::AllExternalUsers,
            after(days(30)),
        ))
        .await;
    server
        .add_policy(policy(
            "configured-only",
            "open-partner-pkg",
            Scope::AllConfiguredConnectedOrganizationUsers,
            after(days(30)),
        ))
        .await;

    // A request its policy denies proposes nothing (and writes nothing).
    let mark = server.write_mark().await;
    let nina = "nina@newco.example";
    let refused = server
        .request_external(nina, "configured-only", external(nina, ""))
        .await;
    assert_eq!(denied(refused), Vec::<String>::new());
    server.assert_no_writes_since(mark).await;
    assert_eq!(organization_ids(&server).await, ["contoso"]);

    // Two requestors of an unknown domain (one naming itself as the
    // target, one spelling the domain in capitals) share one PROPOSED
    // organization.
    let noah = "noah@newco.example";
    let cases = [
        (nina, nina, String::new()),
        (noah, "Noah@NewCo.Example", noah.to_string()),
    ];
    let mut matched = Vec::new();
    for (caller, email, target) in cases {
        let request = AssignmentRequest {
            r#type: RequestType::UserAdd as i32,
            assignment_policy_id: "any-external".into(),
            target_id: target,
            external_requestor: Some(external(email, "")),
            ..Default::default()
        };
        let request = server
            .request(caller, request)
            .await
            .unwrap_or_else(|s| panic!("{caller} requests: {s:?}"));
        assert_eq!(request.state(), RequestState::Delivered, "{caller}");
        assert_eq!(request.target_id, caller);
        let requestor = request.external_requestor.expect("requestor");
        assert_eq!(requestor.email, caller, "lower-cased");
        matched.push(requestor.connected_organization_id);
    }
    let proposed = server.organizations(OrgState::Proposed).await;
    assert_eq!(proposed.len(), 1, "{proposed:?}");
    let newco = proposed[0].id.clone();
    assert_eq!(domains(&proposed[0]), ["newco.example"]);
    assert_ne!(newco, "");
    assert_eq!(matched, [newco.clone(), newco.clone()]);
    for guest in [nina, noah] {
        let user = server.get_user(guest).await;
        assert_eq!(user.connected_organization_id, newco, "{user:?}");
        assert_eq!(user.kind(), UserKind::Guest);
        assert!(user.governed);
        assert_eq!(server.grants(guest).await, member_of("open-app"));
        // "All configured organizations" does not cover a proposed one.
        assert_eq!(
            denied(server.request_add(guest, "configured-only").await),
            Vec::<String>::new(),
            "{guest}"
        );
    }

    // Known organizations are matched by tenant id first, then by domain;
    // a proposed organization is matched by its domain like any other.
    let cases = [
        ("olga@contoso.example", "", "configured-only", "contoso"),
        (
            "pat@mail.example",
            "contoso-tenant",
            "configured-only",
            "contoso",
        ),
        (
            "quinn@newco.example",
            "contoso-tenant",
            "any-external",
            "contoso",
        ),
        (
            "ravi@contoso.example",
            "other-tenant",
            "any-external",
            "contoso",
        ),
        ("sol@newco.example", "", "any-external", newco.as_str()),
    ];
    for (caller, tenant, policy, organization) in cases {
        let request = server
            .request_external(caller, policy, external(caller, tenant))
            .await
            .unwrap_or_else(|s| panic!("{caller} via {policy}: {s:?}"));
        assert_eq!(request.state(), RequestState::Delivered, "{caller}");
        let requestor = request.external_requestor.expect("requestor");
        assert_eq!(
            requestor.connected_organization_id, organization,
            "{caller}"
        );
        assert_eq!(requestor.tenant_id, tenant, "{caller}");
        let user = server.get_user(caller).await;
        assert_eq!(user.connected_organization_id, organization, "{caller}");
    }
    let mut expected = vec!["contoso".to_string(), newco.clone()];
    expected.sort();
    assert_eq!(organization_ids(&server).await, expected);

    // Once an administrator configures the proposed organization, "all
    // configured" policies cover its users.
    server
        .directory(ADMIN)
        .update_connected_organization(UpdateConnectedOrganizationRequest {
            connected_organization: Some(ConnectedOrganization {
                id: newco.clone(),
                state: OrgState::Configured as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await
        .expect("configure the proposed organization");
    let request = server.request_add(nina, "configured-only").await.unwrap();
    assert_eq!(request.state(), RequestState::Delivered);
}

// ---------------------------------------------------------------------------
// What an external request needs.

#[tokio::test]
async fn external_requests_need_a_visible_catalog_and_a_well_formed_requestor() {
    let server = TestServer::start().await;
    server
        .add_organization("fabrikam", "fabrikam.example", OrgState::Configured)
        .await;
    catalog_with_package(&server, "hidden", false).await;
    catalog_with_package(&server, "open", true).await;
    server
        .add_policy(policy(
            "hidden-any",
            "hidden-pkg",
            Scope::AllExternalUsers,
            after(days(30)),
        ))
        .await;
    server
        .add_policy(for_organizations(
            &["fabrikam"],
            policy(
                "hidden-fabrikam",
                "hidden-pkg",
                Scope::SpecificConnectedOrganizationUsers,
                after(days(30)),
            ),
        ))
        .await;
    server
        .add_policy(policy(
            "open-any",
            "open-pkg",
            Scope::AllExternalUsers,
            after(days(30)),
        ))
        .await;
    let erin = "erin@fabrikam.example";

    // External scopes need an externally visible catalog; a refused
    // request leaves no proposed organization and no guest behind.
    let mark = server.write_mark().await;
    for (policy, email) in [
        ("hidden-any", "erin@newco.example"),
        ("hidden-any", erin),
        ("hidden-fabrikam", erin),
    ] {
        let result = server
            .request_external(erin, policy, external(email, ""))
            .await;
        assert_eq!(
            denied(result),
            ["invariant/external-scope-needs-visible-catalog"],
            "{email} via {policy}"
        );
    }

    // Malformed requestors are INVALID_ARGUMENT on the field at fault.
    let field = |name: &str| format!("assignment_request.external_requestor.{name}");
    let cases = [
        ("no @", external("erin.fabrikam.example", ""), "email"),
        ("empty email", external("", ""), "email"),
        ("no name", external("@fabrikam.example", ""), "email"),
        ("no domain", external("erin@", ""), "email"),
        (
            "email too long",
            external(&format!("{}@fabrikam.example", chars('e', 320)), ""),
            "email",
        ),
        ("domain without a dot", external("erin@newco", ""), "email"),
        (
            "space in the domain",
            external("erin@new co.example", ""),
            "email",
        ),
        (
            "control character",
            external("erin\u{7}@fabrikam.example", ""),
            "email",
        ),
        (
            "bad tenant",
            external(erin, "tenant with spaces"),
            "tenant_id",
        ),
        (
            "name too long",
            ExternalRequestor {
                display_name: chars('n', 257),
                ..external(erin, "")
            },
            "display_name",
        ),
    ];
    for (name, requestor, at_fault) in cases {
        let result = server
            .request_external(erin, "open-any", requestor)
            .await
            .map(tonic::Response::new);
        let status = expect_invalid(result, &[&field(at_fault)]);
        assert!(!status.message().is_empty(), "{name}");
    }

    // Without an external requestor, a caller not in the directory is not
    // found; external requestors ask only for themselves.
    let unknown = server.request_add(erin, "open-any").await;
    expect_not_found(unknown.map(tonic::Response::new), "user", erin);
    let for_someone_else = AssignmentRequest {
        r#type: RequestType::UserAdd as i32,
        assignment_policy_id: "open-any".into(),
        target_id: "someone@fabrikam.example".into(),
        external_requestor: Some(external(erin, "")),
        ..Default::default()
    };
    expect_code(
        server
            .request(erin, for_someone_else)
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
    );
    let admin_for_stranger = AssignmentRequest {
        r#type: RequestType::AdminAdd as i32,
        assignment_policy_id: "open-any".into(),
        target_id: erin.into(),
        external_requestor: Some(external(erin, "")),
        ..Default::default()
    };
    expect_not_found(
        server
            .request(ADMIN, admin_for_stranger)
            .await
            .map(tonic::Response::new),
        "user",
        erin,
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(organization_ids(&server).await, ["fabrikam"]);

    // The same requestor through a visible catalog gets in.
    let request = server
        .request_external(erin, "open-any", external(erin, ""))
        .await
        .expect("a visible catalog");
    assert_eq!(request.state(), RequestState::Delivered);
    assert_eq!(
        server.get_user(erin).await.connected_organization_id,
        "fabrikam"
    );

    // The longest email the directory takes (320 characters) and a blank
    // display name make a guest the directory can still update: the
    // display name defaults to the email, within the directory's limit.
    let domain = "@fabrikam.example";
    let longest = format!("{}{domain}", chars('l', 320 - domain.len()));
    let lou = "lou@fabrikam.example";
    let requestor = ExternalRequestor {
        display_name: "  ".into(),
        ..external(&longest, "")
    };
    let request = server
        .request_external(lou, "open-any", requestor)
        .await
        .expect("a 320-character email");
    assert_eq!(request.state(), RequestState::Delivered);
    let guest = server.get_user(lou).await;
    assert_eq!(guest.email, longest);
    assert_eq!(guest.display_name, longest[..256], "{guest:?}");
    let blocked = server.set_user_state(lou, UserState::Blocked).await;
    assert_eq!(blocked.state(), UserState::Blocked);
}

// ---------------------------------------------------------------------------
// Tenant settings and the external-user lifecycle.

#[tokio::test]
async fn settings_default_to_block_and_delete_after_30_days_and_validate_updates() {
    let server = TestServer::start().await;
    let defaults = server.get_settings().await;
    assert_eq!(
        defaults.external_user_lifecycle(),
        ExternalUserLifecycle::BlockSignInAndDelete
    );
    assert_eq!(defaults.delete_after, Some(days(30)));
    assert!(!defaults.etag.is_empty());

    let mark = server.write_mark().await;
    let cases = [
        (
            "negative delete_after",
            TenantSettings {
                delete_after: Some(seconds(-1)),
                ..Default::default()
            },
            "settings.delete_after",
        ),
        (
            "fractional delete_after",
            TenantSettings {
                delete_after: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 1,
                }),
                ..Default::default()
            },
            "settings.delete_after",
        ),
        (
            "delete_after over 3660 days",
            TenantSettings {
                delete_after: Some(days(3661)),
                ..Default::default()
            },
            "settings.delete_after",
        ),
        (
            "unknown lifecycle",
            TenantSettings {
                external_user_lifecycle: 99,
                ..Default::default()
            },
            "settings.external_user_lifecycle",
        ),
    ];
    for (name, settings, field) in cases {
        let result = server
            .update_settings(settings, &[])
            .await
            .map(tonic::Response::new);
        let status = expect_invalid(result, &[field]);
        assert!(!status.message().is_empty(), "{name}");
    }
    let stale = TenantSettings {
        external_user_lifecycle: ExternalUserLifecycle::None as i32,
        etag: "not-the-etag".into(),
        ..Default::default()
    };
    expect_code(
        server
            .update_settings(stale, &["external_user_lifecycle"])
            .await
            .map(tonic::Response::new),
        Code::Aborted,
    );
    server.assert_no_writes_since(mark).await;
    assert_eq!(server.get_settings().await, defaults);

    // A valid update with the current etag changes only what it names.
    let updated = server
        .update_settings(
            TenantSettings {
                external_user_lifecycle: ExternalUserLifecycle::BlockSignIn as i32,
                etag: defaults.etag.clone(),
                ..Default::default()
            },
            &["external_user_lifecycle"],
        )
        .await
        .expect("update the lifecycle");
    assert_eq!(
        updated.external_user_lifecycle(),
        ExternalUserLifecycle::BlockSignIn
    );
    assert_eq!(updated.delete_after, Some(days(30)));
    assert_ne!(updated.etag, defaults.etag);
    assert_eq!(server.get_settings().await, updated);

    // The old etag is now stale; the bounds of delete_after are accepted.
    let with_old_etag = TenantSettings {
        delete_after: Some(days(1)),
        etag: defaults.etag.clone(),
        ..Default::default()
    };
    expect_code(
        server
            .update_settings(with_old_etag, &["delete_after"])
            .await
            .map(tonic::Response::new),
        Code::Aborted,
    );
    for bound in [seconds(0), days(3660)] {
        let settings = TenantSettings {
            delete_after: Some(bound),
            ..Default::default()
        };
        let updated = server
            .update_settings(settings, &["delete_after"])
            .await
            .unwrap_or_else(|s| panic!("delete_after {bound:?}: {s:?}"));
        assert_eq!(updated.delete_after, Some(bound));
        assert_eq!(
            updated.external_user_lifecycle(),
            ExternalUserLifecycle::BlockSignIn
        );
    }
}

/// How a guest came to be.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// An external requestor the service created.
    Requested,
    /// Created with CreateUser: never governed.
    Directory,
}

/// What happens to a guest who loses their last assignment.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Untouched,
    Blocked,
    /// Blocked, and scheduled for deletion this many seconds later.
    BlockedUntil(i64),
}

struct LifecycleCase {
    guest: &'static str,
    lifecycle: ExternalUserLifecycle,
    delete_after: prost_types::Duration,
    origin: Origin,
    /// How many assignments the guest holds before losing them one by one.
    assignments: usize,
    fate: Fate,
    /// The state 60 days after losing the last assignment.
    in_the_end: UserState,
}

fn case(
    guest: &'static str,
    lifecycle: ExternalUserLifecycle,
    origin: Origin,
    fate: Fate,
    in_the_end: UserState,
) -> LifecycleCase {
    LifecycleCase {
        guest,
        lifecycle,
        delete_after: days(30),
        origin,
        assignments: 1,
        fate,
        in_the_end,
    }
}

#[tokio::test]
async fn the_lifecycle_setting_decides_what_happens_to_a_guest_without_assignments() {
    use ExternalUserLifecycle as L;
    use UserState as U;
    let server = TestServer::start().await;
    server
        .add_organization("fabrikam", "fabrikam.example", OrgState::Configured)
        .await;
    catalog_with_package(&server, "guests", true).await;
    server
        .add_package("guests-extra-pkg", "guests", &["guests-app"])
        .await;
    for (id, package) in [("pass", "guests-pkg"), ("extra", "guests-extra-pkg")] {
        let pass = policy(
            id,
            package,
            Scope::SpecificConnectedOrganizationUsers,
            after(days(365)),
        );
        server
            .add_policy(for_organizations(&["fabrikam"], pass))
            .await;
    }

    let cases = [
        case(
            "del@fabrikam.example",
            L::BlockSignInAndDelete,
            Origin::Requested,
            Fate::BlockedUntil(30 * DAY),
            U::Deleted,
        ),
        LifecycleCase {
            delete_after: days(7),
            ..case(
                "week@fabrikam.example",
                L::BlockSignInAndDelete,
                Origin::Requested,
                Fate::BlockedUntil(7 * DAY),
                U::Deleted,
            )
        },
        LifecycleCase {
            assignments: 2,
            ..case(
                "two@fabrikam.example",
                L::BlockSignInAndDelete,
                Origin::Requested,
                Fate::BlockedUntil(30 * DAY),
                U::Deleted,
            )
        },
        case(
            "invited",
            L::BlockSignInAndDelete,
            Origin::Directory,
            Fate::Untouched,
            U::Active,
        ),
        case(
            "blk@fabrikam.example",
            L::BlockSignIn,
            Origin::Requested,
            Fate::Blocked,
            U::Blocked,
        ),
        case(
            "none@fabrikam.example",
            L::None,
            Origin::Requested,
            Fate::Untouched,
            U::Active,
        ),
    ];
    let start = server.clock_seconds();
    for case in &cases {
        let guest = case.guest;
        let settings = TenantSettings {
            external_user_lifecycle: case.lifecycle as i32,
            delete_after: Some(case.delete_after),
            ..Default::default()
        };
        server
            .update_settings(settings, &["external_user_lifecycle", "delete_after"])
            .await
            .expect("update settings");

        let mut held = Vec::new();
        for policy in ["pass", "extra"].into_iter().take(case.assignments) {
            let request = match (case.origin, held.is_empty()) {
                (Origin::Requested, true) => {
                    server
                        .request_external(guest, policy, external(guest, ""))
                        .await
                }
                (Origin::Directory, true) => {
                    server.add_user(guest, UserKind::Guest, "fabrikam").await;
                    server.request_add(guest, policy).await
                }
                (_, false) => server.request_add(guest, policy).await,
            };
            let request = request.unwrap_or_else(|s| panic!("{guest} via {policy}: {s:?}"));
            assert_eq!(request.state(), RequestState::Delivered, "{guest}");
            held.push(request.assignment_id);
        }
        let user = server.get_user(guest).await;
        let governed = matches!(case.origin, Origin::Requested);
        assert_eq!(user.governed, governed, "{user:?}");

        // Losing an assignment while another is held changes nothing.
        let last = held.pop().expect("an assignment");
        for assignment in held {
            admin_remove(&server, &assignment).await;
            let user = server.get_user(guest).await;
            assert_eq!(user.state(), U::Active, "{user:?}");
            assert_eq!(user.scheduled_delete_time, None, "{user:?}");
        }
        admin_remove(&server, &last).await;
        let user = server.get_user(guest).await;
        let fate = match (user.state(), user.scheduled_delete_time) {
            (U::Active, None) => Fate::Untouched,
            (U::Blocked, None) => Fate::Blocked,
            (U::Blocked, Some(at)) => Fate::BlockedUntil(at.seconds - start),
            _ => panic!("unexpected {user:?}"),
        };
        assert_eq!(fate, case.fate, "{guest}: {user:?}");
    }

    // Two months on, the guests scheduled for deletion are deleted, though
    // the setting is NONE by now (changing it does not touch guests already
    // scheduled); the others stay as they were.
    let settings = server.get_settings().await;
    assert_eq!(settings.external_user_lifecycle(), L::None);
    advance_days(&server, 60);
    for case in cases.iter().filter(|c| c.in_the_end == U::Deleted) {
        let deleted = user_reaches(&server, case.guest, U::Deleted).await;
        assert!(
            matches!(case.fate, Fate::BlockedUntil(_)),
            "only guests scheduled for deletion are deleted: {deleted:?}"
        );
        // The clock jumped past every schedule at once.
        assert_eq!(
            deleted.delete_time.map(|t| t.seconds),
            Some(start + 60 * DAY),
            "{deleted:?}"
        );
    }
    for case in cases.iter().filter(|c| c.in_the_end != U::Deleted) {
        let user = server.get_user(case.guest).await;
        assert_eq!(user.state(), case.in_the_end, "{user:?}");
        assert_eq!(user.scheduled_delete_time, None, "{user:?}");
    }
}

#[tokio::test]
async fn with_delete_after_zero_a_guest_is_deleted_at_the_next_round() {
    let server = TestServer::start().await;
    partner_world(&server).await;
    server
        .add_policy(for_organizations(
            &["fabrikam"],
            policy(
                "fabrikam-direct",
                "partners-pkg",
                Scope::SpecificConnectedOrganizationUsers,
                after(days(10)),
            ),
        ))
        .await;
    let zero = TenantSettings {
        delete_after: Some(seconds(0)),
        ..Default::default()
    };
    server
        .update_settings(zero, &["delete_after"])
        .await
        .expect("delete at once");
    let erin = "erin@fabrikam.example";
    let request = server
        .request_external(erin, "fabrikam-direct", external(erin, ""))
        .await
        .expect("no approval needed");
    assert_eq!(request.state(), RequestState::Delivered);

    // The guest gives the package up; without moving the clock, the next
    // background round deletes them.
    let start = server.clock_seconds();
    let remove = AssignmentRequest {
        r#type: RequestType::UserRemove as i32,
        assignment_id: request.assignment_id.clone(),
        ..Default::default()
    };
    let removed = server.request(erin, remove).await.expect("remove");
    assert_eq!(removed.state(), RequestState::Delivered);
    let deleted = user_reaches(&server, erin, UserState::Deleted).await;
    assert_eq!(deleted.delete_time.map(|t| t.seconds), Some(start));
    assert_eq!(server.clock_seconds(), start);
    let assignment = server.assignment(&request.assignment_id).await;
    assert_eq!(assignment.end_reason(), EndReason::RemovedByUser);
}
