//! Approval stages: who may decide is resolved when a stage starts (named
//! users and groups, the target's managers, the organization's sponsors;
//! the fallback approvers when the primaries resolve to nobody), Cedar
//! decides whether a caller may decide, and each decision is one
//! transaction on the single committer, so racing approvers cannot both
//! take the last approval.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::domain::directory::targets;
use crate::domain::request::{PENDING_FOR_GROUP, PENDING_FOR_USER, current_stage, transition};
use crate::domain::validate::Check;
use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{
    ApprovalStage, ApprovalStageStatus, AssignmentPolicy, AssignmentRequest, RequestState,
    StageDecision, StageState, User,
};
use crate::policy::compile::actions::APPROVE;
use crate::policy::entities::{Stage, approval_slice, request_uid, user_uid};
use crate::policy::{Facts, PolicyEngine};
use crate::shared::actor::Actor;
use crate::shared::clock::Moment;
use crate::store::records::{self, Record};
use crate::store::{ReadView, Store, Txn, write};

use super::approvers::{self, NoApprovers, Resolved, Roles, StageApprovers};
use super::eligibility::{PolicyScope, Refusal, redecide, require_allowed, subject_of};
use super::lifecycle::{deliver_update, save, schedule_or_deliver, still_allowed};
use super::requests::MAX_JUSTIFICATION;
use super::schedule;

/// Puts a request into PENDING_APPROVAL and starts its first stage;
/// FAILED_PRECONDITION when nobody could decide that stage (the request is
/// refused rather than left waiting for its timeout).
pub fn begin(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    actor: &Actor,
) -> Result<()> {
    transition(request, RequestState::PendingApproval, actor, "")?;
    match start_stage(txn, request, policy, 1, actor)? {
        Some(nobody) => Err(nobody.refusal()),
        None => Ok(()),
    }
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

/// Starts `stage` of a request: who may decide it is resolved now. A stage
/// nobody could decide is recorded as such (NO_APPROVERS) and returned.
fn start_stage(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    stage: i32,
    actor: &Actor,
) -> Result<Option<NoApprovers>> {
    let definition = stage_definition(policy, stage)?;
    let roles = Roles::resolve(txn, request)?;
    let (approvers, fallback, nobody) =
        match approvers::for_stage(txn, definition, &roles, &request.target_id)? {
            StageApprovers::Primary(approvers) => (approvers, false, None),
            StageApprovers::Fallback(approvers) => (approvers, true, None),
            StageApprovers::Nobody(why) => (
                Resolved::default(),
                true,
                Some(NoApprovers {
                    policy: policy.id.clone(),
                    stage,
                    why,
                }),
            ),
        };
    let now = actor.moment();
    let timeout = definition.decision_timeout.unwrap_or_default();
    let state = if nobody.is_some() {
        StageState::NoApprovers
    } else {
        StageState::Pending
    };
    request.approval_stages.push(ApprovalStageStatus {
        stage,
        state: state as i32,
        start_time: Some(now.timestamp()),
        due_time: Some(now.after(timeout).timestamp()),
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
    Ok(nobody)
}

/// Every stage approved: the request is decided again as it stands now
/// (DENIED if something forbids it by now), then goes on as if it had
/// needed no approval, with its schedule counted from now.
fn approved(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    actor: &Actor,
) -> Result<()> {
    let now = actor.moment();
    if request.is_add() {
        let window = schedule::for_add(policy, request.schedule.as_ref(), now);
        request.effective_schedule = Some(window.to_schedule());
        if still_allowed(txn, engine, request, window.start, actor)? {
            schedule_or_deliver(txn, request, actor)?;
        }
        Ok(())
    } else {
        let asked_end = request
            .schedule
            .as_ref()
            .and_then(|s| s.end_time)
            .map(Moment::from_timestamp);
        let end = schedule::for_update(policy, asked_end, now);
        if let Some(effective) = request.effective_schedule.as_mut() {
            effective.end_time = end.map(Moment::timestamp);
        }
        if still_allowed(txn, engine, request, now, actor)? {
            deliver_update(txn, request, actor)?;
        }
        Ok(())
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
    check_input(&input)?;
    let committed = write(store, move |txn| {
        let old: AssignmentRequest = records::require(txn, &input.id)?;
        let current = check_decidable(&old, input.stage)?;
        let policy: AssignmentPolicy = records::require(txn, &old.assignment_policy_id)?;
        let now = actor.moment();
        let stage = Stage {
            request: &old,
            status: current,
        };
        authorize_approver(txn, &engine, &actor, &policy, &stage, now)?;
        check_may_decide(&actor, &policy, &stage, &input)?;
        let mut request = old.clone();
        record_decision(txn, &engine, &mut request, &policy, &actor, &input, now)?;
        save(txn, Some(&old), &mut request, &actor)?;
        Ok::<_, Error>(request)
    })
    .await?;
    Ok(committed.value)
}

/// INVALID_ARGUMENT unless the decision is well formed.
fn check_input(input: &DecisionInput) -> Result<()> {
    let mut check = Check::new("");
    check.id("id", &input.id);
    check.require(input.stage >= 1, "stage", "must be 1 or more");
    check.text(
        "justification",
        &input.justification,
        MAX_JUSTIFICATION,
        false,
    );
    check.finish()
}

/// PERMISSION_DENIED unless the caller is a user of the directory whom the
/// request's policies let decide `stage`.
fn authorize_approver(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    actor: &Actor,
    policy: &AssignmentPolicy,
    stage: &Stage<'_>,
    now: Moment,
) -> Result<()> {
    let approver = subject_of(txn, &actor.id).map_err(|_| Error::PermissionDenied {
        message: format!("caller {:?} is not a user of the directory", actor.id),
        policy_ids: Vec::new(),
    })?;
    let scope = PolicyScope::load(engine, txn, policy)?;
    let entities = approval_slice(&approver, stage, &scope.target(policy))?;
    let request = stage.request;
    let decision = engine.decide(
        &scope.set.policies,
        user_uid(&actor.id),
        APPROVE,
        request_uid(&request.id),
        Facts::Approval { now: now.seconds() },
        &entities,
    )?;
    require_allowed(&decision, || {
        format!(
            "user {:?} may not decide stage {} of request {:?}",
            actor.id, stage.status.stage, request.id
        )
    })
}

/// Refuses a second decision by the same approver, and a decision without
/// the justification the stage requires.
fn check_may_decide(
    actor: &Actor,
    policy: &AssignmentPolicy,
    stage: &Stage<'_>,
    input: &DecisionInput,
) -> Result<()> {
    let request = stage.request;
    if stage
        .status
        .decisions
        .iter()
        .any(|d| d.approver_id == actor.id)
    {
        return Err(Error::precondition(
            PreconditionKind::AlreadyDecided,
            records::subject::<AssignmentRequest>(&request.id),
            format!(
                "user {:?} already decided stage {} of request {:?}",
                actor.id, input.stage, request.id
            ),
        ));
    }
    let definition = stage_definition(policy, input.stage)?;
    if definition.approver_justification_required && input.justification.trim().is_empty() {
        return Err(Error::invalid(
            "justification",
            "this stage requires approvers to justify their decision",
        ));
    }
    Ok(())
}

/// Adds the decision to the current stage of `request` and moves the
/// request on: a denial denies it; enough approvals start the next stage,
/// or approve the request after the last.
fn record_decision(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    request: &mut AssignmentRequest,
    policy: &AssignmentPolicy,
    actor: &Actor,
    input: &DecisionInput,
    now: Moment,
) -> Result<()> {
    let status = request.approval_stages.last_mut().expect("checked above");
    status.decisions.push(StageDecision {
        approver_id: actor.id.clone(),
        approved: input.approve,
        justification: input.justification.clone(),
        time: Some(now.timestamp()),
    });
    let approvals = status.decisions.iter().filter(|d| d.approved).count() as i32;
    if !input.approve {
        status.set_state(StageState::Denied);
        let reason = format!("denied at stage {} by {}", input.stage, actor.id);
        transition(request, RequestState::Denied, actor, &reason)?;
    } else if approvals >= status.approvals_required {
        status.set_state(StageState::Approved);
        let stages = policy
            .approval_settings
            .as_ref()
            .map_or(0, |a| a.stages.len()) as i32;
        if input.stage < stages {
            let next = input.stage + 1;
            if let Some(nobody) = start_stage(txn, request, policy, next, actor)? {
                let reason = nobody.denial_reason();
                transition(request, RequestState::Denied, actor, &reason)?;
            }
        } else {
            approved(txn, engine, request, policy, actor)?;
        }
    }
    Ok(())
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
        .is_some_and(|due| Moment::from_timestamp(due) <= actor.moment());
    if old.state() != RequestState::PendingApproval || !due {
        return Ok(false);
    }
    let mut request = old.clone();
    let stage = request.approval_stages.last_mut().expect("a current stage");
    stage.set_state(StageState::TimedOut);
    let reason = format!("TIMED_OUT: stage {} had no decision in time", stage.stage);
    transition(&mut request, RequestState::Denied, actor, &reason)?;
    save(txn, Some(&old), &mut request, actor)?;
    Ok(true)
}

/// Every group `user_id` is in, directly or through nesting; none for a
/// caller who is not a directory user (a service principal, or an
/// administrator known only from the configuration).
fn groups_of(view: &(impl ReadView + ?Sized), user_id: &str) -> Result<BTreeSet<String>> {
    if !records::exists::<User>(view, user_id)? {
        return Ok(BTreeSet::new());
    }
    Ok(subject_of(view, user_id)?
        .group_parents
        .into_keys()
        .collect())
}

/// Whether `user_id` is or was an approver of `request`: resolved for one
/// of its stages (by name, as a role holder, or through a group) or the
/// author of one of its decisions. Approvers see the requests they are
/// asked to decide, so they may learn their state.
pub fn is_approver_of(
    view: &(impl ReadView + ?Sized),
    request: &AssignmentRequest,
    user_id: &str,
) -> Result<bool> {
    let stages = &request.approval_stages;
    let named = stages.iter().any(|stage| {
        stage.approver_user_ids.iter().any(|u| u == user_id)
            || stage.decisions.iter().any(|d| d.approver_id == user_id)
    });
    if named {
        return Ok(true);
    }
    if stages
        .iter()
        .all(|stage| stage.approver_group_ids.is_empty())
    {
        return Ok(false);
    }
    let groups = groups_of(view, user_id)?;
    Ok(stages
        .iter()
        .flat_map(|stage| &stage.approver_group_ids)
        .any(|group| groups.contains(group)))
}

/// The refusal `request` would meet if its last stage were approved now
/// (see [`still_allowed`]), if any: approvers see it before they decide.
pub fn refusal_if_approved_now(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    request: &AssignmentRequest,
    now: Moment,
) -> Result<Option<Refusal>> {
    let start = if request.is_add() {
        schedule::start_for_add(request.schedule.as_ref(), now)
    } else {
        now
    };
    redecide(engine, view, request, now, start)
}

/// Requests whose current stage `user_id` may decide and has not decided,
/// ordered by id: from the approver indexes, by name and through the
/// user's groups (nested ones included). A caller who is not a directory
/// user decides nothing: the list is empty.
pub fn pending_for(
    view: &(impl ReadView + ?Sized),
    user_id: &str,
) -> Result<Vec<AssignmentRequest>> {
    let mut ids: BTreeSet<String> =
        targets(view, AssignmentRequest::KIND, PENDING_FOR_USER, user_id)?
            .into_iter()
            .collect();
    for group in &groups_of(view, user_id)? {
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
