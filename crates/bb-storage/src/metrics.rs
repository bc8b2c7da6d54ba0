//! Storage's metric families, registered at start (by bb-storage, and by
//! bb-scheduler when it embeds storage).

use bb_util::metrics::{Family, Kind};

pub const WRITTEN_BYTES: &str = "bb_storage_written_bytes_total";
pub const READ_BYTES: &str = "bb_storage_read_bytes_total";
pub const AC_REQUESTS: &str = "bb_storage_action_cache_requests_total";
pub const AC_INCOMPLETE: &str = "bb_storage_action_cache_incomplete_total";
pub const CORRUPTED: &str = "bb_storage_corrupted_blobs_total";
pub const EVICTIONS: &str = "bb_storage_evictions_total";

pub const FAMILIES: &[Family] = &[
    Family {
        name: bb_client::store::COPIES_REPAIRED,
        kind: Kind::Counter,
        help: "Copies of blobs and of action results given to a mirror copy or shard that lacked them.",
        label: Some(("store", &["cas", "action_cache"])),
    },
    Family { name: WRITTEN_BYTES, kind: Kind::Counter, help: "Blob bytes written to the CAS.", label: None },
    Family { name: READ_BYTES, kind: Kind::Counter, help: "Blob bytes read over ByteStream.", label: None },
    Family {
        name: AC_REQUESTS,
        kind: Kind::Counter,
        help: "GetActionResult calls, by outcome.",
        label: Some(("outcome", &["hit", "miss"])),
    },
    Family {
        name: AC_INCOMPLETE,
        kind: Kind::Counter,
        help: "Action Cache entries dropped because a blob they name is gone.",
        label: None,
    },
    Family {
        name: CORRUPTED,
        kind: Kind::Counter,
        help: "Stored blobs found corrupted and removed.",
        label: None,
    },
    Family {
        name: EVICTIONS,
        kind: Kind::Counter,
        help: "Blobs evicted to make room, by store.",
        label: Some(("store", &["disk", "memory"])),
    },
];
