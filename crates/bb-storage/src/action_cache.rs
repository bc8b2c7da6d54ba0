//! The Action Cache kept in a local store: action digests to
//! ActionResults, kept apart per instance name and digest function.
//!
//! Entries live in a `BlobStore` that does not check contents, under a key
//! that is the SHA-256 of (instance name, digest function, action digest).
//! Each entry carries the SHA-256 of its ActionResult, so an entry damaged
//! on disk (a crash before it was flushed, say) is treated as absent,
//! never served. Whether everything a result references is still in the
//! CAS is checked above it (bb-client's `CompletenessChecking`), against
//! the CAS clients read from.

use crate::content::ContentStore;
use crate::service::action_cache::inline_outputs;
use crate::store::BlobStore;
use bb_client::action_cache::{ActionCache, Inline, referenced_digests};
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

#[derive(Clone)]
pub struct StoredActionCache {
    store: Arc<dyn BlobStore>,
    /// Where inlined outputs are read from.
    content: ContentStore,
    /// Total bytes inlined into one result at most.
    max_inline_size: u64,
}

impl StoredActionCache {
    pub fn new(store: Arc<dyn BlobStore>, content: ContentStore, max_inline_size: u64) -> Self {
        StoredActionCache { store, content, max_inline_size }
    }

    fn key(instance_name: &str, action: &Digest) -> Digest {
        let material =
            format!("{instance_name}\0{}\0{}\0{}", action.function(), action.hash_hex(), action.size());
        Digest::of(DigestFunction::Sha256, material.as_bytes())
    }

    /// The stored result, if there is one and its entry is intact.
    pub async fn get(
        &self,
        instance_name: &str,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        let Some(blob) = self.store.get(&Self::key(instance_name, action)).await? else {
            return Ok(None);
        };
        let entry = blob.into_bytes().await?;
        let Some(result) = open_entry(&entry) else {
            tracing::error!("action cache entry for {action} is damaged; treating it as absent");
            return Ok(None);
        };
        Ok(Some(result))
    }

    /// Stores `result` after checking that every digest in it is well formed.
    pub async fn put(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        referenced_digests(action.function(), result, &[])?;
        let key = Self::key(instance_name, action);
        self.store.put(&key, seal_entry(result)).await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl ActionCache for StoredActionCache {
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        let Some(mut result) = self.get(instance_name, action).await? else { return Ok(None) };
        let wanted = (inline.stdout, inline.stderr, &inline.files[..]);
        inline_outputs(&self.content, action.function(), &mut result, wanted, self.max_inline_size).await;
        Ok(Some(result))
    }

    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        self.put(instance_name, action, result).await
    }
}

/// An entry: the SHA-256 of the encoded ActionResult, then the encoding.
fn seal_entry(result: &reapi::ActionResult) -> Bytes {
    let encoded = result.encode_to_vec();
    let mut entry = Digest::of(DigestFunction::Sha256, &encoded).hash().to_vec();
    entry.extend_from_slice(&encoded);
    Bytes::from(entry)
}

/// The ActionResult of an intact entry.
fn open_entry(entry: &Bytes) -> Option<reapi::ActionResult> {
    let (checksum, encoded) = entry.split_at_checked(32)?;
    if Digest::of(DigestFunction::Sha256, encoded).hash() != checksum {
        return None;
    }
    reapi::ActionResult::decode(encoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use bb_client::action_cache::CompletenessChecking;

    fn setup(check: bool) -> (Arc<dyn ActionCache>, ContentStore) {
        let content = ContentStore::new(Arc::new(MemoryStore::new(1 << 20)));
        let entries = Arc::new(MemoryStore::new(1 << 20));
        let stored: Arc<dyn ActionCache> =
            Arc::new(StoredActionCache::new(entries, content.clone(), 1 << 20));
        let ac: Arc<dyn ActionCache> = match check {
            true => Arc::new(CompletenessChecking::new(stored, Arc::new(content.clone()), || {})),
            false => stored,
        };
        (ac, content)
    }

    async fn stored(content: &ContentStore, data: &'static [u8]) -> Digest {
        let d = Digest::of(DigestFunction::Sha256, data);
        content.put(&d, Bytes::from_static(data)).await.unwrap();
        d
    }

    #[tokio::test]
    async fn keyed_by_instance() {
        let (ac, _) = setup(false);
        let action = Digest::of(DigestFunction::Sha256, b"action");
        let result = reapi::ActionResult { exit_code: 3, ..Default::default() };
        ac.update_action_result("a", &action, &result).await.unwrap();
        assert_eq!(ac.get_action_result("a", &action, &Inline::default()).await.unwrap(), Some(result));
        assert_eq!(ac.get_action_result("b", &action, &Inline::default()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn incomplete_results_are_not_served() {
        let (ac, content) = setup(true);
        let action = Digest::of(DigestFunction::Sha256, b"action");
        let out = stored(&content, b"output").await;
        let inner = Digest::of(DigestFunction::Sha256, b"file in tree");
        let tree = reapi::Tree {
            root: Some(reapi::Directory {
                files: vec![reapi::FileNode {
                    name: "f".into(),
                    digest: Some(inner.to_proto()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            children: vec![],
        };
        let tree_bytes = Bytes::from(tree.encode_to_vec());
        let tree_digest = Digest::of(DigestFunction::Sha256, &tree_bytes);
        content.put(&tree_digest, tree_bytes).await.unwrap();
        let result = reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "o".into(),
                digest: Some(out.to_proto()),
                ..Default::default()
            }],
            output_directories: vec![reapi::OutputDirectory {
                path: "d".into(),
                tree_digest: Some(tree_digest.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        ac.update_action_result("", &action, &result).await.unwrap();
        // The file inside the tree is missing.
        assert_eq!(ac.get_action_result("", &action, &Inline::default()).await.unwrap(), None);
        stored(&content, b"file in tree").await;
        assert_eq!(ac.get_action_result("", &action, &Inline::default()).await.unwrap(), Some(result));
    }

    #[test]
    fn damaged_entries_are_not_results() {
        let result = reapi::ActionResult { exit_code: 7, ..Default::default() };
        let entry = seal_entry(&result);
        assert_eq!(open_entry(&entry), Some(result));
        let truncated = entry.slice(..entry.len() - 1);
        assert_eq!(open_entry(&truncated), None);
        let mut flipped = entry.to_vec();
        flipped[33] ^= 1;
        assert_eq!(open_entry(&Bytes::from(flipped)), None);
        assert_eq!(open_entry(&Bytes::from_static(b"short")), None);
    }

    #[tokio::test]
    async fn rejects_malformed_digests() {
        let (ac, _) = setup(true);
        let action = Digest::of(DigestFunction::Sha256, b"action");
        let result = reapi::ActionResult {
            stdout_digest: Some(reapi::Digest { hash: "nothex".into(), size_bytes: 1 }),
            ..Default::default()
        };
        let err = ac.update_action_result("", &action, &result).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("stdout"));
    }
}
