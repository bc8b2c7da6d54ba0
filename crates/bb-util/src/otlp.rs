//! Spans exported to an OpenTelemetry collector over OTLP/gRPC, when a
//! program's `[log.otlp]` names one; off by default.
//!
//! The SDK's batch processor exports from a thread of its own, where the
//! gRPC client finds no Tokio reactor. So the exporter gets a small runtime
//! of its own, and each export runs there: it works the same whether the
//! program's runtime is busy, shutting down or gone.

use crate::config::HumanDuration;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The `[log.otlp]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// The `service.name` of this program's spans. Default: the program's
    /// name (`bb-scheduler`, `bb-worker`, `bb-runner`, `bb-storage`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// How long finished spans wait to be sent, in batches.
    #[serde(default = "default_export_interval")]
    pub export_interval: HumanDuration,
    /// How long one export may take before it is given up.
    #[serde(default = "default_export_timeout")]
    pub export_timeout: HumanDuration,
}

fn default_export_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_export_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP: the exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("OTLP: endpoint {endpoint}: {source}")]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
}

/// Exports through an inner exporter, each export run on `runtime`.
#[derive(Debug)]
struct OnOwnRuntime {
    exporter: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnOwnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let exporter = self.exporter.clone();
        let export = self.runtime.spawn(async move { exporter.export(batch).await });
        export.await.unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.set_resource(resource);
        }
    }
}

/// What exports this program's spans: dropped, it sends what is left and
/// stops.
pub struct Exporter {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporter {
    /// Starts exporting to `config.endpoint`. Nothing is sent until a span
    /// ends; a collector that is down costs a failed export, logged.
    pub fn start(config: &OtlpConfig, program: &str) -> Result<Exporter, OtlpError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let exporter = {
            let _inside = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .with_timeout(config.export_timeout.get())
                .build()
                .map_err(|source| OtlpError::Exporter { endpoint: config.endpoint.clone(), source })?
        };
        let exporter = OnOwnRuntime { exporter: Arc::new(exporter), runtime: runtime.handle().clone() };
        let batches =
            BatchConfigBuilder::default().with_scheduled_delay(config.export_interval.get()).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
        let service = config.service_name.clone().unwrap_or_else(|| program.to_string());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        let provider =
            SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
        Ok(Exporter { provider, runtime: Some(runtime) })
    }

    /// The tracer that the `tracing` layer turns spans into OTLP spans with.
    pub fn tracer(&self, program: &str) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer(program.to_string())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        // This blocks until the last batch is sent (or times out): the
        // export runs on the exporter's runtime, never on the caller's, so
        // a caller on a Tokio worker cannot hold it up.
        if let Err(e) = self.provider.shutdown() {
            eprintln!("OTLP: the last spans were not sent: {e}");
        }
        runtime.shutdown_background();
    }
}
