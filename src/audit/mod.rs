//! The audit trail: one hash-chained event per action, appended in the
//! transaction that makes the change ([`chain::append`]); queries over it
//! ([`query`]); the vocabulary of the events that change who holds what
//! ([`history`], read back by `reports::history`);
//! retention ([`retention`]); and its JSON form ([`json`]) that `entitlements
//! audit export` ([`export`]) writes; and what a store that lost
//! acknowledged commits lacks, in audit events ([`rollback`]).

pub mod chain;
pub mod event;
pub mod export;
pub mod history;
pub mod json;
pub mod query;
pub mod retention;
pub mod rollback;

pub use chain::append;
pub use event::Draft;
