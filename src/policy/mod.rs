//! Cedar decisions. The engine holds the schema and the operator's static
//! policies (invariants), validates compiled assignment policies against
//! them, and evaluates decisions against a policy set per access package:
//! the invariants, the package's separation-of-duties rules and its
//! assignment policies. Cedar evaluates every policy in a set, so a
//! decision never sees other packages' policies. Cedar text is bounded
//! (`domain::validate::cedar`) before it is parsed, and parsed and
//! validated on a thread of its own with a deep stack: Cedar's parser
//! recurses per nesting level and would otherwise abort the process.

pub mod admin;
pub mod checked;
pub mod compile;
pub mod entities;
pub mod reasons;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, anyhow, bail};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Entities, Entity,
    EntityUid, EvaluationError, Policy, PolicyId, PolicySet, Request, Response,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::domain::validate::cedar as cedar_limits;
use crate::error::Error;
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

/// The stack of the thread that parses and validates Cedar text (and
/// re-runs a decision that reached Cedar's recursion limit). In a debug
/// build Cedar takes about 57 KiB of stack per nesting level to parse, and
/// about 20 KiB (validation) or 51 KiB (evaluation) per level of an
/// expression tree; within the limits of `domain::validate::cedar` (16
/// levels of nesting, trees 64 deep) that is under 4 MiB, and release
/// builds take a fraction. The margin is wide because a stack that runs
/// short aborts the process, and because Cedar's validator, when it
/// reaches its recursion limit, passes a policy unchecked. Only the pages
/// used are ever touched.
const CEDAR_STACK_BYTES: usize = 64 << 20;

/// Runs `work` on a thread with [`CEDAR_STACK_BYTES`] of stack; panics
/// propagate. Every parse of Cedar text goes through here.
fn on_deep_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("cedar-check".into())
            .stack_size(CEDAR_STACK_BYTES)
            .spawn_scoped(scope, work)
            .expect("the system can start a thread");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Refuses Cedar text deeper than the limits before Cedar parses it.
fn check_depth(name: &str, text: &str) -> anyhow::Result<()> {
    match cedar_limits::problem(text) {
        Some(problem) => bail!("{name} {problem}"),
        None => Ok(()),
    }
}

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
    fn context(self) -> Result<Context, PolicyError> {
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

/// Why a decision could not be made: Cedar refused what the service built
/// for it (an entity, the context or the request). A fault of the service,
/// never the caller's; Cedar's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("a Cedar entity could not be built: {0}")]
    Entity(#[source] Box<cedar_policy::EntityAttrEvaluationError>),
    #[error("the Cedar entities could not be assembled: {0}")]
    Entities(#[source] Box<cedar_policy::entities_errors::EntitiesError>),
    #[error("the Cedar context could not be built: {0}")]
    Context(#[source] Box<cedar_policy::ContextCreationError>),
    #[error("the Cedar request is invalid: {0}")]
    Request(#[source] Box<cedar_policy::RequestValidationError>),
    #[error("a Cedar expression could not be built: {0}")]
    Expression(#[source] Box<cedar_policy::ExpressionConstructionError>),
    /// The stored policies of a package do not compile to a valid set;
    /// `problem` is the validator's message, as writes report it.
    #[error("package {package}: {problem}")]
    PackageSet { package: String, problem: String },
}

/// Cedar's errors are large; they are kept boxed.
macro_rules! policy_error_from {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for PolicyError {
            fn from(error: $error) -> Self {
                Self::$variant(Box::new(error))
            }
        })*
    };
}

policy_error_from!(
    Entity(cedar_policy::EntityAttrEvaluationError),
    Entities(cedar_policy::entities_errors::EntitiesError),
    Context(cedar_policy::ContextCreationError),
    Request(cedar_policy::RequestValidationError),
    Expression(cedar_policy::ExpressionConstructionError),
);

/// A decision that could not be made is an internal error, cause kept.
impl From<PolicyError> for Error {
    fn from(error: PolicyError) -> Self {
        Error::Internal(Box::new(error))
    }
}

struct Shard {
    /// Revisions of the package and its policies the set was built from.
    built_from: Vec<(String, u64)>,
    set: Arc<PackageSet>,
}

/// The policy set of one package's decisions, with the packages its
/// policies name.
pub struct PackageSet {
    pub policies: PolicySet,
    named_packages: HashSet<String>,
}

impl PackageSet {
    fn new(policies: PolicySet) -> Self {
        let package_type = compile::entity_uid("AccessPackage", "").type_name().clone();
        let named_packages = policies
            .policies()
            .flat_map(Policy::entity_literals)
            .filter(|uid| *uid.type_name() == package_type)
            .map(|uid| uid.id().unescaped().to_string())
            .collect();
        Self {
            policies,
            named_packages,
        }
    }

    /// Whether a rule of the set names package `id` (separation of duties,
    /// or a condition): the only packages, besides the one decided on,
    /// whose holding can change a decision (see [`entities::slice`]).
    pub fn names_package(&self, id: &str) -> bool {
        self.named_packages.contains(id)
    }
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

    /// The engine for a schema and policy files, each within the nesting
    /// and depth limits of `domain::validate::cedar`, parsed and validated
    /// on a deep stack.
    pub fn from_sources(
        schema_text: &str,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let files: Vec<(String, String)> = files.into_iter().collect();
        check_depth("schema.cedarschema", schema_text)?;
        for (name, text) in &files {
            check_depth(name, text)?;
        }
        on_deep_stack(|| Self::parse_sources(schema_text, files))
    }

    fn parse_sources(schema_text: &str, files: Vec<(String, String)>) -> anyhow::Result<Self> {
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
    /// too); the error is Cedar's message. Runs on a deep stack: the rules
    /// carry a caller's condition, checked against the limits beforehand.
    pub fn check(&self, rules: &[Rule]) -> Result<(), String> {
        on_deep_stack(|| self.policy_set(rules).map(|_| ()))
    }

    /// Whether a caller's extra condition is one Cedar expression and
    /// nothing more (it must not close the policy it is set into); the
    /// error is Cedar's message.
    pub fn check_condition(&self, condition: &str) -> Result<(), String> {
        if let Some(problem) = cedar_limits::problem(condition) {
            return Err(problem);
        }
        on_deep_stack(|| {
            condition
                .parse::<cedar_policy::Expression>()
                .map(|_| ())
                .map_err(|e| cedar_message(&e))
        })
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
    ) -> Result<Arc<PackageSet>, PolicyError> {
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
            // Stored before conditions were bounded: it decides nothing
            // (nobody gets access through it) rather than take the process
            // down, until an update gives it a condition within bounds.
            if let Some(problem) = cedar_limits::problem(&policy.extra_condition) {
                tracing::error!(
                    policy = %policy.id,
                    "assignment policy left out of decisions: its extra_condition {problem}"
                );
                continue;
            }
            rules.extend(compile::compile_policy(policy));
        }
        let set = Arc::new(PackageSet::new(
            on_deep_stack(|| self.policy_set(&rules)).map_err(|problem| {
                PolicyError::PackageSet {
                    package: package.id.clone(),
                    problem,
                }
            })?,
        ));
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
    pub fn with_action(
        &self,
        entities: Vec<Entity>,
        action: &str,
    ) -> Result<Entities, PolicyError> {
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
    ) -> Result<Decision, PolicyError> {
        let _span = tracing::info_span!("cedar.decide", action).entered();
        let action = compile::entity_uid("Action", action);
        let context = facts.into().context()?;
        let request = Request::new(principal, action, resource, context, Some(&self.schema))?;
        let mut response = Authorizer::new().is_authorized(&request, set, entities);
        // Cedar skips a policy whose evaluation nears the end of the stack
        // (a forbid cut short would not apply): such a decision is made
        // again on a deep stack. Only deep conditions on small stacks (debug
        // builds) get here.
        if ran_out_of_stack(&response) {
            response = on_deep_stack(|| Authorizer::new().is_authorized(&request, set, entities));
        }
        let diagnostics = response.diagnostics();
        Ok(Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policy_ids: diagnostics.reason().map(ToString::to_string).collect(),
            errors: diagnostics.errors().map(ToString::to_string).collect(),
        })
    }
}

/// Whether Cedar stopped evaluating a policy at its recursion limit.
fn ran_out_of_stack(response: &Response) -> bool {
    response.diagnostics().errors().any(|error| {
        matches!(
            error,
            AuthorizationError::PolicyEvaluationError(e)
                if matches!(e.inner(), EvaluationError::RecursionLimit(_))
        )
    })
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
