//! Why a change to someone's access through an assignment policy is
//! refused, as reasons a person can read and codes a program can act on.
//! ExplainEligibility lists the texts per policy; an eligibility refusal
//! (PERMISSION_DENIED) carries the codes in its google.rpc.ErrorInfo. They
//! mirror what the compiled policies and the shipped invariants check;
//! Cedar's decision, with the ids of the policies that made it, stays the
//! authority.

use std::fmt;

use crate::domain::scope::{Requestor, ScopeKind};
use crate::pb::{
    AccessPackage, AssignmentPolicy, ConnectedOrganizationState, ExpirationType, UserKind,
    UserState,
};

use super::ChangeContext;
use super::compile::actions::{ADMIN_ASSIGN, EXTEND_ACCESS, REMOVE_ACCESS, REQUEST_ACCESS};
use super::entities::{Subject, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    UserNotActive {
        user: String,
        state: UserState,
    },
    CatalogDisabled {
        catalog: String,
    },
    CatalogNotExternallyVisible {
        catalog: String,
    },
    HoldsIncompatiblePackage {
        package: String,
    },
    InIncompatibleGroup {
        group: String,
    },
    /// The policy does not let users make this change themselves.
    SelfServiceDisabled {
        policy: String,
        action: &'static str,
    },
    /// Nobody requests through a NOT_SPECIFIED policy.
    AdministratorsOnly,
    /// Outside the policy's scope; the text says how.
    NotInScope(String),
    CustomScheduleNotAllowed {
        policy: String,
    },
    EndDatePassed {
        policy: String,
    },
    ConditionNotMet {
        condition: String,
    },
}

impl Reason {
    /// The stable, machine-readable name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UserNotActive { .. } => "USER_NOT_ACTIVE",
            Self::CatalogDisabled { .. } => "CATALOG_DISABLED",
            Self::CatalogNotExternallyVisible { .. } => "CATALOG_NOT_EXTERNALLY_VISIBLE",
            Self::HoldsIncompatiblePackage { .. } => "HOLDS_INCOMPATIBLE_PACKAGE",
            Self::InIncompatibleGroup { .. } => "IN_INCOMPATIBLE_GROUP",
            Self::SelfServiceDisabled { .. } => "SELF_SERVICE_DISABLED",
            Self::AdministratorsOnly => "ADMINISTRATORS_ONLY",
            Self::NotInScope(_) => "NOT_IN_SCOPE",
            Self::CustomScheduleNotAllowed { .. } => "CUSTOM_SCHEDULE_NOT_ALLOWED",
            Self::EndDatePassed { .. } => "END_DATE_PASSED",
            Self::ConditionNotMet { .. } => "CONDITION_NOT_MET",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserNotActive { user, state } => {
                write!(f, "user {user} is {}", state.as_str_name())
            }
            Self::CatalogDisabled { catalog } => write!(f, "catalog {catalog} is disabled"),
            Self::CatalogNotExternallyVisible { catalog } => {
                write!(f, "catalog {catalog} is not externally visible")
            }
            Self::HoldsIncompatiblePackage { package } => {
                write!(f, "holds incompatible package {package}")
            }
            Self::InIncompatibleGroup { group } => write!(f, "is in incompatible group {group}"),
            Self::SelfServiceDisabled { policy, action } => {
                let what = match *action {
                    EXTEND_ACCESS => "extend their own assignment",
                    REMOVE_ACCESS => "remove their own assignment",
                    _ => "request for themselves",
                };
                write!(f, "policy {policy} does not let users {what}")
            }
            Self::AdministratorsOnly => write!(f, "only administrators assign this policy"),
            Self::NotInScope(how) => f.write_str(how),
            Self::CustomScheduleNotAllowed { policy } => {
                write!(
                    f,
                    "policy {policy} does not let requestors choose their schedule"
                )
            }
            Self::EndDatePassed { policy } => {
                write!(
                    f,
                    "access through policy {policy} would start after its end date"
                )
            }
            Self::ConditionNotMet { condition } => {
                write!(f, "does not meet the condition {condition}")
            }
        }
    }
}

/// The reasons `subject` may not do `action` (one of the access-change
/// actions) through `target` in `context`; empty when none is known.
pub fn reasons(
    subject: &Subject,
    target: &Target<'_>,
    action: &'static str,
    context: ChangeContext,
) -> Vec<Reason> {
    let policy = target.policy;
    let by_user = matches!(action, REQUEST_ACCESS | EXTEND_ACCESS);
    let changes_access = by_user || action == ADMIN_ASSIGN;
    let mut reasons = Vec::new();
    if changes_access {
        reasons.extend(user_not_active(subject));
    }
    if by_user {
        reasons.extend(catalog_closed(target));
    }
    if matches!(action, REQUEST_ACCESS | ADMIN_ASSIGN) {
        reasons.extend(incompatibilities(subject, target.package));
    }
    reasons.extend(self_service_disabled(policy, action));
    if changes_access {
        reasons.extend(scope_refusal(subject, target, by_user));
    }
    if by_user {
        reasons.extend(custom_schedule_refused(policy, context));
    }
    if changes_access {
        reasons.extend(end_date_passed(policy, context));
        // The extra condition is named only when nothing else explains the
        // refusal.
        if reasons.is_empty() && !policy.extra_condition.is_empty() {
            reasons.push(Reason::ConditionNotMet {
                condition: policy.extra_condition.clone(),
            });
        }
    }
    reasons
}

/// Only active users gain or keep access.
fn user_not_active(subject: &Subject) -> Option<Reason> {
    let user = &subject.user;
    (user.state() != UserState::Active).then(|| Reason::UserNotActive {
        user: user.id.clone(),
        state: user.state(),
    })
}

/// A user asks through a catalog that is enabled, and visible to them if
/// the policy is for external users.
fn catalog_closed(target: &Target<'_>) -> Vec<Reason> {
    let catalog = target.catalog;
    let mut reasons = Vec::new();
    if catalog.enabled == Some(false) {
        reasons.push(Reason::CatalogDisabled {
            catalog: catalog.id.clone(),
        });
    }
    if ScopeKind::of(target.policy).is_external() && catalog.externally_visible != Some(true) {
        reasons.push(Reason::CatalogNotExternallyVisible {
            catalog: catalog.id.clone(),
        });
    }
    reasons
}

/// The packages held and groups joined that `package` is incompatible with.
fn incompatibilities(subject: &Subject, package: &AccessPackage) -> Vec<Reason> {
    let packages = package
        .incompatible_package_ids
        .iter()
        .filter(|p| subject.held_packages.contains(p))
        .map(|held| Reason::HoldsIncompatiblePackage {
            package: held.clone(),
        });
    let groups = package
        .incompatible_group_ids
        .iter()
        .filter(|g| subject.group_parents.contains_key(*g))
        .map(|group| Reason::InIncompatibleGroup {
            group: group.clone(),
        });
    packages.chain(groups).collect()
}

/// Whether the policy lets users do `action` for themselves.
fn self_service_disabled(policy: &AssignmentPolicy, action: &'static str) -> Option<Reason> {
    let settings = policy.requestor_settings.unwrap_or_default();
    let self_service = match action {
        REQUEST_ACCESS => settings.enable_self_add,
        EXTEND_ACCESS => settings.enable_self_update,
        REMOVE_ACCESS => settings.enable_self_remove,
        _ => true,
    };
    (!self_service).then(|| Reason::SelfServiceDisabled {
        policy: policy.id.clone(),
        action,
    })
}

/// Whether the policy's requestor scope leaves `subject` out.
fn scope_refusal(subject: &Subject, target: &Target<'_>, by_user: bool) -> Option<Reason> {
    match ScopeKind::of(target.policy) {
        ScopeKind::AdministratorsOnly if by_user => Some(Reason::AdministratorsOnly),
        _ => outside_scope(subject, target).map(Reason::NotInScope),
    }
}

fn custom_schedule_refused(policy: &AssignmentPolicy, context: ChangeContext) -> Option<Reason> {
    let settings = policy.requestor_settings.unwrap_or_default();
    (context.custom_schedule && !settings.allow_custom_schedule).then(|| {
        Reason::CustomScheduleNotAllowed {
            policy: policy.id.clone(),
        }
    })
}

/// Access through a policy that expires on a date cannot start after it.
fn end_date_passed(policy: &AssignmentPolicy, context: ChangeContext) -> Option<Reason> {
    let expiration = policy.expiration.unwrap_or_default();
    let passed = expiration.r#type() == ExpirationType::OnDate
        && expiration
            .end_time
            .is_some_and(|end| context.start >= end.seconds);
    passed.then(|| Reason::EndDatePassed {
        policy: policy.id.clone(),
    })
}

/// How `subject` falls outside the policy's scope, if they do.
fn outside_scope(subject: &Subject, target: &Target<'_>) -> Option<String> {
    let in_group = |group: &str| subject.group_parents.contains_key(group);
    ScopeKind::of(target.policy).excludes(&Requestor {
        user_id: &subject.user.id,
        guest: subject.user.kind() == UserKind::Guest,
        in_group: &in_group,
        organization: subject.organization.as_ref().map(|o| {
            (
                o.id.as_str(),
                o.state() == ConnectedOrganizationState::Configured,
            )
        }),
    })
}
