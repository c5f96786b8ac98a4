//! The Reports service: who holds what (now, soon ending, or at a past
//! moment) and request history, for auditors and catalog administrators.

use tonic::{Request, Response, Status};

use crate::domain::crud;
use crate::domain::request::{REQUESTS_BY_PACKAGE, REQUESTS_BY_TARGET};
use crate::domain::validate::Check;
use crate::error::{Error, Result};
use crate::pb::reports_server::Reports;
use crate::pb::*;
use crate::policy::admin::{ANY_CATALOG, Scope};
use crate::reports::{access, history};
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
    /// their report in its catalog.
    fn authorize_package(&self, caller: &Caller, package_id: &str) -> Result<AccessPackage> {
        self.app
            .authorize_record(caller, package_id, |p: &AccessPackage| {
                Ok(p.catalog_id.clone())
            })
    }

    /// Authorizes the caller's report on a package that may no longer exist: in its
    /// catalog, or the catalog the audit trail last recorded for it. A
    /// package the trail does not know needs the right in every catalog,
    /// so that a caller who may not read a package's catalog gets one
    /// answer whether or not it exists (or existed).
    fn authorize_past_package(&self, caller: &Caller, package_id: &str) -> Result<()> {
        let store = self.app.store();
        let catalog = match records::load::<AccessPackage>(store, package_id)? {
            Some(package) => Some(package.catalog_id),
            None => history::last_known_catalog(store, package_id)?,
        };
        let scope = catalog.as_deref().map_or(ANY_CATALOG, Scope::Catalog);
        self.app.authorize(caller, scope)
    }

    /// One page of the assignments in `held` (see [`access::held`]), with
    /// the next page's token.
    fn held_page(
        &self,
        held: &[String],
        visible: impl Fn(&str) -> bool,
        page: &PageRequest,
    ) -> Result<(Vec<AccessRow>, String)> {
        let catalogs = PackageCatalogs::new(&self.app);
        let listed = access::held(
            self.app.store(),
            held,
            |p| catalogs.of(p),
            visible,
            page.after(),
            page.size,
        )?;
        let token = page.next_token(&listed, |row: &AccessRow| row.assignment_id.clone());
        Ok((listed.items, token))
    }
}

#[tonic::async_trait]
impl Reports for ReportsApi {
    async fn package_access_report(
        &self,
        request: Request<PackageAccessReportRequest>,
    ) -> std::result::Result<Response<AccessReportResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let r = request.into_inner();
        let package = self.authorize_package(&caller, &r.access_package_id)?;
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
        let (rows, next_page_token) = self.held_page(&held, |_| true, &page)?;
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
        let visible = VisibleCatalogs::new(&self.app, &caller);
        let now = self.now();
        let held_now: Vec<String> = self
            .app
            .decisions
            .read()
            .effective_assignments(&user.id, now)
            .map(|a| a.id.clone())
            .collect();
        let (held, next_page_token) = self.held_page(&held_now, |c| visible.sees(c), &page)?;
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
            self.authorize_package(&caller, &r.access_package_id)?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&within.to_string(), &r.catalog_id, &r.access_package_id],
        )?;
        let visible = VisibleCatalogs::new(&self.app, &caller);
        let catalogs = PackageCatalogs::new(&self.app);
        let report = access::Expiring {
            now: self.now(),
            within_seconds: within,
            catalog_id: &r.catalog_id,
            access_package_id: &r.access_package_id,
        };
        let listed = access::expiring(
            self.app.store(),
            &report,
            |p| catalogs.of(p),
            |c| visible.sees(c),
            page.after(),
            page.size,
        )?;
        let next_page_token = page.next_token(&listed, access::expiring_position);
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
            self.authorize_package(&caller, value)?;
        } else {
            crud::get::<User>(self.app.store(), value)?;
        }
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.access_package_id, &r.user_id],
        )?;
        let visible = VisibleCatalogs::new(&self.app, &caller);
        let catalogs = PackageCatalogs::new(&self.app);
        let source = Source::Index {
            kind: AssignmentRequest::KIND,
            name: index,
            value,
        };
        let keep = |q: &AssignmentRequest| {
            visible.sees(&catalogs.of(&q.access_package_id).unwrap_or_default())
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(RequestHistoryReportResponse {
            requests: items,
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
        if !by_role {
            self.authorize_past_package(&caller, &r.access_package_id)?;
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
        let visible = VisibleCatalogs::new(&self.app, &caller);
        let listed = access::at_time(
            self.app.store(),
            &packages,
            at,
            |c| visible.sees(c),
            page.after(),
            page.size,
        )?;
        let next_page_token = page.next_token(&listed, access::holding_position);
        Ok(Response::new(AccessReportResponse {
            rows: listed.items.into_iter().map(access::holding_row).collect(),
            next_page_token,
        }))
    }
}
