//! Builds the Cedar entities one decision needs, and nothing more: the
//! user with their groups (and those groups' ancestors), organization and
//! held packages, and the policy with its package and catalog.

use std::collections::{HashMap, HashSet, VecDeque};

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};

use crate::domain::assignment::ASSIGNMENTS_BY_TARGET;
use crate::domain::directory::{GROUPS_OF_GROUP, GROUPS_OF_USER, targets};
use crate::domain::scope::ScopeKind;
use crate::error::Result;
use crate::pb::{
    AccessPackage, ApprovalStageStatus, Assignment, AssignmentPolicy, AssignmentRequest, Catalog,
    ConnectedOrganization, ConnectedOrganizationState, GroupMembership, User, UserKind, UserState,
};
use crate::store::ReadView;
use crate::store::records::{self, Record};

use super::compile::entity_uid;
use super::{PackageSet, PolicyError};

/// A user as decisions see them.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub user: User,
    /// Whether the user is in the directory (external requestors are not).
    pub in_directory: bool,
    pub direct_groups: Vec<String>,
    /// Every group the user is in through nesting, with its parents.
    pub group_parents: HashMap<String, Vec<String>>,
    pub organization: Option<ConnectedOrganization>,
    /// Packages the user holds through active assignments.
    pub held_packages: Vec<String>,
}

/// Every group reachable from `direct` through nesting, each with its
/// direct parents (as `parents_of` tells them).
pub fn group_ancestry(
    direct: &[String],
    mut parents_of: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<HashMap<String, Vec<String>>> {
    let mut ancestry = HashMap::new();
    let mut queue: VecDeque<String> = direct.iter().cloned().collect();
    while let Some(group) = queue.pop_front() {
        if ancestry.contains_key(&group) {
            continue;
        }
        let parents = parents_of(&group)?;
        queue.extend(parents.iter().cloned());
        ancestry.insert(group, parents);
    }
    Ok(ancestry)
}

/// Where the facts about a directory user come from: the store (see
/// [`load_subject`]) or the decision view's memory.
pub trait SubjectFacts {
    /// The groups the user is a direct member of.
    fn direct_groups(&self, user: &str) -> Result<Vec<String>>;
    /// The groups a group is a direct member of.
    fn parent_groups(&self, group: &str) -> Result<Vec<String>>;
    fn organization(&self, id: &str) -> Result<Option<ConnectedOrganization>>;
    /// The packages the user holds through active assignments.
    fn held_packages(&self, user: &str) -> Result<Vec<String>>;
}

/// A directory user as decisions see them: the one way a [`Subject`] for a
/// user is built, from whichever facts.
pub fn subject_of(facts: &(impl SubjectFacts + ?Sized), user: User) -> Result<Subject> {
    let direct_groups = facts.direct_groups(&user.id)?;
    let group_parents = group_ancestry(&direct_groups, |group| facts.parent_groups(group))?;
    let organization = match user.connected_organization_id.as_str() {
        "" => None,
        id => facts.organization(id)?,
    };
    let held_packages = facts.held_packages(&user.id)?;
    Ok(Subject {
        user,
        in_directory: true,
        direct_groups,
        group_parents,
        organization,
        held_packages,
    })
}

/// The facts as stored.
struct Stored<'v, V: ReadView + ?Sized>(&'v V);

impl<V: ReadView + ?Sized> SubjectFacts for Stored<'_, V> {
    fn direct_groups(&self, user: &str) -> Result<Vec<String>> {
        targets(self.0, GroupMembership::KIND, GROUPS_OF_USER, user)
    }

    fn parent_groups(&self, group: &str) -> Result<Vec<String>> {
        targets(self.0, GroupMembership::KIND, GROUPS_OF_GROUP, group)
    }

    fn organization(&self, id: &str) -> Result<Option<ConnectedOrganization>> {
        Ok(records::load::<ConnectedOrganization>(self.0, id)?)
    }

    fn held_packages(&self, user: &str) -> Result<Vec<String>> {
        let mut held = Vec::new();
        for id in targets(self.0, Assignment::KIND, ASSIGNMENTS_BY_TARGET, user)? {
            if let Some(assignment) = records::load::<Assignment>(self.0, &id)?
                && assignment.is_active()
            {
                held.push(assignment.access_package_id);
            }
        }
        Ok(held)
    }
}

/// Loads what decisions need to know about a directory user.
pub fn load_subject(view: &(impl ReadView + ?Sized), user: User) -> Result<Subject> {
    subject_of(&Stored(view), user)
}

/// What a change goes through: the policy, its package and catalog.
pub struct Target<'a> {
    pub policy: &'a AssignmentPolicy,
    pub package: &'a AccessPackage,
    pub catalog: &'a Catalog,
}

fn build(
    uid: EntityUid,
    attrs: Vec<(&str, RestrictedExpression)>,
    parents: impl IntoIterator<Item = EntityUid>,
) -> Entity {
    let attrs = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Entity::new(uid, attrs, parents.into_iter().collect::<HashSet<_>>())
        .expect("attribute names are distinct")
}

pub fn user_uid(id: &str) -> EntityUid {
    entity_uid("User", id)
}

pub fn policy_uid(id: &str) -> EntityUid {
    entity_uid("AssignmentPolicy", id)
}

fn user_state(user: &User) -> &'static str {
    match user.state() {
        UserState::Active | UserState::Unspecified => "active",
        UserState::Blocked => "blocked",
        UserState::Deleted => "deleted",
    }
}

fn user_kind(user: &User) -> &'static str {
    match user.kind() {
        UserKind::Guest => "guest",
        UserKind::Member | UserKind::Unspecified => "member",
    }
}

/// The entities of access-change decisions about `subject` through each of
/// `targets` (normally the policies of one package), decided with `set`:
/// building them, and Cedar's transitive closure over them, once per call
/// rather than once per policy. Packages and catalogs the targets share
/// appear once. Of the packages the user holds, only those the set names
/// and the targets' own are given: a rule can test holding a package only
/// through a literal or through `resource.accessPackage`, and every other
/// held package only made the closure longer (it dominated its cost).
pub fn slice(
    subject: &Subject,
    targets: &[Target<'_>],
    set: &PackageSet,
) -> Result<Entities, PolicyError> {
    let mut entities = Vec::new();
    let relevant = |package: &str| {
        set.names_package(package) || targets.iter().any(|t| t.package.id == package)
    };
    push_subject(&mut entities, subject, relevant)?;
    let mut containers = HashSet::new();
    for target in targets {
        push_target(&mut entities, target, &mut containers);
    }
    Ok(Entities::from_entities(entities, None)?)
}

/// An approval stage as Cedar sees it.
pub struct Stage<'a> {
    pub request: &'a AssignmentRequest,
    pub status: &'a ApprovalStageStatus,
}

pub fn request_uid(id: &str) -> EntityUid {
    entity_uid("AssignmentRequest", id)
}

/// The entities of an approval decision by `approver` on `stage`.
pub fn approval_slice(
    approver: &Subject,
    stage: &Stage<'_>,
    target: &Target<'_>,
) -> Result<Entities, PolicyError> {
    let mut entities = Vec::new();
    push_subject(&mut entities, approver, |_| true)?;
    push_target(&mut entities, target, &mut HashSet::new());
    let users = |ids: &[String]| {
        RestrictedExpression::new_set(
            ids.iter()
                .map(|id| RestrictedExpression::new_entity_uid(user_uid(id))),
        )
    };
    let status = stage.status;
    entities.push(build(
        request_uid(&stage.request.id),
        vec![
            (
                "target",
                RestrictedExpression::new_entity_uid(user_uid(&stage.request.target_id)),
            ),
            ("stage", RestrictedExpression::new_long(status.stage.into())),
            ("fallback", RestrictedExpression::new_bool(status.fallback)),
            ("manager", users(&status.manager_ids)),
            ("secondManager", users(&status.second_manager_ids)),
            ("internalSponsors", users(&status.internal_sponsor_ids)),
            ("externalSponsors", users(&status.external_sponsor_ids)),
        ],
        [policy_uid(&target.policy.id)],
    ));
    Ok(Entities::from_entities(entities, None)?)
}

/// The user, their organization and their groups (with ancestors), with
/// the held packages `relevant` keeps as parents.
fn push_subject(
    entities: &mut Vec<Entity>,
    subject: &Subject,
    relevant: impl Fn(&str) -> bool,
) -> Result<(), PolicyError> {
    let user = &subject.user;
    let mut parents: Vec<EntityUid> = subject
        .direct_groups
        .iter()
        .map(|g| entity_uid("Group", g))
        .collect();
    parents.extend(
        subject
            .held_packages
            .iter()
            .filter(|p| relevant(p))
            .map(|p| entity_uid("AccessPackage", p)),
    );
    let attributes = RestrictedExpression::new_record(
        user.attributes
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
    )?;
    let mut attrs = vec![
        (
            "kind",
            RestrictedExpression::new_string(user_kind(user).into()),
        ),
        (
            "state",
            RestrictedExpression::new_string(user_state(user).into()),
        ),
        (
            "inDirectory",
            RestrictedExpression::new_bool(subject.in_directory),
        ),
        (
            "email",
            RestrictedExpression::new_string(user.email.clone()),
        ),
        ("attributes", attributes),
    ];
    if let Some(organization) = &subject.organization {
        let org = entity_uid("ConnectedOrganization", &organization.id);
        parents.push(org.clone());
        attrs.push((
            "organization",
            RestrictedExpression::new_entity_uid(org.clone()),
        ));
        let configured = organization.state() == ConnectedOrganizationState::Configured;
        entities.push(build(
            org,
            vec![("configured", RestrictedExpression::new_bool(configured))],
            [],
        ));
    }
    entities.push(build(user_uid(&user.id), attrs, parents));
    for (group, group_parents) in &subject.group_parents {
        entities.push(build(
            entity_uid("Group", group),
            vec![],
            group_parents.iter().map(|p| entity_uid("Group", p)),
        ));
    }
    Ok(())
}

/// The policy with its package and catalog, unless `containers` (uids
/// already pushed) has them.
fn push_target(
    entities: &mut Vec<Entity>,
    target: &Target<'_>,
    containers: &mut HashSet<EntityUid>,
) {
    let catalog = entity_uid("Catalog", &target.catalog.id);
    let package = entity_uid("AccessPackage", &target.package.id);
    if containers.insert(catalog.clone()) {
        push_catalog(entities, target.catalog, catalog.clone());
    }
    if containers.insert(package.clone()) {
        entities.push(build(
            package.clone(),
            vec![(
                "catalog",
                RestrictedExpression::new_entity_uid(catalog.clone()),
            )],
            [catalog.clone()],
        ));
    }
    entities.push(build(
        policy_uid(&target.policy.id),
        vec![
            (
                "accessPackage",
                RestrictedExpression::new_entity_uid(package.clone()),
            ),
            ("catalog", RestrictedExpression::new_entity_uid(catalog)),
            (
                "externalScope",
                RestrictedExpression::new_bool(ScopeKind::of(target.policy).is_external()),
            ),
        ],
        [package],
    ));
}

fn push_catalog(entities: &mut Vec<Entity>, catalog: &Catalog, uid: EntityUid) {
    entities.push(build(
        uid,
        vec![
            (
                "enabled",
                RestrictedExpression::new_bool(catalog.enabled.unwrap_or(true)),
            ),
            (
                "externallyVisible",
                RestrictedExpression::new_bool(catalog.externally_visible.unwrap_or(false)),
            ),
        ],
        [],
    ));
}
