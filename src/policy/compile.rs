//! Compiles assignment policies and package separation-of-duties lists to
//! Cedar. Every compiled policy carries a stable id, `<policy-id>/...` or
//! `<package-id>/...`, which decisions report. Ids are validated to a
//! quote-free alphabet before they get here, so they embed safely.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use crate::domain::scope::ScopeKind;
use crate::pb::{AccessPackage, Approver, AssignmentPolicy, ExpirationType, approver};

const NAMESPACE: &str = "Entitlements";

/// The schema's entity types, parsed once: decisions build many uids, and
/// parsing `Kind::"id"` text for each showed up in their profiles.
const KINDS: [&str; 11] = [
    "User",
    "Group",
    "ConnectedOrganization",
    "Role",
    "Tenant",
    "Catalog",
    "AccessRecord",
    "AccessPackage",
    "AssignmentPolicy",
    "AssignmentRequest",
    "Action",
];

static TYPE_NAMES: LazyLock<HashMap<&'static str, EntityTypeName>> =
    LazyLock::new(|| KINDS.into_iter().map(|k| (k, type_name(k))).collect());

fn type_name(kind: &str) -> EntityTypeName {
    EntityTypeName::from_str(&format!("{NAMESPACE}::{kind}"))
        .expect("entity kinds are valid Cedar names")
}

/// One compiled Cedar policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub text: String,
}

/// The actions of the schema, by name.
pub mod actions {
    pub const REQUEST_ACCESS: &str = "RequestAccess";
    pub const EXTEND_ACCESS: &str = "ExtendAccess";
    pub const REMOVE_ACCESS: &str = "RemoveAccess";
    pub const ADMIN_ASSIGN: &str = "AdminAssign";
    pub const APPROVE: &str = "Approve";
}
use actions::*;

pub fn entity(kind: &str, id: &str) -> String {
    format!("{NAMESPACE}::{kind}::\"{id}\"")
}

/// The uid of entity `id` of `kind`: the value [`entity`] spells.
pub fn entity_uid(kind: &str, id: &str) -> EntityUid {
    let name = TYPE_NAMES
        .get(kind)
        .cloned()
        .unwrap_or_else(|| type_name(kind));
    EntityUid::from_type_name_and_id(name, EntityId::new(id))
}

fn action_set(names: &[&str]) -> String {
    let list: Vec<_> = names.iter().map(|n| entity("Action", n)).collect();
    format!("[{}]", list.join(", "))
}

fn entity_set(kind: &str, ids: &[String]) -> String {
    let list: Vec<_> = ids.iter().map(|id| entity(kind, id)).collect();
    format!("[{}]", list.join(", "))
}

fn rule(effect: &str, id: String, actions: &[&str], resource: &str, conditions: &[String]) -> Rule {
    let when = if conditions.is_empty() {
        String::new()
    } else {
        format!("\nwhen {{ {} }}", conditions.join(" && "))
    };
    let text = format!(
        "@id(\"{id}\")\n{effect} (\n  principal,\n  action in {},\n  {resource}\n){when};",
        action_set(actions)
    );
    Rule { id, text }
}

/// The Cedar condition(s) on the principal that say who `scope` covers,
/// each with the suffix of its rule id: the same rule
/// [`ScopeKind::excludes`] states in Rust.
fn scope_conditions(scope: &ScopeKind<'_>) -> Vec<(&'static str, String)> {
    match scope {
        ScopeKind::Unset | ScopeKind::AdministratorsOnly => Vec::new(),
        ScopeKind::DirectorySubjects { users, groups } => {
            let mut conditions = Vec::new();
            if !users.is_empty() {
                conditions.push((
                    "users",
                    format!("{}.contains(principal)", entity_set("User", users)),
                ));
            }
            if !groups.is_empty() {
                conditions.push((
                    "groups",
                    format!("principal in {}", entity_set("Group", groups)),
                ));
            }
            conditions
        }
        ScopeKind::AllMembers => vec![("all-member-users", "principal.kind == \"member\"".into())],
        ScopeKind::AllDirectory => vec![("all-directory-users", "principal.inDirectory".into())],
        ScopeKind::Organizations { ids } => vec![(
            "organizations",
            format!("principal in {}", entity_set("ConnectedOrganization", ids)),
        )],
        ScopeKind::AllConfiguredOrganizations => vec![(
            "all-configured-organizations",
            "principal has organization && principal.organization.configured".into(),
        )],
        ScopeKind::AllExternal => vec![("all-external-users", "principal has organization".into())],
    }
}

/// The Cedar policies of one assignment policy.
pub fn compile_policy(policy: &AssignmentPolicy) -> Vec<Rule> {
    let id = &policy.id;
    let resource = format!("resource == {}", entity("AssignmentPolicy", id));
    let settings = policy.requestor_settings.unwrap_or_default();
    let mut rules = Vec::new();

    // Eligibility: whoever is in scope may be assigned by an administrator
    // and, as the requestor settings allow, request or extend themselves.
    let mut eligible_actions = vec![ADMIN_ASSIGN];
    if settings.enable_self_add {
        eligible_actions.push(REQUEST_ACCESS);
    }
    if settings.enable_self_update {
        eligible_actions.push(EXTEND_ACCESS);
    }
    let extra: Vec<String> = match policy.extra_condition.trim() {
        "" => Vec::new(),
        condition => vec![format!("({condition})")],
    };
    let mut eligible = |suffix: &str, condition: String| {
        let mut conditions = vec![condition];
        conditions.extend(extra.iter().cloned());
        rules.push(rule(
            "permit",
            format!("{id}/eligible/{suffix}"),
            &eligible_actions,
            &resource,
            &conditions,
        ));
    };
    let scope = ScopeKind::of(policy);
    for (suffix, condition) in scope_conditions(&scope) {
        eligible(suffix, condition);
    }
    if scope == ScopeKind::AdministratorsOnly {
        rules.push(rule(
            "permit",
            format!("{id}/admin-assign"),
            &[ADMIN_ASSIGN],
            &resource,
            &[],
        ));
    }
    if settings.enable_self_remove {
        rules.push(rule(
            "permit",
            format!("{id}/self-remove"),
            &[REMOVE_ACCESS],
            &resource,
            &[],
        ));
    }

    // Approval: who may decide each stage. The role sets (managers,
    // sponsors) are resolved when the stage starts and reach Cedar as
    // attributes of the request.
    let request_in_policy = format!("resource in {}", entity("AssignmentPolicy", id));
    for (index, stage) in policy
        .approval_settings
        .iter()
        .flat_map(|a| &a.stages)
        .enumerate()
    {
        let n = index + 1;
        for (list, approvers, fallback) in [
            ("primary", &stage.primary_approvers, false),
            ("fallback", &stage.fallback_approvers, true),
        ] {
            let Some(who) = approver_condition(approvers) else {
                continue;
            };
            let gate = if fallback {
                "resource.fallback"
            } else {
                "!resource.fallback"
            };
            rules.push(rule(
                "permit",
                format!("{id}/approve/stage-{n}/{list}"),
                &[APPROVE],
                &request_in_policy,
                &[
                    format!("resource.stage == {n}"),
                    gate.to_string(),
                    format!("({who})"),
                ],
            ));
        }
    }

    // Lifetime.
    if !settings.allow_custom_schedule {
        rules.push(rule(
            "forbid",
            format!("{id}/lifetime/no-custom-schedule"),
            &[REQUEST_ACCESS, EXTEND_ACCESS],
            &resource,
            &["context.customSchedule".into()],
        ));
    }
    if let Some(expiration) = &policy.expiration
        && expiration.r#type() == ExpirationType::OnDate
        && let Some(end) = expiration.end_time
    {
        rules.push(rule(
            "forbid",
            format!("{id}/lifetime/end-date"),
            &[REQUEST_ACCESS, EXTEND_ACCESS, ADMIN_ASSIGN],
            &resource,
            &[format!("context.start >= {}", end.seconds)],
        ));
    }
    rules
}

/// "The principal is one of `approvers`", or None for an empty list.
fn approver_condition(approvers: &[Approver]) -> Option<String> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut roles = Vec::new();
    for approver in approvers {
        match &approver.approver {
            Some(approver::Approver::UserId(user)) => users.push(user.clone()),
            Some(approver::Approver::GroupId(group)) => groups.push(group.clone()),
            Some(approver::Approver::ManagerLevel(2)) => roles.push("resource.secondManager"),
            Some(approver::Approver::ManagerLevel(_)) => roles.push("resource.manager"),
            Some(approver::Approver::InternalSponsors(_)) => {
                roles.push("resource.internalSponsors")
            }
            Some(approver::Approver::ExternalSponsors(_)) => {
                roles.push("resource.externalSponsors")
            }
            None => {}
        }
    }
    let mut conditions = Vec::new();
    if !users.is_empty() {
        conditions.push(format!(
            "{}.contains(principal)",
            entity_set("User", &users)
        ));
    }
    if !groups.is_empty() {
        conditions.push(format!("principal in {}", entity_set("Group", &groups)));
    }
    roles.dedup();
    conditions.extend(
        roles
            .into_iter()
            .map(|set| format!("{set}.contains(principal)")),
    );
    (!conditions.is_empty()).then(|| conditions.join(" || "))
}

/// The separation-of-duties policies of a package: holding an incompatible
/// package, or being in an incompatible group, forbids getting this one.
pub fn compile_package(package: &AccessPackage) -> Vec<Rule> {
    let resource = format!("resource in {}", entity("AccessPackage", &package.id));
    let mut rules = Vec::new();
    for (suffix, kind, ids) in [
        (
            "packages",
            "AccessPackage",
            &package.incompatible_package_ids,
        ),
        ("groups", "Group", &package.incompatible_group_ids),
    ] {
        if !ids.is_empty() {
            rules.push(rule(
                "forbid",
                format!("{}/incompatible/{suffix}", package.id),
                &[REQUEST_ACCESS, ADMIN_ASSIGN],
                &resource,
                &[format!("principal in {}", entity_set(kind, ids))],
            ));
        }
    }
    rules
}

/// The text of several rules, as one Cedar document.
pub fn render(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(|r| r.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}
