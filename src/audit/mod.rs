//! The audit trail: one hash-chained event per action, appended in the
//! transaction that makes the change ([`chain::append`]); queries over it
//! ([`query`]); the history it allows to reconstruct ([`history`]);
//! retention ([`retention`]); and its JSON form ([`json`]), which
//! `entitlements audit export` writes.

pub mod chain;
pub mod event;
pub mod history;
pub mod json;
pub mod query;
pub mod retention;

pub use chain::append;
pub use event::Draft;
