//! Access packages: bundles of resource roles from one catalog, with
//! separation-of-duties lists.

use std::collections::{BTreeSet, HashSet};

use crate::audit::{Draft, history};
use crate::error::{Error, Result};
use crate::pb::{AccessPackage, Catalog, Group, Resource};
use crate::store::ReadView;
use crate::store::records::{self, IndexEntry, Record, Reference};

use super::catalog::{RESOURCE_ROLE_KIND, resource_role_key};
use super::entity::Entity;
use super::validate::{Check, MAX_DESCRIPTION, MAX_LIST, MAX_NAME};
use super::{mutable_fields, tracked_fields};

pub const PACKAGES_BY_CATALOG: &str = "catalog";
pub const PACKAGES_BY_RESOURCE: &str = "resource";

impl AccessPackage {
    fn resource_ids(&self) -> BTreeSet<&str> {
        self.resource_roles
            .iter()
            .map(|r| r.resource_id.as_str())
            .collect()
    }
}

/// The package's resource roles as audit details name them.
fn role_keys(package: &AccessPackage) -> Vec<String> {
    package
        .resource_roles
        .iter()
        .map(|r| history::role_key(&r.resource_id, &r.role_id))
        .collect()
}

impl Record for AccessPackage {
    const KIND: &'static str = "access_package";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let mut entries = vec![IndexEntry::new(
            PACKAGES_BY_CATALOG,
            &self.catalog_id,
            &self.id,
        )];
        entries.extend(
            self.resource_ids()
                .into_iter()
                .map(|resource| IndexEntry::new(PACKAGES_BY_RESOURCE, resource, &self.id)),
        );
        entries
    }

    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![Reference::new(Catalog::KIND, &self.catalog_id)];
        refs.extend(
            self.resource_ids()
                .into_iter()
                .map(|r| Reference::new(Resource::KIND, r)),
        );
        refs.extend(self.resource_roles.iter().map(|r| {
            Reference::new(
                RESOURCE_ROLE_KIND,
                resource_role_key(&r.resource_id, &r.role_id),
            )
        }));
        refs.extend(
            self.incompatible_package_ids
                .iter()
                .map(|p| Reference::new(AccessPackage::KIND, p)),
        );
        refs.extend(
            self.incompatible_group_ids
                .iter()
                .map(|g| Reference::new(Group::KIND, g)),
        );
        refs
    }
}

impl Entity for AccessPackage {
    const FIELD: &'static str = "access_package";
    tracked_fields!();

    /// Package events carry the resource roles before and after, which is
    /// what reconstructing past grants needs (see `audit::history`).
    fn audit(&self, _: &dyn ReadView, draft: Draft, previous: Option<&Self>) -> Result<Draft> {
        let draft = draft
            .catalog(&self.catalog_id)
            .package(&self.id)
            .detail(history::keys::ROLES, role_keys(self));
        Ok(match previous {
            Some(previous) => draft.detail(history::keys::PREVIOUS_ROLES, role_keys(previous)),
            None => draft,
        })
    }

    mutable_fields!(
        display_name,
        description,
        hidden,
        resource_roles,
        incompatible_package_ids,
        incompatible_group_ids,
    );

    fn validate(&self, check: &mut Check) {
        check.id("catalog_id", &self.catalog_id);
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        if self.resource_roles.len() > MAX_LIST {
            check.fail(
                "resource_roles",
                format!("must have at most {MAX_LIST} entries"),
            );
        }
        let mut seen = HashSet::new();
        for (i, role) in self.resource_roles.iter().enumerate() {
            check.id(
                &format!("resource_roles[{i}].resource_id"),
                &role.resource_id,
            );
            check.id(&format!("resource_roles[{i}].role_id"), &role.role_id);
            if !seen.insert((&role.resource_id, &role.role_id)) {
                check.fail(&format!("resource_roles[{i}]"), "is listed twice");
            }
        }
        check.id_list(
            "incompatible_package_ids",
            &self.incompatible_package_ids,
            MAX_LIST,
        );
        check.id_list(
            "incompatible_group_ids",
            &self.incompatible_group_ids,
            MAX_LIST,
        );
        if let Some(i) = self
            .incompatible_package_ids
            .iter()
            .position(|p| *p == self.id)
        {
            check.fail(
                &format!("incompatible_package_ids[{i}]"),
                "a package cannot be incompatible with itself",
            );
        }
    }

    fn check_against(&self, view: &dyn ReadView, _old: Option<&Self>) -> Result<()> {
        records::require::<Catalog>(view, &self.catalog_id)?;
        let mut check = Check::new(Self::FIELD);
        for (i, role) in self.resource_roles.iter().enumerate() {
            let resource: Resource = records::require(view, &role.resource_id)?;
            if resource.catalog_id != self.catalog_id {
                check.fail(
                    &format!("resource_roles[{i}].resource_id"),
                    format!(
                        "resource {:?} is in catalog {:?}, not in the package's catalog {:?}",
                        resource.id, resource.catalog_id, self.catalog_id
                    ),
                );
            } else if !resource.roles.iter().any(|r| r.id == role.role_id) {
                return Err(Error::not_found(
                    RESOURCE_ROLE_KIND,
                    resource_role_key(&role.resource_id, &role.role_id),
                ));
            }
        }
        check.finish()?;
        for package in &self.incompatible_package_ids {
            records::require::<AccessPackage>(view, package)?;
        }
        for group in &self.incompatible_group_ids {
            records::require::<Group>(view, group)?;
        }
        Ok(())
    }
}
