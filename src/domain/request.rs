//! Assignment requests as stored records: their indexes, the legal state
//! transitions, and resolving open requests when what they depend on goes
//! away (so no request is left pending against a deleted user or policy).

use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{
    ApprovalStageStatus, AssignmentRequest, RequestState, RequestType, StageState, StateChange,
};
use crate::store::Txn;
use crate::store::records::{self, IndexEntry, Record, Reference};

use super::directory::targets;
use super::entity::record_info;
use crate::shared::actor::Actor;

pub const REQUESTS_BY_TARGET: &str = "target";
pub const REQUESTS_BY_REQUESTOR: &str = "requestor";
pub const REQUESTS_BY_PACKAGE: &str = "package";
pub const OPEN_BY_TARGET: &str = "open_target";
pub const OPEN_BY_POLICY: &str = "open_policy";
pub const OPEN_BY_PACKAGE: &str = "open_package";
/// Scheduled requests by start time (see [`time_key`]).
pub const SCHEDULED_BY_START: &str = "starts";
/// Requests waiting for approval, by approver user and by approver group.
pub const PENDING_FOR_USER: &str = "approver_user";
pub const PENDING_FOR_GROUP: &str = "approver_group";
/// Requests waiting for approval, by when their current stage times out.
pub const STAGE_DUE: &str = "stage_due";
/// At most one open add request per (target, package).
pub const OPEN_ADD: &str = "open_add";
/// At most one open update or remove request per assignment.
pub const OPEN_CHANGE: &str = "open_change";

/// Times in index values: zero-padded epoch seconds, so that they sort.
pub fn time_key(epoch_seconds: i64) -> String {
    format!("{:020}", epoch_seconds.max(0))
}

pub fn pair_key(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

impl AssignmentRequest {
    pub fn is_open(&self) -> bool {
        matches!(
            self.state(),
            RequestState::Submitted | RequestState::PendingApproval | RequestState::Scheduled
        )
    }

    pub fn is_add(&self) -> bool {
        matches!(
            self.r#type(),
            RequestType::UserAdd | RequestType::AdminAdd | RequestType::SystemAdd
        )
    }
}

impl Record for AssignmentRequest {
    const KIND: &'static str = "assignment_request";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let mut entries = vec![
            IndexEntry::new(REQUESTS_BY_TARGET, &self.target_id, &self.id),
            IndexEntry::new(REQUESTS_BY_REQUESTOR, &self.requestor_id, &self.id),
            IndexEntry::new(REQUESTS_BY_PACKAGE, &self.access_package_id, &self.id),
        ];
        if self.is_open() {
            entries.push(IndexEntry::new(OPEN_BY_TARGET, &self.target_id, &self.id));
            entries.push(IndexEntry::new(
                OPEN_BY_POLICY,
                &self.assignment_policy_id,
                &self.id,
            ));
            entries.push(IndexEntry::new(
                OPEN_BY_PACKAGE,
                &self.access_package_id,
                &self.id,
            ));
        }
        if self.state() == RequestState::PendingApproval
            && let Some(stage) = current_stage(self)
        {
            for user in &stage.approver_user_ids {
                entries.push(IndexEntry::new(PENDING_FOR_USER, user, &self.id));
            }
            for group in &stage.approver_group_ids {
                entries.push(IndexEntry::new(PENDING_FOR_GROUP, group, &self.id));
            }
            let due = stage.due_time.map_or(0, |t| t.seconds);
            entries.push(IndexEntry::new(STAGE_DUE, time_key(due), &self.id));
        }
        if self.state() == RequestState::Scheduled {
            let start = self
                .effective_schedule
                .as_ref()
                .and_then(|s| s.start_time)
                .map_or(0, |t| t.seconds);
            entries.push(IndexEntry::new(
                SCHEDULED_BY_START,
                time_key(start),
                &self.id,
            ));
        }
        entries
    }

    fn uniques(&self) -> Vec<(&'static str, String)> {
        if !self.is_open() {
            return Vec::new();
        }
        if self.is_add() {
            vec![(OPEN_ADD, pair_key(&self.target_id, &self.access_package_id))]
        } else {
            vec![(OPEN_CHANGE, self.assignment_id.clone())]
        }
    }

    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

/// Whether a request may move from `from` to `to`.
pub fn can_transition(from: RequestState, to: RequestState) -> bool {
    use RequestState::*;
    matches!(
        (from, to),
        (
            Submitted,
            PendingApproval | Scheduled | Delivering | Denied | Canceled
        ) | (PendingApproval, Scheduled | Delivering | Denied | Canceled)
            | (Scheduled, Delivering | Denied | Canceled)
            | (Delivering, Delivered | DeliveryFailed | PartiallyDelivered)
    )
}

pub fn is_final(state: RequestState) -> bool {
    matches!(
        state,
        RequestState::Delivered
            | RequestState::Denied
            | RequestState::Canceled
            | RequestState::DeliveryFailed
    )
}

/// Moves a request to `to`, recording who, when and why; FAILED_PRECONDITION
/// for an illegal transition.
pub fn transition(
    request: &mut AssignmentRequest,
    to: RequestState,
    actor: &Actor,
    reason: &str,
) -> Result<()> {
    let from = request.state();
    if !can_transition(from, to) {
        return Err(Error::precondition(
            PreconditionKind::State,
            records::subject::<AssignmentRequest>(&request.id),
            format!(
                "request {:?} is {} and cannot become {}",
                request.id,
                from.as_str_name(),
                to.as_str_name()
            ),
        ));
    }
    request.set_state(to);
    if to == RequestState::Canceled {
        close_current_stage(request, StageState::Canceled);
    }
    let time = crate::shared::clock::to_timestamp(actor.now);
    request.history.push(StateChange {
        state: to as i32,
        time: Some(time),
        actor: actor.id.clone(),
        reason: reason.to_string(),
        policy_ids: Vec::new(),
    });
    if is_final(to) {
        request.complete_time = Some(time);
    }
    Ok(())
}

/// The approval stage waiting for decisions, if any.
pub fn current_stage(request: &AssignmentRequest) -> Option<&ApprovalStageStatus> {
    request
        .approval_stages
        .last()
        .filter(|s| s.state() == StageState::Pending)
}

/// Ends the waiting approval stage, if any, in `state`.
pub fn close_current_stage(request: &mut AssignmentRequest, state: StageState) {
    if let Some(stage) = request.approval_stages.last_mut()
        && stage.state() == StageState::Pending
    {
        stage.set_state(state);
    }
}

/// Stores a changed request with fresh bookkeeping, and its audit events.
pub fn save_request(
    txn: &mut dyn Txn,
    old: Option<&AssignmentRequest>,
    request: &mut AssignmentRequest,
    actor: &Actor,
) -> Result<()> {
    request.info = Some(record_info(
        actor,
        txn.revision(),
        old.and_then(|o| o.info.as_ref()),
    ));
    records::save(txn, old, request)?;
    super::request_events::record(txn, old, request, actor)
}

/// Cancels every open request listed under (`index`, `value`).
pub fn cancel_open(
    txn: &mut dyn Txn,
    index: &'static str,
    value: &str,
    actor: &Actor,
    reason: &str,
) -> Result<()> {
    for id in targets(txn, AssignmentRequest::KIND, index, value)? {
        let old: AssignmentRequest = records::require(txn, &id)?;
        let mut request = old.clone();
        transition(&mut request, RequestState::Canceled, actor, reason)?;
        save_request(txn, Some(&old), &mut request, actor)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RequestState; 9] = [
        RequestState::Submitted,
        RequestState::PendingApproval,
        RequestState::Scheduled,
        RequestState::Delivering,
        RequestState::Delivered,
        RequestState::Denied,
        RequestState::Canceled,
        RequestState::DeliveryFailed,
        RequestState::PartiallyDelivered,
    ];

    #[test]
    fn final_states_lead_nowhere_and_every_state_is_reachable() {
        for from in ALL {
            for to in ALL {
                if is_final(from) {
                    assert!(!can_transition(from, to), "{from:?} -> {to:?}");
                }
            }
        }
        for to in ALL.iter().skip(1) {
            assert!(
                ALL.iter().any(|from| can_transition(*from, *to)),
                "{to:?} unreachable"
            );
        }
    }

    #[test]
    fn only_waiting_requests_can_be_canceled() {
        let cancelable: Vec<_> = ALL
            .into_iter()
            .filter(|from| can_transition(*from, RequestState::Canceled))
            .collect();
        assert_eq!(
            cancelable,
            vec![
                RequestState::Submitted,
                RequestState::PendingApproval,
                RequestState::Scheduled
            ]
        );
    }
}
