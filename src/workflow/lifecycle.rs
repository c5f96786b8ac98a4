//! What happens to assignments: delivery of an add, extension, ending (by
//! removal, expiry or the target leaving), and the timed work that starts
//! scheduled requests and expires assignments. Each function runs inside
//! one write transaction.
//!
//! A request that waited (for approval, or for its start) is decided again
//! when it is about to be delivered ([`eligibility::redecide`]), in the
//! transaction that delivers it: whatever forbids it by then (an
//! incompatible package or group gained meanwhile, a blocked target, a
//! policy that no longer admits the target) ends it DENIED, with the
//! deciding Cedar policy ids in its history and in the audit trail.

use crate::audit::{self, Draft, Verb};
use crate::domain::assignment::{ACTIVE_PAIR, ASSIGNMENTS_BY_TARGET};
use crate::domain::directory::{self, targets};
use crate::domain::entity::stamp;
use crate::domain::entity::{Entity, record_info};
use crate::domain::request::{OPEN_BY_TARGET, cancel_open, pair_key, save_request, transition};
use crate::domain::settings;
use crate::error::Result;
use crate::pb::{
    Assignment, AssignmentRequest, AssignmentState, EndReason, ExternalUserLifecycle, RequestState,
    RequestType, User, UserKind, UserState,
};
use crate::policy::PolicyEngine;
use crate::shared::actor::Actor;
use crate::shared::clock::Moment;
use crate::shared::id::new_id;
use crate::store::Txn;
use crate::store::records::{self, Record};

use super::eligibility::{self, Refusal};
use super::external;

/// Stores a changed request with its audit events, then what its delivery
/// brings about: an external requestor joins the directory as a governed
/// guest, or a governed guest who gave up or lost their last assignment is
/// blocked. The trail thus tells the cause before its effects.
pub fn save(
    txn: &mut dyn Txn,
    old: Option<&AssignmentRequest>,
    request: &mut AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    save_request(txn, old, request, actor)?;
    let delivered_now = request.state() == RequestState::Delivered
        && old.is_none_or(|o| o.state() != RequestState::Delivered);
    if !delivered_now {
        return Ok(());
    }
    match request.r#type() {
        RequestType::UserAdd | RequestType::AdminAdd | RequestType::SystemAdd => {
            create_governed_guest(txn, request, actor)
        }
        RequestType::UserRemove | RequestType::AdminRemove | RequestType::SystemRemove => {
            apply_guest_lifecycle(txn, &request.target_id, actor)
        }
        _ => Ok(()),
    }
}

/// Ends a waiting request DENIED: its delivery was refused.
fn refuse(request: &mut AssignmentRequest, refusal: Refusal, actor: &Actor) -> Result<()> {
    transition(request, RequestState::Denied, actor, &refusal.reason)?;
    if let Some(change) = request.history.last_mut() {
        change.policy_ids = refusal.policy_ids;
    }
    Ok(())
}

/// Decides again a request that waited (see [`eligibility::redecide`]),
/// for access starting at `start`; true when it may go on, otherwise it is
/// now DENIED.
pub fn still_allowed(
    txn: &dyn Txn,
    engine: &PolicyEngine,
    request: &mut AssignmentRequest,
    start: Moment,
    actor: &Actor,
) -> Result<bool> {
    match eligibility::redecide(engine, txn, request, actor.moment(), start)? {
        None => Ok(true),
        Some(refusal) => refuse(request, refusal, actor).map(|()| false),
    }
}

/// Delivers an add request decided in this transaction: makes the
/// assignment it asked for. If the target meanwhile got the package another
/// way, delivery fails instead.
pub fn deliver_add(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    transition(request, RequestState::Delivering, actor, "")?;
    let pair = pair_key(&request.target_id, &request.access_package_id);
    if let Some(existing) = records::unique_owner::<Assignment>(txn, ACTIVE_PAIR, &pair)? {
        return transition(
            request,
            RequestState::DeliveryFailed,
            actor,
            &format!("the target already holds the package (assignment {existing})"),
        );
    }
    let window = request.effective_schedule.unwrap_or_default();
    let assignment = Assignment {
        id: new_id(),
        target_id: request.target_id.clone(),
        access_package_id: request.access_package_id.clone(),
        assignment_policy_id: request.assignment_policy_id.clone(),
        state: AssignmentState::Delivered as i32,
        start_time: window.start_time,
        end_time: window.end_time,
        request_id: request.id.clone(),
        ended_time: None,
        end_reason: EndReason::Unspecified as i32,
        info: Some(record_info(actor, txn.revision(), None)),
    };
    records::save(txn, None, &assignment)?;
    request.assignment_id = assignment.id;
    transition(request, RequestState::Delivered, actor, "")
}

/// An add request decided in this transaction goes SCHEDULED for a future
/// start, or is delivered now.
pub fn schedule_or_deliver(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    if start_of(request).is_some_and(|start| start > actor.moment()) {
        transition(request, RequestState::Scheduled, actor, "")
    } else {
        deliver_add(txn, request, actor)
    }
}

/// An approved external requestor joins the directory as a governed guest.
fn create_governed_guest(
    txn: &mut dyn Txn,
    request: &AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    let Some(external) = &request.external_requestor else {
        return Ok(());
    };
    if records::exists::<User>(txn, &request.target_id)? {
        return Ok(());
    }
    let mut guest = User {
        governed: true,
        ..external::guest(&request.target_id, external)
    };
    stamp(&mut guest, None, actor, txn.revision());
    records::save(txn, None, &guest)?;
    let draft = guest
        .audit(txn, Draft::new(User::KIND, Verb::Created, &guest.id), None)?
        .detail("kind", guest.kind().as_str_name())
        .detail(
            "connected_organization_id",
            &guest.connected_organization_id,
        );
    audit::append(txn, actor, draft)
}

/// Delivers an update request: the assignment (same id) gets the new end.
pub fn deliver_update(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    transition(request, RequestState::Delivering, actor, "")?;
    let old: Assignment = records::require(txn, &request.assignment_id)?;
    request.previous_end_time = old.end_time;
    let mut assignment = old.clone();
    assignment.end_time = request.effective_schedule.as_ref().and_then(|s| s.end_time);
    assignment.info = Some(record_info(actor, txn.revision(), old.info.as_ref()));
    records::save(txn, Some(&old), &assignment)?;
    transition(request, RequestState::Delivered, actor, "")
}

/// Delivers a remove request: the assignment ends for `reason`.
pub fn deliver_remove(
    txn: &mut dyn Txn,
    request: &mut AssignmentRequest,
    reason: EndReason,
    actor: &Actor,
) -> Result<()> {
    transition(request, RequestState::Delivering, actor, "")?;
    let assignment: Assignment = records::require(txn, &request.assignment_id)?;
    end_assignment(txn, &assignment, reason, actor)?;
    transition(request, RequestState::Delivered, actor, "")
}

fn end_assignment(
    txn: &mut dyn Txn,
    old: &Assignment,
    reason: EndReason,
    actor: &Actor,
) -> Result<()> {
    let mut assignment = old.clone();
    assignment.set_state(AssignmentState::Expired);
    assignment.set_end_reason(reason);
    assignment.ended_time = Some(crate::shared::clock::to_timestamp(actor.now));
    assignment.info = Some(record_info(actor, txn.revision(), old.info.as_ref()));
    Ok(records::save(txn, Some(old), &assignment)?)
}

fn holds_any_assignment(txn: &dyn Txn, user_id: &str) -> Result<bool> {
    for id in targets(txn, Assignment::KIND, ASSIGNMENTS_BY_TARGET, user_id)? {
        if records::load::<Assignment>(txn, &id)?.is_some_and(|a| a.is_active()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A governed guest who lost their last assignment is blocked, and under
/// BLOCK_SIGN_IN_AND_DELETE scheduled for deletion. Other users are never
/// touched.
fn apply_guest_lifecycle(txn: &mut dyn Txn, user_id: &str, actor: &Actor) -> Result<()> {
    let Some(old) = records::load::<User>(txn, user_id)? else {
        return Ok(());
    };
    let governed_guest =
        old.governed && old.kind() == UserKind::Guest && old.state() == UserState::Active;
    if !governed_guest || holds_any_assignment(txn, user_id)? {
        return Ok(());
    }
    let settings = settings::current(txn)?;
    let mut user = old.clone();
    match settings.external_user_lifecycle() {
        ExternalUserLifecycle::None | ExternalUserLifecycle::Unspecified => return Ok(()),
        ExternalUserLifecycle::BlockSignIn => user.set_state(UserState::Blocked),
        ExternalUserLifecycle::BlockSignInAndDelete => {
            user.set_state(UserState::Blocked);
            let after = settings.delete_after.unwrap_or_default();
            user.scheduled_delete_time = Some(actor.moment().after(after).timestamp());
        }
    }
    stamp(&mut user, Some(&old), actor, txn.revision());
    records::save(txn, Some(&old), &user)?;
    let draft = user
        .audit(
            txn,
            Draft::new(User::KIND, Verb::Blocked, user_id),
            Some(&old),
        )?
        .detail("reason", "a governed guest lost their last assignment")
        .detail("scheduled_delete_time", user.scheduled_delete_time);
    audit::append(txn, actor, draft)
}

/// Deletes a governed guest whose deletion is due, unless they are no
/// longer blocked; false when nothing was due. A guest who holds an
/// assignment again, or whom a policy, organization or user still names
/// (as approver, requestor or sponsor), stays blocked and is not deleted.
pub fn delete_guest_if_due(txn: &mut dyn Txn, user_id: &str, actor: &Actor) -> Result<bool> {
    let Some(old) = records::load::<User>(txn, user_id)? else {
        return Ok(false);
    };
    let due = old
        .scheduled_delete_time
        .is_some_and(|t| Moment::from_timestamp(t) <= actor.moment());
    if !due || old.state() != UserState::Blocked {
        return Ok(false);
    }
    if holds_any_assignment(txn, user_id)? {
        call_off_deletion(txn, &old, "the guest holds an assignment again", actor)?;
        return Ok(true);
    }
    if let Err(in_use) = directory::ensure_user_unreferenced(txn, user_id) {
        call_off_deletion(txn, &old, &in_use.to_string(), actor)?;
        return Ok(true);
    }
    delete_user(txn, user_id, "", actor)?;
    Ok(true)
}

/// Clears a guest's scheduled deletion, saying why in the audit trail.
fn call_off_deletion(txn: &mut dyn Txn, old: &User, why: &str, actor: &Actor) -> Result<()> {
    let mut user = old.clone();
    user.scheduled_delete_time = None;
    stamp(&mut user, Some(old), actor, txn.revision());
    records::save(txn, Some(old), &user)?;
    let draft = user
        .audit(
            txn,
            Draft::new(User::KIND, Verb::Updated, &old.id),
            Some(old),
        )?
        .detail("fields", vec!["scheduled_delete_time".to_string()])
        .detail("reason", why);
    audit::append(txn, actor, draft)
}

/// A new request in SUBMITTED, by `actor`.
pub fn submitted(r#type: RequestType, actor: &Actor) -> AssignmentRequest {
    let mut request = AssignmentRequest {
        id: new_id(),
        requestor_id: actor.id.clone(),
        ..Default::default()
    };
    request.set_type(r#type);
    request.set_state(RequestState::Submitted);
    request.history.push(crate::pb::StateChange {
        state: RequestState::Submitted as i32,
        time: Some(crate::shared::clock::to_timestamp(actor.now)),
        actor: actor.id.clone(),
        reason: String::new(),
        policy_ids: Vec::new(),
    });
    request
}

/// Ends an assignment through a SYSTEM_REMOVE request, so that history
/// records it like any other removal.
fn system_remove(
    txn: &mut dyn Txn,
    assignment: &Assignment,
    reason: EndReason,
    why: &str,
    actor: &Actor,
) -> Result<()> {
    let mut request = submitted(RequestType::SystemRemove, actor);
    request.target_id = assignment.target_id.clone();
    request.access_package_id = assignment.access_package_id.clone();
    request.assignment_policy_id = assignment.assignment_policy_id.clone();
    request.assignment_id = assignment.id.clone();
    request.justification = why.to_string();
    deliver_remove(txn, &mut request, reason, actor)?;
    save(txn, None, &mut request, actor)
}

/// Expires an assignment whose end has come. Returns false (and changes
/// nothing) when it is no longer due, so it never fires twice.
pub fn expire_if_due(txn: &mut dyn Txn, assignment_id: &str, actor: &Actor) -> Result<bool> {
    let Some(assignment) = records::load::<Assignment>(txn, assignment_id)? else {
        return Ok(false);
    };
    let due = assignment
        .end_time
        .is_some_and(|end| Moment::from_timestamp(end) <= actor.moment());
    if !assignment.is_active() || !due {
        return Ok(false);
    }
    system_remove(txn, &assignment, EndReason::Expired, "expired", actor)?;
    Ok(true)
}

/// When an add request's access starts (None: at once).
fn start_of(request: &AssignmentRequest) -> Option<Moment> {
    request
        .effective_schedule
        .and_then(|s| s.start_time)
        .map(Moment::from_timestamp)
}

/// Delivers a scheduled request whose start has come, if it is still
/// allowed (DENIED otherwise); false when it is no longer due.
pub fn start_if_due(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    request_id: &str,
    actor: &Actor,
) -> Result<bool> {
    let Some(old) = records::load::<AssignmentRequest>(txn, request_id)? else {
        return Ok(false);
    };
    let start = start_of(&old).unwrap_or_default();
    if old.state() != RequestState::Scheduled || start > actor.moment() {
        return Ok(false);
    }
    let mut request = old.clone();
    if still_allowed(txn, engine, &mut request, start, actor)? {
        deliver_add(txn, &mut request, actor)?;
    }
    save(txn, Some(&old), &mut request, actor)?;
    Ok(true)
}

/// Deletes a user: the user turns DELETED, then their assignments end and
/// their open requests are canceled (in that order in the audit trail:
/// cause before effect).
pub fn delete_user(txn: &mut dyn Txn, id: &str, etag: &str, actor: &Actor) -> Result<User> {
    let user = directory::delete_user(txn, id, etag, actor)?;
    for assignment_id in targets(txn, Assignment::KIND, ASSIGNMENTS_BY_TARGET, id)? {
        let assignment: Assignment = records::require(txn, &assignment_id)?;
        if assignment.is_active() {
            system_remove(
                txn,
                &assignment,
                EndReason::TargetDeleted,
                "the target was deleted",
                actor,
            )?;
        }
    }
    cancel_open(
        txn,
        OPEN_BY_TARGET,
        id,
        actor,
        "canceled: the target was deleted",
    )?;
    Ok(user)
}
