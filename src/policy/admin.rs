//! Entities for administration decisions: the caller with the roles they
//! hold, and the thing they act on (the tenant, a catalog, a request or
//! assignment, or a user).

use std::collections::HashSet;

use cedar_policy::{Entity, EntityUid, RestrictedExpression};

use crate::domain::catalog::ROLES_BY_PRINCIPAL;
use crate::domain::directory::targets;
use crate::error::Result;
use crate::pb::{AdminRole, RoleAssignment, User, UserState};
use crate::store::ReadView;
use crate::store::records::{self, Record};

use super::PolicyError;
use super::compile::entity_uid;
use super::entities::user_uid;

pub const GLOBAL_ADMIN: &str = "global-admin";
pub const CATALOG_CREATOR: &str = "catalog-creator";

/// What an administrative action acts on.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Tenant,
    Catalog(&'a str),
    /// A request or assignment in a catalog.
    Record {
        catalog: &'a str,
        target: &'a str,
        requestor: &'a str,
    },
    User(&'a str),
}

/// A catalog that does not exist: only a right over every catalog covers
/// it (for answers about catalog content that does not exist).
pub const ANY_CATALOG: Scope<'static> = Scope::Catalog("");

/// A request or assignment in no catalog and of nobody: only a right over
/// every record covers it (for answers about records that do not exist).
pub const ANY_RECORD: Scope<'static> = Scope::Record {
    catalog: "",
    target: "",
    requestor: "",
};

/// The role a catalog role assignment stands for, as a Cedar role name.
fn catalog_role_name(catalog: &str, role: AdminRole) -> Option<String> {
    let suffix = match role {
        AdminRole::CatalogOwner => "owner",
        AdminRole::CatalogReader => "reader",
        AdminRole::AccessPackageManager => "package-manager",
        AdminRole::AccessPackageAssignmentManager => "assignment-manager",
        _ => return None,
    };
    Some(format!("catalog/{catalog}/{suffix}"))
}

/// The roles `principal` holds through role assignments: none while the
/// user is blocked or deleted (the assignments stay on record).
pub fn stored_roles(view: &(impl ReadView + ?Sized), principal: &str) -> Result<Vec<String>> {
    let mut roles = Vec::new();
    let active = records::load::<User>(view, principal)?
        .is_some_and(|user| user.state == UserState::Active as i32);
    if !active {
        return Ok(roles);
    }
    for id in targets(view, RoleAssignment::KIND, ROLES_BY_PRINCIPAL, principal)? {
        let Some(assignment) = records::load::<RoleAssignment>(view, &id)? else {
            continue;
        };
        let role = assignment.role();
        let name = match role {
            AdminRole::GlobalAdmin => Some(GLOBAL_ADMIN.to_string()),
            AdminRole::CatalogCreator => Some(CATALOG_CREATOR.to_string()),
            // Catalog roles always name their catalog (check_role_args).
            _ => catalog_role_name(&assignment.catalog_id, role),
        };
        roles.extend(name);
    }
    Ok(roles)
}

fn catalog_entity(id: &str) -> Entity {
    let role = |suffix: &str| {
        RestrictedExpression::new_entity_uid(entity_uid("Role", &format!("catalog/{id}/{suffix}")))
    };
    let attrs = [
        ("owners", role("owner")),
        ("readers", role("reader")),
        ("packageManagers", role("package-manager")),
        ("assignmentManagers", role("assignment-manager")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Entity::new(entity_uid("Catalog", id), attrs, HashSet::new()).expect("distinct attribute names")
}

/// The principal uid, the resource uid and the entities of one decision
/// (to be completed with the action's groups, see
/// `PolicyEngine::with_action`).
pub fn slice(
    principal: &str,
    roles: &[String],
    scope: Scope<'_>,
) -> Result<(EntityUid, EntityUid, Vec<Entity>), PolicyError> {
    let principal_uid = user_uid(principal);
    let parents: HashSet<EntityUid> = roles.iter().map(|r| entity_uid("Role", r)).collect();
    let mut entities = vec![Entity::new_no_attrs(principal_uid.clone(), parents)];
    let resource = match scope {
        Scope::Tenant => entity_uid("Tenant", "tenant"),
        Scope::Catalog(id) => {
            entities.push(catalog_entity(id));
            entity_uid("Catalog", id)
        }
        Scope::Record {
            catalog,
            target,
            requestor,
        } => {
            entities.push(catalog_entity(catalog));
            let record = entity_uid("AccessRecord", "record");
            let attrs = [
                (
                    "catalog",
                    RestrictedExpression::new_entity_uid(entity_uid("Catalog", catalog)),
                ),
                (
                    "target",
                    RestrictedExpression::new_entity_uid(user_uid(target)),
                ),
                (
                    "requestor",
                    RestrictedExpression::new_entity_uid(user_uid(requestor)),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            entities.push(Entity::new(record.clone(), attrs, HashSet::new())?);
            record
        }
        Scope::User(id) => user_uid(id),
    };
    Ok((principal_uid, resource, entities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Facts, PolicyEngine};

    #[test]
    fn a_global_admin_may_create_catalogs_and_others_may_not() {
        let engine = PolicyEngine::builtin().unwrap();
        let decide = |roles: &[String]| {
            let (p, r, e) = slice("alice", roles, Scope::Tenant).unwrap();
            let e = engine.with_action(e, "CreateCatalog").unwrap();
            engine
                .decide(
                    engine.admin_set(),
                    p,
                    "CreateCatalog",
                    r,
                    Facts::Admin { on_behalf: None },
                    &e,
                )
                .unwrap()
        };
        let admin = decide(&[GLOBAL_ADMIN.to_string()]);
        assert!(admin.allowed, "{admin:?}");
        assert_eq!(admin.policy_ids, vec!["admin/global-admin"]);
        assert!(!decide(&[]).allowed);
        assert!(decide(&[CATALOG_CREATOR.to_string()]).allowed);
    }
}
