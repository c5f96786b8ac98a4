//! The Reports service: who holds what (now, soon ending, or at a past
//! moment) and request history, for auditors and catalog administrators.

use tonic::{Request, Response, Status};

use crate::audit::history::{self, Holding};
use crate::domain::assignment::ACTIVE_BY_END;
use crate::domain::crud::{self, Listed};
use crate::domain::request::{REQUESTS_BY_PACKAGE, REQUESTS_BY_TARGET, time_key};
use crate::domain::validate::Check;
use crate::error::{Error, Result};
use crate::pb::reports_server::Reports;
use crate::pb::*;
use crate::policy::admin::{ANY_CATALOG, Scope};
use crate::shared::clock::Moment;
use crate::store::records::{self, Record, Source};

use super::App;
use super::authz::{Caller, PackageCatalogs, VisibleCatalogs};
use super::paging::PageRequest;
use super::requests::single_filter;

/// The longest window ExpiringAssignmentsReport looks ahead.
const MAX_WINDOW_SECONDS: i64 = 3650 * 24 * 3600;

pub struct ReportsApi {
    app: App,
}

impl ReportsApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    fn now(&self) -> Moment {
        Moment::of(self.app.clock.now())
    }

    /// The package (NOT_FOUND when missing), once the caller may run
    /// `action` in its catalog.
    fn authorize_package(
        &self,
        caller: &Caller,
        action: &str,
        package_id: &str,
    ) -> Result<AccessPackage> {
        let package: AccessPackage =
            self.app
                .load_visible(caller, action, package_id, ANY_CATALOG)?;
        self.app
            .authorize(caller, action, Scope::Catalog(&package.catalog_id))?;
        Ok(package)
    }
}

fn row(assignment: &Assignment, catalog_id: &str) -> AccessRow {
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

fn holding_row(holding: Holding) -> AccessRow {
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

/// One page of `held` (the ids, in order, of assignments the decision view
/// says give access now: the same answer as CheckAccess and WhoHasAccess),
/// as rows of the catalogs `visible` accepts.
fn held_page(
    app: &App,
    visible: impl Fn(&str) -> bool,
    held: Vec<String>,
    page: &PageRequest,
) -> Result<(Vec<AccessRow>, String)> {
    let catalogs = PackageCatalogs::new(app);
    let mut rows = Vec::new();
    let mut more = false;
    let after = page.after().unwrap_or_default();
    for id in held.iter().filter(|id| id.as_str() > after) {
        let Some(assignment) = records::load::<Assignment>(app.store(), id)? else {
            continue;
        };
        let catalog = catalogs
            .of(&assignment.access_package_id)
            .unwrap_or_default();
        if !assignment.is_active() || !visible(&catalog) {
            continue;
        }
        if rows.len() == page.size {
            more = true;
            break;
        }
        rows.push(row(&assignment, &catalog));
    }
    let listed = Listed { items: rows, more };
    let token = page.next_token(&listed, |row: &AccessRow| row.assignment_id.clone());
    Ok((listed.items, token))
}

#[tonic::async_trait]
impl Reports for ReportsApi {
    async fn package_access_report(
        &self,
        request: Request<PackageAccessReportRequest>,
    ) -> std::result::Result<Response<AccessReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let package =
            self.authorize_package(&caller, "PackageAccessReport", &r.access_package_id)?;
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&package.id])?;
        let mut held: Vec<String> = self
            .app
            .decisions
            .read()
            .package_holders(&package.id, self.now())
            .into_values()
            .flatten()
            .collect();
        held.sort();
        let (rows, next_page_token) = held_page(&self.app, |_| true, held, &page)?;
        Ok(Response::new(AccessReportResponse {
            rows,
            next_page_token,
        }))
    }

    async fn user_access_report(
        &self,
        request: Request<UserAccessReportRequest>,
    ) -> std::result::Result<Response<UserAccessReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let user: User = crud::get(self.app.store(), &r.user_id)?;
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&user.id])?;
        let visible = VisibleCatalogs::new(&self.app, &caller, "UserAccessReport");
        let now = self.now();
        let held_now: Vec<String> = self
            .app
            .decisions
            .read()
            .effective_assignments(&user.id, now)
            .map(|a| a.id.clone())
            .collect();
        let (held, next_page_token) = held_page(&self.app, |c| visible.sees(c), held_now, &page)?;
        let requestable = if page.after().is_some() {
            Vec::new()
        } else {
            let state = self.app.decisions.read();
            match state.subject(&user.id) {
                Some(subject) => state
                    .requestable(&self.app.policies, &subject, &[], now.seconds())?
                    .into_iter()
                    .filter(|p| visible.sees(&p.catalog_id))
                    .collect(),
                None => Vec::new(),
            }
        };
        Ok(Response::new(UserAccessReportResponse {
            held,
            requestable,
            next_page_token,
        }))
    }

    async fn expiring_assignments_report(
        &self,
        request: Request<ExpiringAssignmentsReportRequest>,
    ) -> std::result::Result<Response<AccessReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let within = r.within.map_or(0, |d| d.seconds);
        let mut check = Check::new("");
        check.whole_seconds("within", r.within.as_ref(), 1, MAX_WINDOW_SECONDS);
        check.optional_id("catalog_id", &r.catalog_id);
        check.optional_id("access_package_id", &r.access_package_id);
        check.finish()?;
        if !r.access_package_id.is_empty() {
            self.authorize_package(&caller, "ExpiringAssignmentsReport", &r.access_package_id)?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&within.to_string(), &r.catalog_id, &r.access_package_id],
        )?;
        let now = self.now();
        let visible = VisibleCatalogs::new(&self.app, &caller, "ExpiringAssignmentsReport");
        let catalogs = PackageCatalogs::new(&self.app);
        // Page positions are (end time key, assignment id) in the index.
        let now_key = time_key(now.seconds());
        let after = page
            .after()
            .and_then(|key| key.split_once('/'))
            .unwrap_or((&now_key, ""));
        let last = time_key(now.seconds().saturating_add(within));
        let mut rows = Vec::new();
        let mut more = false;
        for entry in records::index_range(
            self.app.store(),
            Assignment::KIND,
            ACTIVE_BY_END,
            Some(after),
            &last,
        ) {
            let (_, id) = entry.map_err(Error::from)?;
            let Some(assignment) =
                records::load::<Assignment>(self.app.store(), &id).map_err(Error::from)?
            else {
                continue;
            };
            let catalog = catalogs
                .of(&assignment.access_package_id)
                .unwrap_or_default();
            let wanted = (r.catalog_id.is_empty() || r.catalog_id == catalog)
                && (r.access_package_id.is_empty()
                    || r.access_package_id == assignment.access_package_id)
                && visible.sees(&catalog);
            if !wanted {
                continue;
            }
            if rows.len() == page.size {
                more = true;
                break;
            }
            rows.push(row(&assignment, &catalog));
        }
        let listed = Listed { items: rows, more };
        let next_page_token = page.next_token(&listed, |row: &AccessRow| {
            let end = row.end_time.map_or(0, |t| t.seconds);
            format!("{}/{}", time_key(end), row.assignment_id)
        });
        Ok(Response::new(AccessReportResponse {
            rows: listed.items,
            next_page_token,
        }))
    }

    async fn request_history_report(
        &self,
        request: Request<RequestHistoryReportRequest>,
    ) -> std::result::Result<Response<RequestHistoryReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let mut check = Check::new("");
        check.optional_id("access_package_id", &r.access_package_id);
        check.optional_id("user_id", &r.user_id);
        check.finish()?;
        let (index, value) = single_filter(&[
            (
                "access_package_id",
                REQUESTS_BY_PACKAGE,
                &r.access_package_id,
            ),
            ("user_id", REQUESTS_BY_TARGET, &r.user_id),
        ])?
        .ok_or_else(|| Error::invalid("access_package_id", "or user_id is required"))?;
        if index == REQUESTS_BY_PACKAGE {
            self.authorize_package(&caller, "RequestHistoryReport", value)?;
        } else {
            crud::get::<User>(self.app.store(), value)?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.access_package_id, &r.user_id],
        )?;
        let visible = VisibleCatalogs::new(&self.app, &caller, "RequestHistoryReport");
        let catalogs = PackageCatalogs::new(&self.app);
        let source = Source::Index {
            kind: AssignmentRequest::KIND,
            name: index,
            value,
        };
        let keep = |q: &AssignmentRequest| {
            visible.sees(&catalogs.of(&q.access_package_id).unwrap_or_default())
        };
        let listed = crud::list(self.app.store(), source, keep, page.size, page.after())?;
        let next_page_token = page.next_token(&listed, |q: &AssignmentRequest| q.id.clone());
        Ok(Response::new(RequestHistoryReportResponse {
            requests: listed.items,
            next_page_token,
        }))
    }

    async fn access_at_time_report(
        &self,
        request: Request<AccessAtTimeReportRequest>,
    ) -> std::result::Result<Response<AccessReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let now = self.now();
        let at = r.at.map(Moment::from_timestamp);
        let by_role = !r.resource_id.is_empty() || !r.role_id.is_empty();
        let mut check = Check::new("");
        match &r.at {
            None => check.fail("at", "is required"),
            Some(at) => {
                if check.timestamp("at", at) {
                    check.require(
                        Moment::from_timestamp(*at) <= now,
                        "at",
                        "must not be in the future",
                    );
                }
            }
        }
        check.require(
            by_role == r.access_package_id.is_empty(),
            "access_package_id",
            "give either access_package_id or resource_id with role_id",
        );
        if by_role {
            check.id("resource_id", &r.resource_id);
            check.id("role_id", &r.role_id);
        } else {
            check.id("access_package_id", &r.access_package_id);
        }
        check.finish()?;
        let at = at.unwrap_or_default();
        let exists = records::exists::<AccessPackage>(self.app.store(), &r.access_package_id)
            .map_err(Error::from)?;
        if !by_role && exists {
            self.authorize_package(&caller, "AccessAtTimeReport", &r.access_package_id)?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[
                &at.nanos().to_string(),
                &r.access_package_id,
                &r.resource_id,
                &r.role_id,
            ],
        )?;
        let packages = if by_role {
            history::packages_with_role(self.app.store(), &r.resource_id, &r.role_id, at)?
        } else {
            [r.access_package_id.clone()].into()
        };
        let visible = VisibleCatalogs::new(&self.app, &caller, "AccessAtTimeReport");
        // \u{1} sorts below every id character, so keys sort like the
        // (package, assignment) pairs the rows come in.
        let key = |h: &Holding| format!("{}\u{1}{}", h.access_package_id, h.assignment_id);
        let mut rows = Vec::new();
        let mut more = false;
        'packages: for package in &packages {
            for holding in history::package_holders(self.app.store(), package, at)? {
                if page
                    .after()
                    .is_some_and(|after| key(&holding).as_str() <= after)
                    || !visible.sees(&holding.catalog_id)
                {
                    continue;
                }
                if rows.len() == page.size {
                    more = true;
                    break 'packages;
                }
                rows.push(holding);
            }
        }
        let listed = Listed { items: rows, more };
        let next_page_token = page.next_token(&listed, key);
        Ok(Response::new(AccessReportResponse {
            rows: listed.items.into_iter().map(holding_row).collect(),
            next_page_token,
        }))
    }
}
