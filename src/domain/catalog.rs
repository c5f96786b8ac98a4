//! Catalogs (with the built-in "General" one), the resources they hold, and
//! administrative role assignments.

use std::collections::HashSet;

use crate::audit::{self, Draft, Verb};
use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{AdminRole, Catalog, CatalogKind, Resource, RoleAssignment, User, UserState};
use crate::store::records::{self, IndexEntry, Record, Reference};
use crate::store::{ReadView, Store, Txn, write};

use super::directory::{deleted_user, targets};
use super::entity::{Entity, record_info, stamp};
use super::validate::{Check, MAX_DESCRIPTION, MAX_LIST, MAX_NAME, MAX_TYPE};
use super::{mutable_fields, tracked_fields};
use crate::shared::actor::Actor;

pub const GENERAL_CATALOG_ID: &str = "general";

impl Record for Catalog {
    const KIND: &'static str = "catalog";

    fn id(&self) -> String {
        self.id.clone()
    }
}

impl Entity for Catalog {
    const FIELD: &'static str = "catalog";
    tracked_fields!();

    fn audit(&self, _: &dyn ReadView, draft: Draft, _: Option<&Self>) -> Result<Draft> {
        Ok(draft.catalog(&self.id))
    }

    mutable_fields!(display_name, description, enabled, externally_visible);

    fn normalize(&mut self, old: Option<&Self>) {
        self.kind = old.map_or(CatalogKind::UserManaged as i32, |o| o.kind);
        self.enabled = self.enabled.or(old.and_then(|o| o.enabled)).or(Some(true));
        self.externally_visible = self
            .externally_visible
            .or(old.and_then(|o| o.externally_visible))
            .or(Some(false));
    }

    fn validate(&self, check: &mut Check) {
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        if self.id == TENANT_SCOPE {
            check.fail(
                "id",
                format!("{TENANT_SCOPE:?} is reserved for tenant-wide roles"),
            );
        }
    }

    /// The built-in catalog stays; role assignments go with a catalog, while
    /// resources and packages in it block its removal (they refer to it).
    /// The catalog's role holders lose their roles with it, each recorded
    /// as a revocation.
    fn before_remove(&self, txn: &mut dyn Txn, actor: &Actor) -> Result<()> {
        if self.kind == CatalogKind::BuiltIn as i32 {
            return Err(Error::precondition(
                PreconditionKind::BuiltIn,
                records::subject::<Catalog>(&self.id),
                format!("catalog {:?} is built in and cannot be deleted", self.id),
            ));
        }
        for id in targets(txn, RoleAssignment::KIND, ROLES_BY_CATALOG, &self.id)? {
            if let Some(assignment) = records::load::<RoleAssignment>(txn, &id)? {
                records::remove(txn, &assignment)?;
                let draft = role_event(&assignment, Verb::Revoked)
                    .detail("reason", "the catalog was deleted");
                audit::append(txn, actor, draft)?;
            }
        }
        Ok(())
    }
}

/// Creates the built-in catalog on first start.
pub async fn ensure_general_catalog(store: &dyn Store, actor: Actor) -> Result<()> {
    write(store, move |txn| {
        if records::exists::<Catalog>(txn, GENERAL_CATALOG_ID)? {
            return Ok(());
        }
        let mut general = Catalog {
            id: GENERAL_CATALOG_ID.into(),
            display_name: "General".into(),
            description: "The built-in catalog.".into(),
            kind: CatalogKind::BuiltIn as i32,
            enabled: Some(true),
            externally_visible: Some(false),
            ..Default::default()
        };
        stamp(&mut general, None, &actor, txn.revision());
        records::save(txn, None, &general)?;
        let draft = Draft::new(Catalog::KIND, Verb::Created, GENERAL_CATALOG_ID)
            .catalog(GENERAL_CATALOG_ID);
        audit::append(txn, &actor, draft)
    })
    .await?;
    Ok(())
}

pub const RESOURCES_BY_CATALOG: &str = "catalog";

impl Record for Resource {
    const KIND: &'static str = "resource";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        vec![IndexEntry::new(
            RESOURCES_BY_CATALOG,
            &self.catalog_id,
            &self.id,
        )]
    }

    fn uniques(&self) -> Vec<(&'static str, String)> {
        vec![(
            "origin",
            format!(
                "{}\u{1f}{}\u{1f}{}",
                self.catalog_id, self.r#type, self.origin_id
            ),
        )]
    }

    fn references(&self) -> Vec<Reference> {
        vec![Reference::new(Catalog::KIND, &self.catalog_id)]
    }
}

/// How packages refer to one role of one resource.
pub fn resource_role_key(resource_id: &str, role_id: &str) -> String {
    format!("{resource_id}/{role_id}")
}

pub const RESOURCE_ROLE_KIND: &str = "resource_role";

impl Entity for Resource {
    const FIELD: &'static str = "resource";
    tracked_fields!();

    fn audit(&self, _: &dyn ReadView, draft: Draft, _: Option<&Self>) -> Result<Draft> {
        Ok(draft.catalog(&self.catalog_id))
    }

    mutable_fields!(r#type, origin_id, display_name, description, roles);

    fn validate(&self, check: &mut Check) {
        check.id("catalog_id", &self.catalog_id);
        check.text("type", &self.r#type, MAX_TYPE, true);
        check.text("origin_id", &self.origin_id, MAX_NAME, true);
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        if self.roles.is_empty() || self.roles.len() > MAX_LIST {
            check.fail("roles", format!("must have 1-{MAX_LIST} entries"));
        }
        let mut seen = HashSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            check.id(&format!("roles[{i}].id"), &role.id);
            if !seen.insert(&role.id) {
                check.fail(
                    &format!("roles[{i}].id"),
                    format!("{:?} is listed twice", role.id),
                );
            }
            check.text(
                &format!("roles[{i}].display_name"),
                &role.display_name,
                MAX_NAME,
                false,
            );
        }
    }

    fn check_against(&self, view: &dyn ReadView, old: Option<&Self>) -> Result<()> {
        records::require::<Catalog>(view, &self.catalog_id)?;
        let Some(old) = old else { return Ok(()) };
        for role in &old.roles {
            if self.roles.iter().any(|r| r.id == role.id) {
                continue;
            }
            let key = resource_role_key(&self.id, &role.id);
            let users = records::referrers(view, RESOURCE_ROLE_KIND, &key, 10)?;
            if !users.is_empty() {
                return Err(Error::in_use(RESOURCE_ROLE_KIND, &key, &users));
            }
        }
        Ok(())
    }
}

pub const ROLES_BY_CATALOG: &str = "catalog";
pub const ROLES_BY_PRINCIPAL: &str = "principal";
/// Stands for "no catalog" (tenant-wide roles) in keys and filters.
pub const TENANT_SCOPE: &str = "-";

pub fn is_tenant_role(role: AdminRole) -> bool {
    matches!(role, AdminRole::GlobalAdmin | AdminRole::CatalogCreator)
}

fn scope_of(catalog_id: &str) -> &str {
    if catalog_id.is_empty() {
        TENANT_SCOPE
    } else {
        catalog_id
    }
}

pub fn role_assignment_id(role: AdminRole, principal_id: &str, catalog_id: &str) -> String {
    format!(
        "{}/{}/{}",
        scope_of(catalog_id),
        role.as_str_name(),
        principal_id
    )
}

impl Record for RoleAssignment {
    const KIND: &'static str = "role_assignment";

    fn id(&self) -> String {
        role_assignment_id(self.role(), &self.principal_id, &self.catalog_id)
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let id = self.id();
        vec![
            IndexEntry::new(ROLES_BY_CATALOG, scope_of(&self.catalog_id), &id),
            IndexEntry::new(ROLES_BY_PRINCIPAL, &self.principal_id, &id),
        ]
    }
}

/// Checks the (role, principal, catalog) triple of a grant or revoke.
pub fn check_role_args(
    role: i32,
    principal_id: &str,
    catalog_id: &str,
    prefix: &str,
) -> Result<AdminRole> {
    let mut check = Check::new(prefix);
    let role = AdminRole::try_from(role).unwrap_or(AdminRole::Unspecified);
    check.id("principal_id", principal_id);
    check.optional_id("catalog_id", catalog_id);
    if role == AdminRole::Unspecified {
        check.fail("role", "is required");
    } else if is_tenant_role(role) && !catalog_id.is_empty() {
        check.fail("catalog_id", "must be empty for a tenant-wide role");
    } else if !is_tenant_role(role) && catalog_id.is_empty() {
        check.fail("catalog_id", "is required for a catalog role");
    }
    check.finish()?;
    Ok(role)
}

pub fn grant_role(
    txn: &mut dyn Txn,
    mut assignment: RoleAssignment,
    actor: &Actor,
) -> Result<RoleAssignment> {
    let user: User = records::require(txn, &assignment.principal_id)?;
    if user.state == UserState::Deleted as i32 {
        return Err(deleted_user(&user.id));
    }
    if !assignment.catalog_id.is_empty() {
        records::require::<Catalog>(txn, &assignment.catalog_id)?;
    }
    let id = assignment.id();
    if records::exists::<RoleAssignment>(txn, &id)? {
        return Err(Error::AlreadyExists {
            kind: RoleAssignment::KIND,
            id,
            message: format!(
                "user {:?} already holds {}",
                assignment.principal_id,
                assignment.role().as_str_name()
            ),
        });
    }
    assignment.info = Some(record_info(actor, txn.revision(), None));
    records::save(txn, None, &assignment)?;
    audit::append(txn, actor, role_event(&assignment, Verb::Granted))?;
    Ok(assignment)
}

pub fn revoke_role(
    txn: &mut dyn Txn,
    role: AdminRole,
    principal_id: &str,
    catalog_id: &str,
    actor: &Actor,
) -> Result<()> {
    let id = role_assignment_id(role, principal_id, catalog_id);
    let assignment: RoleAssignment = records::load(txn, &id)?.ok_or_else(|| Error::NotFound {
        kind: RoleAssignment::KIND,
        id: id.clone(),
    })?;
    records::remove(txn, &assignment)?;
    audit::append(txn, actor, role_event(&assignment, Verb::Revoked))
}

/// The audit event of a role grant or revocation: in the catalog, or
/// tenant-wide for tenant roles (which have no catalog).
fn role_event(assignment: &RoleAssignment, verb: Verb) -> Draft {
    Draft::new(RoleAssignment::KIND, verb, assignment.id())
        .catalog(&assignment.catalog_id)
        .user(&assignment.principal_id)
        .detail("role", assignment.role().as_str_name())
}
