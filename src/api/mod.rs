//! The gRPC surface: one module per service, plus the conventions they share
//! (caller identity, error statuses, paging).

pub mod access_packages;
pub mod assignments;
pub mod authz;
pub mod caller;
pub mod catalogs;
pub mod directory;
pub mod jwt;
pub mod paging;
pub mod policies;
pub mod requests;
pub mod settings;
pub mod status;

use std::sync::Arc;

use crate::clock::Clock;
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
}
