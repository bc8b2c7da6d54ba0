//! What an action may ask of its sandbox through platform properties:
//! network (`dockerNetwork`) and limits (`memoryLimit`, `processLimit`,
//! `cpuLimit`), each within what the runner's operator allows.

use super::Limits;
use crate::config::SandboxConfig;
use bb_util::config::ByteSize;
use bb_util::platform::{CPU_LIMIT, MEMORY_LIMIT, NETWORK, PROCESS_LIMIT};
use std::collections::HashMap;
use tonic::Status;

/// What one action runs with.
#[derive(Debug, PartialEq)]
pub struct Settled {
    pub network: bool,
    pub limits: Limits,
}

/// The action's network and limits: the configured ones, changed by what
/// it asks for where that is allowed. INVALID_ARGUMENT for a value that
/// does not parse, FAILED_PRECONDITION for one this runner does not give.
pub fn settle(properties: &HashMap<String, String>, config: &SandboxConfig) -> Result<Settled, Status> {
    let defaults = &config.limits;
    let mut settled = Settled {
        network: config.allow_network,
        limits: Limits {
            memory: defaults.memory.map(ByteSize::bytes),
            processes: defaults.processes,
            cpus: defaults.cpus,
        },
    };
    if let Some(value) = properties.get(NETWORK) {
        settled.network = match value.as_str() {
            "off" | "none" => false,
            "bridge" | "host" if config.allow_network || config.network_property => true,
            "bridge" | "host" => {
                return Err(Status::failed_precondition(format!(
                    "the action asks for the network ({NETWORK}={value}), which this runner does not give \
                     (its operator may allow it with sandbox.network_property)"
                )));
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "{NETWORK}={other}: the value is one of off, none, bridge, host"
                )));
            }
        };
    }
    let maxima = &config.max_limits;
    if let Some(value) = properties.get(MEMORY_LIMIT) {
        let bytes: ByteSize = parse(MEMORY_LIMIT, value)?;
        settled.limits.memory = Some(within(MEMORY_LIMIT, bytes, maxima.memory)?.bytes());
    }
    if let Some(value) = properties.get(PROCESS_LIMIT) {
        settled.limits.processes =
            Some(within(PROCESS_LIMIT, parse(PROCESS_LIMIT, value)?, maxima.processes)?);
    }
    if let Some(value) = properties.get(CPU_LIMIT) {
        let cpus: f64 = parse(CPU_LIMIT, value)?;
        if !(cpus > 0.0 && cpus.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "{CPU_LIMIT}={value}: give a positive number of cores"
            )));
        }
        settled.limits.cpus = Some(within(CPU_LIMIT, cpus, maxima.cpus)?);
    }
    Ok(settled)
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, Status> {
    value.parse().map_err(|_| Status::invalid_argument(format!("{name}={value} does not parse")))
}

fn within<T: PartialOrd + std::fmt::Display>(name: &str, asked: T, maximum: Option<T>) -> Result<T, Status> {
    match maximum {
        Some(maximum) if asked > maximum => Err(Status::failed_precondition(format!(
            "the action asks for {name}={asked}, above this runner's maximum of {maximum}"
        ))),
        _ => Ok(asked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;

    fn asked(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn actions_get_what_the_operator_allows() {
        let mut config = SandboxConfig {
            limits: LimitsConfig { memory: Some(ByteSize(1 << 30)), processes: None, cpus: None },
            max_limits: LimitsConfig { memory: Some(ByteSize(4 << 30)), processes: Some(100), cpus: None },
            ..SandboxConfig::default()
        };
        let plain = settle(&asked(&[]), &config).unwrap();
        assert_eq!(
            plain,
            Settled { network: false, limits: Limits { memory: Some(1 << 30), ..Limits::default() } }
        );
        let more =
            settle(&asked(&[("memoryLimit", "2GiB"), ("processLimit", "50"), ("cpuLimit", "1.5")]), &config);
        let more = more.unwrap().limits;
        assert_eq!((more.memory, more.processes, more.cpus), (Some(2 << 30), Some(50), Some(1.5)));

        let code = |pairs: &[(&str, &str)], config: &SandboxConfig| {
            settle(&asked(pairs), config).unwrap_err().code()
        };
        assert_eq!(code(&[("memoryLimit", "8GiB")], &config), tonic::Code::FailedPrecondition);
        assert_eq!(code(&[("processLimit", "many")], &config), tonic::Code::InvalidArgument);
        assert_eq!(code(&[("cpuLimit", "-1")], &config), tonic::Code::InvalidArgument);
        assert_eq!(code(&[("dockerNetwork", "bridge")], &config), tonic::Code::FailedPrecondition);
        assert_eq!(code(&[("dockerNetwork", "wifi")], &config), tonic::Code::InvalidArgument);
        assert!(!settle(&asked(&[("dockerNetwork", "off")]), &config).unwrap().network);
        config.network_property = true;
        assert!(settle(&asked(&[("dockerNetwork", "bridge")]), &config).unwrap().network);
        config.allow_network = true;
        assert!(
            !settle(&asked(&[("dockerNetwork", "none")]), &config).unwrap().network,
            "an action may refuse it"
        );
    }
}
