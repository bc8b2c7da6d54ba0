//! Logging with `tracing`, as text for people or JSON for log collectors,
//! and spans exported over OTLP when `[log.otlp]` says where. `RUST_LOG`
//! overrides the configured level (of the log, not of the spans).

use crate::otlp::{Exporter, OtlpConfig, OtlpError};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[log]` section every program's config has.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// "text" or "json".
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: "info", "debug", "bb_storage=debug,info", ...
    #[serde(default = "default_level")]
    pub level: String,
    /// Where to export spans (Execute, queueing, each worker phase, the
    /// runner) over OTLP/gRPC. Unset: no spans leave the program.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: default_level(), otlp: None }
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never with
/// `NO_COLOR` set (to anything but the empty string; no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// What [`init`] started: keep it until the program ends, and dropping it
/// sends the spans not yet exported.
#[must_use = "dropping it stops the span export"]
pub struct Telemetry {
    _exporter: Option<Exporter>,
}

/// Installs the global subscriber, logging to stderr and, with
/// `config.otlp`, exporting the spans of the farm's own code as the service
/// `program`. A second call (tests run several programs in one process)
/// keeps the first subscriber.
pub fn init(config: &LogConfig, program: &str) -> Result<Telemetry, OtlpError> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let log = match config.format {
        LogFormat::Text => log.with_filter(filter).boxed(),
        LogFormat::Json => log.json().with_filter(filter).boxed(),
    };
    let exporter = config.otlp.as_ref().map(|otlp| Exporter::start(otlp, program)).transpose()?;
    let spans = exporter.as_ref().map(|exporter| {
        tracing_opentelemetry::layer()
            .with_tracer(exporter.tracer(program))
            .with_filter(tracing_subscriber::filter::filter_fn(is_exported))
    });
    let installed = Registry::default().with(log).with(spans).try_init().is_ok();
    Ok(Telemetry { _exporter: exporter.filter(|_| installed) })
}

/// Spans and events are exported when they are the farm's own, at INFO or
/// above, whatever the log's level.
fn is_exported(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("bb_") && *metadata.level() <= tracing::Level::INFO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "files and journald get no escape codes");
    }
}
