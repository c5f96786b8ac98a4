//! Asks Cedar whether a change to a user's access may happen through a
//! policy: inside the write job that makes the change, before it (see
//! [`Foreseen`]), or again when a request that waited is delivered (see
//! [`redecide`]).

pub mod read_set;

use std::sync::Arc;

use crate::domain::assignment_policy::POLICIES_BY_PACKAGE;
use crate::domain::directory::targets;
use crate::error::{Error, Result};
use crate::pb::{
    AccessPackage, AssignmentPolicy, AssignmentRequest, Catalog, RequestType, Schedule, User,
};
use crate::policy::compile::actions::{ADMIN_ASSIGN, EXTEND_ACCESS, REQUEST_ACCESS};
use crate::policy::entities::{Subject, Target, load_subject, policy_uid, slice, user_uid};
use crate::policy::reasons::reasons;
use crate::policy::{ChangeContext, Decision, PackageSet, PolicyEngine};
use crate::shared::clock::Moment;
use crate::store::ReadView;
use crate::store::records::{self, Record};

use super::external;

use read_set::{ReadSet, Recording};

/// The decision on `action` for `subject` through `policy`.
pub fn decide(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    subject: &Subject,
    policy: &AssignmentPolicy,
    action: &str,
    context: ChangeContext,
) -> Result<Decision> {
    let scope = PolicyScope::load(engine, view, policy)?;
    let entities = slice(subject, &[scope.target(policy)], &scope.set).map_err(Error::from)?;
    engine
        .decide(
            &scope.set.policies,
            user_uid(&subject.user.id),
            action,
            policy_uid(&policy.id),
            context,
            &entities,
        )
        .map_err(Error::from)
}

/// What every decision through a policy needs: its package, catalog, and
/// the package's policy set.
pub struct PolicyScope {
    pub package: AccessPackage,
    pub catalog: Catalog,
    pub set: Arc<PackageSet>,
}

impl PolicyScope {
    pub fn load(
        engine: &PolicyEngine,
        view: &(impl ReadView + ?Sized),
        policy: &AssignmentPolicy,
    ) -> Result<Self> {
        let package: AccessPackage = records::require(view, &policy.access_package_id)?;
        let catalog: Catalog = records::require(view, &package.catalog_id)?;
        let mut policies = Vec::new();
        for id in targets(
            view,
            AssignmentPolicy::KIND,
            POLICIES_BY_PACKAGE,
            &package.id,
        )? {
            policies.extend(records::load::<AssignmentPolicy>(view, &id)?);
        }
        let set = engine
            .package_set(&package, &policies.iter().collect::<Vec<_>>())
            .map_err(Error::from)?;
        Ok(Self {
            package,
            catalog,
            set,
        })
    }

    pub fn target<'a>(&'a self, policy: &'a AssignmentPolicy) -> Target<'a> {
        Target {
            policy,
            package: &self.package,
            catalog: &self.catalog,
        }
    }
}

/// A directory user as decisions see them.
pub fn subject_of(view: &(impl ReadView + ?Sized), user_id: &str) -> Result<Subject> {
    let user: User = records::require(view, user_id)?;
    load_subject(view, user)
}

/// A decision about a directory user made from committed state before the
/// write job that acts on it, with every read it made. A job that asks the
/// same question takes it as its own when those reads still give the same
/// answers (then deciding again would read the same records and reach the
/// same decision) and decides afresh otherwise, so no change goes through on
/// a stale decision. This keeps Cedar off the store's single committer
/// (the job still replays the recorded reads).
#[derive(Debug)]
pub struct Foreseen {
    user_id: String,
    policy_id: String,
    action: &'static str,
    context: ChangeContext,
    decision: Decision,
    reads: ReadSet,
}

impl Foreseen {
    /// Decides, from `view`, on directory user `user_id` doing `action`
    /// through policy `policy_id`, in the context `context_for` gives the
    /// policy. None when a record is missing (the job reports that).
    pub fn decide(
        engine: &PolicyEngine,
        view: &dyn ReadView,
        user_id: &str,
        policy_id: &str,
        action: &'static str,
        context_for: impl FnOnce(&AssignmentPolicy) -> ChangeContext,
    ) -> Result<Option<Self>> {
        let recording = Recording::new(view);
        let Some(policy) = records::load::<AssignmentPolicy>(&recording, policy_id)? else {
            return Ok(None);
        };
        let Some(user) = records::load::<User>(&recording, user_id)? else {
            return Ok(None);
        };
        let context = context_for(&policy);
        let subject = load_subject(&recording, user)?;
        let decision = decide(engine, &recording, &subject, &policy, action, context)?;
        Ok(Some(Self {
            user_id: user_id.to_string(),
            policy_id: policy_id.to_string(),
            action,
            context,
            decision,
            reads: recording.finish(),
        }))
    }

    /// The decision, if it answers this question in `view`.
    fn answer(
        self,
        view: &(impl ReadView + ?Sized),
        user: &User,
        policy: &AssignmentPolicy,
        action: &str,
        context: ChangeContext,
    ) -> Result<Option<Decision>> {
        let same_question = self.user_id == user.id
            && self.policy_id == policy.id
            && self.action == action
            && self.context == context;
        Ok((same_question && self.reads.unchanged(view)?).then_some(self.decision))
    }
}

/// The decision on directory user `user` doing `action` through `policy`:
/// `foreseen` when it still holds in `view`, else decided now.
pub fn decide_for_user(
    foreseen: Option<Foreseen>,
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    user: User,
    policy: &AssignmentPolicy,
    action: &str,
    context: ChangeContext,
) -> Result<Decision> {
    if let Some(foreseen) = foreseen
        && let Some(decision) = foreseen.answer(view, &user, policy, action, context)?
    {
        return Ok(decision);
    }
    let subject = load_subject(view, user)?;
    decide(engine, view, &subject, policy, action, context)
}

/// PERMISSION_DENIED unless `subject` may do `action` through `policy`;
/// `what` describes the change for the error message.
pub fn require(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    subject: &Subject,
    policy: &AssignmentPolicy,
    action: &'static str,
    context: ChangeContext,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let decision = decide(engine, view, subject, policy, action, context)?;
    require_eligible(view, &decision, subject, policy, action, context, what)
}

/// PERMISSION_DENIED unless `decision`, on `action` for `subject` through
/// `policy` in `context`, allows it. The refusal names the assignment
/// policy, the deciding Cedar policies and the codes of the reasons
/// ExplainEligibility gives (see [`reasons`]); the message has their texts.
pub fn require_eligible(
    view: &(impl ReadView + ?Sized),
    decision: &Decision,
    subject: &Subject,
    policy: &AssignmentPolicy,
    action: &'static str,
    context: ChangeContext,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if decision.allowed {
        return Ok(());
    }
    let package: AccessPackage = records::require(view, &policy.access_package_id)?;
    let catalog: Catalog = records::require(view, &package.catalog_id)?;
    let target = Target {
        policy,
        package: &package,
        catalog: &catalog,
    };
    let reasons = reasons(subject, &target, action, context);
    let mut message = format!("{}: {}", what(), because(decision));
    if !reasons.is_empty() {
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        message.push_str(&format!(" ({})", texts.join("; ")));
    }
    Err(Error::Ineligible {
        message,
        assignment_policy_id: policy.id.clone(),
        policy_ids: decision.policy_ids.clone(),
        reasons: reasons.iter().map(|r| r.code().to_string()).collect(),
    })
}

/// Why a decision refused, in words.
fn because(decision: &Decision) -> String {
    if decision.policy_ids.is_empty() {
        "no policy permits it".to_string()
    } else {
        format!("forbidden by {}", decision.policy_ids.join(", "))
    }
}

/// PERMISSION_DENIED (with the deciding policy ids) unless allowed.
pub fn require_allowed(decision: &Decision, what: impl FnOnce() -> String) -> Result<()> {
    if decision.allowed {
        return Ok(());
    }
    Err(Error::PermissionDenied {
        message: format!("{}: {}", what(), because(decision)),
        policy_ids: decision.policy_ids.clone(),
    })
}

/// Whether a schedule names its own start or end.
pub fn is_custom(schedule: Option<&Schedule>) -> bool {
    schedule.is_some_and(|s| s.start_time.is_some() || s.end_time.is_some())
}

/// Why a request that waited may not be delivered after all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// The deciding Cedar policies (empty when nothing permitted it, or
    /// when its policy or package is gone).
    pub policy_ids: Vec<String>,
}

/// The Cedar action a request of `kind` was decided on when it was made
/// (None for kinds that never wait).
fn action_of(kind: RequestType) -> Option<&'static str> {
    match kind {
        RequestType::UserAdd => Some(REQUEST_ACCESS),
        RequestType::AdminAdd => Some(ADMIN_ASSIGN),
        RequestType::UserUpdate => Some(EXTEND_ACCESS),
        _ => None,
    }
}

/// Decides a request that waited (for approval, or for its start) again,
/// as it was decided when it was made: the same Cedar action through its
/// policy, now, for access starting at `start`, against the directory,
/// packages and policies as they are. Every rule that forbids the change
/// is thus checked again at delivery: the invariants (a blocked or deleted
/// target, a disabled catalog), separation of duties (an incompatible
/// package or group gained while the request waited), the policy's end
/// date, and eligibility (the target must still be in the policy's scope).
/// None when it may go on.
pub fn redecide(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    request: &AssignmentRequest,
    now: Moment,
    start: Moment,
) -> Result<Option<Refusal>> {
    let Some(action) = action_of(request.r#type()) else {
        return Ok(None);
    };
    let gone = |kind: &str, id: &str| {
        Ok(Some(Refusal {
            reason: format!("{kind} {id:?} no longer exists"),
            policy_ids: Vec::new(),
        }))
    };
    let Some(policy) = records::load::<AssignmentPolicy>(view, &request.assignment_policy_id)?
    else {
        return gone(AssignmentPolicy::KIND, &request.assignment_policy_id);
    };
    if !records::exists::<AccessPackage>(view, &policy.access_package_id)? {
        return gone(AccessPackage::KIND, &policy.access_package_id);
    }
    let subject = match (
        records::load::<User>(view, &request.target_id)?,
        &request.external_requestor,
    ) {
        (Some(user), _) => load_subject(view, user)?,
        (None, Some(matched)) => external::subject_of(view, &request.target_id, matched)?,
        (None, None) => return gone(User::KIND, &request.target_id),
    };
    let by_user = matches!(
        request.r#type(),
        RequestType::UserAdd | RequestType::UserUpdate
    );
    let context = ChangeContext {
        now: now.seconds(),
        start: start.seconds(),
        custom_schedule: by_user && is_custom(request.schedule.as_ref()),
    };
    let decision = decide(engine, view, &subject, &policy, action, context)?;
    Ok((!decision.allowed).then(|| Refusal {
        reason: format!("refused at delivery: {}", because(&decision)),
        policy_ids: decision.policy_ids,
    }))
}
