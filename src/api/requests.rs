//! The AssignmentRequests service.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use crate::domain::crud;
use crate::domain::request::{REQUESTS_BY_PACKAGE, REQUESTS_BY_REQUESTOR, REQUESTS_BY_TARGET};
use crate::error::Error;
use crate::pb::assignment_requests_server::AssignmentRequests;
use crate::pb::*;
use crate::shared::actor::Actor;
use crate::shared::clock::Moment;
use crate::store::records::{Record, Source};
use crate::workflow::{approval, requests};

use super::App;
use super::authz::{Caller, RecordFilter};
use super::paging::PageRequest;
use super::rpc::Rpc;
use crate::policy::admin::{ANY_RECORD, Scope};
use crate::store::records;

/// The RPC whose right makes a request visible.
const READ: Rpc = Rpc::GetAssignmentRequest;

pub struct AssignmentRequestsApi {
    app: App,
}

impl AssignmentRequestsApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    async fn decide(
        &self,
        request: Request<DecideAssignmentRequestRequest>,
        approve: bool,
    ) -> Result<Response<AssignmentRequest>, Status> {
        let actor = self.app.actor_of(&request)?;
        let rpc = if approve {
            Rpc::ApproveAssignmentRequest
        } else {
            Rpc::DenyAssignmentRequest
        };
        self.check_decider(&request, &actor, rpc)?;
        let r = request.into_inner();
        let input = approval::DecisionInput {
            id: r.id,
            stage: r.stage,
            approve,
            justification: r.justification,
        };
        let decided =
            approval::decide(self.app.store(), self.app.policies.clone(), actor, input).await?;
        Ok(Response::new(decided))
    }

    /// Before anything about the request is told, that the caller may hear
    /// it: its approvers (of any stage so far) and whoever may read it go on
    /// to the decision, which may then say that the request is no longer
    /// pending; anyone else is PERMISSION_DENIED whether or not the request
    /// exists and whatever state it is in. Only a caller who may read every
    /// request learns that an id does not exist. Approvers, the usual
    /// callers, pass without their roles being loaded.
    fn check_decider(
        &self,
        request: &Request<DecideAssignmentRequestRequest>,
        actor: &Actor,
        rpc: Rpc,
    ) -> Result<(), Status> {
        let store = self.app.store();
        let known = match crud::get::<AssignmentRequest>(store, &request.get_ref().id) {
            Ok(found) if approval::is_approver_of(store, &found, &actor.id)? => true,
            Ok(found) => {
                let reader = self.app.caller_of(request, READ)?;
                RecordFilter::new(&self.app, &reader).sees(
                    &found.access_package_id,
                    &found.target_id,
                    &found.requestor_id,
                )
            }
            Err(missing @ Error::NotFound { .. }) => {
                let reader = self.app.caller_of(request, READ)?;
                if self.app.permits(&reader, ANY_RECORD)? {
                    return Err(missing.into());
                }
                false
            }
            Err(other) => return Err(other.into()),
        };
        if known {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            message: format!("{:?} may not call {} here", actor.id, rpc.name()),
            policy_ids: Vec::new(),
        }
        .into())
    }

    /// Authorizes the caller on a stored request.
    fn authorize_on(&self, caller: &Caller, request: &AssignmentRequest) -> Result<(), Error> {
        let catalog = self.app.package_catalog(&request.access_package_id)?;
        let scope = Scope::Record {
            catalog: &catalog,
            target: &request.target_id,
            requestor: &request.requestor_id,
        };
        self.app.authorize(caller, scope)
    }

    /// Who may ask for a change: anyone for their own access (USER_*),
    /// assignment managers and up for others' (ADMIN_*). An ADMIN_* request
    /// naming a policy, or any change naming an assignment, that does not
    /// exist is authorized as one on a record of nobody's in no catalog:
    /// only who may change every record learns that it does not exist,
    /// everyone else gets the answer they get for a record of someone else.
    /// A USER_ADD names its policy the way a link to it does, and one that
    /// does not exist is left to the workflow (NOT_FOUND).
    fn authorize_create(&self, caller: &Caller, input: &AssignmentRequest) -> Result<(), Error> {
        let on_behalf = matches!(
            input.r#type(),
            RequestType::AdminAdd | RequestType::AdminUpdate | RequestType::AdminRemove
        );
        let store = self.app.store();
        let missing = || self.app.authorize_with(caller, ANY_RECORD, Some(on_behalf));
        let (package, target) = if input.is_add() {
            let Some(policy) =
                records::load::<AssignmentPolicy>(store, &input.assignment_policy_id)?
            else {
                return if on_behalf { missing() } else { Ok(()) };
            };
            let target = if on_behalf || !input.target_id.is_empty() {
                input.target_id.clone()
            } else {
                caller.actor.id.clone()
            };
            (policy.access_package_id, target)
        } else {
            let Some(assignment) = records::load::<Assignment>(store, &input.assignment_id)? else {
                return missing();
            };
            (assignment.access_package_id, assignment.target_id)
        };
        let catalog = self.app.package_catalog(&package)?;
        let scope = Scope::Record {
            catalog: &catalog,
            target: &target,
            requestor: &caller.actor.id,
        };
        self.app.authorize_with(caller, scope, Some(on_behalf))
    }
}

/// The one index a listing filters by: (field, index, value).
pub fn single_filter<'a>(
    filters: &[(&'static str, &'static str, &'a str)],
) -> Result<Option<(&'static str, &'a str)>, Error> {
    let set: Vec<_> = filters.iter().filter(|(_, _, v)| !v.is_empty()).collect();
    if set.len() > 1 {
        let names: Vec<_> = filters.iter().map(|(f, _, _)| *f).collect();
        return Err(Error::invalid(
            set[1].0,
            format!("at most one of {} may be set", names.join(", ")),
        ));
    }
    Ok(set.first().map(|(_, index, value)| (*index, *value)))
}

#[tonic::async_trait]
impl AssignmentRequests for AssignmentRequestsApi {
    async fn create_assignment_request(
        &self,
        request: Request<CreateAssignmentRequestRequest>,
    ) -> Result<Response<AssignmentRequest>, Status> {
        let caller = self.app.caller(&request)?;
        if let Some(input) = &request.get_ref().assignment_request {
            // Malformed input is refused before authorization looks up
            // the ids it names.
            requests::check_shape(input, caller.actor.now)?;
            self.authorize_create(&caller, input)?;
        }
        let actor = caller.actor;
        let r = request.into_inner();
        let created = requests::create(
            self.app.store(),
            self.app.policies.clone(),
            actor,
            r.assignment_request,
            r.request_id,
        )
        .await?;
        Ok(Response::new(created))
    }

    async fn get_assignment_request(
        &self,
        request: Request<GetAssignmentRequestRequest>,
    ) -> Result<Response<AssignmentRequest>, Status> {
        let caller = self.app.caller(&request)?;
        let found: AssignmentRequest =
            self.app
                .load_visible(&caller, &request.get_ref().id, ANY_RECORD)?;
        self.authorize_on(&caller, &found)?;
        Ok(Response::new(found))
    }

    async fn list_assignment_requests(
        &self,
        request: Request<ListAssignmentRequestsRequest>,
    ) -> Result<Response<ListAssignmentRequestsResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let visible = RecordFilter::new(&self.app, &caller);
        let r = request.into_inner();
        let filter = single_filter(&[
            ("target_id", REQUESTS_BY_TARGET, &r.target_id),
            ("requestor_id", REQUESTS_BY_REQUESTOR, &r.requestor_id),
            (
                "access_package_id",
                REQUESTS_BY_PACKAGE,
                &r.access_package_id,
            ),
        ])?;
        let page = PageRequest::parse(
            r.page_size,
            &r.page_token,
            &[
                &r.target_id,
                &r.requestor_id,
                &r.access_package_id,
                &r.state.to_string(),
            ],
        )?;
        let source = match filter {
            Some((name, value)) => Source::Index {
                kind: AssignmentRequest::KIND,
                name,
                value,
            },
            None => Source::All,
        };
        let keep = |q: &AssignmentRequest| {
            (r.state == 0 || q.state == r.state)
                && visible.sees(&q.access_package_id, &q.target_id, &q.requestor_id)
        };
        let (items, next_page_token) = page.list(self.app.store(), source, keep)?;
        Ok(Response::new(ListAssignmentRequestsResponse {
            assignment_requests: items,
            next_page_token,
        }))
    }

    async fn approve_assignment_request(
        &self,
        request: Request<DecideAssignmentRequestRequest>,
    ) -> Result<Response<AssignmentRequest>, Status> {
        self.decide(request, true).await
    }

    async fn deny_assignment_request(
        &self,
        request: Request<DecideAssignmentRequestRequest>,
    ) -> Result<Response<AssignmentRequest>, Status> {
        self.decide(request, false).await
    }

    async fn list_pending_approvals(
        &self,
        request: Request<ListPendingApprovalsRequest>,
    ) -> Result<Response<ListPendingApprovalsResponse>, Status> {
        let actor = self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let page = PageRequest::parse(r.page_size, &r.page_token, &[&actor.id])?;
        let pending = approval::pending_for(self.app.store(), &actor.id)?;
        let after = page.after().unwrap_or_default().to_string();
        let mut rest = pending
            .into_iter()
            .filter(|q| q.id.as_str() > after.as_str());
        let items: Vec<_> = rest.by_ref().take(page.size).collect();
        let listed = crud::Listed {
            more: rest.next().is_some(),
            items,
        };
        let next_page_token = page.next_token(&listed, |q: &AssignmentRequest| q.id.clone());
        let now = Moment::of(self.app.clock.now());
        let mut refused_if_approved = HashMap::new();
        for pending in &listed.items {
            let refusal = approval::refusal_if_approved_now(
                &self.app.policies,
                self.app.store(),
                pending,
                now,
            )?;
            if let Some(refusal) = refusal {
                refused_if_approved.insert(
                    pending.id.clone(),
                    DeliveryRefusal {
                        reason: refusal.reason,
                        policy_ids: refusal.policy_ids,
                    },
                );
            }
        }
        Ok(Response::new(ListPendingApprovalsResponse {
            assignment_requests: listed.items,
            next_page_token,
            refused_if_approved,
        }))
    }

    async fn cancel_assignment_request(
        &self,
        request: Request<CancelAssignmentRequestRequest>,
    ) -> Result<Response<AssignmentRequest>, Status> {
        let caller = self.app.caller(&request)?;
        let found: AssignmentRequest =
            self.app
                .load_visible(&caller, &request.get_ref().id, ANY_RECORD)?;
        self.authorize_on(&caller, &found)?;
        Ok(Response::new(
            requests::cancel(self.app.store(), caller.actor, found.id).await?,
        ))
    }
}
