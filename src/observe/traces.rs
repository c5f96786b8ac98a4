//! Trace export (off unless an OTLP endpoint is configured): the spans the
//! server opens (one per call, with children for Cedar decisions and store
//! commits) go to an OpenTelemetry collector over OTLP/gRPC, and a call
//! whose metadata carries a W3C `traceparent` continues the caller's trace.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the caller's span named in `headers`, if any.
/// Without the OpenTelemetry layer (no endpoint configured) there is no
/// trace to continue, and nothing happens.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    if !headers.contains_key(TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// Reads propagation fields from request headers (gRPC metadata).
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Exports spans while it lives; dropping it sends what is still buffered.
pub struct Exporter(SdkTracerProvider);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            tracing::warn!(%error, "exporting the last traces failed");
        }
    }
}

/// A tracing layer that sends spans to the OTLP/gRPC collector at
/// `endpoint` (e.g. `http://127.0.0.1:4317`), batched in the background,
/// and the exporter to keep while the process runs. Must be called inside
/// the Tokio runtime.
pub fn otlp<S>(
    endpoint: &str,
) -> anyhow::Result<(
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    Exporter,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("entitlements")
                .build(),
        )
        .build();
    let tracer = provider.tracer("entitlements");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Exporter(provider),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_traceparent_in_the_metadata_becomes_the_parent_of_the_call_span() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent_id = "00f067aa0ba902b7";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc");
            continue_trace(&span, &headers);
            let context = span.context();
            assert_eq!(
                context.span().span_context().trace_id().to_string(),
                trace_id
            );
            span.in_scope(|| tracing::info_span!("store.commit").in_scope(|| {}));
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let rpc = spans
            .iter()
            .find(|s| s.name == "rpc")
            .expect("the call span");
        assert_eq!(rpc.span_context.trace_id().to_string(), trace_id);
        assert_eq!(rpc.parent_span_id.to_string(), parent_id);
        let commit = spans
            .iter()
            .find(|s| s.name == "store.commit")
            .expect("the child");
        assert_eq!(commit.parent_span_id, rpc.span_context.span_id());
    }
}
