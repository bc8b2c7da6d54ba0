//! bb-scheduler: the farm's head. Clients send it actions over REv2
//! Execution; workers long-poll it for work over Buildbarn's OperationQueue.

pub mod config;
pub mod metrics;
pub mod platform;
pub mod queue;
pub mod server;
pub mod service;
pub mod status;

/// Parses and validates a configuration as bb-scheduler would at start: for
/// programs that write one (`bb farm`) and check it without knowing its types.
pub fn check_config(text: &str) -> anyhow::Result<()> {
    let config: config::Config = bb_util::config::parse(text, "scheduler")?;
    config.validate().map_err(anyhow::Error::msg)
}
