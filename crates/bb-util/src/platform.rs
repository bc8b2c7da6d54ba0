//! Platform properties every program agrees on.

use bb_proto::reapi;

/// Network for the action: `off`/`none`, or `bridge`/`host` (BuildBuddy's
/// spelling, which users already write).
pub const NETWORK: &str = "dockerNetwork";
/// The action's memory limit, a size like `2GiB`.
pub const MEMORY_LIMIT: &str = "memoryLimit";
/// The action's process limit, a number.
pub const PROCESS_LIMIT: &str = "processLimit";
/// The action's CPU limit, in cores (`1.5`).
pub const CPU_LIMIT: &str = "cpuLimit";

/// Properties that say how an action runs rather than where: the
/// scheduler leaves them out of matching, the runner's sandbox reads them.
pub const EXECUTION_PROPERTIES: [&str; 4] = [NETWORK, MEMORY_LIMIT, PROCESS_LIMIT, CPU_LIMIT];

/// The platform an action asks for: the Action's (REv2.2 and later), or
/// the Command's, where REv2.0 clients such as Bazel 4 put it.
pub fn of_action<'a>(action: &'a reapi::Action, command: &'a reapi::Command) -> Option<&'a reapi::Platform> {
    match &action.platform {
        Some(platform) if !platform.properties.is_empty() => Some(platform),
        _ => command.platform.as_ref(),
    }
}
