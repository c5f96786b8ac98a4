//! The questions the decision API answers, over the in-memory state. Every
//! question about who holds what now goes through one rule
//! ([`State::effective_assignments`]): an assignment gives access from its
//! start (inclusive) to its end (exclusive), compared at full precision, so
//! one past its end gives nothing even before background work has recorded
//! its expiry; and a blocked or deleted user holds nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::pb::{
    AccessPackage, Assignment, AssignmentPolicy, ExpirationType, GrantSource, PolicyEligibility,
    PolicyRequirements, RequestablePackage,
};
use crate::policy::compile::actions::REQUEST_ACCESS;
use crate::policy::entities::{Subject, Target, policy_uid, slice, user_uid};
use crate::policy::reasons::reasons;
use crate::policy::{ChangeContext, Decision, PolicyEngine};
use crate::shared::clock::Moment;
use crate::store::records::Record;

use super::state::State;

/// Whether an assignment gives access at `now` (start inclusive, end
/// exclusive).
fn in_effect(assignment: &Assignment, now: Moment) -> bool {
    let started = assignment
        .start_time
        .is_none_or(|t| Moment::from_timestamp(t) <= now);
    let not_ended = assignment
        .end_time
        .is_none_or(|t| now < Moment::from_timestamp(t));
    started && not_ended
}

impl State {
    /// Whether `assignment` gives access at `now`: it is in effect, and its
    /// holder is not blocked or deleted (their assignments stay, and give
    /// access again once the user is unblocked).
    fn gives_access(&self, assignment: &Assignment, now: Moment) -> bool {
        in_effect(assignment, now) && self.may_hold_access(&assignment.target_id)
    }

    /// Whether the assignment with id `id` exists and gives access at `now`.
    fn id_gives_access(&self, id: &str, now: Moment) -> bool {
        self.assignments
            .get(id)
            .is_some_and(|a| self.gives_access(a, now))
    }

    /// The user's assignments that give access at `now`, by id.
    pub fn effective_assignments<'a>(
        &'a self,
        user: &str,
        now: Moment,
    ) -> impl Iterator<Item = &'a Assignment> + 'a {
        self.assignments_by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.assignments.get(id))
            .filter(move |a| self.gives_access(a, now))
    }

    /// The assignments through which `user` holds (`resource`, `role`) now,
    /// in id order. It looks from whichever side is smaller: the packages
    /// on the resource (then who holds each), or the user's assignments
    /// (then what each package grants).
    pub fn check(&self, user: &str, resource: &str, role: &str, now: Moment) -> Vec<String> {
        let grants = |package: &str| {
            self.packages.get(package).is_some_and(|p| {
                p.resource_roles
                    .iter()
                    .any(|r| r.resource_id == resource && r.role_id == role)
            })
        };
        let on_resource = self.packages_by_resource.get(resource);
        let held = self.assignments_by_user.get(user).map_or(0, BTreeSet::len);
        if on_resource.is_some_and(|packages| packages.len() < held) {
            let mut ids: Vec<String> = on_resource
                .into_iter()
                .flatten()
                .filter(|package| grants(package))
                .filter_map(|package| self.holders_by_package.get(package)?.get(user))
                .flatten()
                .filter(|id| self.id_gives_access(id, now))
                .cloned()
                .collect();
            ids.sort_unstable();
            return ids;
        }
        self.effective_assignments(user, now)
            .filter(|a| grants(&a.access_package_id))
            .map(|a| a.id.clone())
            .collect()
    }

    /// Every grant of `user` now, with the assignments behind it.
    pub fn effective_grants(
        &self,
        user: &str,
        now: Moment,
    ) -> BTreeMap<(String, String), Vec<GrantSource>> {
        let mut grants: BTreeMap<(String, String), Vec<GrantSource>> = BTreeMap::new();
        for assignment in self.effective_assignments(user, now) {
            let Some(package) = self.packages.get(&assignment.access_package_id) else {
                continue;
            };
            for role in &package.resource_roles {
                grants
                    .entry((role.resource_id.clone(), role.role_id.clone()))
                    .or_default()
                    .push(GrantSource {
                        assignment_id: assignment.id.clone(),
                        access_package_id: assignment.access_package_id.clone(),
                        assignment_policy_id: assignment.assignment_policy_id.clone(),
                        start_time: assignment.start_time,
                        end_time: assignment.end_time,
                    });
            }
        }
        grants
    }

    /// Who holds `package` now: user -> assignment ids.
    pub fn package_holders(&self, package: &str, now: Moment) -> BTreeMap<String, Vec<String>> {
        let mut holders = BTreeMap::new();
        for (user, ids) in self.holders_by_package.get(package).into_iter().flatten() {
            let effective: Vec<String> = ids
                .iter()
                .filter(|id| self.id_gives_access(id, now))
                .cloned()
                .collect();
            if !effective.is_empty() {
                holders.insert(user.clone(), effective);
            }
        }
        holders
    }

    /// Who holds a role (any, or `role`) of `resource` now.
    pub fn resource_holders(
        &self,
        resource: &str,
        role: Option<&str>,
        now: Moment,
    ) -> BTreeMap<String, Vec<String>> {
        let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for package in self
            .packages_by_resource
            .get(resource)
            .into_iter()
            .flatten()
        {
            let grants_it = self.packages.get(package).is_some_and(|p| {
                p.resource_roles
                    .iter()
                    .any(|r| r.resource_id == resource && role.is_none_or(|role| r.role_id == role))
            });
            if !grants_it {
                continue;
            }
            for (user, ids) in self.package_holders(package, now) {
                holders.entry(user).or_default().extend(ids);
            }
        }
        holders
            .into_iter()
            .map(|(u, ids)| (u, ids.into_iter().collect()))
            .collect()
    }

    /// The policies of `package`, in id order.
    fn package_policies<'a>(&'a self, package: &str) -> Vec<&'a AssignmentPolicy> {
        self.policies_by_package
            .get(package)
            .into_iter()
            .flatten()
            .filter_map(|id| self.policies.get(id))
            .collect()
    }

    /// The Cedar decisions on `subject` requesting through each of
    /// `policies` (all of `package`) now: one entity slice and one policy
    /// set serve them all.
    fn may_request(
        &self,
        engine: &PolicyEngine,
        subject: &Subject,
        package: &AccessPackage,
        policies: &[&AssignmentPolicy],
        now: i64,
    ) -> Result<Vec<Decision>> {
        if policies.is_empty() {
            return Ok(Vec::new());
        }
        let catalog = self
            .catalogs
            .get(&package.catalog_id)
            .ok_or_else(|| Error::not_found(AccessPackage::KIND, &package.id))?;
        let set = engine
            .package_set(package, &self.package_policies(&package.id))
            .map_err(Error::from)?;
        let targets: Vec<Target<'_>> = policies
            .iter()
            .map(|policy| Target {
                policy,
                package,
                catalog,
            })
            .collect();
        let entities = slice(subject, &targets, &set).map_err(Error::from)?;
        let context = request_context(now);
        let principal = user_uid(&subject.user.id);
        policies
            .iter()
            .map(|policy| {
                engine
                    .decide(
                        &set.policies,
                        principal.clone(),
                        REQUEST_ACCESS,
                        policy_uid(&policy.id),
                        context,
                        &entities,
                    )
                    .map_err(Error::from)
            })
            .collect()
    }

    /// The packages `subject` may request now (or, when `only` is not empty,
    /// those of `only` they may request, hidden ones included).
    pub fn requestable(
        &self,
        engine: &PolicyEngine,
        subject: &Subject,
        only: &[String],
        now: i64,
    ) -> Result<Vec<RequestablePackage>> {
        let wanted: BTreeSet<&String> = only.iter().collect();
        // Candidate policies by package, each package decided in one go.
        let mut candidates: BTreeMap<&str, (&AccessPackage, Vec<&AssignmentPolicy>)> =
            BTreeMap::new();
        for policy_id in self.scopes.candidates(subject) {
            let Some(policy) = self.policies.get(&policy_id) else {
                continue;
            };
            let Some(package) = self.packages.get(&policy.access_package_id) else {
                continue;
            };
            let listed = if wanted.is_empty() {
                !package.hidden
            } else {
                wanted.contains(&package.id)
            };
            let self_add = policy.requestor_settings.is_some_and(|s| s.enable_self_add);
            if listed && self_add {
                candidates
                    .entry(&package.id)
                    .or_insert_with(|| (package, Vec::new()))
                    .1
                    .push(policy);
            }
        }
        let mut packages = Vec::new();
        for (package, policies) in candidates.into_values() {
            let decisions = self.may_request(engine, subject, package, &policies, now)?;
            let allowed: Vec<PolicyRequirements> = policies
                .iter()
                .zip(decisions)
                .filter(|(_, decision)| decision.allowed)
                .map(|(policy, _)| requirements(policy))
                .collect();
            if !allowed.is_empty() {
                packages.push(RequestablePackage {
                    access_package_id: package.id.clone(),
                    catalog_id: package.catalog_id.clone(),
                    display_name: package.display_name.clone(),
                    description: package.description.clone(),
                    hidden: package.hidden,
                    policies: allowed,
                });
            }
        }
        Ok(packages)
    }

    /// Why `subject` may or may not request `package`, policy by policy.
    pub fn explain(
        &self,
        engine: &PolicyEngine,
        subject: &Subject,
        package: &AccessPackage,
        now: i64,
    ) -> Result<Vec<PolicyEligibility>> {
        let policies = self.package_policies(&package.id);
        let decisions = self.may_request(engine, subject, package, &policies, now)?;
        let catalog = self
            .catalogs
            .get(&package.catalog_id)
            .ok_or_else(|| Error::not_found(AccessPackage::KIND, &package.id))?;
        Ok(policies
            .into_iter()
            .zip(decisions)
            .map(|(policy, decision)| PolicyEligibility {
                assignment_policy_id: policy.id.clone(),
                allowed: decision.allowed,
                reasons: if decision.allowed {
                    Vec::new()
                } else {
                    let target = Target {
                        policy,
                        package,
                        catalog,
                    };
                    reasons(subject, &target, REQUEST_ACCESS, request_context(now))
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                },
                policy_ids: decision.policy_ids,
            })
            .collect())
    }
}

/// The context of "may the user request now?": a request starting now,
/// on the policy's schedule.
fn request_context(now: i64) -> ChangeContext {
    ChangeContext {
        now,
        start: now,
        custom_schedule: false,
    }
}

/// What a request through `policy` needs.
fn requirements(policy: &AssignmentPolicy) -> PolicyRequirements {
    let settings = policy.requestor_settings.unwrap_or_default();
    let approval = policy.approval_settings.clone().unwrap_or_default();
    let expiration = policy.expiration.unwrap_or_default();
    PolicyRequirements {
        assignment_policy_id: policy.id.clone(),
        display_name: policy.display_name.clone(),
        approval_stages: if approval.approval_required_for_add {
            approval.stages.len() as i32
        } else {
            0
        },
        justification_required: settings.justification_required,
        questions: policy.questions.clone(),
        custom_schedule_allowed: settings.allow_custom_schedule,
        max_duration: (expiration.r#type() == ExpirationType::AfterDuration)
            .then_some(expiration.duration)
            .flatten(),
        end_time: (expiration.r#type() == ExpirationType::OnDate)
            .then_some(expiration.end_time)
            .flatten(),
    }
}
