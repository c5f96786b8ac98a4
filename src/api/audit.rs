//! The AuditLog service: listing, exporting and verifying the audit trail.

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::audit::chain;
use crate::audit::query::{self, Filter, Order};
use crate::error::{Error, Result};
use crate::pb::audit_log_server::AuditLog;
use crate::pb::*;
use crate::policy::admin::Scope;

use super::App;

use super::authz::{Caller, VisibleCatalogs};
use super::paging::PageRequest;

/// A listing reads at most this many events per call; a page with fewer
/// matches than asked for then ends early with a token to go on from.
const SCAN_BUDGET: usize = 100_000;

/// How many exported events may wait for a slow reader.
const EXPORT_BUFFER: usize = 256;

pub struct AuditLogApi {
    app: App,
}

impl AuditLogApi {
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

fn list_page(
    app: &App,
    caller: &Caller,
    request: ListAuditEventsRequest,
) -> Result<ListAuditEventsResponse> {
    let order = Order::from(request.order());
    let filter = Filter::parse(request.filter)?;
    let mut parts = filter.token_parts();
    parts.push(request.order.to_string());
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let page = PageRequest::parse(request.page_size, &request.page_token, &parts)?;
    let after = page
        .after()
        .map(|key| {
            key.parse::<u64>()
                .map_err(|_| Error::invalid("page_token", "is not a token this service issued"))
        })
        .transpose()?;
    let visible = VisibleCatalogs::new(app, caller);
    let mut events: Vec<AuditEvent> = Vec::new();
    // Where the next page starts: after the last event returned, or after
    // the last one read when the budget ran out first.
    let mut resume_after = None;
    for (scanned, event) in query::events(app.store(), &filter, order, after)?.enumerate() {
        let event = event?;
        if !visible.sees(&event.catalog_id) {
            if scanned + 1 >= SCAN_BUDGET {
                resume_after = Some(event.sequence);
                break;
            }
            continue;
        }
        if events.len() == page.size {
            resume_after = events.last().map(|e| e.sequence);
            break;
        }
        events.push(event);
    }
    Ok(ListAuditEventsResponse {
        events,
        next_page_token: resume_after
            .map_or_else(String::new, |s| page.token_after(&s.to_string())),
    })
}

#[tonic::async_trait]
impl AuditLog for AuditLogApi {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> std::result::Result<Response<ListAuditEventsResponse>, Status> {
        let caller = self.app.caller(&request)?;
        let app = self.app.clone();
        let response =
            tokio::task::spawn_blocking(move || list_page(&app, &caller, request.into_inner()))
                .await
                .map_err(Error::from)??;
        Ok(Response::new(response))
    }

    type ExportAuditEventsStream =
        Pin<Box<dyn Stream<Item = std::result::Result<AuditEvent, Status>> + Send>>;

    async fn export_audit_events(
        &self,
        request: Request<ExportAuditEventsRequest>,
    ) -> std::result::Result<Response<Self::ExportAuditEventsStream>, Status> {
        let caller = self.app.caller(&request)?;
        let filter = Filter::parse(request.into_inner().filter)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || {
            let visible = VisibleCatalogs::new(&app, &caller);
            let events = match query::events(app.store(), &filter, Order::OldestFirst, None) {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error.into()));
                    return;
                }
            };
            for event in events {
                let item = match event {
                    Ok(event) if !visible.sees(&event.catalog_id) => continue,
                    Ok(event) => Ok(event),
                    Err(error) => Err(Status::from(error)),
                };
                let failed = item.is_err();
                // A send error means the client went away.
                if sender.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn verify_audit_log(
        &self,
        request: Request<VerifyAuditLogRequest>,
    ) -> std::result::Result<Response<VerifyAuditLogResponse>, Status> {
        self.app.authorized(&request, Scope::Tenant)?;
        let app = self.app.clone();
        let found = tokio::task::spawn_blocking(move || chain::verify(app.store()))
            .await
            .map_err(Error::from)??;
        let (broken_at_sequence, problem) = found.broken.unwrap_or_default();
        Ok(Response::new(VerifyAuditLogResponse {
            intact: problem.is_empty(),
            events_checked: found.checked,
            first_sequence: found.first,
            last_sequence: found.last,
            broken_at_sequence,
            problem,
        }))
    }
}
