//! The audit trail: one hash-chained event per action ([`action`]),
//! appended in the transaction that makes the change ([`chain::append`]);
//! queries over it ([`query`]); the vocabulary of the events that change who
//! holds what ([`history`], read back by `reports::history`); retention
//! ([`retention`]); and its JSON form ([`json`]), which `entitlements audit
//! export` writes.

pub mod action;
pub mod chain;
pub mod event;
pub mod history;
pub mod json;
pub mod query;
pub mod retention;

pub use action::{Action, Verb};
pub use chain::append;
pub use event::Draft;
