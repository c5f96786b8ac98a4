//! Access reports: who holds what now, what ends soon, and who held what at
//! a past moment, as rows. Callers decide what may be seen (`visible`, by
//! catalog id) and where a page starts; a report returns one page.

use crate::domain::assignment::ACTIVE_BY_END;
use crate::domain::crud::Listed;
use crate::domain::request::time_key;
use crate::error::{Error, Result};
use crate::pb::{AccessRow, Assignment};
use crate::shared::clock::Moment;
use crate::store::ReadView;
use crate::store::records::{self, Record};

use super::history::{self, Holding};

/// An assignment as a report row, in catalog `catalog_id`.
pub fn row(assignment: &Assignment, catalog_id: &str) -> AccessRow {
    AccessRow {
        assignment_id: assignment.id.clone(),
        user_id: assignment.target_id.clone(),
        access_package_id: assignment.access_package_id.clone(),
        catalog_id: catalog_id.to_string(),
        assignment_policy_id: assignment.assignment_policy_id.clone(),
        request_id: assignment.request_id.clone(),
        start_time: assignment.start_time,
        end_time: assignment.end_time,
    }
}

/// A past holding as a report row.
pub fn holding_row(holding: Holding) -> AccessRow {
    AccessRow {
        assignment_id: holding.assignment_id,
        user_id: holding.user_id,
        access_package_id: holding.access_package_id,
        catalog_id: holding.catalog_id,
        assignment_policy_id: holding.assignment_policy_id,
        request_id: holding.request_id,
        start_time: Some(holding.start.timestamp()),
        end_time: holding.end.map(Moment::timestamp),
    }
}

/// Up to `size` rows of `held` (the ids, in order, of assignments the
/// decision view says give access now: the same answer as CheckAccess and
/// WhoHasAccess) after id `after`, of the catalogs `visible` accepts;
/// `catalog_of` tells a package's catalog.
pub fn held(
    view: &(impl ReadView + ?Sized),
    held: &[String],
    catalog_of: impl Fn(&str) -> Option<String>,
    visible: impl Fn(&str) -> bool,
    after: Option<&str>,
    size: usize,
) -> Result<Listed<AccessRow>> {
    let mut rows = Vec::new();
    let mut more = false;
    let after = after.unwrap_or_default();
    for id in held.iter().filter(|id| id.as_str() > after) {
        let Some(assignment) = records::load::<Assignment>(view, id)? else {
            continue;
        };
        let catalog = catalog_of(&assignment.access_package_id).unwrap_or_default();
        if !assignment.is_active() || !visible(&catalog) {
            continue;
        }
        if rows.len() == size {
            more = true;
            break;
        }
        rows.push(row(&assignment, &catalog));
    }
    Ok(Listed { items: rows, more })
}

/// What an expiring-assignments report covers.
pub struct Expiring<'a> {
    pub now: Moment,
    /// How far past `now` an end may be.
    pub within_seconds: i64,
    /// Only this catalog's rows, unless empty.
    pub catalog_id: &'a str,
    /// Only this package's rows, unless empty.
    pub access_package_id: &'a str,
}

/// The page position of an expiring-assignments row: (end time key,
/// assignment id) in the index of active assignments by end.
pub fn expiring_position(row: &AccessRow) -> String {
    let end = row.end_time.map_or(0, |t| t.seconds);
    format!("{}/{}", time_key(end), row.assignment_id)
}

/// Up to `size` rows of active assignments that end within the window,
/// soonest first, after position `after` (see [`expiring_position`]).
pub fn expiring(
    view: &(impl ReadView + ?Sized),
    report: &Expiring<'_>,
    catalog_of: impl Fn(&str) -> Option<String>,
    visible: impl Fn(&str) -> bool,
    after: Option<&str>,
    size: usize,
) -> Result<Listed<AccessRow>> {
    let now_key = time_key(report.now.seconds());
    let after = after
        .and_then(|key| key.split_once('/'))
        .unwrap_or((&now_key, ""));
    let last = time_key(report.now.seconds().saturating_add(report.within_seconds));
    let mut rows = Vec::new();
    let mut more = false;
    for entry in records::index_range(view, Assignment::KIND, ACTIVE_BY_END, Some(after), &last) {
        let (_, id) = entry.map_err(Error::from)?;
        let Some(assignment) = records::load::<Assignment>(view, &id).map_err(Error::from)? else {
            continue;
        };
        let catalog = catalog_of(&assignment.access_package_id).unwrap_or_default();
        let wanted = (report.catalog_id.is_empty() || report.catalog_id == catalog)
            && (report.access_package_id.is_empty()
                || report.access_package_id == assignment.access_package_id)
            && visible(&catalog);
        if !wanted {
            continue;
        }
        if rows.len() == size {
            more = true;
            break;
        }
        rows.push(row(&assignment, &catalog));
    }
    Ok(Listed { items: rows, more })
}

/// The page position of a past holding: its (package, assignment) pair.
pub fn holding_position(holding: &Holding) -> String {
    // \u{1} sorts below every id character, so keys sort like the
    // (package, assignment) pairs the rows come in.
    format!(
        "{}\u{1}{}",
        holding.access_package_id, holding.assignment_id
    )
}

/// Up to `size` holdings of `packages` at `at`, by package then
/// assignment, after position `after` (see [`holding_position`]), of the
/// catalogs `visible` accepts.
pub fn at_time<'p>(
    view: &(impl ReadView + ?Sized),
    packages: impl IntoIterator<Item = &'p String>,
    at: Moment,
    visible: impl Fn(&str) -> bool,
    after: Option<&str>,
    size: usize,
) -> Result<Listed<Holding>> {
    let mut rows = Vec::new();
    let mut more = false;
    'packages: for package in packages {
        for holding in history::package_holders(view, package, at)? {
            if after.is_some_and(|after| holding_position(&holding).as_str() <= after)
                || !visible(&holding.catalog_id)
            {
                continue;
            }
            if rows.len() == size {
                more = true;
                break 'packages;
            }
            rows.push(holding);
        }
    }
    Ok(Listed { items: rows, more })
}
