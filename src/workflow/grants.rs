//! Grants: the (resource, role) pairs a user holds, derived from their
//! active assignments at read time. Deriving them (rather than adding and
//! removing grants as assignments come and go) means an assignment that
//! ends can never take away a grant another active assignment still gives.

use std::collections::BTreeMap;

use crate::domain::assignment::ASSIGNMENTS_BY_TARGET;
use crate::domain::directory::targets;
use crate::error::Result;
use crate::pb::{AccessPackage, Assignment, Grant};
use crate::store::ReadView;
use crate::store::records::{self, Record};

pub fn user_grants(view: &(impl ReadView + ?Sized), user_id: &str) -> Result<Vec<Grant>> {
    let mut grants: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for id in targets(view, Assignment::KIND, ASSIGNMENTS_BY_TARGET, user_id)? {
        let Some(assignment) = records::load::<Assignment>(view, &id)? else {
            continue;
        };
        if !assignment.is_active() {
            continue;
        }
        let Some(package) = records::load::<AccessPackage>(view, &assignment.access_package_id)?
        else {
            continue;
        };
        for role in package.resource_roles {
            grants
                .entry((role.resource_id, role.role_id))
                .or_default()
                .push(assignment.id.clone());
        }
    }
    Ok(grants
        .into_iter()
        .map(|((resource_id, role_id), assignment_ids)| Grant {
            resource_id,
            role_id,
            assignment_ids,
        })
        .collect())
}
