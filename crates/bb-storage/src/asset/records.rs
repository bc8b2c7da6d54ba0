//! What the farm knows about assets: one record per URI, qualifiers, kind,
//! instance and digest function, stored in the Action Cache's blob store
//! under the digest of that reference. A record is served only while it
//! has not expired, is new enough for the request, and its content is
//! still whole in the CAS (a tree: every directory and file).

use super::qualifiers::Qualifiers;
use crate::content::ContentStore;
use crate::service::tree::TreeWalk;
use crate::store::BlobStore;
use bb_proto::bbrs::asset::{AssetRecord, AssetReference, asset_reference::Kind};
use bb_util::{Digest, DigestFunction};
use prost::Message;
use std::sync::Arc;
use std::time::SystemTime;
use tonic::Status;

/// An asset's record, as found.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub digest: Digest,
    pub expires_at: SystemTime,
}

#[derive(Clone)]
pub struct AssetRecords {
    store: Arc<dyn BlobStore>,
    content: ContentStore,
}

/// Which asset a record is about.
pub struct Key<'a> {
    pub kind: Kind,
    pub instance_name: &'a str,
    pub uri: &'a str,
    pub qualifiers: &'a Qualifiers,
    pub function: DigestFunction,
}

impl Key<'_> {
    fn digest(&self) -> Digest {
        let reference = AssetReference {
            kind: self.kind as i32,
            uri: self.uri.to_string(),
            qualifiers: self.qualifiers.identifying(),
            instance_name: self.instance_name.to_string(),
            digest_function: self.function.to_proto(),
        };
        Digest::of_message(DigestFunction::Sha256, &reference)
    }
}

impl AssetRecords {
    pub fn new(store: Arc<dyn BlobStore>, content: ContentStore) -> Self {
        AssetRecords { store, content }
    }

    /// The record of `key`, if it is usable: unexpired, made no earlier
    /// than `oldest`, and with its content whole in the CAS.
    pub async fn lookup(&self, key: &Key<'_>, oldest: Option<SystemTime>) -> Result<Option<Found>, Status> {
        let Some(blob) = self.store.get(&key.digest()).await? else { return Ok(None) };
        // A record that does not decode is treated as absent, and replaced.
        let Ok(record) = AssetRecord::decode(blob.into_bytes().await?) else { return Ok(None) };
        let (Some(fetched_at), Some(expires_at)) = (time(record.fetched_at), time(record.expires_at)) else {
            return Ok(None);
        };
        if expires_at <= SystemTime::now() || oldest.is_some_and(|oldest| fetched_at < oldest) {
            return Ok(None);
        }
        let Ok(digest) = Digest::from_required(key.function, record.digest.as_ref()) else { return Ok(None) };
        let whole = match key.kind {
            Kind::Blob => self.content.find_missing(&[digest]).await?.is_empty(),
            Kind::Directory => self.tree_is_whole(digest).await?,
        };
        Ok(whole.then_some(Found { digest, expires_at }))
    }

    /// Records that `key` names `digest` from `fetched_at` to `expires_at`.
    pub async fn record(
        &self,
        key: &Key<'_>,
        digest: &Digest,
        fetched_at: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), Status> {
        let record = AssetRecord {
            digest: Some(digest.to_proto()),
            digest_function: digest.function().to_proto(),
            fetched_at: Some(fetched_at.into()),
            expires_at: Some(expires_at.into()),
        };
        self.store.put(&key.digest(), record.encode_to_vec().into()).await?;
        Ok(())
    }

    /// Whether every directory and file below `root` is in the CAS.
    pub async fn tree_is_whole(&self, root: Digest) -> Result<bool, Status> {
        let Ok(mut walk) = TreeWalk::start(self.content.clone(), root).await else { return Ok(false) };
        let mut files = Vec::new();
        while let Some(directory) = walk.next().await? {
            for file in &directory.files {
                let file = Digest::from_required(root.function(), file.digest.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("directory below {root}: {e}")))?;
                files.push(file);
            }
        }
        if walk.skipped() > 0 {
            return Ok(false);
        }
        files.sort_unstable();
        files.dedup();
        Ok(self.content.find_missing(&files).await?.is_empty())
    }
}

fn time(timestamp: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|t| SystemTime::try_from(t).ok())
}
