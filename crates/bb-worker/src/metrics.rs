//! The worker's metric families, registered at start.

use bb_util::metrics::{Family, Kind};

pub const ACTIONS: &str = "bb_worker_actions_total";
pub const PHASE_DURATION: &str = "bb_worker_phase_duration_seconds";
pub const DOWNLOADS: &str = "bb_worker_file_cache_downloads_total";

/// How an action ended, as `ACTIONS` labels it.
pub const OUTCOMES: &[&str] = &["success", "nonzero_exit", "timeout", "error", "runner_lost"];
/// The phases `PHASE_DURATION` times.
pub const PHASES: &[&str] = &["fetch_inputs", "execute", "upload_outputs"];

pub const FAMILIES: &[Family] = &[
    Family {
        name: ACTIONS,
        kind: Kind::Counter,
        help: "Actions run, by outcome.",
        label: Some(("outcome", OUTCOMES)),
    },
    Family {
        name: PHASE_DURATION,
        kind: Kind::Histogram,
        help: "Time each phase of an action took.",
        label: Some(("phase", PHASES)),
    },
    Family { name: DOWNLOADS, kind: Kind::Counter, help: "Blobs the file cache downloaded.", label: None },
];
