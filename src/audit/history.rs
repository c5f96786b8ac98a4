//! The vocabulary of the events that change who holds what: their action
//! names and detail keys. The domain writes them (`domain::request_events`,
//! `domain::package`); `reports::history` reads them back to reconstruct
//! who held what at a past moment.

/// Actions that change who holds a package, and the package details they
/// carry.
pub const DELIVERED: &str = "request.delivered";
pub const REMOVED: &str = "assignment.removed";
pub const EXPIRED: &str = "assignment.expired";
pub const PACKAGE_CREATED: &str = "access_package.created";
pub const PACKAGE_UPDATED: &str = "access_package.updated";
pub const PACKAGE_DELETED: &str = "access_package.deleted";

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
