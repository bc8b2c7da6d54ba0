//! The W3C trace context (`traceparent`, `tracestate`) that makes one
//! action one trace: read from a client's request metadata, kept with the
//! operation, handed to the worker in the Synchronize response's
//! `w3c_trace_context` and to the runner as request metadata.
//!
//! Without `[log.otlp]` spans have no OpenTelemetry context, so nothing is
//! carried on; a context a client sent is still honoured where a program
//! exports.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers W3C Trace Context defines.
const FIELDS: [&str; 2] = ["traceparent", "tracestate"];
/// The spec's limit for `tracestate` (32 members) is well under this.
const MAX_VALUE_LENGTH: usize = 1024;

/// A trace context as its headers: empty when there is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext(HashMap<String, String>);

impl TraceContext {
    /// From a map of headers (the Synchronize response's
    /// `w3c_trace_context`); other keys and oversized values are dropped.
    pub fn from_map(map: HashMap<String, String>) -> Self {
        let valid = map
            .into_iter()
            .filter(|(key, value)| FIELDS.contains(&key.as_str()) && value.len() <= MAX_VALUE_LENGTH)
            .collect();
        TraceContext(valid)
    }

    /// From gRPC request metadata.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let read = |field: &str| Some((field.to_string(), metadata.get(field)?.to_str().ok()?.to_string()));
        Self::from_map(FIELDS.iter().filter_map(|field| read(field)).collect())
    }

    /// From the `TRACEPARENT` and `TRACESTATE` environment variables, by
    /// which a script or CI system puts a command into its own trace.
    pub fn from_environment() -> Self {
        let read = |field: &str| Some((field.to_string(), std::env::var(field.to_uppercase()).ok()?));
        Self::from_map(FIELDS.iter().filter_map(|field| read(field)).collect())
    }

    /// The context of `span`, to make what another program does its child.
    pub fn of_span(span: &tracing::Span) -> Self {
        let mut map = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut map);
        TraceContext(map)
    }

    /// Makes `span`, not yet entered, a child of this context (nothing
    /// when this context is empty or spans are not exported).
    pub fn adopt(&self, span: &tracing::Span) {
        if self.0.is_empty() {
            return;
        }
        let parent = TraceContextPropagator::new().extract(&self.0);
        let _ = span.set_parent(parent);
    }

    /// Adds the headers to outgoing request metadata.
    pub fn insert_into(&self, metadata: &mut MetadataMap) {
        for (key, value) in &self.0 {
            if let (Some(key), Ok(value)) =
                (FIELDS.iter().find(|f| *f == key), MetadataValue::try_from(value))
            {
                metadata.insert(*key, value);
            }
        }
    }

    pub fn into_map(self) -> HashMap<String, String> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_the_w3c_headers_are_carried_and_only_bounded_ones() {
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", PARENT.parse().unwrap());
        metadata.insert("authorization", "Bearer secret".parse().unwrap());
        metadata.insert("tracestate", "x".repeat(MAX_VALUE_LENGTH + 1).parse().unwrap());
        let context = TraceContext::from_metadata(&metadata);
        assert_eq!(context.clone().into_map(), HashMap::from([("traceparent".into(), PARENT.into())]));
        let mut outgoing = MetadataMap::new();
        context.insert_into(&mut outgoing);
        assert_eq!(outgoing.len(), 1);
        assert_eq!(outgoing.get("traceparent").unwrap(), PARENT);
        let map = HashMap::from([("baggage".to_string(), "user=me".to_string())]);
        assert!(TraceContext::from_map(map).is_empty());
    }

    #[test]
    fn a_span_without_an_exporter_carries_no_context() {
        let span = tracing::info_span!("nothing exported");
        TraceContext::from_map(HashMap::from([("traceparent".into(), PARENT.into())])).adopt(&span);
        assert!(TraceContext::of_span(&span).is_empty());
    }
}
