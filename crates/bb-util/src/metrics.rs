//! Prometheus metrics: one process-wide recorder (the `metrics` facade
//! macros feed it) and an HTTP router that serves `/metrics`.

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets for durations in seconds: 100 µs to 1 h.
const SECONDS_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
    3600.0,
];

/// The process-wide recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// What a metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family a program exports: registered at start, with every
/// label value it can take, so dashboards and alerts have series (at zero)
/// from the first scrape.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// At most one label, with the values it takes.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

/// Describes and registers every family, every label value included.
pub fn register(families: &[Family]) {
    let _ = handle();
    for family in families {
        let series: Vec<Vec<metrics::Label>> = match family.label {
            None => vec![vec![]],
            Some((key, values)) => values.iter().map(|v| vec![metrics::Label::new(key, *v)]).collect(),
        };
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
            Kind::Histogram => metrics::describe_histogram!(family.name, family.help),
        }
        for labels in series {
            match family.kind {
                Kind::Counter => metrics::counter!(family.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(family.name, labels).increment(0.0),
                Kind::Histogram => drop(metrics::histogram!(family.name, labels)),
            }
        }
    }
}

/// `GET /metrics` in the Prometheus text format.
pub fn router() -> Router {
    let handle = handle();
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_families_render_before_anything_happened() {
        register(&[
            Family {
                name: "bb_test_things_total",
                kind: Kind::Counter,
                help: "Things.",
                label: Some(("outcome", &["a", "b"])),
            },
            Family { name: "bb_test_level", kind: Kind::Gauge, help: "A level.", label: None },
            Family { name: "bb_test_wait_seconds", kind: Kind::Histogram, help: "Waits.", label: None },
        ]);
        let text = handle().render();
        for line in [
            "bb_test_things_total{outcome=\"a\"} 0",
            "bb_test_things_total{outcome=\"b\"} 0",
            "bb_test_level 0",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(text.contains("# HELP bb_test_things_total Things."), "{text}");
        assert!(text.contains("bb_test_wait_seconds_count 0"), "{text}");
    }
}
