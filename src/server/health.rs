//! Health checking (`grpc.health.v1.Health`) whose Watch streams end when
//! the server drains: a watcher sees NOT_SERVING, then UNAVAILABLE, instead
//! of holding the shutdown open.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::drain::Drain;

pub struct DrainingHealth {
    inner: HealthService,
    drain: Drain,
}

impl DrainingHealth {
    pub fn new(reporter: HealthReporter, drain: Drain) -> Self {
        Self {
            inner: HealthService::from_health_reporter(reporter),
            drain,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(Box::pin(self.drain.ending(statuses))))
    }
}
