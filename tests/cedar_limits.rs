//! Cedar text from callers and from files stays within what Cedar parses
//! safely, over real gRPC: an extra condition nested or chained too deep
//! is INVALID_ARGUMENT naming the field and the limit (before, one such
//! call aborted the whole process with a stack overflow), a stored
//! condition beyond the limits cannot take the server down, and operator
//! policy files beyond them stop start-up with a message.

mod common;

use std::collections::HashMap;

use common::world::{after, days, policy};
use common::*;
use entitlements::config::Settings;
use entitlements::pb::*;
use tonic::Code;

use AllowedTargetScope as Scope;

const FIELD: &str = "assignment_policy.extra_condition";

/// Conditions that overflowed a thread's stack in Cedar's parser, or that
/// nest or chain beyond the limits, each within the 4096-character limit
/// unless its name says otherwise.
fn too_deep() -> Vec<(&'static str, String)> {
    let around = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    vec![
        ("128 parentheses", around("(", "true", ")", 128)),
        ("300 brackets", "[".repeat(300)),
        ("300 records", "{a:".repeat(300)),
        ("17 parentheses", around("(", "true", ")", 17)),
        ("!(...) 100 deep", around("!(", "true", ")", 100)),
        (
            "10,000 negations (too long too)",
            format!("{}true", "!".repeat(10_000)),
        ),
        ("4,000 negations", format!("{}true", "!".repeat(4_000))),
        ("600 conjunctions", format!("true{}", "&&true".repeat(600))),
        (
            "2,000 attribute reads",
            format!("principal{}", ".a".repeat(2_000)),
        ),
        ("2,000 additions", format!("1{} == 1", "+1".repeat(2_000))),
        (
            "if nested in then, 100 deep",
            around("if true then ", "true", " else false", 100),
        ),
        (
            "else if, 100 deep",
            format!("{}true", "if true then false else ".repeat(100)),
        ),
        (
            "nested sets in a call",
            format!("[1].contains({})", around("[", "1", "]", 40)),
        ),
    ]
}

/// A package with one self-service policy ("plain", all members) and
/// users "sam" (Sales) and "lee" (Legal).
async fn world(server: &TestServer) {
    for (id, department) in [("sam", "Sales"), ("lee", "Legal")] {
        let user = User {
            attributes: HashMap::from([("department".to_string(), department.to_string())]),
            ..user(&id.to_uppercase())
        };
        server.create_user(id, user).await;
    }
    server.add_catalog("cat", false).await;
    server.add_resource("res", "cat", "group").await;
    server.add_package("pkg", "cat", &["res"]).await;
    server
        .add_policy(policy(
            "plain",
            "pkg",
            Scope::AllMemberUsers,
            after(days(7)),
        ))
        .await;
}

fn with_condition(id: &str, condition: &str) -> AssignmentPolicy {
    AssignmentPolicy {
        extra_condition: condition.into(),
        ..policy(id, "pkg", Scope::AllMemberUsers, after(days(7)))
    }
}

#[tokio::test]
async fn deeply_nested_extra_conditions_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    world(&server).await;
    let mut policies = server.policies(ADMIN);
    let mark = server.write_mark().await;
    let head = server.audit_head().await;
    for (case, condition) in too_deep() {
        let created = policies
            .create_assignment_policy(CreateAssignmentPolicyRequest {
                assignment_policy: Some(with_condition("deep", &condition)),
                assignment_policy_id: "deep".into(),
                request_id: String::new(),
            })
            .await;
        let status = expect_invalid(created, &[FIELD]);
        assert!(
            status.message().contains("at most"),
            "{case}: the limit is named: {status:?}"
        );
        let updated = policies
            .update_assignment_policy(UpdateAssignmentPolicyRequest {
                assignment_policy: Some(AssignmentPolicy {
                    id: "plain".into(),
                    extra_condition: condition.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["extra_condition"]),
            })
            .await;
        expect_invalid(updated, &[FIELD]);
    }
    assert_eq!(server.audit_head().await, head);
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn conditions_at_the_limits_are_accepted_and_decide() {
    let server = TestServer::start().await;
    world(&server).await;
    let sales = r#"principal.attributes.department == "Sales""#;
    let nested = format!("{}{sales}{}", "(".repeat(16), ")".repeat(16));
    // 62 operators: two reads, a comparison, and 59 conjunctions.
    let chained = format!("{sales}{}", " && true".repeat(59));
    for (id, condition) in [("nested", nested), ("chained", chained)] {
        server.add_policy(with_condition(id, &condition)).await;
        let compiled = server
            .policies(ADMIN)
            .get_compiled_policy(GetCompiledPolicyRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        assert!(compiled.cedar.contains(&condition));
    }
    for id in ["nested", "chained"] {
        let refused = server.request_add("lee", id).await;
        expect_code(refused.map(tonic::Response::new), Code::PermissionDenied);
    }
    let delivered = server.request_add("sam", "nested").await.unwrap();
    assert_eq!(delivered.state(), RequestState::Delivered);
    let explained = server
        .decisions(ADMIN)
        .explain_eligibility(ExplainEligibilityRequest {
            user_id: "sam".into(),
            access_package_id: "pkg".into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let chained = explained
        .policies
        .iter()
        .find(|p| p.assignment_policy_id == "chained")
        .unwrap();
    assert!(chained.allowed, "{explained:?}");
}

#[tokio::test]
async fn a_stored_condition_beyond_the_limits_cannot_take_the_server_down() {
    use entitlements::store::records;
    use entitlements::store::write;

    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(entitlements::shared::clock::ManualClock::new(epoch()));
    let server = TestServer::start_in(dir.path(), clock.clone()).await;
    world(&server).await;
    server
        .add_policy(with_condition(
            "deep",
            "principal.attributes has department",
        ))
        .await;
    server.stop().await.unwrap();

    // Written before conditions were bounded: 128 parentheses.
    std::thread::scope(|s| {
        s.spawn(|| {
            let store = common::open_store(dir.path());
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                write::<_, entitlements::store::records::RecordError, _>(store.as_ref(), |txn| {
                    let mut deep: AssignmentPolicy = records::require(txn, "deep")?;
                    let old = deep.clone();
                    deep.extra_condition = format!("{}true{}", "(".repeat(128), ")".repeat(128));
                    records::save(txn, Some(&old), &deep)
                })
                .await
                .unwrap();
            });
        });
    });

    let server = TestServer::start_in(dir.path(), clock).await;
    // The policy decides nothing; the package's other policy still works.
    let explained = server
        .decisions(ADMIN)
        .explain_eligibility(ExplainEligibilityRequest {
            user_id: "sam".into(),
            access_package_id: "pkg".into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let allowed: Vec<(&str, bool)> = explained
        .policies
        .iter()
        .map(|p| (p.assignment_policy_id.as_str(), p.allowed))
        .collect();
    assert_eq!(allowed, [("deep", false), ("plain", true)]);
    let refused = server.request_add("sam", "deep").await;
    expect_code(refused.map(tonic::Response::new), Code::PermissionDenied);
    // Any change to it must bring the condition within bounds.
    let renamed = server
        .policies(ADMIN)
        .update_assignment_policy(UpdateAssignmentPolicyRequest {
            assignment_policy: Some(AssignmentPolicy {
                id: "deep".into(),
                display_name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await;
    expect_invalid(renamed, &[FIELD]);
    server
        .policies(ADMIN)
        .update_assignment_policy(UpdateAssignmentPolicyRequest {
            assignment_policy: Some(AssignmentPolicy {
                id: "deep".into(),
                extra_condition: "principal.attributes has department".into(),
                ..Default::default()
            }),
            update_mask: mask(&["extra_condition"]),
        })
        .await
        .unwrap();
    let delivered = server.request_add("sam", "deep").await.unwrap();
    assert_eq!(delivered.state(), RequestState::Delivered);
    server.stop().await.unwrap();
}

#[test]
fn operator_policy_files_beyond_the_limits_stop_start_up_with_a_message() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let load = |extra: (&str, String)| {
        let dir = tempfile::tempdir().unwrap();
        for file in ["schema.cedarschema", "invariants.cedar", "admin.cedar"] {
            std::fs::copy(shipped.join(file), dir.path().join(file)).unwrap();
        }
        std::fs::write(dir.path().join(extra.0), extra.1).unwrap();
        let settings = Settings {
            policies: Some(dir.path().to_path_buf()),
            ..Settings::default()
        };
        entitlements::server::load_policies(&settings)
            .err()
            .map(|e| e.to_string())
    };
    let deep = format!(
        "@id(\"deep\")\nforbid (principal, action, resource) when {{ {}true{} }};",
        "(".repeat(300),
        ")".repeat(300)
    );
    let message = load(("deep.cedar", deep)).expect("refused");
    assert!(
        message.contains("deep.cedar") && message.contains("at most 16"),
        "{message}"
    );
    let chained = format!(
        "@id(\"long\")\nforbid (principal, action, resource) when {{ true{} }};",
        "&&true".repeat(50_000)
    );
    let message = load(("long.cedar", chained)).expect("refused");
    assert!(message.contains("long.cedar"), "{message}");
    // A schema is Cedar text too.
    let schema = std::fs::read_to_string(shipped.join("schema.cedarschema")).unwrap();
    let nested_type = format!(
        "{schema}\ntype Deep = {}Long{};",
        "{ a: ".repeat(300),
        " }".repeat(300)
    );
    let message = load(("schema.cedarschema", nested_type)).expect("refused");
    assert!(message.contains("schema.cedarschema"), "{message}");
    // Within the limits, an operator's file loads.
    let fine =
        "@id(\"fine\")\nforbid (principal, action, resource) when { ((false)) };".to_string();
    assert_eq!(load(("fine.cedar", fine)), None);
}
