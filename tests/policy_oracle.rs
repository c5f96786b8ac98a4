//! Oracle tests: for generated directories and assignment policies, the
//! decision of the compiled Cedar policies equals a plain-Rust evaluation of
//! the same rules (scopes as the `AllowedTargetScope` comments in
//! `proto/entitlements/v1/policies.proto` state them, requestor settings,
//! invariants, separation of duties, extra conditions); and for generated
//! users and assignments, what the decision view says users hold
//! (CheckAccess, ListEffectiveGrants, WhoHasAccess, WatchGrants) equals a
//! plain-Rust evaluation of who holds what (assignments in effect at that instant,
//! nothing for blocked or deleted users).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use entitlements::pb::*;
use entitlements::policy::compile::actions::{ADMIN_ASSIGN, REQUEST_ACCESS};
use entitlements::policy::entities::{Subject, Target, policy_uid, slice, user_uid};
use entitlements::policy::{ChangeContext, PolicyEngine};
use proptest::prelude::*;

const GROUPS: usize = 5;
const ORGS: [(&str, bool); 2] = [("org-configured", true), ("org-proposed", false)];
const PACKAGES: [&str; 3] = ["pkg", "other-a", "other-b"];
const CONDITION: &str = r#"principal.attributes.department == "Sales""#;

#[derive(Debug, Clone)]
struct World {
    /// parents[g]: groups that directly contain group g (always lower index,
    /// so nesting has no cycles).
    parents: Vec<Vec<usize>>,
    user: GeneratedUser,
    policy: GeneratedPolicy,
    catalog_enabled: bool,
    catalog_visible: bool,
    incompatible_packages: Vec<usize>,
    incompatible_groups: Vec<usize>,
}

#[derive(Debug, Clone)]
struct GeneratedUser {
    member: bool,
    active: bool,
    organization: Option<usize>,
    groups: Vec<usize>,
    sales: Option<bool>,
    held: Vec<usize>,
    listed_by_id: bool,
}

#[derive(Debug, Clone)]
struct GeneratedPolicy {
    scope: AllowedTargetScope,
    groups: Vec<usize>,
    organizations: Vec<usize>,
    self_add: bool,
    condition: bool,
}

fn subset(len: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..len, 0..=len).prop_map(|s| s.into_iter().collect())
}

fn world() -> impl Strategy<Value = World> {
    let parents = (0..GROUPS)
        .map(|g| {
            if g == 0 {
                Just(Vec::new()).boxed()
            } else {
                subset(g).boxed()
            }
        })
        .collect::<Vec<_>>();
    let user = (
        any::<bool>(),
        prop::bool::weighted(0.85),
        prop::option::of(0..ORGS.len()),
        subset(GROUPS),
        prop::option::of(any::<bool>()),
        subset(PACKAGES.len()),
        any::<bool>(),
    )
        .prop_map(
            |(member, active, organization, groups, sales, held, listed_by_id)| GeneratedUser {
                member,
                active,
                organization,
                groups,
                sales,
                held,
                listed_by_id,
            },
        );
    let scope = prop::sample::select(vec![
        AllowedTargetScope::NotSpecified,
        AllowedTargetScope::SpecificDirectorySubjects,
        AllowedTargetScope::AllMemberUsers,
        AllowedTargetScope::AllDirectoryUsers,
        AllowedTargetScope::SpecificConnectedOrganizationUsers,
        AllowedTargetScope::AllConfiguredConnectedOrganizationUsers,
        AllowedTargetScope::AllExternalUsers,
    ]);
    let policy = (
        scope,
        subset(GROUPS),
        proptest::collection::btree_set(0..ORGS.len(), 1..=2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(scope, groups, organizations, self_add, condition)| GeneratedPolicy {
                scope,
                groups,
                organizations: organizations.into_iter().collect(),
                self_add,
                condition,
            },
        );
    (
        parents,
        user,
        policy,
        prop::bool::weighted(0.8),
        any::<bool>(),
        proptest::collection::btree_set(1..PACKAGES.len(), 0..=2),
        subset(GROUPS),
    )
        .prop_map(
            |(
                parents,
                user,
                policy,
                catalog_enabled,
                catalog_visible,
                incompatible_packages,
                incompatible_groups,
            )| World {
                parents,
                user,
                policy,
                catalog_enabled,
                catalog_visible,
                incompatible_packages: incompatible_packages.into_iter().collect(),
                incompatible_groups: incompatible_groups.into_iter().take(2).collect(),
            },
        )
}

fn group_id(g: usize) -> String {
    format!("g{g}")
}

/// Every group the user is in, directly or through nesting.
fn transitive_groups(world: &World) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = world.user.groups.clone();
    while let Some(g) = stack.pop() {
        if seen.insert(g) {
            stack.extend(world.parents[g].iter().copied());
        }
    }
    seen
}

struct Records {
    subject: Subject,
    policy: AssignmentPolicy,
    package: AccessPackage,
    catalog: Catalog,
}

fn records(world: &World) -> Records {
    let u = &world.user;
    let mut attributes = HashMap::new();
    if let Some(sales) = u.sales {
        attributes.insert(
            "department".to_string(),
            if sales { "Sales" } else { "Legal" }.to_string(),
        );
    }
    let user = User {
        id: "u1".into(),
        display_name: "U".into(),
        kind: if u.member {
            UserKind::Member
        } else {
            UserKind::Guest
        } as i32,
        state: if u.active {
            UserState::Active
        } else {
            UserState::Blocked
        } as i32,
        connected_organization_id: u
            .organization
            .map(|o| ORGS[o].0.to_string())
            .unwrap_or_default(),
        attributes,
        ..Default::default()
    };
    let organization = u.organization.map(|o| ConnectedOrganization {
        id: ORGS[o].0.into(),
        state: if ORGS[o].1 {
            ConnectedOrganizationState::Configured
        } else {
            ConnectedOrganizationState::Proposed
        } as i32,
        ..Default::default()
    });
    let mut group_parents = HashMap::new();
    for g in transitive_groups(world) {
        group_parents.insert(
            group_id(g),
            world.parents[g].iter().map(|p| group_id(*p)).collect(),
        );
    }
    let subject = Subject {
        user,
        in_directory: true,
        direct_groups: u.groups.iter().map(|g| group_id(*g)).collect(),
        group_parents,
        organization,
        held_packages: u.held.iter().map(|p| PACKAGES[*p].to_string()).collect(),
    };
    let p = &world.policy;
    let mut targets = SubjectSet::default();
    match p.scope {
        AllowedTargetScope::SpecificDirectorySubjects => {
            targets.group_ids = p.groups.iter().map(|g| group_id(*g)).collect();
            if u.listed_by_id || targets.group_ids.is_empty() {
                targets.user_ids = vec![if u.listed_by_id { "u1" } else { "someone-else" }.into()];
            }
        }
        AllowedTargetScope::SpecificConnectedOrganizationUsers => {
            targets.connected_organization_ids = p
                .organizations
                .iter()
                .map(|o| ORGS[*o].0.to_string())
                .collect();
        }
        _ => {}
    }
    let not_specified = p.scope == AllowedTargetScope::NotSpecified;
    let policy = AssignmentPolicy {
        id: "pol".into(),
        access_package_id: "pkg".into(),
        allowed_target_scope: p.scope as i32,
        specific_allowed_targets: Some(targets),
        requestor_settings: Some(RequestorSettings {
            enable_self_add: p.self_add && !not_specified,
            ..Default::default()
        }),
        expiration: Some(Expiration {
            r#type: ExpirationType::None as i32,
            ..Default::default()
        }),
        extra_condition: if p.condition {
            CONDITION.into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let package = AccessPackage {
        id: "pkg".into(),
        catalog_id: "cat".into(),
        incompatible_package_ids: world
            .incompatible_packages
            .iter()
            .map(|p| PACKAGES[*p].to_string())
            .collect(),
        incompatible_group_ids: world
            .incompatible_groups
            .iter()
            .map(|g| group_id(*g))
            .collect(),
        ..Default::default()
    };
    let catalog = Catalog {
        id: "cat".into(),
        enabled: Some(world.catalog_enabled),
        externally_visible: Some(world.catalog_visible),
        ..Default::default()
    };
    Records {
        subject,
        policy,
        package,
        catalog,
    }
}

/// The rules the compiled policies encode (see the module comment),
/// evaluated directly.
fn reference(world: &World, action: &str) -> bool {
    let u = &world.user;
    let p = &world.policy;
    let groups = transitive_groups(world);
    let request = action == REQUEST_ACCESS;
    let external_scope = matches!(
        p.scope,
        AllowedTargetScope::SpecificConnectedOrganizationUsers
            | AllowedTargetScope::AllConfiguredConnectedOrganizationUsers
            | AllowedTargetScope::AllExternalUsers
    );
    // Forbids.
    if !u.active {
        return false;
    }
    if request && (!world.catalog_enabled || (external_scope && !world.catalog_visible)) {
        return false;
    }
    let holds_incompatible = world
        .incompatible_packages
        .iter()
        .any(|p| u.held.contains(p));
    let in_incompatible_group = world.incompatible_groups.iter().any(|g| groups.contains(g));
    if holds_incompatible || in_incompatible_group {
        return false;
    }
    // Permits.
    if p.scope == AllowedTargetScope::NotSpecified {
        return !request;
    }
    if request && !p.self_add {
        return false;
    }
    let in_scope = match p.scope {
        AllowedTargetScope::SpecificDirectorySubjects => {
            u.listed_by_id || p.groups.iter().any(|g| groups.contains(g))
        }
        AllowedTargetScope::AllMemberUsers => u.member,
        AllowedTargetScope::AllDirectoryUsers => true,
        AllowedTargetScope::SpecificConnectedOrganizationUsers => {
            u.organization.is_some_and(|o| p.organizations.contains(&o))
        }
        AllowedTargetScope::AllConfiguredConnectedOrganizationUsers => {
            u.organization.is_some_and(|o| ORGS[o].1)
        }
        AllowedTargetScope::AllExternalUsers => u.organization.is_some(),
        _ => false,
    };
    let condition_holds = !p.condition || u.sales == Some(true);
    in_scope && condition_holds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compiled_cedar_agrees_with_the_reference(world in world()) {
        let engine = PolicyEngine::builtin().unwrap();
        let r = records(&world);
        let set = engine.package_set(&r.package, &[&r.policy]).unwrap();
        let target = Target { policy: &r.policy, package: &r.package, catalog: &r.catalog };
        let entities = slice(&r.subject, std::slice::from_ref(&target), &set).unwrap();
        let context = ChangeContext { now: 1_000, start: 1_000, custom_schedule: false };
        for action in [REQUEST_ACCESS, ADMIN_ASSIGN] {
            let decision = engine
                .decide(&set.policies, user_uid("u1"), action, policy_uid("pol"), context, &entities)
                .unwrap();
            prop_assert_eq!(
                decision.allowed,
                reference(&world, action),
                "{} decided by {:?}, errors {:?}",
                action,
                decision.policy_ids,
                decision.errors
            );
        }
    }
}

// ---------------------------------------------------------------- grants

use entitlements::decision::state::DecisionState;
use entitlements::shared::clock::Moment;
use entitlements::store::{Change, CommitObserver, KeyValue, ReadView, StoreResult, codec, keys};

const USERS: [&str; 3] = ["u0", "u1", "u2"];
/// Every (resource, role) pair a package may carry.
const ROLES: [(&str, &str); 4] = [
    ("r0", "member"),
    ("r0", "owner"),
    ("r1", "member"),
    ("r1", "owner"),
];
/// Nanoseconds around the moment asked about: starts, ends and `now` fall
/// within a few seconds of each other, at sub-second precision.
const SPAN: i64 = 3_000_000_000;
const BASE_SECONDS: i64 = 1_893_456_000;

#[derive(Debug, Clone)]
struct Holding {
    user: usize,
    package: usize,
    delivered: bool,
    start: i64,
    end: Option<i64>,
}

#[derive(Debug, Clone)]
struct Grants {
    /// Final user states: 0 active, 1 blocked, 2 deleted.
    states: Vec<u8>,
    packages: Vec<Vec<usize>>,
    holdings: Vec<Holding>,
    now: i64,
}

fn grants_world() -> impl Strategy<Value = Grants> {
    let holding = (
        0..USERS.len(),
        0..PACKAGES.len(),
        prop::bool::weighted(0.8),
        -SPAN..SPAN,
        prop::option::of(-SPAN..SPAN),
    )
        .prop_map(|(user, package, delivered, start, end)| Holding {
            user,
            package,
            delivered,
            start,
            end,
        });
    (
        proptest::collection::vec(prop::sample::select(vec![0u8, 0, 1, 2]), USERS.len()),
        proptest::collection::vec(subset(ROLES.len()), PACKAGES.len()),
        proptest::collection::vec(holding, 0..8),
        -SPAN..SPAN,
    )
        .prop_map(|(states, packages, holdings, now)| Grants {
            states,
            packages,
            holdings,
            now,
        })
}

fn moment(offset: i64) -> Moment {
    Moment::from_timestamp(prost_types::Timestamp {
        seconds: BASE_SECONDS,
        nanos: 0,
    })
    .after(prost_types::Duration {
        seconds: offset.div_euclid(1_000_000_000),
        nanos: offset.rem_euclid(1_000_000_000) as i32,
    })
}

/// A store with nothing in it: the view starts empty and follows commits.
struct Empty;

impl ReadView for Empty {
    fn get(&self, _: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(None)
    }

    fn scan<'a>(
        &'a self,
        _: &[u8],
        _: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        Box::new(std::iter::empty())
    }
}

fn user_record(id: &str, state: UserState) -> User {
    User {
        id: id.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn final_state(code: u8) -> UserState {
    match code {
        0 => UserState::Active,
        1 => UserState::Blocked,
        _ => UserState::Deleted,
    }
}

/// The view after committing, one revision each: the users (active), the
/// packages, the assignments (at most one per user and package, as the
/// service keeps it), then each user's final state.
fn view_of(world: &Grants) -> DecisionState {
    let view = DecisionState::load(&Empty, 0, 10_000).unwrap();
    let mut revision = 0;
    let mut commit = |kind: &str, id: &str, bytes: Vec<u8>| {
        revision += 1;
        let writes = [(keys::key(&[keys::RECORD, kind, id]), Some(bytes))];
        view.committed(&[Change {
            revision,
            writes: &writes,
        }]);
    };
    for user in USERS {
        commit(
            "user",
            user,
            codec::encode(&user_record(user, UserState::Active)),
        );
    }
    for (p, roles) in world.packages.iter().enumerate() {
        let package = AccessPackage {
            id: PACKAGES[p].into(),
            catalog_id: "cat".into(),
            resource_roles: roles
                .iter()
                .map(|r| ResourceRoleRef {
                    resource_id: ROLES[*r].0.into(),
                    role_id: ROLES[*r].1.into(),
                })
                .collect(),
            ..Default::default()
        };
        commit("access_package", PACKAGES[p], codec::encode(&package));
    }
    for (i, (_, h)) in holdings(world).iter().enumerate() {
        let assignment = Assignment {
            id: format!("a{i}"),
            target_id: USERS[h.user].into(),
            access_package_id: PACKAGES[h.package].into(),
            state: if h.delivered {
                AssignmentState::Delivered
            } else {
                AssignmentState::Expired
            } as i32,
            start_time: Some(moment(h.start).timestamp()),
            end_time: h.end.map(|e| moment(e).timestamp()),
            ..Default::default()
        };
        commit(
            "assignment",
            &assignment.id.clone(),
            codec::encode(&assignment),
        );
    }
    for (u, code) in world.states.iter().enumerate() {
        let user = user_record(USERS[u], final_state(*code));
        commit("user", USERS[u], codec::encode(&user));
    }
    view
}

/// The holdings the service could have: one per (user, package), by
/// assignment id ("a<index>").
fn holdings(world: &Grants) -> Vec<(String, Holding)> {
    let mut seen = HashSet::new();
    world
        .holdings
        .iter()
        .filter(|h| seen.insert((h.user, h.package)))
        .cloned()
        .enumerate()
        .map(|(i, h)| (format!("a{i}"), h))
        .collect()
}

type Triple = (String, String, String);

/// Who holds what: (user, resource, role) -> assignment ids, for the
/// holdings `counts`, of users who are active.
fn reference_grants(
    world: &Grants,
    counts: impl Fn(&Holding) -> bool,
) -> BTreeMap<Triple, BTreeSet<String>> {
    let mut grants: BTreeMap<Triple, BTreeSet<String>> = BTreeMap::new();
    for (id, h) in holdings(world) {
        if world.states[h.user] != 0 || !h.delivered || !counts(&h) {
            continue;
        }
        for r in &world.packages[h.package] {
            let (resource, role) = ROLES[*r];
            grants
                .entry((USERS[h.user].into(), resource.into(), role.into()))
                .or_default()
                .insert(id.clone());
        }
    }
    grants
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_decision_view_agrees_with_the_reference(world in grants_world()) {
        let view = view_of(&world);
        let now = moment(world.now);
        let in_effect = |h: &Holding| {
            moment(h.start) <= now && h.end.is_none_or(|e| now < moment(e))
        };
        let expected = reference_grants(&world, in_effect);
        let state = view.read();
        let mut from_check = BTreeMap::new();
        let mut from_grants = BTreeMap::new();
        for user in USERS {
            for (resource, role) in ROLES {
                let ids: BTreeSet<String> =
                    state.check(user, resource, role, now).into_iter().collect();
                if !ids.is_empty() {
                    from_check.insert((user.to_string(), resource.to_string(), role.to_string()), ids);
                }
            }
            for ((resource, role), sources) in state.effective_grants(user, now) {
                from_grants.insert(
                    (user.to_string(), resource, role),
                    sources.into_iter().map(|s| s.assignment_id).collect::<BTreeSet<_>>(),
                );
            }
        }
        prop_assert_eq!(&from_check, &expected, "CheckAccess");
        prop_assert_eq!(&from_grants, &expected, "ListEffectiveGrants");
        for (p, package) in PACKAGES.iter().enumerate() {
            let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (id, h) in holdings(&world) {
                if h.package == p && h.delivered && in_effect(&h) && world.states[h.user] == 0 {
                    holders.entry(USERS[h.user].into()).or_default().insert(id);
                }
            }
            let answer: BTreeMap<String, BTreeSet<String>> = state
                .package_holders(package, now)
                .into_iter()
                .map(|(u, ids)| (u, ids.into_iter().collect()))
                .collect();
            prop_assert_eq!(answer, holders, "WhoHasAccess package {}", package);
        }
        for (resource, role) in ROLES {
            let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for ((u, r, ro), ids) in &expected {
                if r == resource && ro == role {
                    holders.entry(u.clone()).or_default().extend(ids.iter().cloned());
                }
            }
            let answer: BTreeMap<String, BTreeSet<String>> = state
                .resource_holders(resource, Some(role), now)
                .into_iter()
                .map(|(u, ids)| (u, ids.into_iter().collect()))
                .collect();
            prop_assert_eq!(answer, holders, "WhoHasAccess {}/{}", resource, role);
        }
        drop(state);
        // WatchGrants follows committed state (ends are recorded by the
        // scheduler): every delivered assignment of an active user.
        let committed: BTreeSet<Triple> =
            reference_grants(&world, |_| true).into_keys().collect();
        let (past, _) = view.events.replay(0).unwrap();
        let mut folded = BTreeSet::new();
        for events in past {
            for change in events.changes {
                let triple = (change.user, change.resource, change.role);
                if change.added {
                    prop_assert!(folded.insert(triple.clone()), "added twice: {:?}", triple);
                } else {
                    prop_assert!(folded.remove(&triple), "removed unheld: {:?}", triple);
                }
            }
        }
        prop_assert_eq!(folded, committed, "WatchGrants");
    }
}
