//! One action is one trace: `bb farm --otlp-endpoint` exports the spans of
//! the scheduler, the worker and the runner to an OTLP collector (here a
//! small receiver on loopback), all in the trace of the client's
//! `traceparent`, each hop the child of the one before.

mod common;

use common::start_farm_with;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the receiver got it, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attributes
                .iter()
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves OTLP/gRPC on a spare loopback port, from a thread of its own.
fn start_collector() -> (Collector, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await
        })
    });
    (collector, endpoint)
}

/// The spans of `trace_id` once every name in `names` is among them.
fn wait_for_trace(collector: &Collector, trace_id: &str, names: &[&str]) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans: Vec<Received> =
            collector.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        if names.iter().all(|name| spans.iter().any(|s| s.name == *name)) {
            return spans;
        }
        assert!(Instant::now() < deadline, "the trace lacks some of {names:?} after a minute: {spans:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn only<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let named: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "spans named {name:?}: {named:#?}");
    named[0]
}

const HOPS: [&str; 8] =
    ["Execute", "operation", "queued", "execute", "fetch inputs", "run", "upload outputs", "Run"];

#[test]
fn one_bb_exec_is_one_trace_across_every_hop() {
    let (collector, endpoint) = start_collector();
    let farm = start_farm_with(&["--otlp-endpoint", &endpoint]);
    let dir = farm.dir.path();

    let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traced = std::process::Command::new(common::BB)
        .args(["exec", "--no-cache", "--", "sh", "-c", "echo traced"])
        .env("BB_ENDPOINT", &farm.endpoint)
        .env("TRACEPARENT", format!("00-{trace_id}-{client_span}-01"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(traced.status.code(), Some(0), "{}", String::from_utf8_lossy(&traced.stderr));

    let spans = wait_for_trace(&collector, trace_id, &HOPS);
    let span = |name: &str| only(&spans, name).clone();
    let child_of = |child: &str, parent: &str| {
        assert_eq!(span(child).parent_span_id, span(parent).span_id, "{child} is not the child of {parent}")
    };
    assert_eq!(span("Execute").parent_span_id, client_span, "Execute is not the child of the client's span");
    child_of("operation", "Execute");
    child_of("queued", "operation");
    child_of("execute", "operation");
    for phase in ["fetch inputs", "run", "upload outputs"] {
        child_of(phase, "execute");
    }
    child_of("Run", "run");
    for (name, service) in [("Execute", "bb-scheduler"), ("execute", "bb-worker"), ("Run", "bb-runner")] {
        assert_eq!(span(name).service, service, "{name} came from {}", span(name).service);
    }

    // Without a client's context the action is a trace of its own all the same.
    let untraced = farm.bb(&["exec", "--no-cache", "--", "sh", "-c", "echo untraced"], dir);
    assert_eq!(untraced.status.code(), Some(0), "{}", String::from_utf8_lossy(&untraced.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs: Vec<Received> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == "Run" && s.trace_id != trace_id)
            .cloned()
            .collect();
        if !runs.is_empty() || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(runs.len(), 1, "runner spans outside the first trace: {runs:#?}");
    let second = wait_for_trace(&collector, &runs[0].trace_id, &HOPS);
    assert_eq!(only(&second, "Execute").parent_span_id, "", "a trace without a client starts at Execute");
}
