//! Requests become assignments, over real gRPC: who may request through
//! each scope, what every request type does, which cancellations are legal,
//! the rules a request must pass, what deletions do to requests and
//! assignments, and how grants follow assignments. Each test is driven by a
//! table; every row gets its own package and policy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, UNIX_EPOCH};

use common::world::{after, days, policy};
use common::*;
use entitlements::pb::*;
use entitlements::shared::clock::Clock;
use tonic::{Code, Status};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// The role `add_package` grants of each resource.
const ROLE: &str = "member";
/// How long assignments through the tests' policies last.
const POLICY_DAYS: i64 = 30;
/// Approves the stage of [`needs_approval`] policies.
const APPROVER: &str = "approver";

use AllowedTargetScope as Scope;
use RequestState as S;

// ----------------------------------------------------------------- helpers

/// The server's clock, in epoch seconds.
fn now(server: &TestServer) -> i64 {
    server
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn advance(server: &TestServer, seconds: i64) {
    server.clock.advance(Duration::from_secs(seconds as u64));
}

/// An add request of `kind` through `policy` for `target` ("" = the caller).
fn add_request(kind: RequestType, policy: &str, target: &str) -> AssignmentRequest {
    AssignmentRequest {
        r#type: kind as i32,
        assignment_policy_id: policy.into(),
        target_id: target.into(),
        ..Default::default()
    }
}

/// A request of `kind` about `assignment`, asking for `end` if any.
fn change_request(kind: RequestType, assignment: &str, end: Option<i64>) -> AssignmentRequest {
    AssignmentRequest {
        r#type: kind as i32,
        assignment_id: assignment.into(),
        schedule: end.map(|end| Schedule {
            start_time: None,
            end_time: at(end),
        }),
        ..Default::default()
    }
}

async fn admin_add(
    server: &TestServer,
    policy: &str,
    target: &str,
) -> Result<AssignmentRequest, Status> {
    server
        .request(ADMIN, add_request(RequestType::AdminAdd, policy, target))
        .await
}

fn answer(question: &str, values: &[&str]) -> Answer {
    Answer {
        question_id: question.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// Asserts a call failed with `code`; returns the status.
#[track_caller]
fn failed<T: Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// Asserts INVALID_ARGUMENT naming exactly `fields`.
#[track_caller]
fn invalid<T: Debug>(result: Result<T, Status>, fields: &[&str]) {
    let status = failed(result, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), fields, "violations of {status:?}");
}

fn states(request: &AssignmentRequest) -> Vec<RequestState> {
    request
        .history
        .iter()
        .map(|change| change.state())
        .collect()
}

/// The assignments giving `user` the role of `resource`, sorted; empty when
/// the user does not hold it.
async fn grant_of(server: &TestServer, user: &str, resource: &str) -> Vec<String> {
    let grants = server.user_grants(user).await;
    let mut ids: Vec<String> = grants
        .into_iter()
        .filter(|g| g.resource_id == resource && g.role_id == ROLE)
        .flat_map(|g| g.assignment_ids)
        .collect();
    ids.sort();
    ids
}

/// A resource, a package granting its role, and a policy into the package,
/// all named after one row.
struct Offer {
    resource: String,
    package: String,
    policy: String,
}

impl Offer {
    fn named(name: &str) -> Self {
        Self {
            resource: format!("{name}-r"),
            package: format!("{name}-p"),
            policy: name.to_string(),
        }
    }

    /// The row's ids in place of `{policy}` and `{package}`.
    fn expand(&self, template: &str) -> String {
        template
            .replace("{policy}", &self.policy)
            .replace("{package}", &self.package)
    }
}

/// Creates the [`Offer`] `name` in `catalog`: a self-service policy of
/// `scope` whose assignments last [`POLICY_DAYS`], changed by `shape`.
async fn offer(
    server: &TestServer,
    name: &str,
    catalog: &str,
    scope: Scope,
    shape: impl FnOnce(&mut AssignmentPolicy),
) -> Offer {
    let offer = Offer::named(name);
    server.add_resource(&offer.resource, catalog, "group").await;
    server
        .add_package(&offer.package, catalog, &[&offer.resource])
        .await;
    let mut policy = policy(
        &offer.policy,
        &offer.package,
        scope,
        after(days(POLICY_DAYS)),
    );
    shape(&mut policy);
    server.add_policy(policy).await;
    offer
}

fn settings(policy: &mut AssignmentPolicy) -> &mut RequestorSettings {
    policy.requestor_settings.get_or_insert_default()
}

fn plain(_: &mut AssignmentPolicy) {}

fn custom_schedule(policy: &mut AssignmentPolicy) {
    settings(policy).allow_custom_schedule = true;
}

/// USER_ADD waits for one stage of approval by [`APPROVER`].
fn needs_approval(policy: &mut AssignmentPolicy) {
    policy.approval_settings = Some(ApprovalSettings {
        approval_required_for_add: true,
        approval_required_for_update: false,
        stages: vec![ApprovalStage {
            primary_approvers: vec![Approver {
                approver: Some(approver::Approver::UserId(APPROVER.into())),
            }],
            ..Default::default()
        }],
    });
}

/// Asserts `request` was delivered at once as a new, active assignment of
/// its package to `target` ending at `end`, which gives the role of
/// `resource`; returns the assignment.
async fn assert_added(
    server: &TestServer,
    request: &AssignmentRequest,
    target: &str,
    resource: &str,
    end: Option<i64>,
) -> Assignment {
    let start = now(server);
    assert_eq!(request.state(), S::Delivered, "{request:?}");
    assert_eq!(states(request), [S::Submitted, S::Delivering, S::Delivered]);
    assert_eq!(request.complete_time, at(start));
    assert_eq!(request.target_id, target);
    let effective = request.effective_schedule.unwrap_or_default();
    assert_eq!(effective.start_time, at(start));
    assert_eq!(effective.end_time.map(|t| t.seconds), end);
    let assignment = server.assignment(&request.assignment_id).await;
    assert_eq!(assignment.state(), AssignmentState::Delivered);
    assert_eq!(assignment.target_id, target);
    assert_eq!(assignment.access_package_id, request.access_package_id);
    assert_eq!(
        assignment.assignment_policy_id,
        request.assignment_policy_id
    );
    assert_eq!(assignment.request_id, request.id);
    assert_eq!(assignment.start_time, at(start));
    assert_eq!(assignment.end_time.map(|t| t.seconds), end);
    assert_eq!(
        grant_of(server, target, resource).await,
        [assignment.id.as_str()]
    );
    assignment
}

/// The policy ids GetCompiledPolicy lists for `policy`, after checking that
/// its Cedar text carries each of them, in order, and no other.
async fn compiled_ids(server: &TestServer, policy: &str) -> Vec<String> {
    let compiled = server
        .policies(ADMIN)
        .get_compiled_policy(GetCompiledPolicyRequest { id: policy.into() })
        .await
        .expect("get compiled policy")
        .into_inner();
    assert_eq!(compiled.assignment_policy_id, policy);
    assert_eq!(
        compiled.cedar.matches("@id(").count(),
        compiled.policy_ids.len(),
        "{compiled:?}"
    );
    let mut rest = compiled.cedar.as_str();
    for id in &compiled.policy_ids {
        let annotation = format!("@id(\"{id}\")");
        let found = rest
            .find(&annotation)
            .unwrap_or_else(|| panic!("{annotation} missing (or out of order) in {compiled:?}"));
        rest = &rest[found + annotation.len()..];
    }
    compiled.policy_ids
}

async fn block(server: &TestServer, user: &str) {
    server
        .directory(ADMIN)
        .update_user(UpdateUserRequest {
            user: Some(User {
                id: user.into(),
                state: UserState::Blocked as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await
        .expect("block user");
}

async fn disable_catalog(server: &TestServer, catalog: &str) {
    server
        .catalogs(ADMIN)
        .update_catalog(UpdateCatalogRequest {
            catalog: Some(Catalog {
                id: catalog.into(),
                enabled: Some(false),
                ..Default::default()
            }),
            update_mask: mask(&["enabled"]),
        })
        .await
        .expect("disable catalog");
}

/// Makes `package` incompatible with `packages` and `groups`.
async fn set_incompatible(server: &TestServer, package: &str, packages: &[&str], groups: &[&str]) {
    let ids = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    server
        .packages(ADMIN)
        .update_access_package(UpdateAccessPackageRequest {
            access_package: Some(AccessPackage {
                id: package.into(),
                incompatible_package_ids: ids(packages),
                incompatible_group_ids: ids(groups),
                ..Default::default()
            }),
            update_mask: mask(&["incompatible_package_ids", "incompatible_group_ids"]),
        })
        .await
        .expect("set incompatible packages and groups");
}

async fn delete_policy(server: &TestServer, id: &str) -> Result<DeleteResponse, Status> {
    server
        .policies(ADMIN)
        .delete_assignment_policy(DeleteAssignmentPolicyRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn delete_package(server: &TestServer, id: &str) -> Result<DeleteResponse, Status> {
    server
        .packages(ADMIN)
        .delete_access_package(DeleteAccessPackageRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn delete_user(server: &TestServer, id: &str) -> Result<User, Status> {
    server
        .directory(ADMIN)
        .delete_user(DeleteUserRequest {
            id: id.into(),
            etag: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

// ------------------------------------------------------------------ scopes

/// Members "listed" (named by the policies that list users), "nested" (in
/// group "team", nested in "division") and "outsider" (in group
/// "elsewhere"); guests "guest" (no organization), "guest-conf" (of
/// CONFIGURED "org-conf") and "guest-prop" (of PROPOSED "org-prop").
const CAST: [&str; 6] = [
    "listed",
    "nested",
    "outsider",
    "guest",
    "guest-conf",
    "guest-prop",
];

async fn cast(server: &TestServer) {
    use ConnectedOrganizationState::{Configured, Proposed};
    server
        .add_organization("org-conf", "conf.example", Configured)
        .await;
    server
        .add_organization("org-prop", "prop.example", Proposed)
        .await;
    for member in ["listed", "nested", "outsider"] {
        server.add_member_user(member).await;
    }
    server.add_user("guest", UserKind::Guest, "").await;
    server
        .add_user("guest-conf", UserKind::Guest, "org-conf")
        .await;
    server
        .add_user("guest-prop", UserKind::Guest, "org-prop")
        .await;
    server.add_group("team", &["nested"]).await;
    server.add_group("division", &[]).await;
    server.nest_group("division", "team").await;
    server.add_group("elsewhere", &["outsider"]).await;
}

struct ScopeRow {
    scope: Scope,
    users: &'static [&'static str],
    groups: &'static [&'static str],
    organizations: &'static [&'static str],
    /// Who may USER_ADD.
    may_request: &'static [&'static str],
    /// The ids GetCompiledPolicy lists, after "<policy>/".
    compiled: &'static [&'static str],
}

const SELF_SERVICE_RULES: [&str; 2] = ["self-remove", "lifetime/no-custom-schedule"];

#[tokio::test]
async fn each_scope_lets_exactly_its_users_request() {
    let rows = [
        ScopeRow {
            scope: Scope::NotSpecified,
            users: &[],
            groups: &[],
            organizations: &[],
            may_request: &[],
            compiled: &["admin-assign", "lifetime/no-custom-schedule"],
        },
        ScopeRow {
            scope: Scope::SpecificDirectorySubjects,
            users: &["listed"],
            groups: &["division"],
            organizations: &[],
            may_request: &["listed", "nested"],
            compiled: &["eligible/users", "eligible/groups"],
        },
        ScopeRow {
            scope: Scope::AllMemberUsers,
            users: &[],
            groups: &[],
            organizations: &[],
            may_request: &["listed", "nested", "outsider"],
            compiled: &["eligible/all-member-users"],
        },
        ScopeRow {
            scope: Scope::AllDirectoryUsers,
            users: &[],
            groups: &[],
            organizations: &[],
            may_request: &CAST,
            compiled: &["eligible/all-directory-users"],
        },
        ScopeRow {
            scope: Scope::SpecificConnectedOrganizationUsers,
            users: &[],
            groups: &[],
            organizations: &["org-conf"],
            may_request: &["guest-conf"],
            compiled: &["eligible/organizations"],
        },
        ScopeRow {
            scope: Scope::SpecificConnectedOrganizationUsers,
            users: &[],
            groups: &[],
            organizations: &["org-prop"],
            may_request: &["guest-prop"],
            compiled: &["eligible/organizations"],
        },
        ScopeRow {
            scope: Scope::AllConfiguredConnectedOrganizationUsers,
            users: &[],
            groups: &[],
            organizations: &[],
            may_request: &["guest-conf"],
            compiled: &["eligible/all-configured-organizations"],
        },
        ScopeRow {
            scope: Scope::AllExternalUsers,
            users: &[],
            groups: &[],
            organizations: &[],
            may_request: &["guest-conf", "guest-prop"],
            compiled: &["eligible/all-external-users"],
        },
    ];
    let server = TestServer::start().await;
    cast(&server).await;
    server.add_catalog("cat", true).await;

    for (i, row) in rows.iter().enumerate() {
        let offer = offer(&server, &format!("scope{i}"), "cat", row.scope, |p| {
            let ids = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
            p.specific_allowed_targets = Some(SubjectSet {
                user_ids: ids(row.users),
                group_ids: ids(row.groups),
                connected_organization_ids: ids(row.organizations),
            });
            if row.scope == Scope::NotSpecified {
                // Nobody requests: no self-service at all.
                p.requestor_settings = None;
            }
        })
        .await;
        let mut expected: Vec<String> = row
            .compiled
            .iter()
            .map(|id| format!("{}/{id}", offer.policy))
            .collect();
        if row.scope != Scope::NotSpecified {
            expected.extend(
                SELF_SERVICE_RULES
                    .iter()
                    .map(|id| format!("{}/{id}", offer.policy)),
            );
        }
        assert_eq!(
            compiled_ids(&server, &offer.policy).await,
            expected,
            "{:?}",
            row.scope
        );

        for user in CAST {
            let context = format!("{:?} {:?}, {user}", row.scope, row.organizations);
            let result = server.request_add(user, &offer.policy).await;
            if row.may_request.contains(&user) {
                let request = result.unwrap_or_else(|s| panic!("{context}: {s:?}"));
                let end = now(&server) + POLICY_DAYS * DAY;
                assert_added(&server, &request, user, &offer.resource, Some(end)).await;
            } else {
                // Nothing permits it, so no policy decided: the list is empty.
                assert_eq!(denied(result), Vec::<String>::new(), "{context}");
                let stored = server.user_requests(user).await;
                assert!(
                    stored.iter().all(|r| r.access_package_id != offer.package),
                    "{context}: a denied request was stored: {stored:?}"
                );
                assert_eq!(grant_of(&server, user, &offer.resource).await, [""; 0]);
            }
        }
        let requested: BTreeSet<String> = server
            .package_requests(&offer.package)
            .await
            .into_iter()
            .map(|r| r.target_id)
            .collect();
        let expected: BTreeSet<String> = row.may_request.iter().map(|u| u.to_string()).collect();
        assert_eq!(requested, expected, "{:?}", row.scope);

        if row.scope == Scope::NotSpecified {
            // Administrators assign anyone directly.
            for user in CAST {
                let request = admin_add(&server, &offer.policy, user)
                    .await
                    .unwrap_or_else(|s| panic!("ADMIN_ADD {user}: {s:?}"));
                assert_eq!(request.requestor_id, ADMIN);
                let end = now(&server) + POLICY_DAYS * DAY;
                assert_added(&server, &request, user, &offer.resource, Some(end)).await;
            }
        }
    }
}

// ----------------------------------------------------------- request types

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// What a request type row leads to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// A new active assignment for this user.
    Added(&'static str),
    /// The held assignment, same id, now ends this many days after the
    /// request.
    Extended(i64),
    /// The held assignment ended for this reason.
    Ended(EndReason),
    /// INVALID_ARGUMENT on these fields.
    Invalid(&'static [&'static str]),
    /// PERMISSION_DENIED, no policy deciding.
    Denied,
}

struct TypeRow {
    name: &'static str,
    /// How the policy's requestor settings differ from full self-service
    /// with custom schedules.
    settings: fn(&mut RequestorSettings),
    /// Who holds an assignment (made by ADMIN_ADD an hour earlier) that
    /// update and remove requests are about.
    holder: Option<&'static str>,
    caller: &'static str,
    kind: RequestType,
    target: &'static str,
    /// The end asked for, in days after the request.
    end_days: Option<i64>,
    outcome: Outcome,
}

impl TypeRow {
    fn new(name: &'static str, caller: &'static str, kind: RequestType, outcome: Outcome) -> Self {
        Self {
            name,
            settings: |_| {},
            holder: None,
            caller,
            kind,
            target: "",
            end_days: None,
            outcome,
        }
    }

    fn held_by(self, holder: &'static str) -> Self {
        Self {
            holder: Some(holder),
            ..self
        }
    }

    fn target(self, target: &'static str) -> Self {
        Self { target, ..self }
    }

    fn end_days(self, days: i64) -> Self {
        Self {
            end_days: Some(days),
            ..self
        }
    }

    fn settings(self, settings: fn(&mut RequestorSettings)) -> Self {
        Self { settings, ..self }
    }
}

#[tokio::test]
async fn each_request_type_does_what_it_says() {
    use EndReason::{RemovedByAdmin, RemovedByUser};
    use Outcome::*;
    use RequestType::*;
    let no_self_update: fn(&mut RequestorSettings) = |s| s.enable_self_update = false;
    let no_self_remove: fn(&mut RequestorSettings) = |s| s.enable_self_remove = false;
    let rows = [
        TypeRow::new("user add", ALICE, UserAdd, Added(ALICE)),
        TypeRow::new("user add naming oneself", ALICE, UserAdd, Added(ALICE)).target(ALICE),
        TypeRow::new("user add for someone else", ALICE, UserAdd, Denied).target(BOB),
        TypeRow::new("user update", ALICE, UserUpdate, Extended(POLICY_DAYS)).held_by(ALICE),
        TypeRow::new("user update, earlier end", ALICE, UserUpdate, Extended(10))
            .held_by(ALICE)
            .end_days(10),
        TypeRow::new(
            "user update, capped",
            ALICE,
            UserUpdate,
            Extended(POLICY_DAYS),
        )
        .held_by(ALICE)
        .end_days(100),
        TypeRow::new("user update of another's", ALICE, UserUpdate, Denied).held_by(BOB),
        TypeRow::new("user update, self update off", ALICE, UserUpdate, Denied)
            .held_by(ALICE)
            .settings(no_self_update),
        TypeRow::new("user remove", ALICE, UserRemove, Ended(RemovedByUser)).held_by(ALICE),
        TypeRow::new("user remove of another's", ALICE, UserRemove, Denied).held_by(BOB),
        TypeRow::new("user remove, self remove off", ALICE, UserRemove, Denied)
            .held_by(ALICE)
            .settings(no_self_remove),
        TypeRow::new("admin add", ADMIN, AdminAdd, Added(BOB)).target(BOB),
        TypeRow::new(
            "admin update, earlier end",
            ADMIN,
            AdminUpdate,
            Extended(10),
        )
        .held_by(BOB)
        .end_days(10),
        TypeRow::new(
            "admin update, capped",
            ADMIN,
            AdminUpdate,
            Extended(POLICY_DAYS),
        )
        .held_by(BOB)
        .end_days(100),
        TypeRow::new(
            "admin update without an end",
            ADMIN,
            AdminUpdate,
            Invalid(&["assignment_request.schedule.end_time"]),
        )
        .held_by(BOB),
        TypeRow::new("admin remove", ADMIN, AdminRemove, Ended(RemovedByAdmin)).held_by(BOB),
        TypeRow::new(
            "system add",
            ADMIN,
            SystemAdd,
            Invalid(&["assignment_request.type"]),
        )
        .target(BOB),
        TypeRow::new(
            "system remove",
            ADMIN,
            SystemRemove,
            Invalid(&["assignment_request.type"]),
        )
        .held_by(BOB),
    ];
    let server = TestServer::start().await;
    server.add_member_user(ALICE).await;
    server.add_member_user(BOB).await;
    server.add_catalog("cat", false).await;

    for (i, row) in rows.iter().enumerate() {
        let name = row.name;
        let offer = offer(
            &server,
            &format!("type{i}"),
            "cat",
            Scope::AllMemberUsers,
            |p| {
                custom_schedule(p);
                (row.settings)(settings(p));
            },
        )
        .await;
        let held = match row.holder {
            Some(holder) => {
                let made = admin_add(&server, &offer.policy, holder).await.unwrap();
                let held = server.assignment(&made.assignment_id).await;
                advance(&server, HOUR);
                Some(held)
            }
            None => None,
        };
        let held_id = held.as_ref().map_or("", |a| a.id.as_str());
        let requested_at = now(&server);
        let end = row.end_days.map(|days| requested_at + days * DAY);
        let mut input = if held.is_some() {
            change_request(row.kind, held_id, end)
        } else {
            add_request(row.kind, &offer.policy, "")
        };
        input.target_id = row.target.into();
        let mark = server.write_mark().await;
        let result = server.request(row.caller, input).await;

        match row.outcome {
            Added(target) => {
                let request = result.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                assert_eq!(request.r#type(), row.kind, "{name}");
                assert_eq!(request.requestor_id, row.caller, "{name}");
                let end = requested_at + POLICY_DAYS * DAY;
                assert_added(&server, &request, target, &offer.resource, Some(end)).await;
            }
            Extended(days) => {
                let request = result.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                let held = held.clone().expect("a held assignment");
                assert_eq!(request.state(), S::Delivered, "{name}");
                assert_eq!(request.r#type(), row.kind, "{name}");
                assert_eq!(request.assignment_id, held.id, "{name}");
                let end = requested_at + days * DAY;
                assert_ne!(held.end_time, at(end), "{name}: the end must move");
                assert_eq!(
                    request.effective_schedule,
                    Some(Schedule {
                        start_time: held.start_time,
                        end_time: at(end),
                    }),
                    "{name}"
                );
                let assignment = server.assignment(&held.id).await;
                assert_eq!(assignment.state(), AssignmentState::Delivered, "{name}");
                assert_eq!(assignment.end_time, at(end), "{name}");
                assert_eq!(assignment.start_time, held.start_time, "{name}");
                assert_eq!(assignment.request_id, held.request_id, "{name}");
                assert_eq!(
                    grant_of(&server, &held.target_id, &offer.resource).await,
                    [held.id.as_str()],
                    "{name}"
                );
            }
            Ended(reason) => {
                let request = result.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                let held = held.clone().expect("a held assignment");
                assert_eq!(request.state(), S::Delivered, "{name}");
                assert_eq!(
                    states(&request),
                    [S::Submitted, S::Delivering, S::Delivered]
                );
                assert_eq!(request.assignment_id, held.id, "{name}");
                assert_eq!(request.target_id, held.target_id, "{name}");
                let assignment = server.assignment(&held.id).await;
                assert_eq!(assignment.state(), AssignmentState::Expired, "{name}");
                assert_eq!(assignment.end_reason(), reason, "{name}");
                assert_eq!(assignment.ended_time, at(requested_at), "{name}");
                assert_eq!(
                    grant_of(&server, &held.target_id, &offer.resource).await,
                    [""; 0],
                    "{name}: the grant must go"
                );
            }
            Invalid(fields) => {
                invalid(result, fields);
                server.assert_no_writes_since(mark).await;
            }
            Denied => {
                assert_eq!(denied(result), Vec::<String>::new(), "{name}");
                server.assert_no_writes_since(mark).await;
            }
        }
        if let (Some(held), Invalid(_) | Denied) = (&held, row.outcome) {
            assert_eq!(&server.assignment(&held.id).await, held, "{name}");
        }
    }
}

// ------------------------------------------------------------ cancellation

/// How a request is brought to the state a cancellation row starts from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    /// USER_ADD delivered at once.
    Delivered,
    /// USER_REMOVE delivered at once.
    RemovalDelivered,
    /// USER_ADD pending approval, canceled.
    Canceled,
    /// USER_ADD scheduled, then delivered when its start came.
    DeliveredOnSchedule,
    /// USER_ADD waiting for approval.
    PendingApproval,
    /// USER_ADD waiting for its start.
    Scheduled,
}

/// `user` asks for access starting `days` from now through `policy`; the
/// request is SCHEDULED.
async fn request_scheduled(
    server: &TestServer,
    user: &str,
    policy: &str,
    days: i64,
) -> AssignmentRequest {
    let start = now(server) + days * DAY;
    let mut input = add_request(RequestType::UserAdd, policy, "");
    input.schedule = Some(Schedule {
        start_time: at(start),
        end_time: None,
    });
    let request = server
        .request(user, input)
        .await
        .expect("scheduled request");
    assert_eq!(request.state(), S::Scheduled, "{request:?}");
    assert_eq!(request.assignment_id, "");
    assert_eq!(
        request.effective_schedule,
        Some(Schedule {
            start_time: at(start),
            end_time: at(start + POLICY_DAYS * DAY),
        })
    );
    request
}

/// Waits until background work delivered `request`.
async fn delivered(server: &TestServer, request: &str) -> AssignmentRequest {
    eventually("the scheduled request to be delivered", || async {
        let request = server.get_request(request).await;
        (request.state() == S::Delivered).then_some(request)
    })
    .await
}

async fn reach(server: &TestServer, user: &str, offer: &Offer, reach: Reach) -> AssignmentRequest {
    let policy = &offer.policy;
    match reach {
        Reach::Delivered => server.request_add(user, policy).await.unwrap(),
        Reach::RemovalDelivered => {
            let added = server.request_add(user, policy).await.unwrap();
            let remove = change_request(RequestType::UserRemove, &added.assignment_id, None);
            server.request(user, remove).await.unwrap()
        }
        Reach::PendingApproval | Reach::Canceled => {
            let request = server.request_add(user, policy).await.unwrap();
            assert_eq!(request.state(), S::PendingApproval, "{request:?}");
            assert_eq!(request.assignment_id, "");
            if reach == Reach::Canceled {
                server.cancel_request(user, &request.id).await.unwrap();
            }
            server.get_request(&request.id).await
        }
        Reach::Scheduled => request_scheduled(server, user, policy, 1).await,
        Reach::DeliveredOnSchedule => {
            let request = request_scheduled(server, user, policy, 1).await;
            advance(server, DAY);
            delivered(server, &request.id).await
        }
    }
}

#[tokio::test]
async fn only_waiting_requests_can_be_canceled() {
    use RequestState::*;
    // DENIED cannot be reached over the API yet (no approval decisions),
    // nor can DELIVERY_FAILED (an open add request keeps others out).
    let rows: [(Reach, Option<Code>, &[RequestState]); 6] = [
        (
            Reach::Delivered,
            Some(Code::FailedPrecondition),
            &[Submitted, Delivering, S::Delivered],
        ),
        (
            Reach::RemovalDelivered,
            Some(Code::FailedPrecondition),
            &[Submitted, Delivering, S::Delivered],
        ),
        (
            Reach::Canceled,
            Some(Code::FailedPrecondition),
            &[Submitted, PendingApproval, Canceled],
        ),
        (
            Reach::DeliveredOnSchedule,
            Some(Code::FailedPrecondition),
            &[Submitted, S::Scheduled, Delivering, S::Delivered],
        ),
        (
            Reach::PendingApproval,
            None,
            &[Submitted, PendingApproval, Canceled],
        ),
        (Reach::Scheduled, None, &[Submitted, S::Scheduled, Canceled]),
    ];
    let server = TestServer::start().await;
    server.add_member_user(APPROVER).await;
    server.add_catalog("cat", false).await;

    for (i, (how, code, history)) in rows.into_iter().enumerate() {
        let user = format!("user{i}");
        server.add_member_user(&user).await;
        let offer = offer(
            &server,
            &format!("cancel{i}"),
            "cat",
            Scope::AllMemberUsers,
            |p| match how {
                Reach::PendingApproval | Reach::Canceled => needs_approval(p),
                Reach::Scheduled | Reach::DeliveredOnSchedule => custom_schedule(p),
                Reach::Delivered | Reach::RemovalDelivered => {}
            },
        )
        .await;
        let before = reach(&server, &user, &offer, how).await;
        let result = server.cancel_request(&user, &before.id).await;
        let after = server.get_request(&before.id).await;
        match code {
            Some(code) => {
                failed(result, code);
                assert_eq!(after, before, "{how:?}: a refused cancel changes nothing");
            }
            None => {
                let canceled = result.unwrap_or_else(|s| panic!("{how:?}: {s:?}"));
                assert_eq!(canceled, after, "{how:?}");
                assert_eq!(canceled.state(), Canceled, "{how:?}");
                assert_eq!(canceled.complete_time, at(now(&server)), "{how:?}");
                let last = canceled.history.last().unwrap();
                assert_eq!(
                    (last.actor.as_str(), last.reason.as_str()),
                    (user.as_str(), "canceled")
                );
            }
        }
        assert_eq!(states(&after), history, "{how:?}");

        if how == Reach::Scheduled {
            // Once canceled, the start coming does not deliver it.
            advance(&server, 2 * DAY);
            server.run_due_work().await;
            assert_eq!(server.get_request(&before.id).await, after);
        }
        if code.is_none() {
            assert!(server.user_assignments(&user).await.is_empty(), "{how:?}");
            assert_eq!(grant_of(&server, &user, &offer.resource).await, [""; 0]);
        }
    }
}

#[tokio::test]
async fn a_scheduled_request_is_delivered_when_its_start_comes() {
    let server = TestServer::start().await;
    server.add_member_user(ALICE).await;
    server.add_catalog("cat", false).await;
    let offer = offer(
        &server,
        "later",
        "cat",
        Scope::AllMemberUsers,
        custom_schedule,
    )
    .await;
    let start = now(&server) + 2 * DAY;
    let request = request_scheduled(&server, ALICE, &offer.policy, 2).await;

    advance(&server, DAY);
    server.run_due_work().await;
    assert_eq!(server.get_request(&request.id).await, request, "not yet");
    assert!(server.user_assignments(ALICE).await.is_empty());

    advance(&server, DAY);
    let request = delivered(&server, &request.id).await;
    assert_eq!(
        states(&request),
        [S::Submitted, S::Scheduled, S::Delivering, S::Delivered]
    );
    let actors: Vec<&str> = request.history.iter().map(|c| c.actor.as_str()).collect();
    assert_eq!(actors, [ALICE, ALICE, "system", "system"]);
    assert_eq!(request.complete_time, at(start));
    let assignment = server.assignment(&request.assignment_id).await;
    assert_eq!(assignment.state(), AssignmentState::Delivered);
    assert_eq!(assignment.request_id, request.id);
    assert_eq!(assignment.start_time, at(start));
    assert_eq!(assignment.end_time, at(start + POLICY_DAYS * DAY));
    // The decision view applies the delivery once the store has committed
    // it, not necessarily before the store answers a read.
    eventually("the grant to reach the decision view", || async {
        (grant_of(&server, ALICE, &offer.resource).await == [assignment.id.clone()]).then_some(())
    })
    .await;
}

// ------------------------------------------------------------------- rules

/// The state of things before a rule row's request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Before {
    Nothing,
    /// The user holds the package already.
    Holds,
    /// The user's request for the package waits for approval.
    Pending,
    /// The user is BLOCKED.
    Blocked,
    /// The catalog is disabled.
    CatalogDisabled,
    /// The user holds a package this one is incompatible with.
    HoldsIncompatible,
    /// The user is in a group nested in one this package is incompatible
    /// with.
    InIncompatibleGroup,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Delivered, ending this many days from now.
    Delivered(i64),
    /// PERMISSION_DENIED by these policy ids ("{policy}" and "{package}"
    /// stand for the row's).
    Denied(&'static [&'static str]),
    Invalid(&'static [&'static str]),
    Precondition,
}

struct Rule {
    name: &'static str,
    kind: RequestType,
    scope: Scope,
    visible_catalog: bool,
    guest: bool,
    department: Option<&'static str>,
    shape: fn(&mut AssignmentPolicy),
    before: Before,
    input: fn(&mut AssignmentRequest, i64),
    expect: Expect,
}

impl Rule {
    fn new(name: &'static str, expect: Expect) -> Self {
        Self {
            name,
            kind: RequestType::UserAdd,
            scope: Scope::AllDirectoryUsers,
            visible_catalog: true,
            guest: false,
            department: None,
            shape: plain,
            before: Before::Nothing,
            input: |_, _| {},
            expect,
        }
    }

    fn admin(self) -> Self {
        Self {
            kind: RequestType::AdminAdd,
            ..self
        }
    }

    fn shape(self, shape: fn(&mut AssignmentPolicy)) -> Self {
        Self { shape, ..self }
    }

    fn before(self, before: Before) -> Self {
        Self { before, ..self }
    }

    fn input(self, input: fn(&mut AssignmentRequest, i64)) -> Self {
        Self { input, ..self }
    }

    /// A guest of a configured organization asks through an external scope.
    fn external(self, visible_catalog: bool) -> Self {
        Self {
            scope: Scope::AllExternalUsers,
            guest: true,
            visible_catalog,
            ..self
        }
    }

    fn department(self, department: Option<&'static str>) -> Self {
        Self {
            department,
            shape: |p| p.extra_condition = r#"principal.attributes.department == "Sales""#.into(),
            ..self
        }
    }
}

fn justification_required(policy: &mut AssignmentPolicy) {
    settings(policy).justification_required = true;
}

/// A required text question "why" and an optional choice "team".
fn questions(policy: &mut AssignmentPolicy) {
    policy.questions = vec![
        Question {
            id: "why".into(),
            text: "Why do you need it?".into(),
            required: true,
            kind: Some(question::Kind::TextInput(TextQuestion { max_length: 0 })),
        },
        Question {
            id: "team".into(),
            text: "Which team?".into(),
            required: false,
            kind: Some(question::Kind::Choice(ChoiceQuestion {
                choices: vec!["red".into(), "blue".into()],
                multiple: false,
            })),
        },
    ];
}

fn ask_end(request: &mut AssignmentRequest, end: i64) {
    request.schedule = Some(Schedule {
        start_time: None,
        end_time: at(end),
    });
}

#[tokio::test]
async fn requests_follow_the_rules() {
    use Expect::*;
    let rows = [
        Rule::new("second add while one is active", Precondition).before(Before::Holds),
        Rule::new("add while one is pending", Precondition)
            .shape(needs_approval)
            .before(Before::Pending),
        Rule::new("blocked user", Denied(&["invariant/target-active"])).before(Before::Blocked),
        Rule::new(
            "blocked user, admin add",
            Denied(&["invariant/target-active"]),
        )
        .admin()
        .before(Before::Blocked),
        Rule::new("disabled catalog", Denied(&["invariant/catalog-enabled"]))
            .before(Before::CatalogDisabled),
        // Disabling a catalog stops requests, not administrators.
        Rule::new("disabled catalog, admin add", Delivered(POLICY_DAYS))
            .admin()
            .before(Before::CatalogDisabled),
        Rule::new(
            "external scope, catalog not externally visible",
            Denied(&["invariant/external-scope-needs-visible-catalog"]),
        )
        .external(false),
        Rule::new("external scope, visible catalog", Delivered(POLICY_DAYS)).external(true),
        Rule::new(
            "holds an incompatible package",
            Denied(&["{package}/incompatible/packages"]),
        )
        .before(Before::HoldsIncompatible),
        Rule::new(
            "holds an incompatible package, admin add",
            Denied(&["{package}/incompatible/packages"]),
        )
        .admin()
        .before(Before::HoldsIncompatible),
        Rule::new(
            "nested in an incompatible group",
            Denied(&["{package}/incompatible/groups"]),
        )
        .before(Before::InIncompatibleGroup),
        Rule::new(
            "nested in an incompatible group, admin add",
            Denied(&["{package}/incompatible/groups"]),
        )
        .admin()
        .before(Before::InIncompatibleGroup),
        Rule::new(
            "justification missing",
            Invalid(&["assignment_request.justification"]),
        )
        .shape(justification_required),
        Rule::new(
            "justification blank",
            Invalid(&["assignment_request.justification"]),
        )
        .shape(justification_required)
        .input(|r, _| r.justification = " \n ".into()),
        Rule::new("justification given", Delivered(POLICY_DAYS))
            .shape(justification_required)
            .input(|r, _| r.justification = "quarterly audit".into()),
        Rule::new(
            "required question unanswered",
            Invalid(&["assignment_request.answers"]),
        )
        .shape(questions)
        .input(|r, _| r.answers = vec![answer("team", &["red"])]),
        Rule::new(
            "unknown question",
            Invalid(&["assignment_request.answers[1].question_id"]),
        )
        .shape(questions)
        .input(|r, _| r.answers = vec![answer("why", &["audit"]), answer("nope", &["x"])]),
        Rule::new(
            "choice not in the list",
            Invalid(&["assignment_request.answers[1].values[0]"]),
        )
        .shape(questions)
        .input(|r, _| r.answers = vec![answer("why", &["audit"]), answer("team", &["green"])]),
        Rule::new("answers that fit", Delivered(POLICY_DAYS))
            .shape(questions)
            .input(|r, _| r.answers = vec![answer("why", &["audit"]), answer("team", &["blue"])]),
        Rule::new(
            "custom end not allowed",
            Denied(&["{policy}/lifetime/no-custom-schedule"]),
        )
        .input(|r, now| ask_end(r, now + 10 * DAY)),
        Rule::new(
            "custom start not allowed",
            Denied(&["{policy}/lifetime/no-custom-schedule"]),
        )
        .input(|r, now| {
            r.schedule = Some(Schedule {
                start_time: at(now + DAY),
                end_time: None,
            })
        }),
        Rule::new("asked end before the policy's", Delivered(10))
            .shape(custom_schedule)
            .input(|r, now| ask_end(r, now + 10 * DAY)),
        Rule::new("asked end after the policy's", Delivered(POLICY_DAYS))
            .shape(custom_schedule)
            .input(|r, now| ask_end(r, now + 100 * DAY)),
        Rule::new("extra condition met", Delivered(POLICY_DAYS)).department(Some("Sales")),
        Rule::new("extra condition not met", Denied(&[])).department(Some("Engineering")),
        Rule::new("extra condition not met, admin add", Denied(&[]))
            .department(Some("Engineering"))
            .admin(),
        Rule::new("extra condition on a missing attribute", Denied(&[])).department(None),
    ];
    let server = TestServer::start().await;
    server.add_member_user(APPROVER).await;
    server
        .add_organization("org", "org.example", ConnectedOrganizationState::Configured)
        .await;

    for (i, row) in rows.iter().enumerate() {
        let name = row.name;
        let user = format!("rule{i}-user");
        let catalog = format!("rule{i}-cat");
        let created = User {
            email: format!("{user}@example.com"),
            kind: if row.guest {
                UserKind::Guest
            } else {
                UserKind::Member
            } as i32,
            connected_organization_id: if row.guest {
                "org".into()
            } else {
                String::new()
            },
            attributes: row
                .department
                .map(|d| ("department".to_string(), d.to_string()))
                .into_iter()
                .collect(),
            ..common::user(&user)
        };
        server.create_user(&user, created).await;
        server.add_catalog(&catalog, row.visible_catalog).await;
        let offer = offer(&server, &format!("rule{i}"), &catalog, row.scope, row.shape).await;

        match row.before {
            Before::Nothing => {}
            Before::Holds => {
                server.request_add(&user, &offer.policy).await.unwrap();
            }
            Before::Pending => {
                let pending = server.request_add(&user, &offer.policy).await.unwrap();
                assert_eq!(pending.state(), S::PendingApproval);
            }
            Before::Blocked => block(&server, &user).await,
            Before::CatalogDisabled => disable_catalog(&server, &catalog).await,
            Before::HoldsIncompatible => {
                let other = self::offer(
                    &server,
                    &format!("rule{i}-other"),
                    &catalog,
                    Scope::AllMemberUsers,
                    plain,
                )
                .await;
                server.request_add(&user, &other.policy).await.unwrap();
                set_incompatible(&server, &offer.package, &[&other.package], &[]).await;
            }
            Before::InIncompatibleGroup => {
                let team = format!("rule{i}-team");
                let division = format!("rule{i}-division");
                server.add_group(&team, &[&user]).await;
                server.add_group(&division, &[]).await;
                server.nest_group(&division, &team).await;
                set_incompatible(&server, &offer.package, &[], &[&division]).await;
            }
        }

        let compiled = compiled_ids(&server, &offer.policy).await;
        let requested_at = now(&server);
        let (caller, target) = match row.kind {
            RequestType::AdminAdd => (ADMIN, user.as_str()),
            _ => (user.as_str(), ""),
        };
        let mut input = add_request(row.kind, &offer.policy, target);
        (row.input)(&mut input, requested_at);
        let mark = server.write_mark().await;
        let result = server.request(caller, input).await;
        match row.expect {
            Delivered(days) => {
                let request = result.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                let end = requested_at + days * DAY;
                assert_added(&server, &request, &user, &offer.resource, Some(end)).await;
            }
            Denied(ids) => {
                let mut expected: Vec<String> = ids.iter().map(|id| offer.expand(id)).collect();
                expected.sort();
                let actual = denied(result);
                assert_eq!(actual, expected, "{name}");
                for id in actual
                    .iter()
                    .filter(|id| id.starts_with(&format!("{}/", offer.policy)))
                {
                    assert!(compiled.contains(id), "{name}: {id} is not compiled");
                }
            }
            Invalid(fields) => invalid(result, fields),
            Precondition => {
                failed(result, Code::FailedPrecondition);
            }
        }
        if !matches!(row.expect, Delivered(_)) {
            server.assert_no_writes_since(mark).await;
        }
    }
}

#[tokio::test]
async fn an_extra_condition_must_be_one_valid_expression() {
    let conditions = [
        // Not in the schema.
        "principal.nope == 1",
        // A string compared with a number.
        "principal.attributes.department == 1",
        // Not an expression: it would close the policy and add another.
        "true } ; permit(principal, action, resource) when { true",
        "",
    ];
    let scopes = [Scope::AllMemberUsers, Scope::NotSpecified];
    let server = TestServer::start().await;
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    let mut valid = policy("valid", "pkg", Scope::AllMemberUsers, after(days(1)));
    valid.extra_condition = r#"principal.attributes.country == "NL""#.into();
    let valid = server.add_policy(valid).await;

    for (i, condition) in conditions.into_iter().enumerate() {
        for scope in scopes {
            let context = format!("{condition:?} with {scope:?}");
            let mut created = policy(
                &format!("cond{i}-{}", scope as i32),
                "pkg",
                scope,
                after(days(1)),
            );
            if scope == Scope::NotSpecified {
                created.requestor_settings = None;
            }
            created.extra_condition = condition.into();
            let mark = server.write_mark().await;
            let result = server.try_add_policy(created.clone()).await;
            if condition.is_empty() {
                result.unwrap_or_else(|s| panic!("{context}: {s:?}"));
                continue;
            }
            invalid(result, &["assignment_policy.extra_condition"]);
            server.assert_no_writes_since(mark).await;
            let status = server
                .policies(ADMIN)
                .get_assignment_policy(GetAssignmentPolicyRequest { id: created.id })
                .await;
            failed(status, Code::NotFound);
        }
        if condition.is_empty() {
            continue;
        }
        // Updating a stored policy to it is refused the same way.
        let mark = server.write_mark().await;
        let result = server
            .policies(ADMIN)
            .update_assignment_policy(UpdateAssignmentPolicyRequest {
                assignment_policy: Some(AssignmentPolicy {
                    id: valid.id.clone(),
                    extra_condition: condition.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["extra_condition"]),
            })
            .await;
        invalid(result, &["assignment_policy.extra_condition"]);
        server.assert_no_writes_since(mark).await;
    }
}

// --------------------------------------------------------------- deletions

#[derive(Debug, Clone, Copy, PartialEq)]
enum Deleted {
    Package,
    Policy,
    User,
}

#[tokio::test]
async fn nothing_an_active_assignment_uses_can_be_deleted() {
    let server = TestServer::start().await;
    server.add_catalog("cat", false).await;
    for (i, what) in [Deleted::Package, Deleted::Policy].into_iter().enumerate() {
        let user = format!("holder{i}");
        server.add_member_user(&user).await;
        let offer = offer(
            &server,
            &format!("used{i}"),
            "cat",
            Scope::AllMemberUsers,
            plain,
        )
        .await;
        let added = server.request_add(&user, &offer.policy).await.unwrap();
        let result = match what {
            Deleted::Package => delete_package(&server, &offer.package).await,
            _ => delete_policy(&server, &offer.policy).await,
        };
        let status = failed(result, Code::FailedPrecondition);
        let in_use = (
            "IN_USE".to_string(),
            format!("assignment/{}", added.assignment_id),
        );
        assert!(
            precondition_violations(&status).contains(&in_use),
            "{what:?}: {status:?}"
        );
        let assignment = server.assignment(&added.assignment_id).await;
        assert_eq!(assignment.state(), AssignmentState::Delivered, "{what:?}");

        // Once the assignment ended, both go.
        let remove = change_request(RequestType::AdminRemove, &added.assignment_id, None);
        server.request(ADMIN, remove).await.unwrap();
        delete_policy(&server, &offer.policy).await.unwrap();
        delete_package(&server, &offer.package).await.unwrap();
    }
}

#[tokio::test]
async fn deleting_a_policy_or_the_target_cancels_open_requests() {
    let rows = [
        (
            Reach::PendingApproval,
            Deleted::Policy,
            "canceled: the assignment policy was deleted",
        ),
        (
            Reach::Scheduled,
            Deleted::Policy,
            "canceled: the assignment policy was deleted",
        ),
        (
            Reach::PendingApproval,
            Deleted::User,
            "canceled: the target was deleted",
        ),
        (
            Reach::Scheduled,
            Deleted::User,
            "canceled: the target was deleted",
        ),
    ];
    let server = TestServer::start().await;
    server.add_member_user(APPROVER).await;
    server.add_catalog("cat", false).await;
    for (i, (how, what, reason)) in rows.into_iter().enumerate() {
        let context = format!("{how:?} request, {what:?} deleted");
        let user = format!("open{i}");
        server.add_member_user(&user).await;
        let shape = if how == Reach::Scheduled {
            custom_schedule
        } else {
            needs_approval
        };
        let offer = offer(
            &server,
            &format!("open{i}"),
            "cat",
            Scope::AllMemberUsers,
            shape,
        )
        .await;
        let open = reach(&server, &user, &offer, how).await;
        match what {
            Deleted::Policy => {
                delete_policy(&server, &offer.policy).await.unwrap();
            }
            _ => {
                delete_user(&server, &user).await.unwrap();
            }
        }
        let request = server.get_request(&open.id).await;
        assert_eq!(request.state(), S::Canceled, "{context}");
        assert_eq!(request.complete_time, at(now(&server)), "{context}");
        let mut expected = states(&open);
        expected.push(S::Canceled);
        assert_eq!(states(&request), expected, "{context}");
        let last = request.history.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.reason.as_str()),
            (ADMIN, reason),
            "{context}"
        );
        assert!(server.user_assignments(&user).await.is_empty(), "{context}");
    }
}

#[tokio::test]
async fn deleting_a_user_ends_their_assignments() {
    let server = TestServer::start().await;
    server.add_member_user("leaver").await;
    server.add_member_user("stayer").await;
    server.add_catalog("cat", false).await;
    let mut offers = Vec::new();
    for name in ["self-added", "admin-added"] {
        offers.push(offer(&server, name, "cat", Scope::AllMemberUsers, plain).await);
    }
    let mut held = BTreeMap::new();
    for (offer, made) in offers.iter().zip([
        server.request_add("leaver", &offers[0].policy).await,
        admin_add(&server, &offers[1].policy, "leaver").await,
    ]) {
        held.insert(made.unwrap().assignment_id, offer);
    }
    let stays = server
        .request_add("stayer", &offers[0].policy)
        .await
        .unwrap();
    advance(&server, HOUR);

    delete_user(&server, "leaver").await.unwrap();
    let deleted_at = now(&server);
    let assignments = server.user_assignments("leaver").await;
    assert_eq!(assignments.len(), 2);
    for assignment in &assignments {
        assert!(held.contains_key(&assignment.id));
        assert_eq!(assignment.state(), AssignmentState::Expired);
        assert_eq!(assignment.end_reason(), EndReason::TargetDeleted);
        assert_eq!(assignment.ended_time, at(deleted_at));
    }
    let removals: BTreeMap<String, AssignmentRequest> = server
        .user_requests("leaver")
        .await
        .into_iter()
        .filter(|r| r.r#type() == RequestType::SystemRemove)
        .map(|r| (r.assignment_id.clone(), r))
        .collect();
    assert_eq!(
        removals.keys().collect::<Vec<_>>(),
        held.keys().collect::<Vec<_>>()
    );
    for (assignment, removal) in &removals {
        let offer = held[assignment];
        assert_eq!(removal.state(), S::Delivered);
        assert_eq!(states(removal), [S::Submitted, S::Delivering, S::Delivered]);
        assert_eq!(removal.target_id, "leaver");
        assert_eq!(removal.access_package_id, offer.package);
        assert_eq!(removal.assignment_policy_id, offer.policy);
        assert_eq!(removal.complete_time, at(deleted_at));
    }
    assert!(server.user_grants("leaver").await.is_empty());
    let kept = server.assignment(&stays.assignment_id).await;
    assert_eq!(kept.state(), AssignmentState::Delivered);
    assert_eq!(
        grant_of(&server, "stayer", &offers[0].resource).await,
        [kept.id.as_str()]
    );

    // The ended assignments no longer hold the policies in use.
    delete_policy(&server, &offers[1].policy).await.unwrap();
    failed(
        delete_policy(&server, &offers[0].policy).await,
        Code::FailedPrecondition,
    );
}

// ------------------------------------------------------------------ grants

#[tokio::test]
async fn a_grant_lasts_while_any_assignment_gives_it() {
    // "wide" grants both resources' roles, "narrow" only the shared one.
    let packages: [(&str, &[&str]); 2] = [("wide", &["shared", "extra"]), ("narrow", &["shared"])];
    let server = TestServer::start().await;
    server.add_catalog("cat", false).await;
    for resource in ["shared", "extra"] {
        server.add_resource(resource, "cat", "group").await;
    }
    for (package, resources) in packages {
        server.add_package(package, "cat", resources).await;
        let policy = policy(
            package,
            package,
            Scope::AllMemberUsers,
            after(days(POLICY_DAYS)),
        );
        server.add_policy(policy).await;
    }
    // Who gives up which package first.
    let orders = [
        ("u-wide-first", ["wide", "narrow"]),
        ("u-narrow-first", ["narrow", "wide"]),
    ];
    for (user, order) in orders {
        server.add_member_user(user).await;
        let mut held: Vec<(&str, String)> = Vec::new();
        for (package, _) in packages {
            let request = server.request_add(user, package).await.unwrap();
            held.push((package, request.assignment_id));
        }
        // The grants the held packages give, by (resource, role).
        let expected = |held: &[(&str, String)]| {
            let mut grants: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (package, assignment) in held {
                let resources = packages.iter().find(|(p, _)| p == package).unwrap().1;
                for resource in resources {
                    grants
                        .entry(*resource)
                        .or_default()
                        .push(assignment.clone());
                }
            }
            grants
                .into_iter()
                .map(|(resource, mut assignment_ids)| {
                    assignment_ids.sort();
                    Grant {
                        resource_id: resource.into(),
                        role_id: ROLE.into(),
                        assignment_ids,
                    }
                })
                .collect::<Vec<_>>()
        };
        let actual = || async {
            let mut grants = server.user_grants(user).await;
            for grant in &mut grants {
                grant.assignment_ids.sort();
            }
            grants
        };
        assert_eq!(actual().await, expected(&held), "{user}");
        assert_eq!(actual().await.len(), 2);

        for (step, package) in order.into_iter().enumerate() {
            let index = held.iter().position(|(p, _)| *p == package).unwrap();
            let (_, assignment) = held.remove(index);
            let kind = if step == 0 {
                RequestType::UserRemove
            } else {
                RequestType::AdminRemove
            };
            let caller = if step == 0 { user } else { ADMIN };
            server
                .request(caller, change_request(kind, &assignment, None))
                .await
                .unwrap();
            assert_eq!(actual().await, expected(&held), "{user} after {package}");
        }
        assert!(actual().await.is_empty(), "{user}");
    }
}
