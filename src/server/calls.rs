//! Every gRPC call, watched from outside the services (a tower layer around
//! the whole router, so refusals by the caller interceptor count too):
//!
//! * its request id: the caller's `x-request-id` when usable, otherwise a
//!   new one, set on the request before any handler runs (the audit events
//!   of the call carry it) and echoed in the response headers, on success
//!   and on error alike;
//! * its metrics: calls by service, method and status code, latency, calls
//!   in flight;
//! * its span (the parent of what the handler does: Cedar decisions, store
//!   commits), continuing the caller's trace when it sent `traceparent`;
//! * one log line when it ends, with method, status code, latency, caller,
//!   peer and request id: at debug level for health checks and
//!   reflection, at info for the rest.
//!
//! A call ends when its response body is done with: the status code is in
//! the response headers (a trailers-only response, as errors are) or in
//! the trailers. A call dropped before either (the client went away) ends
//! as CANCELLED.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::{Instrument as _, Level, Span};

use crate::api::caller::CallerSeen;
use crate::api::rpc::Rpc;
use crate::observe::metrics::{self, Held};
use crate::observe::{request_id, traces};

/// What a call is labelled with. Paths no service serves share one label,
/// so that clients cannot grow the metrics without bound.
#[derive(Debug, Clone, Copy)]
struct Method {
    service: &'static str,
    name: &'static str,
    path: &'static str,
    /// Health checks and reflection: probes and tools, not the service's
    /// work; logged at debug level.
    infrastructure: bool,
}

const UNKNOWN: Method = Method {
    service: "unknown",
    name: "unknown",
    path: "unknown",
    infrastructure: false,
};

/// Health and reflection methods: service, method, path.
const INFRASTRUCTURE: [(&str, &str, &str); 4] = [
    (
        "grpc.health.v1.Health",
        "Check",
        "/grpc.health.v1.Health/Check",
    ),
    (
        "grpc.health.v1.Health",
        "Watch",
        "/grpc.health.v1.Health/Watch",
    ),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ),
];

/// Every method served, by path.
static METHODS: LazyLock<HashMap<&str, Method>> = LazyLock::new(|| {
    let services = Rpc::ALL.iter().map(|rpc| Method {
        service: rpc.service(),
        name: rpc.name(),
        path: rpc.path(),
        infrastructure: false,
    });
    let infrastructure = INFRASTRUCTURE.iter().map(|(service, name, path)| Method {
        service,
        name,
        path,
        infrastructure: true,
    });
    services
        .chain(infrastructure)
        .map(|method| (method.path, method))
        .collect()
});

fn method_of(path: &str) -> Method {
    METHODS.get(path).copied().unwrap_or(UNKNOWN)
}

/// The layer: wraps the router in [`ObservedCalls`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveCalls;

impl<S> Layer<S> for ObserveCalls {
    type Service = ObservedCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObservedCalls { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ObservedCalls<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for ObservedCalls<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ObservedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let mut call = Call::begin(&mut request);
        let span = call.span.clone();
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            match response.await {
                Ok(response) => Ok(call.respond(response)),
                Err(error) => {
                    call.ended(Code::Unknown);
                    Err(error)
                }
            }
        })
    }
}

/// A call under way; it is counted and logged when dropped.
struct Call {
    method: Method,
    request_id: HeaderValue,
    peer: Option<SocketAddr>,
    caller: CallerSeen,
    started: Instant,
    span: Span,
    /// The status, once the response headers or trailers told it.
    code: Option<Code>,
    _in_flight: Held,
}

/// The span of a call at `$level` (a span's level is fixed where it is
/// written).
macro_rules! call_span {
    ($level:expr, $method:expr, $request_id:expr) => {
        tracing::span!(
            $level,
            "rpc",
            // Named as OpenTelemetry names gRPC spans: service/method.
            otel.name = $method.path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = $method.service,
            rpc.method = $method.name,
            request_id = $request_id,
            rpc.grpc.status_code = tracing::field::Empty,
        )
    };
}

/// The line logged when a call ends, at `$level`.
macro_rules! call_line {
    ($level:expr, $call:expr, $code:expr, $took:expr) => {
        tracing::event!(
            target: "entitlements::rpc",
            $level,
            method = $call.method.path,
            code = code_label($code),
            latency_ms = $took.as_secs_f64() * 1000.0,
            caller = $call.caller.get().unwrap_or_default(),
            peer = $call.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            request_id = $call.request_id.to_str().unwrap_or_default(),
            "rpc"
        )
    };
}

impl Call {
    /// Starts watching the call `request`, and gives it its request id and
    /// a place for the interceptor to name the caller.
    fn begin<B>(request: &mut Request<B>) -> Self {
        let method = method_of(request.uri().path());
        let sent = request
            .headers()
            .get(request_id::HEADER)
            .and_then(|value| value.to_str().ok());
        let id = request_id::of_call(sent);
        let request_id = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
        request
            .headers_mut()
            .insert(request_id::HEADER, request_id.clone());
        let caller = CallerSeen::default();
        request.extensions_mut().insert(caller.clone());
        let span = match method.infrastructure {
            true => call_span!(Level::DEBUG, method, id.as_str()),
            false => call_span!(Level::INFO, method, id.as_str()),
        };
        traces::continue_trace(&span, request.headers());
        Self {
            method,
            request_id,
            peer: peer(request),
            caller,
            started: Instant::now(),
            span,
            code: None,
            _in_flight: metrics::rpc_in_flight(),
        }
    }

    /// Echoes the request id; the call ends with the response body.
    fn respond<B>(mut self, mut response: Response<B>) -> Response<ObservedBody<B>> {
        let headers = response.headers_mut();
        headers.insert(request_id::HEADER, self.request_id.clone());
        self.code = status_in(headers);
        response.map(|inner| ObservedBody { inner, call: self })
    }

    /// The call ended with `code`, unless a status was already told.
    fn ended(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }

    fn log(&self, code: Code, took: Duration) {
        match self.method.infrastructure {
            true => call_line!(Level::DEBUG, self, code, took),
            false => call_line!(Level::INFO, self, code, took),
        }
    }
}

/// The peer's address, as the connection reported it.
fn peer<B>(request: &Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// The gRPC status in `headers` (response headers or trailers), if any.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    let status = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(status))
}

/// The metric label of `code`: its name as gRPC libraries print it
/// (`NotFound`): a fixed set.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        let took = self.started.elapsed();
        let method = self.method;
        metrics::rpc_finished(method.service, method.name, code_label(code), took);
        self.span.record("rpc.grpc.status_code", i32::from(code));
        self.log(code, took);
    }
}

/// A response body that ends its call when it is dropped (which the
/// server does once it has sent it, or given up on it).
pub struct ObservedBody<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    this.call.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.ended(Code::Internal),
            // A body that ends without a status broke the protocol.
            Poll::Ready(None) => this.call.ended(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_paths_have_their_labels_and_others_share_one() {
        for (service, name, path) in INFRASTRUCTURE {
            assert_eq!(path, format!("/{service}/{name}"));
        }
        let check = method_of("/grpc.health.v1.Health/Check");
        assert_eq!(
            (check.service, check.name),
            ("grpc.health.v1.Health", "Check")
        );
        assert!(check.infrastructure);
        let get_user = method_of(Rpc::GetUser.path());
        assert_eq!(get_user.name, "GetUser");
        assert!(!get_user.infrastructure);
        assert_eq!(method_of("/x.Y/Z").path, UNKNOWN.path);
    }

    #[test]
    fn the_status_comes_from_grpc_status() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(status_in(&headers), Some(Code::NotFound));
        assert_eq!(code_label(Code::NotFound), "NotFound");
    }
}
