//! Authorization of every RPC by the administration policies
//! (`policies/admin*.cedar`). The action is the RPC's (see [`Rpc`]), taken
//! from the request type; handlers name what it acts on. Lists keep only
//! what the caller may see.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use tonic::{Request, Status};

use crate::domain::crud;
use crate::error::{Error, Result};
use crate::observe::request_id;
use crate::pb::AccessPackage;
use crate::policy::admin::{self, Scope};
use crate::policy::{Facts, PolicyEngine};
use crate::shared::actor::Actor;
use crate::store::records::{self, Record};

use super::App;
use super::caller::{self, Principal};
use super::rpc::{Rpc, RpcRequest};

/// An authenticated caller of an RPC, with the roles they hold. Decisions
/// about the caller are about the RPC's action.
#[derive(Clone)]
pub struct Caller {
    pub actor: Actor,
    pub principal: Principal,
    /// The RPC whose action decisions are about.
    pub rpc: Rpc,
    roles: Vec<String>,
}

impl App {
    /// The caller of `request`, with their configured and stored roles.
    pub fn caller<T: RpcRequest>(
        &self,
        request: &Request<T>,
    ) -> std::result::Result<Caller, Status> {
        self.caller_of(request, T::RPC)
    }

    /// The caller of `request`, a call of `rpc` (for requests that several
    /// RPCs take).
    pub fn caller_of<T>(
        &self,
        request: &Request<T>,
        rpc: Rpc,
    ) -> std::result::Result<Caller, Status> {
        let principal = caller::principal(request)?.clone();
        let mut roles = principal.configured_roles.clone();
        roles.extend(admin::stored_roles(self.store(), &principal.id).map_err(Status::from)?);
        Ok(Caller {
            actor: self.actor(&principal, request),
            principal,
            rpc,
            roles,
        })
    }

    /// `principal` acting now, in the call `request` with its request id
    /// (which the server sets on every call it serves; without one the
    /// audit trail generates one per change).
    fn actor<T>(&self, principal: &Principal, request: &Request<T>) -> Actor {
        let request_id = request
            .metadata()
            .get(request_id::HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| request_id::is_usable(value))
            .unwrap_or_default()
            .to_string();
        Actor {
            id: principal.id.clone(),
            now: self.clock.now(),
            request_id,
        }
    }

    /// The caller of `request` as an actor, for calls whose authorization
    /// is decided elsewhere (approvals, by the compiled approval rules).
    pub fn actor_of<T>(&self, request: &Request<T>) -> std::result::Result<Actor, Status> {
        Ok(self.actor(caller::principal(request)?, request))
    }

    /// Whether `caller` may do their RPC's action on `scope`.
    pub fn permits(&self, caller: &Caller, scope: Scope<'_>) -> Result<bool> {
        Ok(self.decide(caller, scope, None)?.allowed)
    }

    fn decide(
        &self,
        caller: &Caller,
        scope: Scope<'_>,
        on_behalf: Option<bool>,
    ) -> Result<crate::policy::Decision> {
        let action = caller.rpc.action();
        let (principal, resource, entities) =
            admin::slice(&caller.principal.id, &caller.roles, scope)?;
        let entities = self.policies.with_action(entities, action)?;
        let decision = self.policies.decide(
            self.policies.admin_set(),
            principal,
            action,
            resource,
            Facts::Admin { on_behalf },
            &entities,
        )?;
        Ok(decision)
    }

    /// PERMISSION_DENIED (with the deciding policy ids) unless `caller` may
    /// do their RPC's action on `scope`.
    pub fn authorize(&self, caller: &Caller, scope: Scope<'_>) -> Result<()> {
        self.authorize_with(caller, scope, None)
    }

    /// Like [`App::authorize`], for CreateAssignmentRequest: `on_behalf`
    /// tells an ADMIN_* request (for someone else's access).
    pub fn authorize_with(
        &self,
        caller: &Caller,
        scope: Scope<'_>,
        on_behalf: Option<bool>,
    ) -> Result<()> {
        let decision = self.decide(caller, scope, on_behalf)?;
        if decision.allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            message: format!(
                "{:?} may not call {} here",
                caller.principal.id,
                caller.rpc.name()
            ),
            policy_ids: decision.policy_ids,
        })
    }

    /// Loads record `id` (see [`App::load_visible`]: a missing one is
    /// NOT_FOUND only for callers with the right in every catalog) and
    /// authorizes the caller in the catalog `catalog_of` names.
    pub fn authorize_record<R: Record>(
        &self,
        caller: &Caller,
        id: &str,
        catalog_of: impl FnOnce(&R) -> Result<String>,
    ) -> Result<R> {
        let record: R = self.load_visible(caller, id, admin::ANY_CATALOG)?;
        let catalog = catalog_of(&record)?;
        self.authorize(caller, Scope::Catalog(&catalog))?;
        Ok(record)
    }

    /// Loads record `id` (INVALID_ARGUMENT for a malformed id). A missing
    /// record is NOT_FOUND only for a caller who may act on `anywhere` (a
    /// scope that stands for every record, e.g. [`admin::ANY_CATALOG`]);
    /// others are PERMISSION_DENIED whether or not it exists, so ids in
    /// catalogs they cannot read cannot be probed.
    pub fn load_visible<R: Record>(
        &self,
        caller: &Caller,
        id: &str,
        anywhere: Scope<'_>,
    ) -> Result<R> {
        match crud::get::<R>(self.store(), id) {
            Err(missing @ Error::NotFound { .. }) => {
                self.authorize(caller, anywhere)?;
                Err(missing)
            }
            found => found,
        }
    }

    /// Checks a List's filter that names record `id` (nothing when it is
    /// empty; `field` names it in a malformed-id error), as a read of that
    /// record: a caller who may not act in the record's catalog
    /// (`catalog_of`) is PERMISSION_DENIED whether or not it exists, and
    /// only a caller who may act in every catalog learns NOT_FOUND.
    pub fn authorize_filter<R: Record>(
        &self,
        caller: &Caller,
        field: &str,
        id: &str,
        catalog_of: impl FnOnce(&R) -> Result<String>,
    ) -> Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let mut check = crate::domain::validate::Check::new("");
        check.id(field, id);
        check.finish()?;
        self.authorize_record(caller, id, catalog_of).map(drop)
    }

    /// The catalog of an access package.
    pub fn package_catalog(&self, package_id: &str) -> Result<String> {
        Ok(records::require::<AccessPackage>(self.store(), package_id)?.catalog_id)
    }

    /// The caller of `request` as an actor, if they may do the request's
    /// RPC on `scope`. Allowed decisions are remembered per (caller,
    /// action, resource) until a role assignment or a user changes (the
    /// administration policies decide from roles and ids alone), so a caller
    /// pays for Cedar once per resource, not per call.
    pub fn authorized<T: RpcRequest>(
        &self,
        request: &Request<T>,
        scope: Scope<'_>,
    ) -> std::result::Result<Actor, Status> {
        self.authorized_as(T::RPC, request, scope)
    }

    /// Like [`App::authorized`], for a call that is not `rpc`'s own gRPC
    /// request but acts as it (a SCIM request doing what `rpc` does), so
    /// both are authorized alike.
    pub fn authorized_as<T>(
        &self,
        rpc: Rpc,
        request: &Request<T>,
        scope: Scope<'_>,
    ) -> std::result::Result<Actor, Status> {
        let action = rpc.action();
        let principal = caller::principal(request)?;
        let generation = self.decisions.roles_generation();
        let resource = CachedResource::of(scope, &principal.id, &self.policies);
        let actor = self.actor(principal, request);
        if self
            .authz_cache
            .allowed(&principal.id, action, &resource, generation)
        {
            return Ok(actor);
        }
        let caller = self.caller_of(request, rpc)?;
        let allowed = self.authorize(&caller, scope);
        if allowed.is_ok() {
            self.authz_cache
                .remember(&principal.id, action, resource, generation);
        }
        allowed?;
        Ok(actor)
    }

    /// A filter for Lists of catalog content: whether the caller may act
    /// in a catalog, decided once per catalog.
    pub fn catalog_filter<'a>(&'a self, caller: &'a Caller) -> CatalogFilter<'a> {
        CatalogFilter {
            app: self,
            caller,
            seen: RefCell::new(HashMap::new()),
        }
    }
}

pub struct CatalogFilter<'a> {
    app: &'a App,
    caller: &'a Caller,
    seen: RefCell<HashMap<String, bool>>,
}

impl CatalogFilter<'_> {
    /// Whether the caller sees content of `catalog` (a failed decision
    /// counts as not).
    pub fn sees(&self, catalog: &str) -> bool {
        if let Some(known) = self.seen.borrow().get(catalog) {
            return *known;
        }
        let allowed = self
            .app
            .permits(self.caller, Scope::Catalog(catalog))
            .unwrap_or(false);
        self.seen.borrow_mut().insert(catalog.to_string(), allowed);
        allowed
    }
}

/// What a caller sees of records that belong to a catalog or, with no
/// catalog (""), to the whole tenant (audit events, report rows): a
/// catalog's when they may do the action there, everything when they may
/// do it tenant-wide.
pub struct VisibleCatalogs<'a> {
    catalogs: CatalogFilter<'a>,
    tenant: bool,
}

impl<'a> VisibleCatalogs<'a> {
    pub fn new(app: &'a App, caller: &'a Caller) -> Self {
        Self {
            catalogs: app.catalog_filter(caller),
            tenant: app.permits(caller, Scope::Tenant).unwrap_or(false),
        }
    }

    pub fn sees(&self, catalog_id: &str) -> bool {
        if catalog_id.is_empty() {
            self.tenant
        } else {
            self.tenant || self.catalogs.sees(catalog_id)
        }
    }
}

/// Package to catalog, looked up once per package (for Lists of records
/// that name a package).
pub struct PackageCatalogs<'a> {
    app: &'a App,
    seen: RefCell<HashMap<String, Option<String>>>,
}

impl<'a> PackageCatalogs<'a> {
    pub fn new(app: &'a App) -> Self {
        Self {
            app,
            seen: RefCell::new(HashMap::new()),
        }
    }

    /// The catalog of `package`, None when the package is gone.
    pub fn of(&self, package: &str) -> Option<String> {
        if let Some(known) = self.seen.borrow().get(package) {
            return known.clone();
        }
        let catalog = self.app.package_catalog(package).ok();
        self.seen
            .borrow_mut()
            .insert(package.to_string(), catalog.clone());
        catalog
    }
}

/// A filter for Lists of requests and assignments: whether the caller may
/// act on each record, by the record's catalog and people.
pub struct RecordFilter<'a> {
    app: &'a App,
    caller: &'a Caller,
    catalogs: PackageCatalogs<'a>,
}

impl<'a> RecordFilter<'a> {
    pub fn new(app: &'a App, caller: &'a Caller) -> Self {
        Self {
            app,
            caller,
            catalogs: PackageCatalogs::new(app),
        }
    }

    pub fn sees(&self, package: &str, target: &str, requestor: &str) -> bool {
        let Some(catalog) = self.catalogs.of(package) else {
            return false;
        };
        let scope = Scope::Record {
            catalog: &catalog,
            target,
            requestor,
        };
        self.app.permits(self.caller, scope).unwrap_or(false)
    }
}

/// A user a decision is about, reduced to what the administration policies
/// can tell apart. In a decision about a user that user is no entity (no
/// attributes, no parents): the policies can only compare them with the
/// caller and with users they name, so every other user gets one answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Someone {
    TheCaller,
    Named(String),
    Anyone,
}

/// The resource of a cached decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CachedResource {
    Tenant,
    Catalog(String),
    Record {
        catalog: String,
        target: String,
        requestor: String,
    },
    User(Someone),
}

impl CachedResource {
    fn of(scope: Scope<'_>, caller: &str, policies: &PolicyEngine) -> Self {
        match scope {
            Scope::Tenant => Self::Tenant,
            Scope::Catalog(id) => Self::Catalog(id.to_string()),
            Scope::Record {
                catalog,
                target,
                requestor,
            } => Self::Record {
                catalog: catalog.to_string(),
                target: target.to_string(),
                requestor: requestor.to_string(),
            },
            Scope::User(id) if id == caller => Self::User(Someone::TheCaller),
            Scope::User(id) if policies.admin_names_user(id) => {
                Self::User(Someone::Named(id.to_string()))
            }
            Scope::User(_) => Self::User(Someone::Anyone),
        }
    }
}

/// Allowed authorization decisions by caller, then (action, resource),
/// valid for one generation of role assignments. Read-mostly: lookups
/// share the lock. Bounded: it starts over when full.
#[derive(Default)]
pub struct DecisionCache {
    entries: RwLock<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    generation: u64,
    len: usize,
    by_caller: HashMap<String, HashMap<&'static str, HashSet<CachedResource>>>,
}

const CACHE_LIMIT: usize = 100_000;

impl DecisionCache {
    fn allowed(
        &self,
        caller: &str,
        action: &'static str,
        resource: &CachedResource,
        generation: u64,
    ) -> bool {
        let entries = self.entries.read().expect("authorization cache poisoned");
        let hit = entries.generation == generation
            && entries
                .by_caller
                .get(caller)
                .and_then(|actions| actions.get(action))
                .is_some_and(|resources| resources.contains(resource));
        crate::observe::metrics::authz_cache_lookup(hit);
        hit
    }

    fn remember(
        &self,
        caller: &str,
        action: &'static str,
        resource: CachedResource,
        generation: u64,
    ) {
        let mut entries = self.entries.write().expect("authorization cache poisoned");
        if entries.generation != generation || entries.len >= CACHE_LIMIT {
            *entries = CacheEntries {
                generation,
                ..CacheEntries::default()
            };
        }
        let added = entries
            .by_caller
            .entry(caller.to_string())
            .or_default()
            .entry(action)
            .or_default()
            .insert(resource);
        entries.len += usize::from(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

    #[test]
    fn users_the_policies_cannot_tell_apart_share_a_cache_entry() {
        let vip = "@id(\"admin/vip\")\npermit (principal, action, resource == Entitlements::User::\"vip\");";
        let engine =
            PolicyEngine::from_sources(SCHEMA, [("admin-vip.cedar".to_string(), vip.to_string())])
                .unwrap();
        let of = |id| CachedResource::of(Scope::User(id), "alice", &engine);
        assert_eq!(of("alice"), CachedResource::User(Someone::TheCaller));
        assert_eq!(
            of("vip"),
            CachedResource::User(Someone::Named("vip".into()))
        );
        assert_eq!(of("bob"), CachedResource::User(Someone::Anyone));
        assert_eq!(of("carol"), of("bob"));
    }

    #[test]
    fn a_remembered_decision_lasts_one_generation() {
        let cache = DecisionCache::default();
        let anyone = CachedResource::User(Someone::Anyone);
        cache.remember("svc", "CheckAccess", anyone.clone(), 1);
        assert!(cache.allowed("svc", "CheckAccess", &anyone, 1));
        assert!(!cache.allowed("svc", "Ping", &anyone, 1));
        assert!(!cache.allowed("other", "CheckAccess", &anyone, 1));
        assert!(!cache.allowed("svc", "CheckAccess", &anyone, 2));
    }
}
