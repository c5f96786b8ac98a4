//! Assignment policies as written against what they compile to: whether a
//! policy compiles to valid Cedar (checked before it is stored), and the
//! Cedar it compiles to (what GetCompiledPolicy shows).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pb::{AssignmentPolicy, CompiledPolicy};

use super::PolicyEngine;
use super::compile::{Rule, compile_policy, entity, render};

/// Compiles a policy and validates the result; INVALID_ARGUMENT with the
/// Cedar message when it does not validate. Runs after the policy's own
/// checks, which bound the extra condition's nesting and depth.
pub fn compiles(
    engine: Arc<PolicyEngine>,
) -> impl FnOnce(&AssignmentPolicy) -> Result<()> + Send + 'static {
    move |policy| {
        // The extra condition must be one Cedar expression, nothing more.
        if !policy.extra_condition.is_empty()
            && let Err(message) = engine.check_condition(&policy.extra_condition)
        {
            return Err(Error::invalid(
                "assignment_policy.extra_condition",
                format!("is not a Cedar expression: {message}"),
            ));
        }
        let mut rules = compile_policy(policy);
        rules.extend(condition_rule(policy));
        engine.check(&rules).map_err(|message| {
            let field = if policy.extra_condition.is_empty() {
                "assignment_policy"
            } else {
                "assignment_policy.extra_condition"
            };
            Error::invalid(field, format!("does not compile to valid Cedar: {message}"))
        })
    }
}

/// The extra condition on its own, for validation only: a scope with no
/// eligibility rule (NOT_SPECIFIED) would otherwise leave it unchecked.
fn condition_rule(policy: &AssignmentPolicy) -> Option<Rule> {
    if policy.extra_condition.is_empty() {
        return None;
    }
    let id = format!("{}/extra-condition", policy.id);
    let text = format!(
        "@id(\"{id}\")\npermit (principal, action, resource == {})\nwhen {{ ({}) }};",
        entity("AssignmentPolicy", &policy.id),
        policy.extra_condition
    );
    Some(Rule { id, text })
}

/// The Cedar `policy` compiles to, with the ids of its policies.
pub fn compiled(policy: AssignmentPolicy) -> CompiledPolicy {
    let rules = compile_policy(&policy);
    CompiledPolicy {
        assignment_policy_id: policy.id,
        cedar: render(&rules),
        policy_ids: rules.into_iter().map(|r| r.id).collect(),
    }
}
