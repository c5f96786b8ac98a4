//! Who may decide an approval stage, resolved when the stage starts: named
//! users and groups, the target's managers and their organization's
//! sponsors, apart from the target (nobody approves their own request), and
//! only users who are ACTIVE (blocked and deleted users decide nothing).
//! When an approver resolves to nobody the resolution says why, so that a
//! stage nobody can decide is refused with reasons instead of waiting for
//! its timeout.

use std::collections::{BTreeSet, HashSet, VecDeque};

use crate::domain::directory::{GROUPS_IN_GROUP, USERS_IN_GROUP, targets};
use crate::error::{Error, PreconditionKind, PreconditionViolation, Result};
use crate::pb::{
    ApprovalStage, Approver, AssignmentPolicy, AssignmentRequest, ConnectedOrganization,
    GroupMembership, User, UserState, approver,
};
use crate::store::ReadView;
use crate::store::records::{self, Record};

/// Role holders relative to the request's target, ACTIVE users only.
#[derive(Default)]
pub struct Roles {
    pub manager: Vec<String>,
    pub second_manager: Vec<String>,
    pub internal_sponsors: Vec<String>,
    pub external_sponsors: Vec<String>,
}

fn load_user(view: &(impl ReadView + ?Sized), id: &str) -> Result<Option<User>> {
    if id.is_empty() {
        return Ok(None);
    }
    Ok(records::load::<User>(view, id)?)
}

fn is_active(user: &User) -> bool {
    user.state() == UserState::Active
}

fn active_users(view: &(impl ReadView + ?Sized), ids: &[String]) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for id in ids {
        if load_user(view, id)?.is_some_and(|u| is_active(&u)) {
            users.push(id.clone());
        }
    }
    Ok(users)
}

impl Roles {
    pub fn resolve(view: &(impl ReadView + ?Sized), request: &AssignmentRequest) -> Result<Self> {
        let mut roles = Roles::default();
        let target = load_user(view, &request.target_id)?;
        // The chain of managers is followed whatever their state; only
        // active ones decide.
        let manager = match &target {
            Some(t) => load_user(view, &t.manager_id)?,
            None => None,
        };
        let second_manager = match &manager {
            Some(m) => load_user(view, &m.manager_id)?,
            None => None,
        };
        roles
            .manager
            .extend(manager.filter(is_active).map(|m| m.id));
        roles
            .second_manager
            .extend(second_manager.filter(is_active).map(|m| m.id));
        let organization = match &target {
            Some(t) => t.connected_organization_id.clone(),
            None => request
                .external_requestor
                .as_ref()
                .map(|e| e.connected_organization_id.clone())
                .unwrap_or_default(),
        };
        if let Some(org) = records::load::<ConnectedOrganization>(view, &organization)? {
            roles.internal_sponsors = active_users(view, &org.internal_sponsor_ids)?;
            roles.external_sponsors = active_users(view, &org.external_sponsor_ids)?;
        }
        Ok(roles)
    }
}

/// Who a list of approvers names, excluding the target, and why each
/// approver that names nobody does.
#[derive(Default)]
pub struct Resolved {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    nobody: Vec<String>,
}

impl Resolved {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    /// Adds the holders of a role other than the target, or says why
    /// there are none.
    fn role(&mut self, holders: &[String], target: &str, role: &str) {
        let others: Vec<&String> = holders.iter().filter(|u| *u != target).collect();
        if others.is_empty() {
            self.nobody.push(if holders.is_empty() {
                format!("the target has no active {role}")
            } else {
                format!("the target is their own {role}")
            });
        }
        self.users.extend(others.into_iter().cloned());
    }
}

fn resolve(
    view: &(impl ReadView + ?Sized),
    approvers: &[Approver],
    roles: &Roles,
    target: &str,
) -> Result<Resolved> {
    let mut resolved = Resolved::default();
    for approver in approvers {
        match &approver.approver {
            Some(approver::Approver::UserId(id)) => match load_user(view, id)? {
                _ if id == target => resolved.nobody.push(format!("user {id:?} is the target")),
                Some(user) if is_active(&user) => {
                    resolved.users.insert(id.clone());
                }
                Some(user) => resolved
                    .nobody
                    .push(format!("user {id:?} is {}", user.state().as_str_name())),
                None => resolved.nobody.push(format!("user {id:?} does not exist")),
            },
            Some(approver::Approver::GroupId(id)) => {
                if has_member_other_than(view, id, target)? {
                    resolved.groups.insert(id.clone());
                } else {
                    resolved.nobody.push(format!(
                        "group {id:?} has no active member other than the target"
                    ));
                }
            }
            Some(approver::Approver::ManagerLevel(2)) => {
                resolved.role(&roles.second_manager, target, "second-level manager")
            }
            Some(approver::Approver::ManagerLevel(_)) => {
                resolved.role(&roles.manager, target, "manager")
            }
            Some(approver::Approver::InternalSponsors(_)) => resolved.role(
                &roles.internal_sponsors,
                target,
                "internal sponsor (of their connected organization)",
            ),
            Some(approver::Approver::ExternalSponsors(_)) => resolved.role(
                &roles.external_sponsors,
                target,
                "external sponsor (of their connected organization)",
            ),
            None => {}
        }
    }
    Ok(resolved)
}

/// Whether a group has (directly or through nesting) an active member who
/// is not `target`.
fn has_member_other_than(
    view: &(impl ReadView + ?Sized),
    group: &str,
    target: &str,
) -> Result<bool> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([group.to_string()]);
    while let Some(group) = queue.pop_front() {
        if !seen.insert(group.clone()) {
            continue;
        }
        for user in targets(view, GroupMembership::KIND, USERS_IN_GROUP, &group)? {
            if user != target && load_user(view, &user)?.is_some_and(|u| is_active(&u)) {
                return Ok(true);
            }
        }
        queue.extend(targets(
            view,
            GroupMembership::KIND,
            GROUPS_IN_GROUP,
            &group,
        )?);
    }
    Ok(false)
}

/// Who decides a stage.
pub enum StageApprovers {
    Primary(Resolved),
    /// The primaries resolve to nobody; the fallback approvers decide.
    Fallback(Resolved),
    /// Both resolve to nobody; why, per approver ("primary: ...",
    /// "fallback: ...").
    Nobody(Vec<String>),
}

pub fn for_stage(
    view: &(impl ReadView + ?Sized),
    stage: &ApprovalStage,
    roles: &Roles,
    target: &str,
) -> Result<StageApprovers> {
    let primary = resolve(view, &stage.primary_approvers, roles, target)?;
    if !primary.is_empty() {
        return Ok(StageApprovers::Primary(primary));
    }
    let fallback = resolve(view, &stage.fallback_approvers, roles, target)?;
    if !fallback.is_empty() {
        return Ok(StageApprovers::Fallback(fallback));
    }
    let mut why: Vec<String> = primary
        .nobody
        .iter()
        .map(|reason| format!("primary: {reason}"))
        .collect();
    if stage.fallback_approvers.is_empty() {
        why.push("fallback: none named".into());
    }
    why.extend(
        fallback
            .nobody
            .iter()
            .map(|reason| format!("fallback: {reason}")),
    );
    Ok(StageApprovers::Nobody(why))
}

/// A stage nobody (but the target) could ever decide, and why.
pub struct NoApprovers {
    pub policy: String,
    pub stage: i32,
    pub why: Vec<String>,
}

impl NoApprovers {
    fn description(&self) -> String {
        format!(
            "stage {} of policy {:?} has nobody to decide it ({})",
            self.stage,
            self.policy,
            self.why.join("; ")
        )
    }

    /// The refusal of a request whose first stage nobody could decide.
    pub fn refusal(&self) -> Error {
        Error::preconditions(
            self.description(),
            PreconditionViolation::new(
                PreconditionKind::NoApprovers,
                format!(
                    "{}/{}/stage/{}",
                    AssignmentPolicy::KIND,
                    self.policy,
                    self.stage
                ),
                self.why.join("; "),
            ),
            [],
        )
    }

    /// Why a request whose later stage nobody could decide was denied.
    pub fn denial_reason(&self) -> String {
        format!("NO_APPROVERS: {}", self.description())
    }
}
