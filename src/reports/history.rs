//! Who held what at a past moment, reconstructed from the audit trail.
//!
//! The answer starts from today's assignments and package contents and
//! undoes, newest first, every recorded change made after the moment:
//! deliveries are taken back, extensions get their previous end, removals
//! and expiries put the assignment back. It needs only the events after
//! the moment, so pruning older events never changes an answer for a
//! moment after the newest pruned event.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::event::{list_detail, text_detail, time_detail};
use crate::audit::history::{
    DELIVERED, EXPIRED, PACKAGE_CREATED, PACKAGE_DELETED, PACKAGE_UPDATED, REMOVED, keys, role_key,
};
use crate::audit::query::{self, Filter, Order};
use crate::audit::{Action, chain};
use crate::domain::assignment::ASSIGNMENTS_BY_PACKAGE;
use crate::domain::directory::targets;
use crate::domain::package::PACKAGES_BY_RESOURCE;
use crate::error::{Error, Result};
use crate::pb::{AccessPackage, Assignment, AuditEvent};
use crate::shared::clock::Moment;
use crate::store::ReadView;
use crate::store::records::{self, Record};

/// An assignment as it stood at the moment asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub access_package_id: String,
    pub user_id: String,
    pub assignment_id: String,
    pub catalog_id: String,
    pub assignment_policy_id: String,
    pub request_id: String,
    pub start: Moment,
    pub end: Option<Moment>,
}

impl Holding {
    fn from_assignment(assignment: &Assignment, catalog_id: &str) -> Self {
        Self {
            access_package_id: assignment.access_package_id.clone(),
            user_id: assignment.target_id.clone(),
            assignment_id: assignment.id.clone(),
            catalog_id: catalog_id.to_string(),
            assignment_policy_id: assignment.assignment_policy_id.clone(),
            request_id: assignment.request_id.clone(),
            start: assignment
                .start_time
                .map(Moment::from_timestamp)
                .unwrap_or_default(),
            end: assignment.end_time.map(Moment::from_timestamp),
        }
    }

    fn from_event(event: &AuditEvent) -> Self {
        Self {
            access_package_id: event.access_package_id.clone(),
            user_id: event.user_id.clone(),
            assignment_id: text_detail(event, keys::ASSIGNMENT).to_string(),
            catalog_id: event.catalog_id.clone(),
            assignment_policy_id: text_detail(event, keys::POLICY).to_string(),
            request_id: text_detail(event, keys::REQUEST).to_string(),
            start: time_detail(event, keys::START).unwrap_or_default(),
            end: time_detail(event, keys::END),
        }
    }

    fn covers(&self, at: Moment) -> bool {
        self.start <= at && self.end.is_none_or(|end| at < end)
    }
}

fn time_of(event: &AuditEvent) -> Moment {
    event.time.map(Moment::from_timestamp).unwrap_or_default()
}

/// Events matching `filter` after `at`, newest first.
fn events_after<'v>(
    view: &'v (impl ReadView + ?Sized),
    filter: &'v Filter,
    at: Moment,
) -> Result<impl Iterator<Item = Result<AuditEvent>> + 'v> {
    Ok(query::events(view, filter, Order::NewestFirst, None)?
        .take_while(move |event| event.as_ref().map_or(true, |e| time_of(e) > at)))
}

/// OUT_OF_RANGE when events after `at` may have been pruned.
fn check_retained(view: &(impl ReadView + ?Sized), at: Moment) -> Result<()> {
    let pruned_until = chain::anchor(view)?.pruned_until();
    if at < pruned_until {
        return Err(Error::OutOfRange(format!(
            "history before {} was pruned by audit retention",
            pruned_until.timestamp()
        )));
    }
    Ok(())
}

/// Who held `package_id` at `at`, by assignment id.
pub fn package_holders(
    view: &(impl ReadView + ?Sized),
    package_id: &str,
    at: Moment,
) -> Result<Vec<Holding>> {
    check_retained(view, at)?;
    let catalog = records::load::<AccessPackage>(view, package_id)?
        .map(|p| p.catalog_id)
        .unwrap_or_default();
    let mut holdings: BTreeMap<String, Holding> = BTreeMap::new();
    for id in targets(view, Assignment::KIND, ASSIGNMENTS_BY_PACKAGE, package_id)? {
        if let Some(assignment) = records::load::<Assignment>(view, &id)?
            && assignment.is_active()
        {
            holdings.insert(id, Holding::from_assignment(&assignment, &catalog));
        }
    }
    let filter = Filter {
        access_package_id: package_id.to_string(),
        ..Filter::default()
    };
    for event in events_after(view, &filter, at)? {
        undo_assignment_change(&mut holdings, &event?);
    }
    // By assignment id: the map's order.
    Ok(holdings.into_values().filter(|h| h.covers(at)).collect())
}

/// The catalog the retained trail last recorded for package `package_id`
/// (one that may no longer exist), if any event about it is retained.
pub fn last_known_catalog(
    view: &(impl ReadView + ?Sized),
    package_id: &str,
) -> Result<Option<String>> {
    let filter = Filter {
        access_package_id: package_id.to_string(),
        ..Filter::default()
    };
    for event in query::events(view, &filter, Order::NewestFirst, None)? {
        let event = event?;
        if !event.catalog_id.is_empty() {
            return Ok(Some(event.catalog_id));
        }
    }
    Ok(None)
}

/// Takes one recorded change back.
fn undo_assignment_change(holdings: &mut BTreeMap<String, Holding>, event: &AuditEvent) {
    let assignment = text_detail(event, keys::ASSIGNMENT);
    let Some(action) = Action::parse(&event.action) else {
        return;
    };
    match action {
        DELIVERED if text_detail(event, keys::REQUEST_TYPE).ends_with("_ADD") => {
            holdings.remove(assignment);
        }
        DELIVERED => {
            if let Some(holding) = holdings.get_mut(assignment) {
                holding.end = time_detail(event, keys::PREVIOUS_END);
            }
        }
        REMOVED | EXPIRED => {
            holdings.insert(assignment.to_string(), Holding::from_event(event));
        }
        _ => {}
    }
}

/// The packages that carried resource role (`resource_id`, `role_id`) at
/// `at`.
pub fn packages_with_role(
    view: &(impl ReadView + ?Sized),
    resource_id: &str,
    role_id: &str,
    at: Moment,
) -> Result<BTreeSet<String>> {
    check_retained(view, at)?;
    let wanted = role_key(resource_id, role_id);
    let mut packages = BTreeSet::new();
    for id in targets(view, AccessPackage::KIND, PACKAGES_BY_RESOURCE, resource_id)? {
        if let Some(package) = records::load::<AccessPackage>(view, &id)?
            && package
                .resource_roles
                .iter()
                .any(|r| r.resource_id == resource_id && r.role_id == role_id)
        {
            packages.insert(id);
        }
    }
    let filter = Filter {
        target_type: AccessPackage::KIND.to_string(),
        ..Filter::default()
    };
    for event in events_after(view, &filter, at)? {
        let event = event?;
        let roles_before = match Action::parse(&event.action) {
            Some(PACKAGE_CREATED) => Vec::new(),
            Some(PACKAGE_UPDATED) => list_detail(&event, keys::PREVIOUS_ROLES),
            Some(PACKAGE_DELETED) => list_detail(&event, keys::ROLES),
            _ => continue,
        };
        if roles_before.contains(&wanted) {
            packages.insert(event.target_id.clone());
        } else {
            packages.remove(&event.target_id);
        }
    }
    Ok(packages)
}
