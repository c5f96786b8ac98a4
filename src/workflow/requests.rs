//! Creating and canceling requests. A request is checked (shape, state,
//! eligibility through Cedar), then moved as far as it can go in the same
//! transaction: straight to DELIVERED when nothing needs to wait.

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;

use crate::domain::assignment::ACTIVE_PAIR;
use crate::domain::request::{OPEN_ADD, OPEN_CHANGE, pair_key, transition};
use crate::domain::validate::{self, Check};
use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{
    Assignment, AssignmentPolicy, AssignmentRequest, EndReason, ExternalRequestor, RequestState,
    RequestType, Schedule, User,
};
use crate::policy::compile::actions::{ADMIN_ASSIGN, EXTEND_ACCESS, REMOVE_ACCESS, REQUEST_ACCESS};
use crate::policy::{ChangeContext, PolicyEngine};
use crate::shared::actor::Actor;
use crate::shared::clock::Moment;
use crate::store::idempotency::Idempotency;
use crate::store::records::{self, Record};
use crate::store::{Store, Txn, write};

use super::lifecycle::{deliver_remove, deliver_update, save, schedule_or_deliver, submitted};
use super::{answers, approval, eligibility, external, schedule};
use crate::policy::entities::Subject;

const METHOD: &str = "CreateAssignmentRequest";
pub const MAX_JUSTIFICATION: usize = 4096;

/// INVALID_ARGUMENT unless the request is well formed; its type.
pub fn check_shape(input: &AssignmentRequest, now: SystemTime) -> Result<RequestType> {
    let mut check = Check::new("assignment_request");
    let kind = RequestType::try_from(input.r#type).unwrap_or_default();
    match kind {
        RequestType::Unspecified => check.fail("type", "is required"),
        RequestType::SystemAdd | RequestType::SystemRemove => {
            check.fail("type", "SYSTEM requests are made by the service only")
        }
        RequestType::UserAdd | RequestType::AdminAdd => {
            check.id("assignment_policy_id", &input.assignment_policy_id);
            check.optional_id("access_package_id", &input.access_package_id);
            check.require(
                input.assignment_id.is_empty(),
                "assignment_id",
                "is set by the service for add requests",
            );
        }
        _ => {
            check.id("assignment_id", &input.assignment_id);
            check.require(
                input
                    .schedule
                    .as_ref()
                    .is_none_or(|s| s.start_time.is_none()),
                "schedule.start_time",
                "only add requests take a start time",
            );
        }
    }
    if kind == RequestType::AdminAdd {
        check.id("target_id", &input.target_id);
    } else {
        check.optional_id("target_id", &input.target_id);
    }
    if kind == RequestType::AdminUpdate {
        check.require(
            input
                .schedule
                .as_ref()
                .is_some_and(|s| s.end_time.is_some()),
            "schedule.end_time",
            "is required for ADMIN_UPDATE",
        );
    }
    check.text(
        "justification",
        &input.justification,
        MAX_JUSTIFICATION,
        false,
    );
    // A start in the past means now; an end must still be to come.
    if let Some(schedule) = &input.schedule {
        if let Some(start) = &schedule.start_time {
            check.timestamp("schedule.start_time", start);
        }
        if let Some(end) = &schedule.end_time {
            check.future_timestamp("schedule.end_time", end, now);
        }
    }
    check.finish()?;
    Ok(kind)
}

/// Creates a request and processes it as far as it goes.
pub async fn create(
    store: &dyn Store,
    engine: Arc<PolicyEngine>,
    actor: Actor,
    input: Option<AssignmentRequest>,
    request_id: String,
) -> Result<AssignmentRequest> {
    validate::request_id(&request_id)?;
    let input = input.ok_or_else(|| Error::invalid("assignment_request", "is required"))?;
    let kind = check_shape(&input, actor.now)?;
    let foreseen = match kind {
        RequestType::UserAdd => foresee_user_add(store, &engine, &actor, &input),
        _ => None,
    };
    commit(store, engine, actor, kind, input, request_id, foreseen).await
}

/// The write job of [`create`].
async fn commit(
    store: &dyn Store,
    engine: Arc<PolicyEngine>,
    actor: Actor,
    kind: RequestType,
    input: AssignmentRequest,
    request_id: String,
    foreseen: Option<eligibility::Foreseen>,
) -> Result<AssignmentRequest> {
    // The request has no map fields, so its encoding is canonical.
    let idempotency = Idempotency::new(&actor.id, METHOD, &request_id, || {
        vec![input.encode_to_vec()]
    });
    let committed = write(store, move |txn| {
        if let Some(first) = idempotency.recall::<AssignmentRequest>(txn)? {
            return Ok(first);
        }
        let mut request = match kind {
            RequestType::UserAdd | RequestType::AdminAdd => {
                add(txn, &engine, &actor, kind, input, foreseen)?
            }
            RequestType::UserUpdate | RequestType::AdminUpdate => {
                update(txn, &engine, &actor, kind, input)?
            }
            _ => remove(txn, &engine, &actor, kind, input)?,
        };
        save(txn, None, &mut request, &actor)?;
        idempotency.remember(txn, &request);
        Ok::<_, Error>(request)
    })
    .await?;
    Ok(committed.value)
}

/// The target of a USER_* request is the caller.
fn self_target(actor: &Actor, input: &AssignmentRequest, kind: RequestType) -> Result<String> {
    if input.target_id.is_empty() || input.target_id == actor.id {
        Ok(actor.id.clone())
    } else {
        Err(Error::PermissionDenied {
            message: format!(
                "{} requests are for the caller's own access; administrators use ADMIN requests",
                kind.as_str_name()
            ),
            policy_ids: Vec::new(),
        })
    }
}

/// The context of the eligibility decision on an add through `policy`.
fn add_context(
    policy: &AssignmentPolicy,
    input: &AssignmentRequest,
    by_user: bool,
    now: Moment,
) -> ChangeContext {
    ChangeContext {
        now: now.seconds(),
        start: schedule::for_add(policy, input.schedule.as_ref(), now)
            .start
            .seconds(),
        custom_schedule: by_user && eligibility::is_custom(input.schedule.as_ref()),
    }
}

/// The eligibility of a USER_ADD by a directory user, decided from
/// committed state before the write job (see [`eligibility::Foreseen`]).
/// Whatever stops it (a missing record, a failed read) is left to the job,
/// which reports it in its own order (a retried request first of all).
fn foresee_user_add(
    store: &dyn Store,
    engine: &PolicyEngine,
    actor: &Actor,
    input: &AssignmentRequest,
) -> Option<eligibility::Foreseen> {
    let target_id = self_target(actor, input, RequestType::UserAdd).ok()?;
    let now = actor.moment();
    eligibility::Foreseen::decide(
        engine,
        store,
        &target_id,
        &input.assignment_policy_id,
        REQUEST_ACCESS,
        |policy| add_context(policy, input, true, now),
    )
    .ok()
    .flatten()
}

/// Who an add is for: a directory user, or an external requestor (with the
/// subject made for them).
enum AddTarget {
    Directory(Box<User>),
    External(Box<Subject>),
}

fn add(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    actor: &Actor,
    kind: RequestType,
    input: AssignmentRequest,
    foreseen: Option<eligibility::Foreseen>,
) -> Result<AssignmentRequest> {
    let by_user = kind == RequestType::UserAdd;
    let target_id = if by_user {
        self_target(actor, &input, kind)?
    } else {
        input.target_id.clone()
    };
    let policy: AssignmentPolicy = records::require(txn, &input.assignment_policy_id)?;
    let (target, external_requestor) =
        add_target(txn, actor, &input, &policy, &target_id, by_user)?;
    check_package_of_policy(&input, &policy)?;
    check_not_held_or_asked(txn, &target_id, &policy)?;
    check_requestor_input(&policy, &input, by_user)?;

    let now = actor.moment();
    let window = schedule::for_add(&policy, input.schedule.as_ref(), now);
    let context = add_context(&policy, &input, by_user, now);
    let action = if by_user {
        REQUEST_ACCESS
    } else {
        ADMIN_ASSIGN
    };
    let (decision, subject) = match target {
        AddTarget::Directory(user) => (
            eligibility::decide_for_user(foreseen, engine, txn, *user, &policy, action, context)?,
            None,
        ),
        AddTarget::External(subject) => (
            eligibility::decide(engine, txn, &subject, &policy, action, context)?,
            Some(subject),
        ),
    };
    if !decision.allowed {
        // The refusal explains itself with the subject the decision saw.
        let subject = match subject {
            Some(subject) => *subject,
            None => eligibility::subject_of(txn, &target_id)?,
        };
        eligibility::require_eligible(txn, &decision, &subject, &policy, action, context, || {
            format!(
                "user {target_id:?} may not get package {:?} through policy {:?}",
                policy.access_package_id, policy.id
            )
        })?;
    }
    let window = window.check()?;

    let mut request = submitted(kind, actor);
    request.target_id = target_id;
    request.access_package_id = policy.access_package_id.clone();
    request.assignment_policy_id = policy.id.clone();
    request.justification = input.justification;
    request.answers = input.answers;
    request.schedule = input.schedule;
    request.effective_schedule = Some(window.to_schedule());
    request.external_requestor = external_requestor;
    let approval = policy.approval_settings.clone().unwrap_or_default();
    if by_user && approval.approval_required_for_add && !approval.stages.is_empty() {
        approval::begin(txn, &mut request, &policy, actor)?;
    } else {
        schedule_or_deliver(txn, &mut request, actor)?;
    }
    Ok(request)
}

/// Who an add is for: the directory user `target_id`, or else (for a user's
/// own request) the external requestor it names, made a user here, with
/// the requestor details the request keeps; NOT_FOUND otherwise.
fn add_target(
    txn: &mut dyn Txn,
    actor: &Actor,
    input: &AssignmentRequest,
    policy: &AssignmentPolicy,
    target_id: &str,
    by_user: bool,
) -> Result<(AddTarget, Option<ExternalRequestor>)> {
    if let Some(user) = records::load::<User>(txn, target_id)? {
        return Ok((AddTarget::Directory(Box::new(user)), None));
    }
    match &input.external_requestor {
        Some(external) if by_user => {
            let (subject, external) = external::requestor(txn, target_id, external, policy, actor)?;
            Ok((AddTarget::External(Box::new(subject)), external))
        }
        _ => Err(Error::not_found(User::KIND, target_id)),
    }
}

/// INVALID_ARGUMENT when the request names a package other than the one
/// its policy leads to.
fn check_package_of_policy(input: &AssignmentRequest, policy: &AssignmentPolicy) -> Result<()> {
    if !input.access_package_id.is_empty() && input.access_package_id != policy.access_package_id {
        return Err(Error::invalid(
            "assignment_request.access_package_id",
            format!(
                "policy {:?} leads to package {:?}, not {:?}",
                policy.id, policy.access_package_id, input.access_package_id
            ),
        ));
    }
    Ok(())
}

/// FAILED_PRECONDITION when the user already holds the policy's package, or
/// another add for the same user and package is still open.
fn check_not_held_or_asked(
    txn: &dyn Txn,
    target_id: &str,
    policy: &AssignmentPolicy,
) -> Result<()> {
    let pair = pair_key(target_id, &policy.access_package_id);
    if let Some(existing) = records::unique_owner::<Assignment>(txn, ACTIVE_PAIR, &pair)? {
        return Err(Error::precondition(
            PreconditionKind::AlreadyAssigned,
            records::subject::<Assignment>(&existing),
            format!(
                "user {target_id:?} already holds package {:?} (assignment {existing}); extend it instead",
                policy.access_package_id
            ),
        ));
    }
    if let Some(open) = records::unique_owner::<AssignmentRequest>(txn, OPEN_ADD, &pair)? {
        return Err(Error::precondition(
            PreconditionKind::RequestOpen,
            records::subject::<AssignmentRequest>(&open),
            format!(
                "request {open} for user {target_id:?} and package {:?} is still open",
                policy.access_package_id
            ),
        ));
    }
    Ok(())
}

/// Justification and answers, as the policy asks of requestors.
fn check_requestor_input(
    policy: &AssignmentPolicy,
    input: &AssignmentRequest,
    by_user: bool,
) -> Result<()> {
    let settings = policy.requestor_settings.unwrap_or_default();
    if by_user && settings.justification_required && input.justification.trim().is_empty() {
        return Err(Error::invalid(
            "assignment_request.justification",
            format!("policy {:?} requires a justification", policy.id),
        ));
    }
    answers::check(policy, &input.answers, by_user)
}

/// The active assignment an update or remove request is about.
fn changed_assignment(
    txn: &dyn Txn,
    actor: &Actor,
    kind: RequestType,
    input: &AssignmentRequest,
) -> Result<Assignment> {
    let assignment: Assignment = records::require(txn, &input.assignment_id)?;
    if matches!(kind, RequestType::UserUpdate | RequestType::UserRemove) {
        let target = self_target(actor, input, kind)?;
        if assignment.target_id != target {
            return Err(Error::PermissionDenied {
                message: format!("assignment {:?} belongs to another user", assignment.id),
                policy_ids: Vec::new(),
            });
        }
    } else if !input.target_id.is_empty() && input.target_id != assignment.target_id {
        return Err(Error::invalid(
            "assignment_request.target_id",
            format!(
                "assignment {:?} is held by {:?}",
                assignment.id, assignment.target_id
            ),
        ));
    }
    if !assignment.is_active() {
        return Err(Error::precondition(
            PreconditionKind::State,
            records::subject::<Assignment>(&assignment.id),
            format!(
                "assignment {:?} is {}",
                assignment.id,
                assignment.state().as_str_name()
            ),
        ));
    }
    if let Some(open) =
        records::unique_owner::<AssignmentRequest>(txn, OPEN_CHANGE, &assignment.id)?
    {
        return Err(Error::precondition(
            PreconditionKind::RequestOpen,
            records::subject::<AssignmentRequest>(&open),
            format!(
                "request {open} for assignment {:?} is still open",
                assignment.id
            ),
        ));
    }
    Ok(assignment)
}

fn request_for(
    kind: RequestType,
    actor: &Actor,
    assignment: &Assignment,
    input: AssignmentRequest,
) -> AssignmentRequest {
    let mut request = submitted(kind, actor);
    request.target_id = assignment.target_id.clone();
    request.access_package_id = assignment.access_package_id.clone();
    request.assignment_policy_id = assignment.assignment_policy_id.clone();
    request.assignment_id = assignment.id.clone();
    request.justification = input.justification;
    request.answers = input.answers;
    request.schedule = input.schedule;
    request
}

fn update(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    actor: &Actor,
    kind: RequestType,
    input: AssignmentRequest,
) -> Result<AssignmentRequest> {
    let by_user = kind == RequestType::UserUpdate;
    let assignment = changed_assignment(txn, actor, kind, &input)?;
    let policy: AssignmentPolicy = records::require(txn, &assignment.assignment_policy_id)?;
    check_requestor_input(&policy, &input, by_user)?;
    let now = actor.moment();
    let asked_end = input
        .schedule
        .as_ref()
        .and_then(|s| s.end_time)
        .map(Moment::from_timestamp);
    if by_user {
        let context = ChangeContext {
            now: now.seconds(),
            start: now.seconds(),
            custom_schedule: asked_end.is_some(),
        };
        eligibility::require(
            engine,
            txn,
            &eligibility::subject_of(txn, &assignment.target_id)?,
            &policy,
            EXTEND_ACCESS,
            context,
            || {
                format!(
                    "user {:?} may not extend assignment {:?}",
                    assignment.target_id, assignment.id
                )
            },
        )?;
    }
    let end = schedule::for_update(&policy, asked_end, now);
    schedule::Window { start: now, end }.check()?;

    let mut request = request_for(kind, actor, &assignment, input);
    request.effective_schedule = Some(Schedule {
        start_time: assignment.start_time,
        end_time: end.map(Moment::timestamp),
    });
    let approval = policy.approval_settings.clone().unwrap_or_default();
    if by_user && approval.approval_required_for_update && !approval.stages.is_empty() {
        approval::begin(txn, &mut request, &policy, actor)?;
    } else {
        deliver_update(txn, &mut request, actor)?;
    }
    Ok(request)
}

fn remove(
    txn: &mut dyn Txn,
    engine: &PolicyEngine,
    actor: &Actor,
    kind: RequestType,
    input: AssignmentRequest,
) -> Result<AssignmentRequest> {
    let by_user = kind == RequestType::UserRemove;
    let assignment = changed_assignment(txn, actor, kind, &input)?;
    if by_user {
        let policy: AssignmentPolicy = records::require(txn, &assignment.assignment_policy_id)?;
        let now = actor.moment().seconds();
        let context = ChangeContext {
            now,
            start: now,
            custom_schedule: false,
        };
        eligibility::require(
            engine,
            txn,
            &eligibility::subject_of(txn, &assignment.target_id)?,
            &policy,
            REMOVE_ACCESS,
            context,
            || {
                format!(
                    "policy {:?} does not let its users remove their own assignment",
                    policy.id
                )
            },
        )?;
    }
    let reason = if by_user {
        EndReason::RemovedByUser
    } else {
        EndReason::RemovedByAdmin
    };
    let mut request = request_for(kind, actor, &assignment, input);
    deliver_remove(txn, &mut request, reason, actor)?;
    Ok(request)
}

/// Cancels a request that is still waiting; a waiting approval stage is
/// marked canceled too.
pub async fn cancel(store: &dyn Store, actor: Actor, id: String) -> Result<AssignmentRequest> {
    let mut check = Check::new("");
    check.id("id", &id);
    check.finish()?;
    let committed = write(store, move |txn| {
        let old: AssignmentRequest = records::require(txn, &id)?;
        let mut request = old.clone();
        transition(&mut request, RequestState::Canceled, &actor, "canceled")?;
        save(txn, Some(&old), &mut request, &actor)?;
        Ok::<_, Error>(request)
    })
    .await?;
    Ok(committed.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{
        AccessPackage, AllowedTargetScope, Catalog, CatalogKind, Group, GroupMembership,
        RequestorSettings, SubjectSet, UserKind, UserState, group_membership,
    };
    use crate::store::sled_store::SledStore;
    use std::time::SystemTime;

    fn membership() -> GroupMembership {
        GroupMembership {
            group_id: "g1".into(),
            member: Some(group_membership::Member::UserId("u1".into())),
            info: None,
        }
    }

    /// u1 is in g1, and policy pol1 lets members of g1 request p1.
    async fn world(store: &SledStore) {
        write::<_, Error, _>(store, |txn| {
            records::save(
                txn,
                None,
                &User {
                    id: "u1".into(),
                    kind: UserKind::Member as i32,
                    state: UserState::Active as i32,
                    ..Default::default()
                },
            )?;
            records::save(
                txn,
                None,
                &Group {
                    id: "g1".into(),
                    ..Default::default()
                },
            )?;
            records::save(txn, None, &membership())?;
            records::save(
                txn,
                None,
                &Catalog {
                    id: "c1".into(),
                    kind: CatalogKind::UserManaged as i32,
                    enabled: Some(true),
                    ..Default::default()
                },
            )?;
            records::save(
                txn,
                None,
                &AccessPackage {
                    id: "p1".into(),
                    catalog_id: "c1".into(),
                    ..Default::default()
                },
            )?;
            records::save(
                txn,
                None,
                &AssignmentPolicy {
                    id: "pol1".into(),
                    access_package_id: "p1".into(),
                    allowed_target_scope: AllowedTargetScope::SpecificDirectorySubjects as i32,
                    specific_allowed_targets: Some(SubjectSet {
                        group_ids: vec!["g1".into()],
                        ..Default::default()
                    }),
                    requestor_settings: Some(RequestorSettings {
                        enable_self_add: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            Ok(())
        })
        .await
        .unwrap();
    }

    /// A USER_ADD by u1 for p1 through pol1, foreseen before `meanwhile`
    /// runs and committed after it.
    async fn user_add_across(
        meanwhile: impl FnOnce(&mut dyn Txn) -> Result<()> + Send + 'static,
    ) -> Result<AssignmentRequest> {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        world(&store).await;
        let engine = Arc::new(PolicyEngine::builtin().unwrap());
        let actor = Actor::new("u1", SystemTime::now());
        let input = AssignmentRequest {
            r#type: RequestType::UserAdd as i32,
            assignment_policy_id: "pol1".into(),
            ..Default::default()
        };
        let foreseen = foresee_user_add(&store, &engine, &actor, &input);
        assert!(foreseen.is_some());
        write(&store, meanwhile).await.unwrap();
        let kind = RequestType::UserAdd;
        commit(&store, engine, actor, kind, input, "r1".into(), foreseen).await
    }

    #[tokio::test]
    async fn a_foreseen_user_add_is_granted_while_its_reads_hold() {
        let request = user_add_across(|txn| {
            txn.put(b"unrelated".to_vec(), Vec::new());
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(request.state(), RequestState::Delivered);
    }

    #[tokio::test]
    async fn a_user_add_foreseen_before_its_user_left_the_group_is_refused() {
        let refused = user_add_across(|txn| Ok(records::remove(txn, &membership())?)).await;
        assert!(
            matches!(refused, Err(Error::Ineligible { .. })),
            "{refused:?}"
        );
    }
}
