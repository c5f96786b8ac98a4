//! Decisions for other services, answered from memory: a view of the
//! store's records that follows every commit (see [`state::DecisionState`]),
//! the grant-change log behind WatchGrants ([`events`]), and the questions
//! it answers ([`queries`]).

pub mod events;
pub mod queries;
pub mod state;
