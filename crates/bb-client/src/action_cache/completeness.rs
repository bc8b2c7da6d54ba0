//! Results are served only while everything they reference (output files,
//! the files inside output trees, stdout, stderr) is in the CAS, so a
//! client never gets a result it cannot download. Checked against the CAS
//! the clients read from: in a sharded farm, the whole of it, never one
//! node's share.

use super::{ActionCache, Inline, referenced_digests};
use crate::store::BlobStore;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use prost::Message;
use std::sync::Arc;
use tonic::Status;

pub struct CompletenessChecking {
    inner: Arc<dyn ActionCache>,
    cas: Arc<dyn BlobStore>,
    /// Counted as `outcome = incomplete` by whoever serves the result.
    on_incomplete: fn(),
}

impl CompletenessChecking {
    pub fn new(inner: Arc<dyn ActionCache>, cas: Arc<dyn BlobStore>, on_incomplete: fn()) -> Self {
        CompletenessChecking { inner, cas, on_incomplete }
    }

    async fn is_complete(
        &self,
        function: DigestFunction,
        result: &reapi::ActionResult,
    ) -> Result<bool, Status> {
        // Files inside output directories count too: a client that fetches
        // the Tree must be able to fetch what it lists.
        let mut trees = Vec::new();
        for dir in &result.output_directories {
            let Some(tree_digest) = &dir.tree_digest else { continue };
            let tree_digest = Digest::from_proto(function, tree_digest)?;
            let Some(blob) = self.cas.get(&tree_digest).await? else { return Ok(false) };
            let tree = reapi::Tree::decode(blob.into_bytes().await?)
                .map_err(|e| Status::data_loss(format!("tree {tree_digest} does not decode: {e}")))?;
            trees.push(tree);
        }
        let digests = referenced_digests(function, result, &trees)?;
        let present: Vec<Digest> = digests.into_iter().filter(|d| !d.is_empty()).collect();
        Ok(self.cas.find_missing(&present).await?.is_empty())
    }
}

#[tonic::async_trait]
impl ActionCache for CompletenessChecking {
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        let Some(result) = self.inner.get_action_result(instance_name, action, inline).await? else {
            return Ok(None);
        };
        if !self.is_complete(action.function(), &result).await? {
            (self.on_incomplete)();
            return Ok(None);
        }
        Ok(Some(result))
    }

    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        self.inner.update_action_result(instance_name, action, result).await
    }
}
