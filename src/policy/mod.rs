//! Cedar decisions. The engine holds the schema and the operator's static
//! policies (invariants), validates compiled assignment policies against
//! them, and evaluates decisions against a policy set per access package:
//! the invariants, the package's separation-of-duties rules and its
//! assignment policies. Cedar evaluates every policy in a set, so a
//! decision never sees other packages' policies.

pub mod admin;
pub mod compile;
pub mod entities;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow, bail};
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::pb::{AccessPackage, AssignmentPolicy};
use crate::store::records::Record;
use compile::Rule;

const BUILTIN_SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const BUILTIN_POLICIES: &[(&str, &str)] = &[
    (
        "invariants.cedar",
        include_str!("../../policies/invariants.cedar"),
    ),
    ("admin.cedar", include_str!("../../policies/admin.cedar")),
];

/// Files whose name starts with this hold administration policies; the
/// others hold invariants of access changes.
const ADMIN_FILE_PREFIX: &str = "admin";

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided: the permits that allowed, or the forbids
    /// that denied (empty when nothing permitted).
    pub policy_ids: Vec<String>,
    /// Policies skipped because they failed to evaluate (e.g. a condition
    /// reading an attribute the user lacks).
    pub errors: Vec<String>,
}

/// Values every access-change decision takes from outside the entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeContext {
    pub now: i64,
    pub start: i64,
    pub custom_schedule: bool,
}

/// The context of a decision, by kind of action.
#[derive(Debug, Clone, Copy)]
pub enum Facts {
    /// RequestAccess, ExtendAccess, RemoveAccess, AdminAssign.
    Change(ChangeContext),
    /// Approve.
    Approval { now: i64 },
    /// An administrative action; `on_behalf` only for
    /// CreateAssignmentRequest.
    Admin { on_behalf: Option<bool> },
}

impl From<ChangeContext> for Facts {
    fn from(context: ChangeContext) -> Self {
        Self::Change(context)
    }
}

impl Facts {
    fn context(self) -> anyhow::Result<Context> {
        let pairs = match self {
            Facts::Change(c) => vec![
                ("now", RestrictedExpression::new_long(c.now)),
                ("start", RestrictedExpression::new_long(c.start)),
                (
                    "customSchedule",
                    RestrictedExpression::new_bool(c.custom_schedule),
                ),
            ],
            Facts::Approval { now } => vec![("now", RestrictedExpression::new_long(now))],
            Facts::Admin { on_behalf } => on_behalf
                .map(|b| ("onBehalf", RestrictedExpression::new_bool(b)))
                .into_iter()
                .collect(),
        };
        Ok(Context::from_pairs(
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)),
        )?)
    }
}

struct Shard {
    /// Revisions of the package and its policies the set was built from.
    built_from: Vec<(String, u64)>,
    set: Arc<PolicySet>,
}

pub struct PolicyEngine {
    schema: Schema,
    /// Each action with the groups it is in, by action uid: `action in
    /// <group>` needs them among a decision's entities.
    actions: HashMap<String, Vec<Entity>>,
    validator: Validator,
    invariants: Vec<Policy>,
    admin: PolicySet,
    /// Users the administration policies name: a decision about any other
    /// user can tell them apart only by whether they are the caller.
    admin_named_users: HashSet<String>,
    shards: Mutex<HashMap<String, Shard>>,
}

impl PolicyEngine {
    /// The schema and invariants shipped in `policies/`.
    pub fn builtin() -> anyhow::Result<Self> {
        Self::from_sources(
            BUILTIN_SCHEMA,
            BUILTIN_POLICIES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string())),
        )
    }

    /// `schema.cedarschema` and every `*.cedar` file of an operator's
    /// directory.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let schema_path = dir.join("schema.cedarschema");
        let schema = std::fs::read_to_string(&schema_path)
            .with_context(|| format!("reading {}", schema_path.display()))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cedar") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::from_sources(&schema, files)
    }

    pub fn from_sources(
        schema_text: &str,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_text)
            .map_err(|e| anyhow!("schema.cedarschema: {}", cedar_message(&e)))?;
        let mut invariants = Vec::new();
        let mut admin = Vec::new();
        for (name, text) in files {
            let is_admin = Path::new(&name)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(ADMIN_FILE_PREFIX));
            let parsed =
                PolicySet::from_str(&text).map_err(|e| anyhow!("{name}: {}", cedar_message(&e)))?;
            if parsed.templates().next().is_some() {
                bail!("{name}: templates are not supported");
            }
            for policy in parsed.policies() {
                let id = policy.annotation("id").ok_or_else(|| {
                    anyhow!("{name}: every policy needs an @id(\"...\") annotation")
                })?;
                let policy = policy.new_id(PolicyId::new(id));
                if is_admin {
                    admin.push(policy);
                } else {
                    invariants.push(policy);
                }
            }
        }
        let validator = Validator::new(schema.clone());
        let admin = PolicySet::from_policies(admin).map_err(|e| anyhow!("{e}"))?;
        validate(&validator, &admin).map_err(|e| anyhow!("administration policies: {e}"))?;
        let invariant_set =
            PolicySet::from_policies(invariants.iter().cloned()).map_err(|e| anyhow!("{e}"))?;
        validate(&validator, &invariant_set).map_err(|e| anyhow!("invariants: {e}"))?;
        let all_actions = schema
            .action_entities()
            .map_err(|e| anyhow!("schema actions: {e}"))?;
        let actions = all_actions
            .iter()
            .map(|action| {
                let uid = action.uid();
                let groups = all_actions
                    .ancestors(&uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|group| all_actions.get(group).cloned());
                let with_groups = std::iter::once(action.clone()).chain(groups).collect();
                (uid.to_string(), with_groups)
            })
            .collect();
        let user_type = compile::entity_uid("User", "").type_name().clone();
        let admin_named_users = admin
            .policies()
            .flat_map(Policy::entity_literals)
            .filter(|uid| *uid.type_name() == user_type)
            .map(|uid| uid.id().unescaped().to_string())
            .collect();
        Ok(Self {
            validator,
            actions,
            schema,
            invariants,
            admin,
            admin_named_users,
            shards: Mutex::new(HashMap::new()),
        })
    }

    /// Parses `rules`, validates them against the schema and sets them
    /// beside the invariants as decisions will (so an id clash is caught
    /// too); the error is Cedar's message.
    pub fn check(&self, rules: &[Rule]) -> Result<(), String> {
        self.policy_set(rules).map(|_| ())
    }

    /// `rules` with the invariants. Only the rules are validated here:
    /// validation looks at one policy at a time, and the invariants passed
    /// when the engine was built (re-validating them doubled the cost of the
    /// first decision on every package).
    fn policy_set(&self, rules: &[Rule]) -> Result<PolicySet, String> {
        let mut set = PolicySet::new();
        for rule in rules {
            let policy = Policy::parse(Some(PolicyId::new(&rule.id)), &rule.text)
                .map_err(|e| format!("{}: {}", rule.id, cedar_message(&e)))?;
            set.add(policy).map_err(|e| e.to_string())?;
        }
        validate(&self.validator, &set)?;
        for policy in &self.invariants {
            set.add(policy.clone()).map_err(|e| e.to_string())?;
        }
        Ok(set)
    }

    /// The policy set for decisions on `package`, whose assignment policies
    /// are `policies`; rebuilt only when one of them changed.
    pub fn package_set(
        &self,
        package: &AccessPackage,
        policies: &[&AssignmentPolicy],
    ) -> anyhow::Result<Arc<PolicySet>> {
        let revision =
            |info: &Option<crate::pb::RecordInfo>| info.as_ref().map_or(0, |i| i.revision);
        let mut built_from = vec![(package.id(), revision(&package.info))];
        built_from.extend(policies.iter().map(|p| (p.id(), revision(&p.info))));
        let mut shards = self.shards.lock().expect("policy shards lock poisoned");
        if let Some(shard) = shards.get(&package.id)
            && shard.built_from == built_from
        {
            return Ok(shard.set.clone());
        }
        let mut rules = compile::compile_package(package);
        for policy in policies {
            rules.extend(compile::compile_policy(policy));
        }
        let set = Arc::new(
            self.policy_set(&rules)
                .map_err(|e| anyhow!("package {}: {e}", package.id))?,
        );
        shards.insert(
            package.id.clone(),
            Shard {
                built_from,
                set: set.clone(),
            },
        );
        Ok(set)
    }

    /// The entities of a decision on `action` that tests action groups:
    /// `entities`, the action and the groups it is in.
    pub fn with_action(&self, entities: Vec<Entity>, action: &str) -> anyhow::Result<Entities> {
        let groups = self
            .actions
            .get(&compile::entity("Action", action))
            .into_iter()
            .flatten()
            .cloned();
        Ok(Entities::from_entities(
            entities.into_iter().chain(groups),
            None,
        )?)
    }

    /// The administration policy set.
    pub fn admin_set(&self) -> &PolicySet {
        &self.admin
    }

    /// Whether an administration policy names user `id`.
    pub fn admin_names_user(&self, id: &str) -> bool {
        self.admin_named_users.contains(id)
    }

    pub fn decide(
        &self,
        set: &PolicySet,
        principal: EntityUid,
        action: &str,
        resource: EntityUid,
        facts: impl Into<Facts>,
        entities: &Entities,
    ) -> anyhow::Result<Decision> {
        let action = compile::entity_uid("Action", action);
        let context = facts.into().context()?;
        let request = Request::new(principal, action, resource, context, Some(&self.schema))?;
        let response = Authorizer::new().is_authorized(&request, set, entities);
        let diagnostics = response.diagnostics();
        Ok(Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policy_ids: diagnostics.reason().map(ToString::to_string).collect(),
            errors: diagnostics.errors().map(ToString::to_string).collect(),
        })
    }
}

/// Strict validation against the schema; the error lists every problem.
fn validate(validator: &Validator, set: &PolicySet) -> Result<(), String> {
    let result = validator.validate(set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let messages: Vec<String> = result
        .validation_errors()
        .map(|e| cedar_message(e))
        .collect();
    Err(messages.join("; "))
}

/// A Cedar error with its causes, on one line.
fn cedar_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policies_validate() {
        PolicyEngine::builtin().expect("policies/ must validate");
    }

    #[test]
    fn an_invalid_operator_policy_stops_loading_with_the_validator_message() {
        let bad = "@id(\"x\")\npermit(principal, action, resource) when { principal.nope };";
        let error = PolicyEngine::from_sources(
            BUILTIN_SCHEMA,
            [("bad.cedar".to_string(), bad.to_string())],
        )
        .err()
        .expect("must fail")
        .to_string();
        assert!(error.contains("nope"), "{error}");
        let unnamed = "permit(principal, action, resource);";
        let error = PolicyEngine::from_sources(
            BUILTIN_SCHEMA,
            [("u.cedar".to_string(), unnamed.to_string())],
        )
        .err()
        .expect("must fail")
        .to_string();
        assert!(error.contains("@id"), "{error}");
    }
}
