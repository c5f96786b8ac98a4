//! The gRPC surface: one module per service, plus the conventions they share
//! (caller identity, error statuses, paging).

pub mod access_packages;
pub mod assignments;
pub mod caller;
pub mod catalogs;
pub mod directory;
pub mod paging;
pub mod policies;
pub mod requests;
pub mod settings;
pub mod status;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::clock::Clock;
use crate::domain::entity::Actor;
use crate::policy::PolicyEngine;
use crate::store::Store;

/// What every service needs: the store, the clock and the policy engine.
#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub policies: Arc<PolicyEngine>,
}

impl App {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policies: Arc<PolicyEngine>) -> Self {
        Self {
            store,
            clock,
            policies,
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The authenticated caller of `request`, stamped with the current time.
    pub fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        let principal = caller::principal(request)?;
        Ok(Actor {
            id: principal.id.clone(),
            now: self.clock.now(),
        })
    }
}
