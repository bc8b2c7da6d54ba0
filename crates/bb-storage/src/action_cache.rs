//! The Action Cache: action digests to ActionResults, kept apart per instance
//! name and digest function.
//!
//! Entries live in a `BlobStore` that does not check contents, under a key
//! that is the SHA-256 of (instance name, digest function, action digest).
//! Each entry carries the SHA-256 of its ActionResult, so an entry damaged
//! on disk (a crash before it was flushed, say) is treated as absent,
//! never served.
//! A result is only handed out when everything it references (output files,
//! the files inside output trees, stdout, stderr) is still in the CAS, so a
//! client never gets a result it cannot download.

use crate::content::ContentStore;
use crate::store::BlobStore;
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

#[derive(Clone)]
pub struct ActionCache {
    store: Arc<dyn BlobStore>,
    content: ContentStore,
    completeness_check: bool,
}

impl ActionCache {
    pub fn new(store: Arc<dyn BlobStore>, content: ContentStore, completeness_check: bool) -> Self {
        ActionCache { store, content, completeness_check }
    }

    fn key(instance_name: &str, action: &Digest) -> Digest {
        let material =
            format!("{instance_name}\0{}\0{}\0{}", action.function(), action.hash_hex(), action.size());
        Digest::of(DigestFunction::Sha256, material.as_bytes())
    }

    /// The cached result, if there is one and everything it references is
    /// still in the CAS.
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
        if self.completeness_check && !self.is_complete(action.function(), &result).await? {
            metrics::counter!(crate::metrics::AC_INCOMPLETE).increment(1);
            return Ok(None);
        }
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
            let Some(blob) = self.content.get(&tree_digest).await? else { return Ok(false) };
            let tree = reapi::Tree::decode(blob.into_bytes().await?)
                .map_err(|e| Status::data_loss(format!("tree {tree_digest} does not decode: {e}")))?;
            trees.push(tree);
        }
        let digests = referenced_digests(function, result, &trees)?;
        Ok(self.content.find_missing(&digests).await?.is_empty())
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

/// Every blob an ActionResult depends on (with the files of the given output
/// trees), validated.
fn referenced_digests(
    function: DigestFunction,
    result: &reapi::ActionResult,
    trees: &[reapi::Tree],
) -> Result<Vec<Digest>, Status> {
    let parse = |d: &reapi::Digest, what: &str| {
        Digest::from_proto(function, d).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
    };
    let mut digests = Vec::new();
    for file in &result.output_files {
        if let Some(d) = &file.digest {
            digests.push(parse(d, &format!("output file {:?}", file.path))?);
        }
    }
    for dir in &result.output_directories {
        for d in [&dir.tree_digest, &dir.root_directory_digest].into_iter().flatten() {
            digests.push(parse(d, &format!("output directory {:?}", dir.path))?);
        }
    }
    for (d, what) in [(&result.stdout_digest, "stdout"), (&result.stderr_digest, "stderr")] {
        if let Some(d) = d {
            digests.push(parse(d, what)?);
        }
    }
    for tree in trees {
        for directory in tree.root.iter().chain(&tree.children) {
            for file in &directory.files {
                if let Some(d) = &file.digest {
                    digests.push(parse(d, &format!("file {:?} in an output tree", file.name))?);
                }
            }
        }
    }
    digests.sort_unstable();
    digests.dedup();
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn setup(check: bool) -> (ActionCache, ContentStore) {
        let content = ContentStore::new(Arc::new(MemoryStore::new(1 << 20)));
        (ActionCache::new(Arc::new(MemoryStore::new(1 << 20)), content.clone(), check), content)
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
        ac.put("a", &action, &result).await.unwrap();
        assert_eq!(ac.get("a", &action).await.unwrap(), Some(result));
        assert_eq!(ac.get("b", &action).await.unwrap(), None);
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
        ac.put("", &action, &result).await.unwrap();
        // The file inside the tree is missing.
        assert_eq!(ac.get("", &action).await.unwrap(), None);
        stored(&content, b"file in tree").await;
        assert_eq!(ac.get("", &action).await.unwrap(), Some(result));
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
        let err = ac.put("", &action, &result).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("stdout"));
    }
}
