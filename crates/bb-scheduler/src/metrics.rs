//! The scheduler's metric families, registered at start.

use bb_util::metrics::{Family, Kind};

pub const QUEUED: &str = "bb_scheduler_queued_operations";
pub const EXECUTING: &str = "bb_scheduler_executing_operations";
pub const WORKERS: &str = "bb_scheduler_workers";
pub const QUEUE_WAIT: &str = "bb_scheduler_queue_wait_seconds";
pub const EXECUTION_DURATION: &str = "bb_scheduler_execution_duration_seconds";
pub const COMPLETED: &str = "bb_scheduler_completed_operations_total";
pub const REQUEUED: &str = "bb_scheduler_requeued_total";
pub const ATTEMPTS_EXHAUSTED: &str = "bb_scheduler_attempts_exhausted_total";
pub const DEDUPLICATED: &str = "bb_scheduler_deduplicated_executions_total";
pub const CACHE_HITS: &str = "bb_scheduler_execute_cache_hits_total";

/// How an operation ended, as `COMPLETED` labels it.
pub const OUTCOMES: &[&str] = &["cache_hit", "success", "nonzero_exit", "cancelled", "timeout", "error"];

pub const FAMILIES: &[Family] = &[
    Family { name: QUEUED, kind: Kind::Gauge, help: "Operations waiting for a worker.", label: None },
    Family { name: EXECUTING, kind: Kind::Gauge, help: "Operations a worker is running.", label: None },
    Family { name: WORKERS, kind: Kind::Gauge, help: "Worker slots known to the scheduler.", label: None },
    Family {
        name: QUEUE_WAIT,
        kind: Kind::Histogram,
        help: "Time from queueing to a worker taking the action.",
        label: None,
    },
    Family {
        name: EXECUTION_DURATION,
        kind: Kind::Histogram,
        help: "Time from a worker taking the action to its result.",
        label: None,
    },
    Family {
        name: COMPLETED,
        kind: Kind::Counter,
        help: "Operations completed, by outcome.",
        label: Some(("outcome", OUTCOMES)),
    },
    Family {
        name: REQUEUED,
        kind: Kind::Counter,
        help: "Actions given back to the queue after losing their worker.",
        label: None,
    },
    Family {
        name: ATTEMPTS_EXHAUSTED,
        kind: Kind::Counter,
        help: "Actions failed after losing max_attempts workers.",
        label: None,
    },
    Family {
        name: DEDUPLICATED,
        kind: Kind::Counter,
        help: "Execute calls joined to an identical queued or running action.",
        label: None,
    },
    Family {
        name: CACHE_HITS,
        kind: Kind::Counter,
        help: "Execute calls answered from the Action Cache.",
        label: None,
    },
];
