//! Asks Cedar whether a change to a user's access may happen through a
//! policy.

use std::sync::Arc;

use cedar_policy::PolicySet;

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
    let scope = PolicyScope::load(engine, view, policy)?;
    let entities = slice(subject, &[scope.target(policy)]).map_err(Error::internal)?;
    engine
        .decide(
            &scope.set,
            user_uid(&subject.user.id),
            action,
            policy_uid(&policy.id),
            context,
            &entities,
        )
        .map_err(Error::internal)
}

/// What every decision through a policy needs: its package, catalog, and
/// the package's policy set.
pub struct PolicyScope {
    pub package: AccessPackage,
    pub catalog: Catalog,
    pub set: Arc<PolicySet>,
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
            .map_err(Error::internal)?;
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

/// PERMISSION_DENIED unless `subject` may do `action` through `policy`;
/// `what` describes the change for the error message.
pub fn require(
    engine: &PolicyEngine,
    view: &(impl ReadView + ?Sized),
    subject: &Subject,
    policy: &AssignmentPolicy,
    action: &str,
    context: ChangeContext,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let decision = decide(engine, view, subject, policy, action, context)?;
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
