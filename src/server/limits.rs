//! Load protection around every call, as tower layers: at most
//! `max_concurrent_calls` calls at once (one more is shed at once with
//! RESOURCE_EXHAUSTED and a retry delay, rather than queued); each call
//! ends at its deadline (the client's `grpc-timeout` or `call_timeout_ms`,
//! whichever is sooner) with DEADLINE_EXCEEDED, and the deadline is made
//! known to the store so that a write whose caller gave up is not applied;
//! an over-size request is answered RESOURCE_EXHAUSTED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tonic::body::Body;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use crate::api::status::overloaded;
use crate::config::Settings;
use crate::shared::deadline;

/// The layers, outermost first.
pub fn layer(
    settings: &Settings,
) -> impl Layer<
    tonic::service::Routes,
    Service: Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = BoxError,
        Future: Send,
    > + Clone
                 + Send,
> + Clone
+ use<> {
    ServiceBuilder::new()
        .map_result(refusals_as_responses)
        .map_response(too_large_is_resource_exhausted)
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            settings.max_concurrent_calls.max(1),
        ))
        .layer(CallDeadlineLayer {
            timeout: settings.call_timeout(),
        })
        .into_inner()
}

/// A call refused here (shed because `max_concurrent_calls` are in flight,
/// or past its deadline) as the gRPC response that says so, so that the
/// layers outside (the per-call log line and metrics) see its status.
fn refusals_as_responses(
    answered: Result<http::Response<Body>, BoxError>,
) -> Result<http::Response<Body>, BoxError> {
    let error = match answered {
        Ok(response) => return Ok(response),
        Err(error) => error,
    };
    if error.is::<Overloaded>() {
        let status = overloaded("the server is serving as many calls as it takes; retry shortly");
        return Ok(status.into_http());
    }
    match error.downcast::<tonic::Status>() {
        Ok(status) => Ok(status.into_http()),
        Err(error) => Err(error),
    }
}

/// tonic refuses a request message over `max_decoding_message_size` with
/// OUT_OF_RANGE; gRPC's status for a message over the receiver's limit is
/// RESOURCE_EXHAUSTED, which is what clients retry or report as such.
fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status") == Some(&HeaderValue::from_static("11"));
    // grpc-message is percent-encoded (tonic encodes spaces too).
    let too_large = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| {
            message
                .replace("%20", " ")
                .contains("decoded message length too large")
        });
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}

#[derive(Clone)]
struct CallDeadlineLayer {
    timeout: Duration,
}

impl<S> Layer<S> for CallDeadlineLayer {
    type Service = CallDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Runs each call with its deadline as [`deadline::current`].
#[derive(Clone)]
pub struct CallDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<http::Request<B>> for CallDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let asked = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| grpc_timeout(value.as_bytes()));
        let timeout = asked.map_or(self.timeout, |asked| asked.min(self.timeout));
        if timeout.is_zero() {
            // Already too late: the call is not started.
            return Box::pin(std::future::ready(Err(past_deadline())));
        }
        let at = Instant::now() + timeout;
        let call = deadline::within(at, self.inner.call(request));
        Box::pin(async move {
            match tokio::time::timeout_at(at, call).await {
                Ok(answered) => answered.map_err(Into::into),
                Err(_) => Err(past_deadline()),
            }
        })
    }
}

fn past_deadline() -> BoxError {
    Box::new(tonic::Status::deadline_exceeded(
        "the call's deadline passed before it was answered",
    ))
}

/// A `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_their_unit_and_nonsense_is_ignored() {
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout(b"0n"), Some(Duration::ZERO));
        for bad in [&b""[..], b"S", b"123456789S", b"5x", b"-5S", b"5 S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
