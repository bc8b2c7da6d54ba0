//! REv2 ContentAddressableStorage: FindMissingBlobs, the batch calls and
//! GetTree.

use super::request::{Instances, parse_digest, parse_digests, principal, required_digest};
use super::tree::{TreeWalk, encoded_len, parse_page_token};
use crate::content::ContentStore;
use bb_proto::reapi;
use bb_proto::reapi::content_addressable_storage_server::ContentAddressableStorage;
use bb_util::auth::Permission;
use bb_util::chunking::FastCdcParams;
use bb_util::resource_name::Compressor;
use bb_util::status;
use bb_util::zstd_stream::StreamDecoder;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

/// Bytes of directories per GetTree response when the client sets no page size.
const TREE_RESPONSE_BYTES: usize = 2 << 20;

#[derive(Clone)]
pub struct CasService {
    content: ContentStore,
    instances: Instances,
    max_batch_size: u64,
    /// How SplitBlob cuts blobs.
    chunking: FastCdcParams,
}

impl CasService {
    pub fn new(
        content: ContentStore,
        instances: Instances,
        max_batch_size: u64,
        chunking: FastCdcParams,
    ) -> Self {
        CasService { content, instances, max_batch_size, chunking }
    }

    fn check_batch_size(&self, total: u64, what: &str) -> Result<(), Status> {
        if total > self.max_batch_size {
            return Err(Status::invalid_argument(format!(
                "{what} of {total} bytes exceeds max_batch_total_size_bytes ({}); use ByteStream",
                self.max_batch_size
            )));
        }
        Ok(())
    }

    async fn update_one(
        &self,
        digest_function: i32,
        request: reapi::batch_update_blobs_request::Request,
    ) -> reapi::batch_update_blobs_response::Response {
        let result = async {
            let digest = required_digest(digest_function, request.digest.as_ref(), "digest")?;
            let data = match Compressor::from_proto(request.compressor) {
                Some(Compressor::Identity) => request.data,
                Some(Compressor::Zstd) => decompress(&request.data, digest.size())
                    .map_err(|e| Status::invalid_argument(format!("blob {digest}: {e}")))?,
                None => {
                    return Err(Status::invalid_argument(format!(
                        "blob {digest}: compressor {} is not supported",
                        request.compressor
                    )));
                }
            };
            self.content.put(&digest, data).await
        }
        .await;
        reapi::batch_update_blobs_response::Response {
            digest: request.digest,
            status: Some(match result {
                Ok(()) => status::rpc_ok(),
                Err(e) => status::to_rpc(&e),
            }),
        }
    }

    async fn read_one(
        &self,
        digest_function: i32,
        digest: reapi::Digest,
    ) -> reapi::batch_read_blobs_response::Response {
        let result = async {
            let parsed = parse_digest(digest_function, &digest)?;
            self.content.get_bytes(&parsed).await
        }
        .await;
        let (data, status) = match result {
            Ok(data) => (data, status::rpc_ok()),
            Err(e) => (Bytes::new(), status::to_rpc(&e)),
        };
        reapi::batch_read_blobs_response::Response {
            digest: Some(digest),
            data,
            compressor: Compressor::Identity.to_proto(),
            status: Some(status),
        }
    }
}

/// Decompresses a whole zstd blob of a known size, refusing to produce more.
fn decompress(data: &[u8], size: u64) -> Result<Bytes, String> {
    let mut decoder = StreamDecoder::new().map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    let mut position = 0;
    while let Some(piece) = decoder.next_piece(data, &mut position).map_err(|e| e.to_string())? {
        if (out.len() + piece.len()) as u64 > size {
            return Err(format!("zstd data decompresses to more than the declared {size} bytes"));
        }
        out.extend_from_slice(&piece);
    }
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

#[tonic::async_trait]
impl ContentAddressableStorage for CasService {
    async fn find_missing_blobs(
        &self,
        request: Request<reapi::FindMissingBlobsRequest>,
    ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(
            &principal,
            &request.instance_name,
            &[Permission::Read, Permission::WriteCas],
        )?;
        let digests = parse_digests(request.digest_function, &request.blob_digests)?;
        let missing = self.content.find_missing(&digests).await?;
        Ok(Response::new(reapi::FindMissingBlobsResponse {
            missing_blob_digests: missing.iter().map(|d| d.to_proto()).collect(),
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<reapi::BatchUpdateBlobsRequest>,
    ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::WriteCas])?;
        let total: u64 = request.requests.iter().map(|r| r.data.len() as u64).sum();
        self.check_batch_size(total, "batch update")?;
        let function = request.digest_function;
        let responses =
            futures::future::join_all(request.requests.into_iter().map(|r| self.update_one(function, r)))
                .await;
        Ok(Response::new(reapi::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<reapi::BatchReadBlobsRequest>,
    ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::Read])?;
        let total: u64 = request.digests.iter().map(|d| d.size_bytes.max(0) as u64).sum();
        self.check_batch_size(total, "batch read")?;
        let function = request.digest_function;
        let responses =
            futures::future::join_all(request.digests.into_iter().map(|d| self.read_one(function, d))).await;
        Ok(Response::new(reapi::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = BoxStream<'static, Result<reapi::GetTreeResponse, Status>>;

    async fn get_tree(
        &self,
        request: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::Read])?;
        let root = required_digest(request.digest_function, request.root_digest.as_ref(), "root_digest")?;
        if request.page_size < 0 {
            return Err(Status::invalid_argument(format!("page_size {} is negative", request.page_size)));
        }
        let start = parse_page_token(&request.page_token)?;
        let mut walk = TreeWalk::start(self.content.clone(), root).await?;
        walk.skip_to(start).await?;
        let page_size = request.page_size as usize;

        Ok(Response::new(tree_pages(walk, page_size)))
    }

    async fn split_blob(
        &self,
        request: Request<reapi::SplitBlobRequest>,
    ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::Read])?;
        let digest = required_digest(request.digest_function, request.blob_digest.as_ref(), "blob_digest")?;
        let splice = super::split::split(&self.content, self.chunking, digest).await?;
        Ok(Response::new(reapi::SplitBlobResponse {
            chunk_digests: splice.chunks.iter().map(|d| d.to_proto()).collect(),
            chunking_function: splice.chunking_function,
        }))
    }

    async fn splice_blob(
        &self,
        request: Request<reapi::SpliceBlobRequest>,
    ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.instances.admit(&principal, &request.instance_name, &[Permission::WriteCas])?;
        let function = request.digest_function;
        let digest = required_digest(function, request.blob_digest.as_ref(), "blob_digest")?;
        // Chunks take the blob's function when the request names none.
        let function = if function == 0 { digest.function().to_proto() } else { function };
        let chunks = parse_digests(function, &request.chunk_digests)?;
        super::split::splice(&self.content, digest, chunks, request.chunking_function).await?;
        Ok(Response::new(reapi::SpliceBlobResponse { blob_digest: Some(digest.to_proto()) }))
    }
}

/// With a page size: one response of up to that many directories and a
/// token for the rest. Without: every directory, in responses of bounded size.
fn tree_pages(
    walk: TreeWalk,
    page_size: usize,
) -> BoxStream<'static, Result<reapi::GetTreeResponse, Status>> {
    // The state: the walk, and whether a response went out already.
    Box::pin(futures::stream::try_unfold(Some((walk, false)), move |state| async move {
        let Some((mut walk, sent)) = state else { return Ok(None) };
        let mut response = reapi::GetTreeResponse::default();
        let mut bytes = 0;
        while let Some(directory) = walk.next().await? {
            bytes += encoded_len(&directory);
            response.directories.push(directory);
            if page_size > 0 && response.directories.len() == page_size {
                if !walk.is_done() {
                    response.next_page_token = walk.position.to_string();
                }
                return Ok(Some((response, None)));
            }
            if page_size == 0 && bytes >= TREE_RESPONSE_BYTES {
                return Ok(Some((response, Some((walk, true)))));
            }
        }
        // The end: a last response, unless it would be empty and follow others.
        if response.directories.is_empty() && sent {
            return Ok(None);
        }
        Ok(Some((response, None)))
    }))
}
