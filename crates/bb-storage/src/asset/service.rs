//! The Fetch and Push services. Fetch answers from a usable record, else
//! from the origin (every qualifier must then be one this server honours;
//! a directory is a tar archive there, unpacked);
//! errors in the request are the call's status, failures at the origin the
//! response's. Fetching needs `read` on the instance; Push, which makes the
//! farm answer for a URI without asking its origin, needs
//! `write-action-cache`.

use super::RemoteAssetConfig;
use super::archive;
use super::origin::{Origins, Request as OriginRequest};
use super::qualifiers::{DIRECTORY, Qualifiers};
use super::records::{AssetRecords, Found, Key};
use crate::content::ContentStore;
use crate::service::Instances;
use crate::service::request::{parse_digests, principal, required_digest};
use bb_proto::asset::fetch_server::Fetch;
use bb_proto::asset::push_server::Push;
use bb_proto::asset::{
    FetchBlobRequest, FetchBlobResponse, FetchDirectoryRequest, FetchDirectoryResponse, PushBlobRequest,
    PushBlobResponse, PushDirectoryRequest, PushDirectoryResponse, Qualifier,
};
use bb_proto::bbrs::asset::asset_reference::Kind;
use bb_proto::reapi;
use bb_util::auth::Permission;
use bb_util::{Digest, DigestFunction};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};

/// What Fetch and Push share.
struct Assets {
    instances: Instances,
    records: AssetRecords,
    content: ContentStore,
    origins: Origins,
    config: RemoteAssetConfig,
}

#[derive(Clone)]
pub struct FetchService(Arc<Assets>);

#[derive(Clone)]
pub struct PushService(Arc<Assets>);

/// Both services over one state.
pub fn services(
    config: &RemoteAssetConfig,
    instances: Instances,
    records: AssetRecords,
    content: ContentStore,
) -> anyhow::Result<(FetchService, PushService)> {
    let origins = Origins::new(config.allowed_origins.clone(), config.max_asset_size.bytes())
        .map_err(anyhow::Error::msg)?;
    let assets = Arc::new(Assets { instances, records, content, origins, config: config.clone() });
    Ok((FetchService(assets.clone()), PushService(assets)))
}

/// The fields every fetch request has.
struct Wanted {
    kind: Kind,
    instance_name: String,
    uris: Vec<String>,
    qualifiers: Qualifiers,
    function: DigestFunction,
    timeout: Option<prost_types::Duration>,
    oldest: Option<prost_types::Timestamp>,
}

/// The fields every push request has.
struct Pushed {
    kind: Kind,
    instance_name: String,
    uris: Vec<String>,
    qualifiers: Vec<Qualifier>,
    expire_at: Option<prost_types::Timestamp>,
    digest: Digest,
    /// Blobs and directories the asset needs, which must be stored too.
    references: Vec<Digest>,
}

/// A fetch's outcome, for either response type.
struct Answer {
    status: Option<tonic_types::Status>,
    uri: String,
    qualifiers: Vec<Qualifier>,
    expires_at: Option<prost_types::Timestamp>,
    digest: Option<reapi::Digest>,
    function: i32,
}

impl Assets {
    async fn fetch(&self, wanted: Wanted) -> Result<Answer, Status> {
        if wanted.uris.is_empty() {
            return Err(Status::invalid_argument("uris is empty: at least one URI is required"));
        }
        let oldest = wanted
            .oldest
            .map(|t| {
                SystemTime::try_from(t)
                    .map_err(|e| Status::invalid_argument(format!("oldest_content_accepted: {e}")))
            })
            .transpose()?;
        for uri in &wanted.uris {
            if let Some(found) = self.records.lookup(&key(&wanted, uri), oldest).await? {
                return Ok(answer(&wanted, uri, Ok(found)));
            }
        }
        wanted.qualifiers.check_fetchable(wanted.kind == Kind::Directory)?;
        let checksum = wanted.qualifiers.checksum()?;
        let timeout = self.timeout(wanted.timeout)?;
        let mut last = Status::internal("no URI was tried");
        for uri in &wanted.uris {
            let started = SystemTime::now();
            let request = OriginRequest {
                uri,
                checksum: checksum.as_ref(),
                headers: wanted.qualifiers.headers_for(uri)?,
                timeout,
                function: wanted.function,
            };
            match self.fetch_from_origin(&wanted, request).await {
                Ok(digest) => {
                    let expires_at = started + self.config.cache_lifetime.get();
                    self.records.record(&key(&wanted, uri), &digest, started, expires_at).await?;
                    return Ok(answer(&wanted, uri, Ok(Found { digest, expires_at })));
                }
                Err(status) => {
                    // Content that fails its checksum, or an origin not
                    // allowed, is worth an operator's attention.
                    match status.code() {
                        tonic::Code::Aborted | tonic::Code::PermissionDenied => {
                            tracing::warn!("remote asset: {}", status.message())
                        }
                        _ => tracing::info!("remote asset: {}", status.message()),
                    }
                    last = status;
                }
            }
        }
        let uri = wanted.uris.last().cloned().unwrap_or_default();
        Ok(answer(&wanted, &uri, Err(last)))
    }

    /// The blob at the origin, or for a directory the tree its archive
    /// unpacks to.
    async fn fetch_from_origin(&self, wanted: &Wanted, request: OriginRequest<'_>) -> Result<Digest, Status> {
        let digest = self.origins.fetch(request, &self.content).await?;
        if wanted.kind == Kind::Blob {
            return Ok(digest);
        }
        let archive = self.content.get_bytes(&digest).await?;
        let subdirectory = wanted.qualifiers.get(DIRECTORY).map(str::to_string);
        archive::unpack(
            archive,
            wanted.function,
            &self.content,
            self.config.max_asset_size.bytes(),
            subdirectory,
        )
        .await
    }

    fn timeout(&self, requested: Option<prost_types::Duration>) -> Result<Duration, Status> {
        let Some(requested) = requested else { return Ok(self.config.fetch_timeout.get()) };
        let requested =
            Duration::try_from(requested).map_err(|e| Status::invalid_argument(format!("timeout: {e}")))?;
        if requested.is_zero() {
            return Ok(self.config.fetch_timeout.get());
        }
        Ok(requested.min(self.config.max_fetch_timeout.get()))
    }

    async fn push(&self, pushed: Pushed) -> Result<(), Status> {
        let Pushed { kind, instance_name, uris, qualifiers, expire_at, digest, references } = pushed;
        if uris.is_empty() {
            return Err(Status::invalid_argument("uris is empty: at least one URI is required"));
        }
        let qualifiers = Qualifiers::parse(qualifiers)?;
        let now = SystemTime::now();
        let expires_at = match expire_at {
            Some(t) => {
                SystemTime::try_from(t).map_err(|e| Status::invalid_argument(format!("expire_at: {e}")))?
            }
            None => now + self.config.cache_lifetime.get(),
        };
        let whole = match kind {
            Kind::Blob => self.content.find_missing(&[digest]).await?.is_empty(),
            Kind::Directory => self.records.tree_is_whole(digest).await?,
        };
        if !whole {
            return Err(bb_util::status::missing_blobs("the pushed asset", &[digest]));
        }
        let missing_references = self.content.find_missing(&references).await?;
        if !missing_references.is_empty() {
            return Err(bb_util::status::missing_blobs("a referenced blob", &missing_references));
        }
        for uri in &uris {
            let key = Key {
                kind,
                instance_name: &instance_name,
                uri,
                qualifiers: &qualifiers,
                function: digest.function(),
            };
            self.records.record(&key, &digest, now, expires_at).await?;
        }
        Ok(())
    }
}

fn key<'a>(wanted: &'a Wanted, uri: &'a str) -> Key<'a> {
    Key {
        kind: wanted.kind,
        instance_name: &wanted.instance_name,
        uri,
        qualifiers: &wanted.qualifiers,
        function: wanted.function,
    }
}

fn answer(wanted: &Wanted, uri: &str, outcome: Result<Found, Status>) -> Answer {
    let (status, expires_at, digest) = match outcome {
        Ok(found) => (None, Some(found.expires_at.into()), Some(found.digest.to_proto())),
        Err(status) => (Some(bb_util::status::to_rpc(&status)), None, None),
    };
    Answer {
        status,
        uri: uri.to_string(),
        qualifiers: wanted.qualifiers.to_proto(),
        expires_at,
        digest,
        function: wanted.function.to_proto(),
    }
}

fn references(
    function: i32,
    blobs: &[reapi::Digest],
    directories: &[reapi::Digest],
) -> Result<Vec<Digest>, Status> {
    let mut all = parse_digests(function, blobs)?;
    all.extend(parse_digests(function, directories)?);
    Ok(all)
}

/// The digest function a request asks for: SHA256 when it names none.
fn requested_function(value: i32) -> Result<DigestFunction, Status> {
    if value == 0 {
        return Ok(DigestFunction::Sha256);
    }
    DigestFunction::from_proto(value).ok_or_else(|| {
        Status::invalid_argument(format!("digest_function {value} is not one this server supports"))
    })
}

impl Assets {
    fn admitted<T>(
        &self,
        request: &Request<T>,
        instance: &str,
        permission: Permission,
    ) -> Result<(), Status> {
        self.instances.admit(&principal(request)?, instance, &[permission])
    }
}

/// A [`Wanted`] from a FetchBlobRequest or a FetchDirectoryRequest, which
/// have the same fields; `?` on what does not parse.
macro_rules! wanted {
    ($request:expr, $kind:expr) => {{
        let r = $request;
        Wanted {
            kind: $kind,
            function: requested_function(r.digest_function)?,
            qualifiers: Qualifiers::parse(r.qualifiers)?,
            instance_name: r.instance_name,
            uris: r.uris,
            timeout: r.timeout,
            oldest: r.oldest_content_accepted,
        }
    }};
}

#[tonic::async_trait]
impl Fetch for FetchService {
    async fn fetch_blob(
        &self,
        request: Request<FetchBlobRequest>,
    ) -> Result<Response<FetchBlobResponse>, Status> {
        self.0.admitted(&request, &request.get_ref().instance_name, Permission::Read)?;
        let a = self.0.fetch(wanted!(request.into_inner(), Kind::Blob)).await?;
        Ok(Response::new(FetchBlobResponse {
            status: a.status,
            uri: a.uri,
            qualifiers: a.qualifiers,
            expires_at: a.expires_at,
            blob_digest: a.digest,
            digest_function: a.function,
        }))
    }

    async fn fetch_directory(
        &self,
        request: Request<FetchDirectoryRequest>,
    ) -> Result<Response<FetchDirectoryResponse>, Status> {
        self.0.admitted(&request, &request.get_ref().instance_name, Permission::Read)?;
        let a = self.0.fetch(wanted!(request.into_inner(), Kind::Directory)).await?;
        Ok(Response::new(FetchDirectoryResponse {
            status: a.status,
            uri: a.uri,
            qualifiers: a.qualifiers,
            expires_at: a.expires_at,
            root_directory_digest: a.digest,
            digest_function: a.function,
        }))
    }
}

/// A [`Pushed`] from a PushBlobRequest or a PushDirectoryRequest, which
/// differ only in the name of the digest field.
macro_rules! pushed {
    ($request:expr, $kind:expr, $digest:ident) => {{
        let r = $request;
        let function = r.digest_function;
        Pushed {
            kind: $kind,
            digest: required_digest(function, r.$digest.as_ref(), stringify!($digest))?,
            references: references(function, &r.references_blobs, &r.references_directories)?,
            instance_name: r.instance_name,
            uris: r.uris,
            qualifiers: r.qualifiers,
            expire_at: r.expire_at,
        }
    }};
}

#[tonic::async_trait]
impl Push for PushService {
    async fn push_blob(
        &self,
        request: Request<PushBlobRequest>,
    ) -> Result<Response<PushBlobResponse>, Status> {
        self.0.admitted(&request, &request.get_ref().instance_name, Permission::WriteActionCache)?;
        self.0.push(pushed!(request.into_inner(), Kind::Blob, blob_digest)).await?;
        Ok(Response::new(PushBlobResponse {}))
    }

    async fn push_directory(
        &self,
        request: Request<PushDirectoryRequest>,
    ) -> Result<Response<PushDirectoryResponse>, Status> {
        self.0.admitted(&request, &request.get_ref().instance_name, Permission::WriteActionCache)?;
        self.0.push(pushed!(request.into_inner(), Kind::Directory, root_directory_digest)).await?;
        Ok(Response::new(PushDirectoryResponse {}))
    }
}
