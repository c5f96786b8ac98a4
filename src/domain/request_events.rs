//! The audit events of a request change, derived from what the save
//! changes: a new request, new approver decisions, and the states it passed
//! through. Deriving them here, where every request change is saved, keeps
//! them complete and in causal order (creation, decisions, outcome).

use crate::audit::history::{self, EXPIRED, REMOVED, keys};
use crate::audit::{self, Draft, Verb};
use crate::error::Result;
use crate::pb::{
    AccessPackage, Assignment, AssignmentRequest, EndReason, RequestState, RequestType, StageState,
};
use crate::store::Txn;
use crate::store::records;

use crate::shared::actor::Actor;

/// Appends the events of saving `new` over `old`.
pub fn record(
    txn: &mut dyn Txn,
    old: Option<&AssignmentRequest>,
    new: &AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    let catalog = records::load::<AccessPackage>(txn, &new.access_package_id)?
        .map(|package| package.catalog_id)
        .unwrap_or_default();
    let event = |verb: Verb| {
        Draft::new(history::REQUEST, verb, &new.id)
            .catalog(&catalog)
            .package(&new.access_package_id)
            .user(&new.target_id)
            .detail(keys::REQUEST_TYPE, new.r#type().as_str_name())
    };
    let system = matches!(
        new.r#type(),
        RequestType::SystemAdd | RequestType::SystemRemove
    );
    if old.is_none() && !system {
        let draft = event(Verb::Created)
            .outcome(new.state().as_str_name())
            .detail(keys::POLICY, &new.assignment_policy_id)
            .detail(keys::ASSIGNMENT, &new.assignment_id)
            .detail("requestor_id", &new.requestor_id)
            .detail("justification", &new.justification);
        audit::append(txn, actor, draft)?;
    }
    for (index, stage) in new.approval_stages.iter().enumerate() {
        let known = old
            .and_then(|o| o.approval_stages.get(index))
            .map_or(0, |s| s.decisions.len());
        for decision in stage.decisions.iter().skip(known) {
            let outcome = if decision.approved {
                "APPROVED"
            } else {
                "DENIED"
            };
            let draft = event(Verb::StageDecided)
                .outcome(outcome)
                .detail("stage", i64::from(stage.stage))
                .detail("approver_id", &decision.approver_id)
                .detail("justification", &decision.justification);
            audit::append(txn, actor, draft)?;
        }
    }
    let seen = old.map_or(0, |o| o.history.len());
    for change in new.history.iter().skip(seen) {
        let with_reason = |draft: Draft| {
            draft
                .outcome(change.state().as_str_name())
                .detail("reason", &change.reason)
                .detail("policy_ids", change.policy_ids.clone())
        };
        let draft = match change.state() {
            RequestState::Delivered if new.is_add() || is_update(new) => {
                with_reason(delivered(txn, new, event(Verb::Delivered))?)
            }
            RequestState::Delivered => assignment_ended(txn, new, &catalog)?,
            RequestState::Denied => with_reason(event(denial_verb(new))),
            RequestState::Canceled => with_reason(event(Verb::Canceled)),
            RequestState::DeliveryFailed => with_reason(event(Verb::DeliveryFailed)),
            _ => continue,
        };
        audit::append(txn, actor, draft)?;
    }
    Ok(())
}

fn is_update(request: &AssignmentRequest) -> bool {
    matches!(
        request.r#type(),
        RequestType::UserUpdate | RequestType::AdminUpdate
    )
}

/// A denial by the service has its own action: the last stage timed out,
/// or nobody could decide it.
fn denial_verb(request: &AssignmentRequest) -> Verb {
    match request.approval_stages.last().map(|s| s.state()) {
        Some(StageState::TimedOut) => Verb::TimedOut,
        Some(StageState::NoApprovers) => Verb::NoApprovers,
        _ => Verb::Denied,
    }
}

/// A delivered add or extension: the assignment as it now stands (and for
/// an extension the end it had), which is what replaying history needs.
fn delivered(txn: &dyn Txn, request: &AssignmentRequest, draft: Draft) -> Result<Draft> {
    let assignment: Assignment = records::require(txn, &request.assignment_id)?;
    let draft = draft
        .detail(keys::ASSIGNMENT, &assignment.id)
        .detail(keys::POLICY, &assignment.assignment_policy_id)
        .detail(keys::REQUEST, &assignment.request_id)
        .detail(keys::START, assignment.start_time)
        .detail(keys::END, assignment.end_time);
    Ok(if is_update(request) {
        draft.detail(keys::PREVIOUS_END, request.previous_end_time)
    } else {
        draft
    })
}

/// A delivered removal (by the user, an administrator, expiry or the
/// target's deletion) is recorded on the assignment it ended, in the
/// request's catalog (a request and its assignment share the package).
fn assignment_ended(txn: &dyn Txn, request: &AssignmentRequest, catalog: &str) -> Result<Draft> {
    let assignment: Assignment = records::require(txn, &request.assignment_id)?;
    let action = match assignment.end_reason() {
        EndReason::Expired => EXPIRED,
        _ => REMOVED,
    };
    let draft = Draft::of(action, &assignment.id)
        .outcome(assignment.state().as_str_name())
        .catalog(catalog)
        .package(&assignment.access_package_id)
        .user(&assignment.target_id)
        .detail("end_reason", assignment.end_reason().as_str_name())
        .detail("removal_request_id", &request.id)
        .detail(keys::REQUEST_TYPE, request.r#type().as_str_name())
        .detail(keys::ASSIGNMENT, &assignment.id)
        .detail(keys::POLICY, &assignment.assignment_policy_id)
        .detail(keys::REQUEST, &assignment.request_id)
        .detail(keys::START, assignment.start_time)
        .detail(keys::END, assignment.end_time);
    Ok(draft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::Record;

    /// The history vocabulary lives below the domain and names its records
    /// by their kinds.
    #[test]
    fn history_target_types_are_the_record_kinds() {
        assert_eq!(history::ASSIGNMENT, Assignment::KIND);
        assert_eq!(history::ACCESS_PACKAGE, AccessPackage::KIND);
        assert_eq!(
            Draft::new(history::REQUEST, Verb::Delivered, "r").action,
            history::DELIVERED
        );
    }
}
