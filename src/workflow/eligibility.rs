//! Asks Cedar whether a change to a user's access may happen through a
//! policy.

use crate::domain::assignment_policy::POLICIES_BY_PACKAGE;
use crate::domain::directory::targets;
use crate::error::{Error, Result};
use crate::pb::{AccessPackage, AssignmentPolicy, Catalog, User};
use crate::policy::entities::{Subject, Target, load_subject, policy_uid, slice, user_uid};
use crate::policy::{ChangeContext, Decision, PolicyEngine};
use crate::store::ReadView;
use crate::store::records::{self, Record};

/// The decision on `action` for `subject` through `policy`.
pub fn decide(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    subject: &Subject,
    policy: &AssignmentPolicy,
    action: &str,
    context: ChangeContext,
) -> Result<Decision> {
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
        .package_set(&package, &policies)
        .map_err(Error::internal)?;
    let target = Target {
        policy,
        package: &package,
        catalog: &catalog,
    };
    let entities = slice(subject, &target).map_err(Error::internal)?;
    engine
        .decide(
            &set,
            user_uid(&subject.user.id),
            action,
            policy_uid(&policy.id),
            context,
            &entities,
        )
        .map_err(Error::internal)
}

/// PERMISSION_DENIED unless user `user_id` may do `action` through
/// `policy`; `what` describes the change for the error message.
pub fn require(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    user_id: &str,
    policy: &AssignmentPolicy,
    action: &str,
    context: ChangeContext,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let user: User = records::require(view, user_id)?;
    let subject = load_subject(view, user)?;
    let decision = decide(engine, view, &subject, policy, action, context)?;
    require_allowed(&decision, what)
}

/// PERMISSION_DENIED (with the deciding policy ids) unless allowed.
pub fn require_allowed(decision: &Decision, what: impl FnOnce() -> String) -> Result<()> {
    if decision.allowed {
        return Ok(());
    }
    let because = if decision.policy_ids.is_empty() {
        "no policy permits it".to_string()
    } else {
        format!("forbidden by {}", decision.policy_ids.join(", "))
    };
    Err(Error::PermissionDenied {
        message: format!("{}: {because}", what()),
        policy_ids: decision.policy_ids.clone(),
    })
}
