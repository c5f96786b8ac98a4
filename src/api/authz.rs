//! Authorization of every RPC by the administration policies
//! (`policies/admin*.cedar`). Handlers name the action (the RPC) and what it
//! acts on; Lists keep only what the caller may see.

use std::cell::RefCell;
use std::collections::HashMap;

use tonic::{Request, Status};

use crate::domain::crud;
use crate::domain::entity::Actor;
use crate::error::{Error, Result};
use crate::pb::AccessPackage;
use crate::policy::Facts;
use crate::policy::admin::{self, Scope};
use crate::store::records::{self, Record};

use super::App;
use super::caller::{self, Principal};

/// The metadata key a caller may use to name its call; audit events carry
/// it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An authenticated caller with the roles they hold.
pub struct Caller {
    pub actor: Actor,
    pub principal: Principal,
    roles: Vec<String>,
}

impl App {
    /// The caller of `request`, with their configured and stored roles.
    pub fn caller<T>(&self, request: &Request<T>) -> std::result::Result<Caller, Status> {
        let principal = caller::principal(request)?.clone();
        let mut roles = principal.configured_roles.clone();
        roles.extend(admin::stored_roles(self.store(), &principal.id).map_err(Status::from)?);
        Ok(Caller {
            actor: self.actor(&principal, request),
            principal,
            roles,
        })
    }

    /// `principal` making a change now, in the call `request` (its
    /// x-request-id, or a fresh id when it sent none).
    fn actor<T>(&self, principal: &Principal, request: &Request<T>) -> Actor {
        let request_id = request
            .metadata()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty() && value.len() <= 128)
            .map_or_else(crud::new_id, str::to_string);
        Actor {
            id: principal.id.clone(),
            now: self.clock.now(),
            request_id,
        }
    }

    /// Whether `caller` may do `action` on `scope`.
    pub fn permits(
        &self,
        caller: &Caller,
        action: &str,
        scope: Scope<'_>,
        on_behalf: Option<bool>,
    ) -> Result<bool> {
        Ok(self.decide(caller, action, scope, on_behalf)?.allowed)
    }

    fn decide(
        &self,
        caller: &Caller,
        action: &str,
        scope: Scope<'_>,
        on_behalf: Option<bool>,
    ) -> Result<crate::policy::Decision> {
        let (principal, resource, entities) =
            admin::slice(&caller.principal.id, &caller.roles, scope).map_err(Error::internal)?;
        let entities = self
            .policies
            .with_action(entities, action)
            .map_err(Error::internal)?;
        self.policies
            .decide(
                self.policies.admin_set(),
                principal,
                action,
                resource,
                Facts::Admin { on_behalf },
                &entities,
            )
            .map_err(Error::internal)
    }

    /// PERMISSION_DENIED (with the deciding policy ids) unless `caller` may
    /// do `action` on `scope`.
    pub fn authorize(&self, caller: &Caller, action: &str, scope: Scope<'_>) -> Result<()> {
        self.authorize_with(caller, action, scope, None)
    }

    pub fn authorize_with(
        &self,
        caller: &Caller,
        action: &str,
        scope: Scope<'_>,
        on_behalf: Option<bool>,
    ) -> Result<()> {
        let decision = self.decide(caller, action, scope, on_behalf)?;
        if decision.allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            message: format!("{:?} may not call {action} here", caller.principal.id),
            policy_ids: decision.policy_ids,
        })
    }

    /// Loads record `id` (INVALID_ARGUMENT for a malformed id, NOT_FOUND when
    /// missing) and authorizes `action` in the catalog `catalog_of` names.
    pub fn authorize_record<R: Record>(
        &self,
        caller: &Caller,
        action: &str,
        id: &str,
        catalog_of: impl FnOnce(&R) -> Result<String>,
    ) -> Result<R> {
        let record: R = crud::get(self.store(), id)?;
        let catalog = catalog_of(&record)?;
        self.authorize(caller, action, Scope::Catalog(&catalog))?;
        Ok(record)
    }

    /// The catalog of an access package.
    pub fn package_catalog(&self, package_id: &str) -> Result<String> {
        Ok(records::require::<AccessPackage>(self.store(), package_id)?.catalog_id)
    }

    /// The caller of `request` as an actor, if they may do `action` on
    /// `scope`. Allowed decisions are remembered per (caller, action,
    /// resource) until a role assignment or a user changes (the
    /// administration policies decide from roles and ids alone), so a caller
    /// pays for Cedar once per resource, not per call.
    pub fn authorized<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
        scope: Scope<'_>,
    ) -> std::result::Result<Actor, Status> {
        let principal = caller::principal(request)?;
        let generation = self.decisions.read().roles_generation;
        let key = (principal.id.clone(), action, scope_key(scope));
        let actor = self.actor(principal, request);
        if self.authz_cache.get(&key, generation) == Some(true) {
            return Ok(actor);
        }
        let caller = self.caller(request)?;
        let allowed = self.authorize(&caller, action, scope);
        self.authz_cache.put(key, generation, allowed.is_ok());
        allowed?;
        Ok(actor)
    }

    /// A filter for Lists of catalog content: whether the caller may do
    /// `action` in a catalog, decided once per catalog.
    pub fn catalog_filter<'a>(&'a self, caller: &'a Caller, action: &'a str) -> CatalogFilter<'a> {
        CatalogFilter {
            app: self,
            caller,
            action,
            seen: RefCell::new(HashMap::new()),
        }
    }
}

pub struct CatalogFilter<'a> {
    app: &'a App,
    caller: &'a Caller,
    action: &'a str,
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
            .permits(self.caller, self.action, Scope::Catalog(catalog), None)
            .unwrap_or(false);
        self.seen.borrow_mut().insert(catalog.to_string(), allowed);
        allowed
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
/// do `action` on each record, by the record's catalog and people.
pub struct RecordFilter<'a> {
    app: &'a App,
    caller: &'a Caller,
    action: &'a str,
    catalogs: PackageCatalogs<'a>,
}

impl<'a> RecordFilter<'a> {
    pub fn new(app: &'a App, caller: &'a Caller, action: &'a str) -> Self {
        Self {
            app,
            caller,
            action,
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
        self.app
            .permits(self.caller, self.action, scope, None)
            .unwrap_or(false)
    }
}

fn scope_key(scope: Scope<'_>) -> String {
    match scope {
        Scope::Tenant => "tenant".into(),
        Scope::Catalog(id) => format!("catalog/{id}"),
        Scope::Record {
            catalog,
            target,
            requestor,
        } => format!("record/{catalog}/{target}/{requestor}"),
        Scope::User(id) => format!("user/{id}"),
    }
}

type CacheKey = (String, &'static str, String);

/// Authorization decisions by (principal, action, resource), valid for one
/// generation of role assignments. Bounded: it starts over when full.
#[derive(Default)]
pub struct DecisionCache {
    entries: std::sync::Mutex<(u64, HashMap<CacheKey, bool>)>,
}

const CACHE_LIMIT: usize = 100_000;

impl DecisionCache {
    fn get(&self, key: &CacheKey, generation: u64) -> Option<bool> {
        let entries = self.entries.lock().expect("authorization cache poisoned");
        (entries.0 == generation)
            .then(|| entries.1.get(key).copied())
            .flatten()
    }

    fn put(&self, key: CacheKey, generation: u64, allowed: bool) {
        let mut entries = self.entries.lock().expect("authorization cache poisoned");
        if entries.0 != generation || entries.1.len() >= CACHE_LIMIT {
            *entries = (generation, HashMap::new());
        }
        entries.1.insert(key, allowed);
    }
}
