//! The vocabulary of the events that change who holds what: their action
//! names and detail keys. The domain writes them (`domain::request_events`,
//! `domain::package`); `reports::history` reads them back to reconstruct
//! who held what at a past moment.

use super::action::{Action, Verb};

/// Target types of the events below. They name the domain's records
/// (`domain` checks that they do), except requests, whose events use the
/// short name.
pub const REQUEST: &str = "request";
pub const ASSIGNMENT: &str = "assignment";
pub const ACCESS_PACKAGE: &str = "access_package";

/// Actions that change who holds a package, and the package details they
/// carry.
pub const DELIVERED: Action<'static> = Action::new(REQUEST, Verb::Delivered);
pub const REMOVED: Action<'static> = Action::new(ASSIGNMENT, Verb::Removed);
pub const EXPIRED: Action<'static> = Action::new(ASSIGNMENT, Verb::Expired);
pub const PACKAGE_CREATED: Action<'static> = Action::new(ACCESS_PACKAGE, Verb::Created);
pub const PACKAGE_UPDATED: Action<'static> = Action::new(ACCESS_PACKAGE, Verb::Updated);
pub const PACKAGE_DELETED: Action<'static> = Action::new(ACCESS_PACKAGE, Verb::Deleted);

/// Detail keys shared by the events above.
pub mod keys {
    pub const ASSIGNMENT: &str = "assignment_id";
    pub const POLICY: &str = "assignment_policy_id";
    pub const REQUEST: &str = "assignment_request_id";
    pub const REQUEST_TYPE: &str = "request_type";
    pub const START: &str = "start";
    pub const END: &str = "end";
    pub const PREVIOUS_END: &str = "previous_end";
    pub const ROLES: &str = "resource_roles";
    pub const PREVIOUS_ROLES: &str = "previous_resource_roles";
}

/// A resource role as it appears in package details.
pub fn role_key(resource_id: &str, role_id: &str) -> String {
    format!("{resource_id}/{role_id}")
}
