//! The in-memory view decisions read: directory, packages, policies and
//! active assignments, loaded from the store at start-up and then changed by
//! every committed write (the store calls [`DecisionState::committed`]
//! before it acknowledges the write, so the view is never behind what a
//! client was told). Grant changes found while applying a commit go to the
//! event log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::domain::directory::Member;
use crate::domain::scope::{ScopeKey, ScopeKind};
use crate::pb::{
    AccessPackage, Assignment, AssignmentPolicy, Catalog, ConnectedOrganization,
    ConnectedOrganizationState, GroupMembership, RoleAssignment, User, UserKind, UserState,
};
use crate::policy::entities::{Subject, SubjectFacts, subject_of};
use crate::store::records::{Record, RecordChange};
use crate::store::{Change, CommitObserver, ReadView, Revision, StoreResult, keys};

use super::events::{EventLog, GrantChange, RevisionEvents};

/// Policies by what their scope names, to pick the candidates for a user
/// without looking at every policy.
#[derive(Debug, Default)]
pub struct ScopeIndex {
    by_user: HashMap<String, BTreeSet<String>>,
    by_group: HashMap<String, BTreeSet<String>>,
    by_organization: HashMap<String, BTreeSet<String>>,
    all_members: BTreeSet<String>,
    all_directory: BTreeSet<String>,
    all_configured: BTreeSet<String>,
    all_external: BTreeSet<String>,
}

impl ScopeIndex {
    fn set(&mut self, key: ScopeKey) -> &mut BTreeSet<String> {
        match key {
            ScopeKey::User(user) => self.by_user.entry(user).or_default(),
            ScopeKey::Group(group) => self.by_group.entry(group).or_default(),
            ScopeKey::Organization(id) => self.by_organization.entry(id).or_default(),
            ScopeKey::AllMembers => &mut self.all_members,
            ScopeKey::AllDirectory => &mut self.all_directory,
            ScopeKey::AllConfiguredOrganizations => &mut self.all_configured,
            ScopeKey::AllExternal => &mut self.all_external,
        }
    }

    fn add(&mut self, policy: &AssignmentPolicy) {
        for key in ScopeKind::of(policy).index_keys() {
            self.set(key).insert(policy.id.clone());
        }
    }

    fn remove(&mut self, policy: &AssignmentPolicy) {
        for key in ScopeKind::of(policy).index_keys() {
            self.set(key).remove(&policy.id);
        }
    }

    /// Policies whose scope may cover `subject` (Cedar has the last word).
    pub fn candidates(&self, subject: &Subject) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut add = |set: Option<&BTreeSet<String>>| {
            if let Some(set) = set {
                found.extend(set.iter().cloned());
            }
        };
        add(self.by_user.get(&subject.user.id));
        for group in subject.group_parents.keys() {
            add(self.by_group.get(group));
        }
        if subject.in_directory {
            add(Some(&self.all_directory));
            if subject.user.kind() != UserKind::Guest {
                add(Some(&self.all_members));
            }
        }
        if let Some(organization) = &subject.organization {
            add(self.by_organization.get(&organization.id));
            add(Some(&self.all_external));
            if organization.state() == ConnectedOrganizationState::Configured {
                add(Some(&self.all_configured));
            }
        }
        found
    }
}

/// Everything decisions read.
#[derive(Debug, Default)]
pub struct State {
    pub users: HashMap<String, User>,
    pub groups_of_user: HashMap<String, BTreeSet<String>>,
    pub parents_of_group: HashMap<String, BTreeSet<String>>,
    pub organizations: HashMap<String, ConnectedOrganization>,
    pub catalogs: HashMap<String, Catalog>,
    pub packages: HashMap<String, AccessPackage>,
    pub packages_by_resource: HashMap<String, BTreeSet<String>>,
    pub policies: HashMap<String, AssignmentPolicy>,
    pub policies_by_package: HashMap<String, BTreeSet<String>>,
    pub scopes: ScopeIndex,
    /// Active (delivered) assignments only.
    pub assignments: HashMap<String, Assignment>,
    pub assignments_by_user: HashMap<String, BTreeSet<String>>,
    /// package -> user -> assignment ids.
    pub holders_by_package: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Changes whenever a role assignment or a user does (a blocked user
    /// holds no roles): cached authorization decisions older than this are
    /// stale.
    pub roles_generation: u64,
}

/// The view answers from memory what the store would.
impl SubjectFacts for State {
    fn direct_groups(&self, user: &str) -> crate::error::Result<Vec<String>> {
        Ok(self
            .groups_of_user
            .get(user)
            .map(|g| g.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn parent_groups(&self, group: &str) -> crate::error::Result<Vec<String>> {
        Ok(self
            .parents_of_group
            .get(group)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn organization(&self, id: &str) -> crate::error::Result<Option<ConnectedOrganization>> {
        Ok(self.organizations.get(id).cloned())
    }

    fn held_packages(&self, user: &str) -> crate::error::Result<Vec<String>> {
        Ok(self
            .assignments_by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.assignments.get(id))
            .map(|a| a.access_package_id.clone())
            .collect())
    }
}

impl State {
    /// A directory user with groups (and their ancestors), organization
    /// and held packages, as decisions see them.
    pub fn subject(&self, user_id: &str) -> Option<Subject> {
        let user = self.users.get(user_id)?.clone();
        Some(subject_of(self, user).expect("reading the view's memory cannot fail"))
    }

    /// Whether `user` may hold access at all: blocked and deleted users hold
    /// nothing, whatever their assignments.
    pub fn may_hold_access(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_none_or(|u| !matches!(u.state(), UserState::Blocked | UserState::Deleted))
    }

    /// A user's grants through active assignments (ignoring end times: the
    /// grants the committed state gives), none while the user is blocked.
    fn committed_grants(&self, user: &str) -> BTreeSet<(String, String)> {
        let mut grants = BTreeSet::new();
        if !self.may_hold_access(user) {
            return grants;
        }
        for id in self.assignments_by_user.get(user).into_iter().flatten() {
            let Some(assignment) = self.assignments.get(id) else {
                continue;
            };
            if let Some(package) = self.packages.get(&assignment.access_package_id) {
                for role in &package.resource_roles {
                    grants.insert((role.resource_id.clone(), role.role_id.clone()));
                }
            }
        }
        grants
    }

    /// Users whose grants `update` may change (a user's own record too:
    /// blocking takes their grants, unblocking gives them back).
    fn affected_users(&self, update: &Update) -> BTreeSet<String> {
        match update {
            Update::Assignment { id, assignment } => self
                .assignments
                .get(id)
                .map(|a| a.target_id.clone())
                .into_iter()
                .chain(assignment.as_ref().map(|a| a.target_id.clone()))
                .collect(),
            Update::User { id, .. } => BTreeSet::from([id.clone()]),
            Update::Package { id, .. } => self
                .holders_by_package
                .get(id)
                .map(|h| h.keys().cloned().collect())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        }
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::User { id, user } => self.apply_user(id, user),
            Update::Membership { id, membership } => self.apply_membership(&id, membership),
            Update::Organization { id, organization } => match organization {
                Some(organization) => {
                    self.organizations.insert(id, organization);
                }
                None => {
                    self.organizations.remove(&id);
                }
            },
            Update::Catalog { id, catalog } => match catalog {
                Some(catalog) => {
                    self.catalogs.insert(id, catalog);
                }
                None => {
                    self.catalogs.remove(&id);
                }
            },
            Update::Package { id, package } => self.apply_package(id, package),
            Update::Policy { id, policy } => self.apply_policy(id, policy),
            Update::Assignment { id, assignment } => self.apply_assignment(id, assignment),
            Update::RoleAssignment => self.roles_generation += 1,
        }
    }

    fn apply_user(&mut self, id: String, user: Option<User>) {
        match user {
            Some(user) => {
                self.roles_generation += 1;
                self.users.insert(id, user);
            }
            None => {
                self.users.remove(&id);
            }
        }
    }

    fn apply_package(&mut self, id: String, package: Option<AccessPackage>) {
        if let Some(old) = self.packages.remove(&id) {
            for role in &old.resource_roles {
                if let Some(set) = self.packages_by_resource.get_mut(&role.resource_id) {
                    set.remove(&id);
                }
            }
        }
        if let Some(package) = package {
            for role in &package.resource_roles {
                self.packages_by_resource
                    .entry(role.resource_id.clone())
                    .or_default()
                    .insert(id.clone());
            }
            self.packages.insert(id, package);
        }
    }

    fn apply_policy(&mut self, id: String, policy: Option<AssignmentPolicy>) {
        if let Some(old) = self.policies.remove(&id) {
            self.scopes.remove(&old);
            if let Some(set) = self.policies_by_package.get_mut(&old.access_package_id) {
                set.remove(&id);
            }
        }
        if let Some(policy) = policy {
            self.scopes.add(&policy);
            self.policies_by_package
                .entry(policy.access_package_id.clone())
                .or_default()
                .insert(id.clone());
            self.policies.insert(id, policy);
        }
    }

    fn apply_assignment(&mut self, id: String, assignment: Option<Assignment>) {
        if let Some(old) = self.assignments.remove(&id) {
            if let Some(set) = self.assignments_by_user.get_mut(&old.target_id) {
                set.remove(&id);
            }
            if let Some(holders) = self.holders_by_package.get_mut(&old.access_package_id)
                && let Some(set) = holders.get_mut(&old.target_id)
            {
                set.remove(&id);
                if set.is_empty() {
                    holders.remove(&old.target_id);
                }
            }
        }
        if let Some(assignment) = assignment
            && assignment.is_active()
        {
            self.assignments_by_user
                .entry(assignment.target_id.clone())
                .or_default()
                .insert(id.clone());
            self.holders_by_package
                .entry(assignment.access_package_id.clone())
                .or_default()
                .entry(assignment.target_id.clone())
                .or_default()
                .insert(id.clone());
            self.assignments.insert(id, decision_fields(assignment));
        }
    }

    fn apply_membership(&mut self, id: &str, membership: Option<GroupMembership>) {
        let present = membership.is_some();
        let Some(membership) = membership.or_else(|| parse_membership_id(id)) else {
            return;
        };
        let group = membership.group_id.clone();
        let set = match Member::from_proto(membership.member.as_ref()) {
            Some(Member::User(user)) => self.groups_of_user.entry(user).or_default(),
            Some(Member::Group(child)) => self.parents_of_group.entry(child).or_default(),
            None => return,
        };
        if present {
            set.insert(group);
        } else {
            set.remove(&group);
        }
    }
}

/// A committed change to a record the view follows, decoded once: the
/// new record, or None when it was removed.
enum Update {
    User {
        id: String,
        user: Option<User>,
    },
    Membership {
        id: String,
        membership: Option<GroupMembership>,
    },
    Organization {
        id: String,
        organization: Option<ConnectedOrganization>,
    },
    Catalog {
        id: String,
        catalog: Option<Catalog>,
    },
    Package {
        id: String,
        package: Option<AccessPackage>,
    },
    Policy {
        id: String,
        policy: Option<AssignmentPolicy>,
    },
    Assignment {
        id: String,
        assignment: Option<Assignment>,
    },
    /// Only that one changed: cached authorization decisions go stale.
    RoleAssignment,
}

impl Update {
    /// The update `change` makes to the view; None for records it does not
    /// follow.
    fn decode(change: &RecordChange<'_>) -> StoreResult<Option<Self>> {
        let id = change.id.to_string();
        let update = if let Some(user) = change.decode::<User>() {
            Self::User { id, user: user? }
        } else if let Some(membership) = change.decode::<GroupMembership>() {
            Self::Membership {
                id,
                membership: membership?,
            }
        } else if let Some(organization) = change.decode::<ConnectedOrganization>() {
            Self::Organization {
                id,
                organization: organization?,
            }
        } else if let Some(catalog) = change.decode::<Catalog>() {
            Self::Catalog {
                id,
                catalog: catalog?,
            }
        } else if let Some(package) = change.decode::<AccessPackage>() {
            Self::Package {
                id,
                package: package?,
            }
        } else if let Some(policy) = change.decode::<AssignmentPolicy>() {
            Self::Policy {
                id,
                policy: policy?,
            }
        } else if let Some(assignment) = change.decode::<Assignment>() {
            Self::Assignment {
                id,
                assignment: assignment?,
            }
        } else if change.is::<RoleAssignment>() {
            Self::RoleAssignment
        } else {
            return Ok(None);
        };
        Ok(Some(update))
    }
}

/// What decisions read of an assignment. The bookkeeping (record info, the
/// request that made it) is dropped: the view holds every active
/// assignment, a million of them at full scale.
fn decision_fields(assignment: Assignment) -> Assignment {
    Assignment {
        info: None,
        request_id: String::new(),
        ..assignment
    }
}

/// The membership a membership id names ("<group>/u/<user>" or
/// "<group>/g/<child>").
fn parse_membership_id(id: &str) -> Option<GroupMembership> {
    let mut parts = id.splitn(3, '/');
    let (group, kind, member) = (parts.next()?, parts.next()?, parts.next()?);
    let member = match kind {
        "u" => Member::User(member.to_string()),
        "g" => Member::Group(member.to_string()),
        _ => return None,
    };
    Some(GroupMembership {
        group_id: group.to_string(),
        member: Some(member.to_proto()),
        info: None,
    })
}

/// The record kinds decisions read.
const KINDS: [&str; 7] = [
    User::KIND,
    GroupMembership::KIND,
    ConnectedOrganization::KIND,
    Catalog::KIND,
    AccessPackage::KIND,
    AssignmentPolicy::KIND,
    Assignment::KIND,
];

pub struct DecisionState {
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    /// [`State::roles_generation`], readable without the lock: every RPC's
    /// authorization checks it.
    roles_generation: AtomicU64,
    pub events: EventLog,
}

impl DecisionState {
    /// Loads the view from `view`, as of `revision`; the event log keeps
    /// the grant changes of the last `retention` revisions that had any.
    pub fn load(view: &dyn ReadView, revision: Revision, retention: usize) -> StoreResult<Self> {
        let mut state = State::default();
        let mut assignments_on_record = false;
        for kind in KINDS {
            for item in view.scan(&keys::prefix(&[keys::RECORD, kind]), None) {
                let (key, value) = item?;
                if let Some(change) = RecordChange::parse(&key, Some(&value)) {
                    assignments_on_record |= change.is::<Assignment>();
                    if let Some(update) = Update::decode(&change)? {
                        state.apply(update);
                    }
                }
            }
        }
        // Grants come only from assignments, which stay on record once
        // ended: with none on record no revision ever changed a grant, so
        // the (empty) history is replayable from the very start.
        let replayable_after = if assignments_on_record { revision } else { 0 };
        Ok(Self {
            roles_generation: AtomicU64::new(state.roles_generation),
            state: RwLock::new(state),
            revision: watch::channel(revision).0,
            events: EventLog::new(retention, replayable_after),
        })
    }

    /// Reads the view.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("decision state poisoned")
    }

    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits (up to `timeout`) until the view reflects `min`; false if it
    /// did not in time.
    pub async fn wait_for(&self, min: Revision, timeout: std::time::Duration) -> bool {
        let mut receiver = self.revision.subscribe();
        let reached = receiver.wait_for(|revision| *revision >= min);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }

    /// Changes whenever a role assignment or a user changes.
    pub fn roles_generation(&self) -> u64 {
        self.roles_generation.load(Ordering::Acquire)
    }
}

impl CommitObserver for DecisionState {
    fn committed(&self, changes: &[Change<'_>]) {
        let mut state = self.state.write().expect("decision state poisoned");
        for change in changes {
            let mut grant_changes = Vec::new();
            for record in change.records() {
                let update = match Update::decode(&record) {
                    Ok(Some(update)) => update,
                    Ok(None) => continue,
                    Err(error) => {
                        let (kind, id) = (record.kind, record.id);
                        tracing::error!(%error, kind, id, "a committed record could not be read");
                        continue;
                    }
                };
                let affected = state.affected_users(&update);
                let before: Vec<_> = affected.iter().map(|u| state.committed_grants(u)).collect();
                state.apply(update);
                for (user, before) in affected.iter().zip(before) {
                    let after = state.committed_grants(user);
                    let change = |added: bool, (resource, role): &(String, String)| GrantChange {
                        added,
                        user: user.clone(),
                        resource: resource.clone(),
                        role: role.clone(),
                    };
                    grant_changes.extend(before.difference(&after).map(|g| change(false, g)));
                    grant_changes.extend(after.difference(&before).map(|g| change(true, g)));
                }
            }
            // In the order they happened: a commit that adds and then
            // removes a grant must fold to "removed".
            if !grant_changes.is_empty() {
                self.events.append(RevisionEvents {
                    revision: change.revision,
                    changes: grant_changes,
                });
            }
        }
        self.roles_generation
            .store(state.roles_generation, Ordering::Release);
        if let Some(last) = changes.last() {
            self.revision.send_replace(last.revision);
        }
    }
}
