//! The Decisions service: the hot path other services call. Everything is
//! answered from the in-memory decision state, at a revision no older than
//! the caller's consistency token.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::decision::events::RevisionEvents;
use crate::decision::state::State;
use crate::domain::validate::Check;
use crate::drain::Drain;
use crate::error::Error;
use crate::pb::decisions_server::Decisions;
use crate::pb::grant_event::Kind;
use crate::pb::*;
use crate::policy::admin::Scope;
use crate::policy::entities::Subject;
use crate::shared::clock::Moment;
use crate::store::Revision;

use super::App;
use super::paging::PageRequest;
use super::rpc::RpcRequest;

/// The most checks one BatchCheckAccess takes.
pub const MAX_BATCH_CHECKS: usize = 1000;
/// How long a read waits for the state to reach its consistency token.
const CONSISTENCY_WAIT: Duration = Duration::from_secs(1);

pub struct DecisionsApi {
    app: App,
    checkpoint_every: Duration,
    /// Ends WatchGrants streams when the server stops.
    drain: Drain,
}

impl DecisionsApi {
    pub fn new(app: App, checkpoint_every: Duration, drain: Drain) -> Self {
        Self {
            app,
            checkpoint_every,
            drain,
        }
    }

    /// Waits until the state reflects `min_revision`; ABORTED if it does not
    /// in time.
    async fn consistent(&self, min_revision: u64) -> Result<(), Status> {
        if self.app.decisions.revision() >= min_revision
            || self
                .app
                .decisions
                .wait_for(min_revision, CONSISTENCY_WAIT)
                .await
        {
            return Ok(());
        }
        Err(Status::aborted(format!(
            "revision {min_revision} is not yet visible here (at {}); retry",
            self.app.decisions.revision()
        )))
    }

    fn now(&self) -> Moment {
        Moment::of(self.app.clock.now())
    }

    /// Checks the id of the user a question is about, and that the caller
    /// may ask it.
    fn about_user<T: RpcRequest>(&self, request: &Request<T>, user_id: &str) -> Result<(), Status> {
        let mut check = Check::new("");
        check.id("user_id", user_id);
        check.finish()?;
        self.app.authorized(request, Scope::User(user_id))?;
        Ok(())
    }
}

fn subject_of(state: &State, user_id: &str) -> Result<Subject, Status> {
    state
        .subject(user_id)
        .ok_or_else(|| Error::not_found("user", user_id).into())
}

fn check_one(state: &State, check: &AccessCheck, now: Moment) -> AccessCheckResult {
    let assignment_ids = state.check(&check.user_id, &check.resource_id, &check.role_id, now);
    AccessCheckResult {
        allowed: !assignment_ids.is_empty(),
        assignment_ids,
    }
}

fn watch_message(events: RevisionEvents) -> WatchGrantsResponse {
    WatchGrantsResponse {
        revision: events.revision,
        events: events
            .changes
            .into_iter()
            .map(|c| GrantEvent {
                kind: if c.added { Kind::Added } else { Kind::Removed } as i32,
                user_id: c.user,
                resource_id: c.resource,
                role_id: c.role,
            })
            .collect(),
        checkpoint: false,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchGrantsResponse, Status>> + Send>>;

type WatchSender = tokio::sync::mpsc::Sender<Result<WatchGrantsResponse, Status>>;

/// Sends the events already queued for a watcher (every event up to the
/// applied revision is); returns the revision delivered, or None when the
/// watcher has gone.
async fn send_queued(
    live: &mut tokio::sync::broadcast::Receiver<RevisionEvents>,
    sender: &WatchSender,
    mut delivered: Revision,
) -> Option<Revision> {
    while let Ok(events) = live.try_recv() {
        if events.revision > delivered {
            delivered = events.revision;
            sender.send(Ok(watch_message(events))).await.ok()?;
        }
    }
    Some(delivered)
}

#[tonic::async_trait]
impl Decisions for DecisionsApi {
    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> Result<Response<CheckAccessResponse>, Status> {
        let r = request.get_ref();
        self.about_user(&request, &r.user_id)?;
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let assignment_ids = state.check(&r.user_id, &r.resource_id, &r.role_id, self.now());
        Ok(Response::new(CheckAccessResponse {
            allowed: !assignment_ids.is_empty(),
            assignment_ids,
            revision,
        }))
    }

    async fn batch_check_access(
        &self,
        request: Request<BatchCheckAccessRequest>,
    ) -> Result<Response<BatchCheckAccessResponse>, Status> {
        let count = request.get_ref().checks.len();
        if count == 0 || count > MAX_BATCH_CHECKS {
            return Err(Error::invalid(
                "checks",
                format!("must have 1-{MAX_BATCH_CHECKS} entries"),
            )
            .into());
        }
        self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let now = self.now();
        Ok(Response::new(BatchCheckAccessResponse {
            results: r.checks.iter().map(|c| check_one(&state, c, now)).collect(),
            revision,
        }))
    }

    async fn list_requestable_packages(
        &self,
        request: Request<ListRequestablePackagesRequest>,
    ) -> Result<Response<ListRequestablePackagesResponse>, Status> {
        let r = request.get_ref();
        self.about_user(&request, &r.user_id)?;
        let mut check = Check::new("");
        check.id_list("access_package_ids", &r.access_package_ids, 100);
        check.finish()?;
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let subject = subject_of(&state, &r.user_id)?;
        let packages = state.requestable(
            &self.app.policies,
            &subject,
            &r.access_package_ids,
            self.now().seconds(),
        )?;
        Ok(Response::new(ListRequestablePackagesResponse {
            packages,
            revision,
        }))
    }

    async fn explain_eligibility(
        &self,
        request: Request<ExplainEligibilityRequest>,
    ) -> Result<Response<ExplainEligibilityResponse>, Status> {
        let r = request.get_ref();
        self.about_user(&request, &r.user_id)?;
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let subject = subject_of(&state, &r.user_id)?;
        let package = state.packages.get(&r.access_package_id).ok_or_else(|| {
            Status::from(Error::not_found("access_package", &r.access_package_id))
        })?;
        let policies =
            state.explain(&self.app.policies, &subject, package, self.now().seconds())?;
        Ok(Response::new(ExplainEligibilityResponse {
            allowed: policies.iter().any(|p| p.allowed),
            policies,
            revision,
        }))
    }

    async fn list_effective_grants(
        &self,
        request: Request<ListEffectiveGrantsRequest>,
    ) -> Result<Response<ListEffectiveGrantsResponse>, Status> {
        let r = request.get_ref();
        self.about_user(&request, &r.user_id)?;
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let grants = state
            .effective_grants(&r.user_id, self.now())
            .into_iter()
            .map(|((resource_id, role_id), sources)| EffectiveGrant {
                resource_id,
                role_id,
                sources,
            })
            .collect();
        Ok(Response::new(ListEffectiveGrantsResponse {
            grants,
            revision,
        }))
    }

    async fn who_has_access(
        &self,
        request: Request<WhoHasAccessRequest>,
    ) -> Result<Response<WhoHasAccessResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let r = request.into_inner();
        let mut check = Check::new("");
        let (kind, target) = match &r.target {
            Some(who_has_access_request::Target::AccessPackageId(id)) => ("package", id.clone()),
            Some(who_has_access_request::Target::ResourceId(id)) => ("resource", id.clone()),
            None => ("", String::new()),
        };
        if kind.is_empty() {
            check.fail(
                "target",
                "one of access_package_id or resource_id is required",
            );
        } else {
            check.id(&format!("{kind}_id"), &target);
        }
        check.optional_id("role_id", &r.role_id);
        check.require(
            kind != "package" || r.role_id.is_empty(),
            "role_id",
            "only applies to resource_id",
        );
        check.finish()?;
        let page = PageRequest::parse(r.page_size, &r.page_token, &[kind, &target, &r.role_id])?;
        self.consistent(r.min_revision).await?;
        let state = self.app.decisions.read();
        let revision = self.app.decisions.revision();
        let now = self.now();
        let holders = if kind == "package" {
            state.package_holders(&target, now)
        } else {
            let role = (!r.role_id.is_empty()).then_some(r.role_id.as_str());
            state.resource_holders(&target, role, now)
        };
        let after = page.after().unwrap_or_default().to_string();
        let mut rest = holders.into_iter().filter(|(user, _)| *user > after);
        let items: Vec<AccessHolder> = rest
            .by_ref()
            .take(page.size)
            .map(|(user_id, assignment_ids)| AccessHolder {
                user_id,
                assignment_ids,
            })
            .collect();
        let listed = crate::domain::crud::Listed {
            more: rest.next().is_some(),
            items,
        };
        let next_page_token = page.next_token(&listed, |h: &AccessHolder| h.user_id.clone());
        Ok(Response::new(WhoHasAccessResponse {
            holders: listed.items,
            next_page_token,
            revision,
        }))
    }

    type WatchGrantsStream = WatchStream;

    async fn watch_grants(
        &self,
        request: Request<WatchGrantsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let from = request.get_ref().from_revision;
        let decisions = self.app.decisions.clone();
        // A revision this server has not reached (a token from another
        // server, or from before a restore) would turn every checkpoint
        // into a promise about changes it has not seen.
        let current = decisions.revision();
        if from > current {
            return Err(Status::out_of_range(format!(
                "revision {from} is ahead of this server (at {current}); resync with ListEffectiveGrants"
            )));
        }
        let (past, mut live) = decisions.events.replay(from).map_err(|e| {
            Status::out_of_range(format!(
                "revision {from} is no longer retained (oldest: {}); resync with ListEffectiveGrants",
                e.oldest
            ))
        })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let every = self.checkpoint_every;
        let drain = self.drain.clone();
        tokio::spawn(async move {
            let _subscriber = crate::observe::metrics::watch_subscriber();
            let mut delivered: Revision = from;
            for events in past {
                delivered = events.revision;
                if sender.send(Ok(watch_message(events))).await.is_err() {
                    return;
                }
            }
            let mut ticker = tokio::time::interval(every);
            loop {
                let message = tokio::select! {
                    received = live.recv() => match received {
                        Ok(events) if events.revision > delivered => {
                            delivered = events.revision;
                            Ok(watch_message(events))
                        }
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Err(Status::aborted(format!(
                            "the watcher fell behind; resume from revision {delivered}"
                        ))),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = ticker.tick() => {
                        // Every event up to the applied revision is already
                        // queued for this watcher: send them, then promise
                        // nothing older is still to come.
                        let applied = decisions.revision();
                        let Some(sent) = send_queued(&mut live, &sender, delivered).await else {
                            return;
                        };
                        delivered = sent.max(applied);
                        Ok(WatchGrantsResponse { revision: delivered, events: Vec::new(), checkpoint: true })
                    }
                    () = drain.started() => {
                        // The server stops: end with where to resume.
                        let Some(sent) = send_queued(&mut live, &sender, delivered).await else {
                            return;
                        };
                        Err(Status::unavailable(format!(
                            "the server is shutting down; resume from revision {sent}"
                        )))
                    }
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        Ok(Response::new(PingResponse {
            revision: self.app.decisions.revision(),
        }))
    }
}
