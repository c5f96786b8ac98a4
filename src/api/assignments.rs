//! The Assignments service.

use tonic::{Request, Response, Status};

use crate::domain::assignment::{ASSIGNMENTS_BY_PACKAGE, ASSIGNMENTS_BY_TARGET};
use crate::domain::validate::Check;
use crate::error::Error;
use crate::pb::assignments_server::Assignments;
use crate::pb::*;
use crate::shared::clock::Moment;
use crate::store::records::{Record, Source};

use super::App;
use super::authz::RecordFilter;
use super::paging::PageRequest;
use super::requests::single_filter;
use crate::policy::admin::{ANY_RECORD, Scope};

pub struct AssignmentsApi {
    app: App,
}

impl AssignmentsApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl Assignments for AssignmentsApi {
    async fn get_assignment(
        &self,
        request: Request<GetAssignmentRequest>,
    ) -> Result<Response<Assignment>, Status> {
        let caller = self.app.caller(&request)?;
        let found: Assignment =
            self.app
                .load_visible(&caller, &request.get_ref().id, ANY_RECORD)?;
        let catalog = self.app.package_catalog(&found.access_package_id)?;
        let scope = Scope::Record {
            catalog: &catalog,
            target: &found.target_id,
            requestor: &found.target_id,
        };
        self.app.authorize(&caller, scope)?;
        Ok(Response::new(found))
    }

    async fn list_assignments(
        &self,
        request: Request<ListAssignmentsRequest>,
    ) -> Result<Response<ListAssignmentsResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = RecordFilter::new(&self.app, &caller);
        let r = request.into_inner();
        let filter = single_filter(&[
            ("target_id", ASSIGNMENTS_BY_TARGET, &r.target_id),
            (
                "access_package_id",
                ASSIGNMENTS_BY_PACKAGE,
                &r.access_package_id,
            ),
        ])?;
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[&r.target_id, &r.access_package_id, &r.state.to_string()],
        )?;
        let source = match filter {
            Some((name, value)) => Source::Index {
                kind: Assignment::KIND,
                name,
                value,
            },
            None => Source::All,
        };
        let keep = |a: &Assignment| {
            (r.state == 0 || a.state == r.state)
                && visible.sees(&a.access_package_id, &a.target_id, &a.target_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListAssignmentsResponse {
            assignments: items,
            next_page_token,
        }))
    }

    async fn list_user_grants(
        &self,
        request: Request<ListUserGrantsRequest>,
    ) -> Result<Response<ListUserGrantsResponse>, Status> {
        let user_id = &request.get_ref().user_id;
        let mut check = Check::new("");
        check.id("user_id", user_id);
        check.finish()?;
        self.app.authorized(&request, Scope::User(user_id))?;
        // The decision view's answer, so that this agrees with CheckAccess
        // and ListEffectiveGrants (ends passed, blocked users).
        let state = self.app.decisions.read();
        if !state.users.contains_key(user_id) {
            return Err(Error::not_found(User::KIND, user_id).into());
        }
        let grants = state
            .effective_grants(user_id, Moment::of(self.app.clock.now()))
            .into_iter()
            .map(|((resource_id, role_id), sources)| Grant {
                resource_id,
                role_id,
                assignment_ids: sources.into_iter().map(|s| s.assignment_id).collect(),
            })
            .collect();
        Ok(Response::new(ListUserGrantsResponse { grants }))
    }
}
