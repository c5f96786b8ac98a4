//! Approval stages: who may decide is resolved when a stage starts (named
//! users and groups, the target's managers, the organization's sponsors;
//! the fallback approvers when the primaries resolve to nobody), Cedar
//! decides whether a caller may decide, and each decision is one
//! transaction on the single committer, so racing approvers cannot both
//! take the last approval.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use crate::domain::directory::{GROUPS_IN_GROUP, USERS_IN_GROUP, targets};
use crate::domain::entity::Actor;
use crate::domain::request::{
    PENDING_FOR_GROUP, PENDING_FOR_USER, current_stage, save_request, transition,
};
use crate::domain::validate::Check;
use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{
    ApprovalStage, ApprovalStageStatus, Approver, AssignmentPolicy, AssignmentRequest,
    ConnectedOrganization, GroupMembership, RequestState, StageDecision, StageState, User,
    UserState, approver,
};
use crate::policy::compile::actions::APPROVE;
use crate::policy::entities::{Stage, approval_slice, request_uid, user_uid};
use crate::policy::{Facts, PolicyEngine};
use crate::store::records::{self, Record};
use crate::store::{ReadView, Store, Txn, write};

use super::eligibility::{PolicyScope, require_allowed, subject_of};
use super::lifecycle::{deliver_update, schedule_or_deliver};
use super::requests::MAX_JUSTIFICATION;
use super::{epoch_seconds, schedule, timestamp};

/// Puts a request into PENDING_APPROVAL and starts its first stage.
pub fn begin(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    actor: &Actor,
) -> Result<()> {
    transition(request, RequestState::PendingApproval, actor, "")?;
    start_stage(txn, request, policy, 1, actor)
}

fn stage_definition(policy: &AssignmentPolicy, stage: i32) -> Result<&ApprovalStage> {
    policy
        .approval_settings
        .as_ref()
        .and_then(|a| a.stages.get((stage - 1) as usize))
        .ok_or_else(|| {
            Error::precondition(
                PreconditionKind::StageRemoved,
                records::subject::<AssignmentPolicy>(&policy.id),
                format!("policy {:?} has no approval stage {stage}", policy.id),
            )
        })
}

/// Role holders relative to the request's target.
#[derive(Default)]
struct Roles {
    manager: Vec<String>,
    second_manager: Vec<String>,
    internal_sponsors: Vec<String>,
    external_sponsors: Vec<String>,
}

fn active_user(view: &(impl ReadView + ?Sized), id: &str) -> Result<Option<User>> {
    Ok(records::load::<User>(view, id)?.filter(|u| u.state() != UserState::Deleted))
}

fn active_users(view: &(impl ReadView + ?Sized), ids: &[String]) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for id in ids {
        if active_user(view, id)?.is_some() {
            users.push(id.clone());
        }
    }
    Ok(users)
}

impl Roles {
    fn resolve(view: &(impl ReadView + ?Sized), request: &AssignmentRequest) -> Result<Self> {
        let mut roles = Roles::default();
        let target = records::load::<User>(view, &request.target_id)?;
        let manager = match &target {
            Some(t) if !t.manager_id.is_empty() => active_user(view, &t.manager_id)?,
            _ => None,
        };
        if let Some(manager) = &manager {
            roles.manager.push(manager.id.clone());
            if !manager.manager_id.is_empty() && active_user(view, &manager.manager_id)?.is_some() {
                roles.second_manager.push(manager.manager_id.clone());
            }
        }
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

/// Who a list of approvers names, excluding the target.
#[derive(Default)]
struct Resolved {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
}

fn resolve(
    view: &(impl ReadView + ?Sized),
    approvers: &[Approver],
    roles: &Roles,
    target: &str,
) -> Result<Resolved> {
    let mut resolved = Resolved::default();
    for approver in approvers {
        let users: Vec<String> = match &approver.approver {
            Some(approver::Approver::UserId(id)) => active_users(view, std::slice::from_ref(id))?,
            Some(approver::Approver::GroupId(id)) => {
                if has_member_other_than(view, id, target)? {
                    resolved.groups.insert(id.clone());
                }
                Vec::new()
            }
            Some(approver::Approver::ManagerLevel(2)) => roles.second_manager.clone(),
            Some(approver::Approver::ManagerLevel(_)) => roles.manager.clone(),
            Some(approver::Approver::InternalSponsors(_)) => roles.internal_sponsors.clone(),
            Some(approver::Approver::ExternalSponsors(_)) => roles.external_sponsors.clone(),
            None => Vec::new(),
        };
        resolved
            .users
            .extend(users.into_iter().filter(|u| u != target));
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
            if user != target && active_user(view, &user)?.is_some() {
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

fn start_stage(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    stage: i32,
    actor: &Actor,
) -> Result<()> {
    let definition = stage_definition(policy, stage)?;
    let roles = Roles::resolve(txn, request)?;
    let primary = resolve(
        txn,
        &definition.primary_approvers,
        &roles,
        &request.target_id,
    )?;
    let fallback = primary.users.is_empty() && primary.groups.is_empty();
    let approvers = if fallback {
        resolve(
            txn,
            &definition.fallback_approvers,
            &roles,
            &request.target_id,
        )?
    } else {
        primary
    };
    let now = epoch_seconds(actor.now);
    let timeout = definition.decision_timeout.map_or(0, |d| d.seconds);
    request.approval_stages.push(ApprovalStageStatus {
        stage,
        state: StageState::Pending as i32,
        start_time: Some(timestamp(now)),
        due_time: Some(timestamp(now.saturating_add(timeout))),
        fallback,
        approvals_required: definition.approvals_required,
        decisions: Vec::new(),
        approver_user_ids: approvers.users.into_iter().collect(),
        approver_group_ids: approvers.groups.into_iter().collect(),
        manager_ids: roles.manager,
        second_manager_ids: roles.second_manager,
        internal_sponsor_ids: roles.internal_sponsors,
        external_sponsor_ids: roles.external_sponsors,
    });
    Ok(())
}

/// Every stage approved: the request goes on as if it had needed no
/// approval, with its schedule counted from now.
fn approved(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    actor: &Actor,
) -> Result<()> {
    let now = epoch_seconds(actor.now);
    if request.is_add() {
        let window = schedule::for_add(policy, request.schedule.as_ref(), now);
        request.effective_schedule = Some(window.to_schedule());
        schedule_or_deliver(txn, request, now, actor)
    } else {
        let asked_end = request
            .schedule
            .as_ref()
            .and_then(|s| s.end_time)
            .map(|t| t.seconds);
        let end = schedule::for_update(policy, asked_end, now);
        if let Some(effective) = request.effective_schedule.as_mut() {
            effective.end_time = end.map(timestamp);
        }
        deliver_update(txn, request, actor)
    }
}

/// A decision on one stage of one request.
pub struct DecisionInput {
    pub id: String,
    pub stage: i32,
    pub approve: bool,
    pub justification: String,
}

pub async fn decide(
    store: &dyn Store,
    engine: Arc<PolicyEngine>,
    actor: Actor,
    input: DecisionInput,
) -> Result<AssignmentRequest> {
    let mut check = Check::new("");
    check.id("id", &input.id);
    check.require(input.stage >= 1, "stage", "must be 1 or more");
    check.text(
        "justification",
        &input.justification,
        MAX_JUSTIFICATION,
        false,
    );
    check.finish()?;
    let committed = write(store, move |txn| {
        let old: AssignmentRequest = records::require(txn, &input.id)?;
        let current = check_decidable(&old, input.stage)?;
        let policy: AssignmentPolicy = records::require(txn, &old.assignment_policy_id)?;
        let approver = subject_of(txn, &actor.id).map_err(|_| Error::PermissionDenied {
            message: format!("caller {:?} is not a user of the directory", actor.id),
            policy_ids: Vec::new(),
        })?;
        let scope = PolicyScope::load(&engine, txn, &policy)?;
        let stage = Stage {
            request: &old,
            status: current,
        };
        let entities =
            approval_slice(&approver, &stage, &scope.target(&policy)).map_err(Error::internal)?;
        let now = epoch_seconds(actor.now);
        let decision = engine
            .decide(
                &scope.set,
                user_uid(&actor.id),
                APPROVE,
                request_uid(&old.id),
                Facts::Approval { now },
                &entities,
            )
            .map_err(Error::internal)?;
        require_allowed(&decision, || {
            format!(
                "user {:?} may not decide stage {} of request {:?}",
                actor.id, input.stage, old.id
            )
        })?;
        if current.decisions.iter().any(|d| d.approver_id == actor.id) {
            return Err(Error::precondition(
                PreconditionKind::AlreadyDecided,
                records::subject::<AssignmentRequest>(&old.id),
                format!(
                    "user {:?} already decided stage {} of request {:?}",
                    actor.id, input.stage, old.id
                ),
            ));
        }
        let definition = stage_definition(&policy, input.stage)?;
        if definition.approver_justification_required && input.justification.trim().is_empty() {
            return Err(Error::invalid(
                "justification",
                "this stage requires approvers to justify their decision",
            ));
        }

        let mut request = old.clone();
        let status = request.approval_stages.last_mut().expect("checked above");
        status.decisions.push(StageDecision {
            approver_id: actor.id.clone(),
            approved: input.approve,
            justification: input.justification.clone(),
            time: Some(timestamp(now)),
        });
        let approvals = status.decisions.iter().filter(|d| d.approved).count() as i32;
        if !input.approve {
            status.set_state(StageState::Denied);
            let reason = format!("denied at stage {} by {}", input.stage, actor.id);
            transition(&mut request, RequestState::Denied, &actor, &reason)?;
        } else if approvals >= status.approvals_required {
            status.set_state(StageState::Approved);
            let stages = policy
                .approval_settings
                .as_ref()
                .map_or(0, |a| a.stages.len()) as i32;
            if input.stage < stages {
                start_stage(txn, &mut request, &policy, input.stage + 1, &actor)?;
            } else {
                approved(txn, &mut request, &policy, &actor)?;
            }
        }
        save_request(txn, Some(&old), &mut request, &actor)?;
        Ok::<_, Error>(request)
    })
    .await?;
    Ok(committed.value)
}

/// The current stage, if `stage` of `request` may still be decided;
/// FAILED_PRECONDITION otherwise.
fn check_decidable(request: &AssignmentRequest, stage: i32) -> Result<&ApprovalStageStatus> {
    let subject = records::subject::<AssignmentRequest>(&request.id);
    let no_stage_waiting = || {
        Error::precondition(
            PreconditionKind::State,
            subject.clone(),
            format!(
                "request {:?} is {}; it takes no decisions",
                request.id,
                request.state().as_str_name()
            ),
        )
    };
    if request.state() != RequestState::PendingApproval {
        return Err(no_stage_waiting());
    }
    let current = current_stage(request).ok_or_else(no_stage_waiting)?;
    if current.stage != stage {
        let (kind, why) = if stage < current.stage {
            (PreconditionKind::StageDecided, "is already decided")
        } else {
            (PreconditionKind::StageNotStarted, "has not started")
        };
        return Err(Error::precondition(
            kind,
            subject,
            format!(
                "stage {stage} of request {:?} {why}; the current stage is {}",
                request.id, current.stage
            ),
        ));
    }
    Ok(current)
}

/// Denies a request whose current stage timed out; false when it is no
/// longer due, so it never fires twice.
pub fn timeout_if_due(txn: &mut dyn Txn, id: &str, actor: &Actor) -> Result<bool> {
    let Some(old) = records::load::<AssignmentRequest>(txn, id)? else {
        return Ok(false);
    };
    let due = current_stage(&old)
        .and_then(|s| s.due_time)
        .is_some_and(|due| due.seconds <= epoch_seconds(actor.now));
    if old.state() != RequestState::PendingApproval || !due {
        return Ok(false);
    }
    let mut request = old.clone();
    let stage = request.approval_stages.last_mut().expect("a current stage");
    stage.set_state(StageState::TimedOut);
    let reason = format!("TIMED_OUT: stage {} had no decision in time", stage.stage);
    transition(&mut request, RequestState::Denied, actor, &reason)?;
    save_request(txn, Some(&old), &mut request, actor)?;
    Ok(true)
}

/// Requests whose current stage `user_id` may decide and has not decided,
/// ordered by id: from the approver indexes, by name and through the
/// user's groups (nested ones included).
pub fn pending_for(
    view: &(impl ReadView + ?Sized),
    user_id: &str,
) -> Result<Vec<AssignmentRequest>> {
    let subject = subject_of(view, user_id)?;
    let mut ids: BTreeSet<String> =
        targets(view, AssignmentRequest::KIND, PENDING_FOR_USER, user_id)?
            .into_iter()
            .collect();
    for group in subject.group_parents.keys() {
        ids.extend(targets(
            view,
            AssignmentRequest::KIND,
            PENDING_FOR_GROUP,
            group,
        )?);
    }
    let mut pending = Vec::new();
    for id in ids {
        let Some(request) = records::load::<AssignmentRequest>(view, &id)? else {
            continue;
        };
        let undecided = current_stage(&request)
            .is_some_and(|s| s.decisions.iter().all(|d| d.approver_id != user_id));
        if request.target_id != user_id && undecided {
            pending.push(request);
        }
    }
    Ok(pending)
}
