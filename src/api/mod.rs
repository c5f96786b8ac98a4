//! The gRPC surface: one module per service, plus the conventions they share
//! (caller identity, error statuses, paging).

pub mod access_packages;
pub mod assignments;
pub mod audit;
pub mod authz;
pub mod backup;
pub mod caller;
pub mod catalogs;
pub mod decisions;
pub mod directory;
pub mod jwt;
pub mod paging;
pub mod policies;
pub mod reports;
pub mod requests;
pub mod rpc;
pub mod scim;
pub mod settings;
pub mod status;

use std::sync::Arc;

use crate::decision::state::DecisionState;
use crate::policy::PolicyEngine;
use crate::shared::clock::Clock;
use crate::store::Store;

/// What every service needs: the store, the clock, the policy engine, the
/// in-memory decision state, and cached authorization decisions.
#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub policies: Arc<PolicyEngine>,
    pub decisions: Arc<DecisionState>,
    pub authz_cache: Arc<authz::DecisionCache>,
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicyEngine>,
        decisions: Arc<DecisionState>,
    ) -> Self {
        Self {
            store,
            clock,
            policies,
            decisions,
            authz_cache: Arc::default(),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }
}
