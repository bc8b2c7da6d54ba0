//! What the runner's sandbox measured, said to the user: an action that
//! ran out of memory or processes gets ExecuteResponse.message saying so.

use bb_proto::bbrs::sandbox::CgroupResourceUsage;
use bb_proto::build::bazel::remote::execution::v2 as reapi;
use bb_util::config::ByteSize;
use prost::Name;

/// The cgroup usage among the auxiliary metadata, if the runner sent one.
pub fn cgroup_usage(metadata: &reapi::ExecutedActionMetadata) -> Option<CgroupResourceUsage> {
    let any = metadata.auxiliary_metadata.iter().find(|a| a.type_url == CgroupResourceUsage::type_url())?;
    any.to_msg().ok()
}

/// Why the action's limits ended it, if they did.
pub fn limits_message(metadata: &reapi::ExecutedActionMetadata) -> Option<String> {
    let usage = cgroup_usage(metadata)?;
    let mut reasons = Vec::new();
    if usage.oom_kills > 0 {
        reasons.push(format!(
            "the action ran out of memory: {} of its processes were killed at its memory limit of {}",
            usage.oom_kills,
            ByteSize(usage.memory_limit_bytes)
        ));
    }
    if usage.process_limit_hits > 0 {
        reasons.push(format!(
            "the action reached its limit of {} processes: {} forks were refused",
            usage.process_limit, usage.process_limit_hits
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_which_limit_ended_the_action() {
        let usage = CgroupResourceUsage { oom_kills: 1, memory_limit_bytes: 64 << 20, ..Default::default() };
        let metadata = reapi::ExecutedActionMetadata {
            auxiliary_metadata: vec![prost_types::Any::from_msg(&usage).unwrap()],
            ..Default::default()
        };
        let message = limits_message(&metadata).unwrap();
        assert!(message.contains("out of memory") && message.contains("64MiB"), "{message}");
        assert_eq!(limits_message(&reapi::ExecutedActionMetadata::default()), None);
    }
}
