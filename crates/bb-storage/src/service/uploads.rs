//! Interrupted ByteStream writes, kept for a while so the client can resume
//! them (QueryWriteStatus, then Write from the committed offset). Bounded in
//! number and age; an abandoned upload's temporary data is dropped with it.

use crate::content::Upload;
use bb_util::resource_name::WriteResource;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MAX_PARKED: usize = 256;
const MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct PartialUploads {
    parked: Mutex<HashMap<String, (Upload, Instant)>>,
}

impl PartialUploads {
    /// Identifies one upload: instance, client-chosen upload ID and blob.
    pub fn key(resource: &WriteResource) -> String {
        format!("{}\0{}\0{:?}", resource.instance_name, resource.upload_id, resource.digest)
    }

    /// Removes and returns the parked upload, to continue it.
    pub fn take(&self, key: &str) -> Option<Upload> {
        self.parked.lock().remove(key).map(|(upload, _)| upload)
    }

    /// How many bytes of the parked upload the server holds.
    pub fn received(&self, key: &str) -> Option<u64> {
        self.parked.lock().get(key).map(|(upload, _)| upload.received())
    }

    pub fn park(&self, key: String, upload: Upload) {
        let mut parked = self.parked.lock();
        let now = Instant::now();
        parked.retain(|_, (_, since)| now.duration_since(*since) < MAX_AGE);
        while parked.len() >= MAX_PARKED {
            let oldest = parked.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => parked.remove(&k),
                None => break,
            };
        }
        parked.insert(key, (upload, now));
    }
}
