//! An Action Cache spread over named caches (storage nodes) by the same
//! weighted rendezvous hashing as the CAS's sharding, with `copies` copies
//! of each result: an update goes to every copy and needs `write_quorum`
//! of them; a lookup is answered by the first copy that has the result,
//! and a copy found lacking it gets it, in the background.

use super::{ActionCache, Inline};
use crate::store::mirrored::enough_copies;
use crate::store::sharding::rendezvous;
use bb_proto::reapi;
use bb_util::Digest;
use futures::future::join_all;
use std::sync::Arc;
use tonic::Status;

/// One cache of a sharded set.
pub struct CacheShard {
    /// A stable name (renaming moves its results).
    pub name: String,
    pub weight: u32,
    pub cache: Arc<dyn ActionCache>,
}

pub struct ShardedActionCache {
    shards: Vec<CacheShard>,
    copies: usize,
    write_quorum: usize,
}

impl ShardedActionCache {
    /// `copies` is clamped to 1..=shards, `write_quorum` to 1..=copies.
    pub fn new(shards: Vec<CacheShard>, copies: usize, write_quorum: usize) -> Self {
        let copies = copies.clamp(1, shards.len().max(1));
        ShardedActionCache { shards, copies, write_quorum: write_quorum.clamp(1, copies) }
    }

    fn owners(&self, instance_name: &str, action: &Digest) -> Vec<usize> {
        let mut key = instance_name.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(action.hash());
        key.extend_from_slice(&action.size().to_le_bytes());
        rendezvous(self.shards.iter().map(|s| (s.name.as_str(), s.weight)), &key, self.copies)
    }

    /// Gives `result` to the copies that lacked it, in the background.
    fn repair(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
        lacking: Vec<usize>,
    ) {
        for i in lacking {
            let (cache, instance, action, result) =
                (self.shards[i].cache.clone(), instance_name.to_string(), *action, result.clone());
            tokio::spawn(async move {
                match cache.update_action_result(&instance, &action, &result).await {
                    Ok(()) => {
                        metrics::counter!(crate::store::COPIES_REPAIRED, "store" => "action_cache")
                            .increment(1);
                        tracing::info!("repaired a missing copy of the result of {action}");
                    }
                    Err(e) => tracing::warn!("cannot repair a missing copy of the result of {action}: {e}"),
                }
            });
        }
    }
}

#[tonic::async_trait]
impl ActionCache for ShardedActionCache {
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        let mut lacking = Vec::new();
        let mut first_error = None;
        for i in self.owners(instance_name, action) {
            match self.shards[i].cache.get_action_result(instance_name, action, inline).await {
                Ok(Some(result)) => {
                    self.repair(instance_name, action, &result, lacking);
                    return Ok(Some(result));
                }
                Ok(None) => lacking.push(i),
                Err(e) => {
                    crate::store::copy_failed(format_args!(
                        "Action Cache {} failed: {e}",
                        self.shards[i].name
                    ));
                    first_error.get_or_insert(e);
                }
            }
        }
        match (lacking.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }

    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        let owners = self.owners(instance_name, action);
        let updates =
            owners.iter().map(|&i| self.shards[i].cache.update_action_result(instance_name, action, result));
        let quorum = self.write_quorum;
        enough_copies(join_all(updates).await, quorum, |stored| {
            Status::unavailable(format!("result of {action} stored on {stored} copies, short of {quorum}"))
        })
    }
}
