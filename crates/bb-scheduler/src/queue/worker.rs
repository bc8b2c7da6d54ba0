//! What the scheduler knows of each worker (one per worker slot).

use super::task::{Phase, TaskId};
use crate::platform::Platform;
use std::collections::BTreeMap;
use tokio::time::Instant;

pub(crate) struct Worker {
    /// `worker_id` labels, e.g. hostname and slot.
    pub labels: BTreeMap<String, String>,
    pub platform: Platform,
    pub size_class: u32,
    pub instance_name_prefix: String,
    /// The task it runs (or was given and has not acknowledged yet).
    pub task: Option<TaskId>,
    pub phase: Option<Phase>,
    pub last_seen: Instant,
    /// Drained by an operator: finishes its action, takes no new one.
    pub drained: bool,
    /// The worker asked for no new work (e.g. it is shutting down).
    pub prefers_idle: bool,
    /// A Synchronize call of this worker is waiting for work.
    pub waiting: bool,
    pub completed: u64,
}

impl Worker {
    pub fn new(labels: BTreeMap<String, String>) -> Self {
        Worker {
            labels,
            platform: Platform::default(),
            size_class: 0,
            instance_name_prefix: String::new(),
            task: None,
            phase: None,
            last_seen: Instant::now(),
            drained: false,
            prefers_idle: false,
            waiting: false,
            completed: 0,
        }
    }

    /// The stable name of a worker: its labels, sorted, as `k=v,k=v`.
    pub fn key(labels: &BTreeMap<String, String>) -> String {
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    pub fn accepts_work(&self) -> bool {
        !self.drained && !self.prefers_idle
    }

    /// Whether this worker serves `instance_name`, and with which suffix:
    /// its prefix must be the whole name or a leading run of segments.
    pub fn instance_suffix<'a>(&self, instance_name: &'a str) -> Option<&'a str> {
        let prefix = &self.instance_name_prefix;
        if prefix.is_empty() {
            return Some(instance_name);
        }
        let rest = instance_name.strip_prefix(prefix.as_str())?;
        if rest.is_empty() { Some("") } else { rest.strip_prefix('/') }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_prefixes_match_whole_segments() {
        let mut w = Worker::new(BTreeMap::new());
        assert_eq!(w.instance_suffix("a/b"), Some("a/b"));
        w.instance_name_prefix = "a".into();
        assert_eq!(w.instance_suffix("a"), Some(""));
        assert_eq!(w.instance_suffix("a/b"), Some("b"));
        assert_eq!(w.instance_suffix("ab"), None);
        assert_eq!(w.instance_suffix(""), None);
    }
}
