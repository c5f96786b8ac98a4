//! Input the service refuses, over real gRPC, with INVALID_ARGUMENT naming
//! the field, and without writing anything: Timestamps and Durations
//! outside protobuf's ranges or their meaning, ids reserved for the
//! service itself, and request ids reused for a different request.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::world::{after, days, never, policy};
use common::*;
use entitlements::config::{ServicePrincipal, Settings};
use entitlements::pb::*;
use prost_types::{Duration, Timestamp};
use tonic::Code;

use AllowedTargetScope as Scope;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, protobuf's Timestamp
/// bounds.
const YEAR_1: i64 = -62_135_596_800;
const YEAR_9999_END: i64 = 253_402_300_799;

fn at(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

fn span(seconds: i64, nanos: i32) -> Duration {
    Duration { seconds, nanos }
}

/// Timestamps no end may be: outside the range, with bad nanos, or past.
fn bad_ends() -> Vec<(&'static str, Timestamp)> {
    let now = epoch_seconds();
    vec![
        ("year 1", at(YEAR_1, 0)),
        ("year 10000", at(YEAR_9999_END + 1, 0)),
        ("i64::MAX", at(i64::MAX, 0)),
        ("i64::MIN", at(i64::MIN, 0)),
        ("negative nanos", at(now + 86_400, -1)),
        ("nanos of a whole second", at(now + 86_400, 1_000_000_000)),
        ("yesterday", at(now - 86_400, 0)),
        ("now", at(now, 0)),
    ]
}

/// Durations outside protobuf's range or with inconsistent nanos.
fn bad_durations() -> Vec<(&'static str, Duration)> {
    vec![
        ("i64::MAX seconds", span(i64::MAX, 0)),
        ("i64::MIN seconds", span(i64::MIN, 0)),
        ("past 10,000 years", span(315_576_000_001, 0)),
        ("nanos out of range", span(60, 1_000_000_000)),
        ("nanos against the sign", span(60, -5)),
        ("negative", span(-60, 0)),
        ("zero", span(0, 0)),
    ]
}

/// What refused calls leave as it was: the store's revision and the head
/// of the audit trail.
struct Untouched {
    mark: u64,
    head: u64,
}

impl Untouched {
    async fn now(server: &TestServer) -> Self {
        let mark = server.write_mark().await;
        let head = server.audit_head().await;
        Self { mark, head }
    }

    /// Asserts nothing changed; returns a fresh write mark.
    async fn check(self, server: &TestServer) -> u64 {
        assert_eq!(
            server.audit_head().await,
            self.head,
            "audit events appended"
        );
        server.assert_no_writes_since(self.mark).await
    }
}

/// A catalog, a package and a self-service policy lasting 30 days; users
/// alice and bob.
async fn world(server: &TestServer) {
    server.add_member_user("alice").await;
    server.add_member_user("bob").await;
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    let open = AssignmentPolicy {
        requestor_settings: Some(RequestorSettings {
            enable_self_add: true,
            allow_custom_schedule: true,
            ..common::world::self_service()
        }),
        ..policy("pol", "pkg", Scope::AllMemberUsers, after(days(30)))
    };
    server.add_policy(open).await;
}

fn on_date(end: Timestamp) -> Expiration {
    Expiration {
        r#type: ExpirationType::OnDate as i32,
        duration: None,
        end_time: Some(end),
    }
}

// ------------------------------------------------- timestamps and durations

#[tokio::test]
async fn policy_end_dates_outside_the_timestamp_range_or_in_the_past_are_refused() {
    let server = TestServer::start().await;
    world(&server).await;
    let mut policies = server.policies(ADMIN);
    let untouched = Untouched::now(&server).await;
    for (case, end) in bad_ends() {
        let status = expect_invalid(
            policies
                .create_assignment_policy(CreateAssignmentPolicyRequest {
                    assignment_policy: Some(policy(
                        "dated",
                        "pkg",
                        Scope::AllMemberUsers,
                        on_date(end),
                    )),
                    assignment_policy_id: "dated".into(),
                    request_id: String::new(),
                })
                .await,
            &["assignment_policy.expiration.end_time"],
        );
        assert!(!status.message().is_empty(), "{case}");
        expect_invalid(
            policies
                .update_assignment_policy(UpdateAssignmentPolicyRequest {
                    assignment_policy: Some(AssignmentPolicy {
                        id: "pol".into(),
                        expiration: Some(on_date(end)),
                        ..Default::default()
                    }),
                    update_mask: mask(&["expiration"]),
                })
                .await,
            &["assignment_policy.expiration.end_time"],
        );
    }
    let mark = untouched.check(&server).await;

    // An end date that passed after it was set does not block other
    // changes to the policy.
    let tomorrow = at(epoch_seconds() + 86_400, 0);
    server
        .add_policy(policy(
            "dated",
            "pkg",
            Scope::AllMemberUsers,
            on_date(tomorrow),
        ))
        .await;
    server
        .clock
        .advance(std::time::Duration::from_secs(2 * 86_400));
    let renamed = policies
        .update_assignment_policy(UpdateAssignmentPolicyRequest {
            assignment_policy: Some(AssignmentPolicy {
                id: "dated".into(),
                display_name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.expiration.unwrap().end_time, Some(tomorrow));
    assert!(renamed.info.unwrap().revision > mark);
}

#[tokio::test]
async fn policy_durations_outside_the_duration_range_are_refused() {
    let server = TestServer::start().await;
    world(&server).await;
    let mut policies = server.policies(ADMIN);
    let untouched = Untouched::now(&server).await;
    for (case, duration) in bad_durations() {
        let lasting = policy("p2", "pkg", Scope::AllMemberUsers, after(duration));
        let status = expect_invalid(
            policies
                .create_assignment_policy(CreateAssignmentPolicyRequest {
                    assignment_policy: Some(lasting),
                    assignment_policy_id: "p2".into(),
                    request_id: String::new(),
                })
                .await,
            &["assignment_policy.expiration.duration"],
        );
        assert!(!status.message().is_empty(), "{case}");
        let timing_out = AssignmentPolicy {
            approval_settings: Some(common::world::approval(
                vec![ApprovalStage {
                    decision_timeout: Some(duration),
                    ..common::world::stage(vec![common::world::user_approver("bob")])
                }],
                false,
            )),
            ..policy("p3", "pkg", Scope::AllMemberUsers, never())
        };
        expect_invalid(
            policies
                .create_assignment_policy(CreateAssignmentPolicyRequest {
                    assignment_policy: Some(timing_out),
                    assignment_policy_id: "p3".into(),
                    request_id: String::new(),
                })
                .await,
            &["assignment_policy.approval_settings.stages[0].decision_timeout"],
        );
        let settings = TenantSettings {
            delete_after: Some(duration),
            ..Default::default()
        };
        if duration.seconds != 0 {
            // Zero is a valid delete_after: delete at once.
            expect_invalid(
                server
                    .update_settings(settings, &["delete_after"])
                    .await
                    .map(tonic::Response::new),
                &["settings.delete_after"],
            );
        }
        expect_invalid(
            server
                .reports(ADMIN)
                .expiring_assignments_report(ExpiringAssignmentsReportRequest {
                    within: Some(duration),
                    ..Default::default()
                })
                .await,
            &["within"],
        );
    }
    untouched.check(&server).await;
}

/// A USER_ADD through "pol" with `schedule`.
fn scheduled(start: Option<Timestamp>, end: Option<Timestamp>) -> AssignmentRequest {
    AssignmentRequest {
        r#type: RequestType::UserAdd as i32,
        assignment_policy_id: "pol".into(),
        schedule: Some(Schedule {
            start_time: start,
            end_time: end,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn request_schedules_outside_the_timestamp_range_or_ending_in_the_past_are_refused() {
    let server = TestServer::start().await;
    world(&server).await;
    let untouched = Untouched::now(&server).await;
    for (case, end) in bad_ends() {
        let status = expect_invalid(
            server
                .request("alice", scheduled(None, Some(end)))
                .await
                .map(tonic::Response::new),
            &["assignment_request.schedule.end_time"],
        );
        assert!(!status.message().is_empty(), "{case}");
    }
    let next_week = at(epoch_seconds() + 7 * 86_400, 0);
    for (case, start) in bad_ends()
        .into_iter()
        // A start in the past means now.
        .filter(|(_, t)| {
            !(YEAR_1..=YEAR_9999_END).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos)
        })
    {
        let status = expect_invalid(
            server
                .request("alice", scheduled(Some(start), Some(next_week)))
                .await
                .map(tonic::Response::new),
            &["assignment_request.schedule.start_time"],
        );
        assert!(!status.message().is_empty(), "{case}");
    }
    // A start so late that the policy's 30 days would run past year 9999.
    expect_invalid(
        server
            .request(
                "alice",
                scheduled(Some(at(YEAR_9999_END - 86_400, 0)), None),
            )
            .await
            .map(tonic::Response::new),
        &["assignment_request.schedule.start_time"],
    );
    untouched.check(&server).await;

    // The largest valid times are taken and read back.
    let last = at(YEAR_9999_END, 999_999_999);
    let request = server
        .request("alice", scheduled(None, Some(last)))
        .await
        .unwrap();
    assert_eq!(request.state(), RequestState::Delivered);
}

#[tokio::test]
async fn report_and_audit_times_outside_the_timestamp_range_are_refused() {
    let server = TestServer::start().await;
    world(&server).await;
    let untouched = Untouched::now(&server).await;
    let mut reports = server.reports(ADMIN);
    let mut audit = server.audit(ADMIN);
    let invalid = [
        at(YEAR_1 - 1, 0),
        at(YEAR_9999_END + 1, 0),
        at(i64::MAX, 0),
        at(0, -1),
        at(0, 1_000_000_000),
    ];
    for time in invalid {
        expect_invalid(
            reports
                .access_at_time_report(AccessAtTimeReportRequest {
                    at: Some(time),
                    access_package_id: "pkg".into(),
                    ..Default::default()
                })
                .await,
            &["at"],
        );
        for (start, end, field) in [
            (Some(time), None, "filter.start_time"),
            (None, Some(time), "filter.end_time"),
        ] {
            expect_invalid(
                audit
                    .list_audit_events(ListAuditEventsRequest {
                        filter: Some(AuditFilter {
                            start_time: start,
                            end_time: end,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await,
                &[field],
            );
        }
    }
    untouched.check(&server).await;
}

// -------------------------------------------------------------- reserved ids

#[tokio::test]
async fn a_user_cannot_take_the_id_the_service_acts_under() {
    let server = TestServer::start().await;
    let untouched = Untouched::now(&server).await;
    for id in ["system", "SYSTEM", "System"] {
        let status = expect_invalid(
            server
                .directory(ADMIN)
                .create_user(CreateUserRequest {
                    user: Some(user("Impostor")),
                    user_id: id.into(),
                    request_id: String::new(),
                })
                .await,
            &["user_id"],
        );
        assert!(status.message().contains("reserved"), "{status:?}");
    }
    // Nor call as it.
    let status = expect_code(
        server
            .directory("system")
            .get_user(GetUserRequest { id: ADMIN.into() })
            .await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("reserved"), "{status:?}");
    untouched.check(&server).await;
}

#[test]
fn configured_identities_cannot_take_the_id_the_service_acts_under() {
    let address: SocketAddr = "127.0.0.1:50051".parse().unwrap();
    let refused = |tweak: fn(&mut Settings)| {
        let mut settings = Settings {
            dev_auth: true,
            ..Settings::default()
        };
        tweak(&mut settings);
        match entitlements::server::authenticator(&settings, address) {
            Ok(_) => panic!("accepted"),
            Err(error) => error.to_string(),
        }
    };
    let message = refused(|s| {
        s.auth.service_principals = vec![ServicePrincipal {
            id: "system".into(),
            roles: vec!["decision-reader".into()],
        }]
    });
    assert!(
        message.contains("auth.service_principals") && message.contains("reserved"),
        "{message}"
    );
    let message = refused(|s| s.auth.global_admins = vec!["System".into()]);
    assert!(message.contains("auth.global_admins"), "{message}");
}

// --------------------------------------------------------------- request ids

#[tokio::test]
async fn a_request_id_reused_for_a_different_user_is_refused() {
    let server = TestServer::start().await;
    let mut directory = server.directory(ADMIN);
    let request = |name: &str| CreateUserRequest {
        // Several attributes: a map, whose order on the wire varies.
        user: Some(User {
            attributes: (0..8)
                .map(|i| (format!("k{i}"), format!("v{i}")))
                .collect::<HashMap<_, _>>(),
            ..user(name)
        }),
        user_id: String::new(),
        request_id: "create-1".into(),
    };
    let first = directory
        .create_user(request("Ann"))
        .await
        .unwrap()
        .into_inner();
    let untouched = Untouched::now(&server).await;
    for _ in 0..3 {
        let retried = directory
            .create_user(request("Ann"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(retried, first);
    }
    let status = expect_invalid(directory.create_user(request("Bea")).await, &["request_id"]);
    assert!(status.message().contains("CreateUser"), "{status:?}");
    untouched.check(&server).await;
}

#[tokio::test]
async fn a_request_id_reused_for_a_different_assignment_request_is_refused() {
    let server = TestServer::start().await;
    world(&server).await;
    let mut requests = server.requests("alice");
    let request = |justification: &str| CreateAssignmentRequestRequest {
        assignment_request: Some(AssignmentRequest {
            r#type: RequestType::UserAdd as i32,
            assignment_policy_id: "pol".into(),
            justification: justification.into(),
            ..Default::default()
        }),
        request_id: "ask-1".into(),
    };
    let first = requests
        .create_assignment_request(request("project"))
        .await
        .unwrap()
        .into_inner();
    let untouched = Untouched::now(&server).await;
    let retried = requests
        .create_assignment_request(request("project"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    expect_invalid(
        requests
            .create_assignment_request(request("another project"))
            .await,
        &["request_id"],
    );
    untouched.check(&server).await;
    // Another caller's request ids are its own.
    let bobs = server
        .requests("bob")
        .create_assignment_request(request("another project"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bobs.id, first.id);
}
