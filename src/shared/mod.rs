//! The vocabulary every layer shares: time ([`clock`]), who acts
//! ([`actor`]) and new ids ([`id`]). It imports nothing from the rest of
//! the crate, so any layer may use it.

pub mod actor;
pub mod clock;
pub mod id;
