//! The vocabulary every layer shares: time ([`clock`]), who acts
//! ([`actor`]), new ids ([`id`]) and the current call's [`deadline`]. It imports nothing from the rest of
//! the crate, so any layer may use it.

pub mod actor;
pub mod clock;
pub mod deadline;
pub mod id;
