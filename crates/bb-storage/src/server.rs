//! Wiring: stores from config, the gRPC services on their listeners, and
//! `/metrics` over HTTP.

use crate::asset::{AssetRecords, FetchService, PushService};
use crate::config::{Config, StorageConfig};
use crate::content::ContentStore;
use crate::service::capabilities::cache_capabilities;
use crate::service::{ActionCacheService, ByteStreamService, CapabilitiesService, CasService, Instances};
use crate::store::{BlobStore, MemoryStore};
use anyhow::Context;
use bb_client::ActionCache;
use bb_client::action_cache::CompletenessChecking;
use bb_proto::asset::fetch_server::FetchServer;
use bb_proto::asset::push_server::PushServer;
use bb_proto::bytestream::byte_stream_server::ByteStreamServer;
use bb_proto::reapi;
use bb_proto::reapi::action_cache_server::ActionCacheServer;
use bb_proto::reapi::capabilities_server::CapabilitiesServer;
use bb_proto::reapi::content_addressable_storage_server::ContentAddressableStorageServer;
use bb_util::auth::Authentication;
use bb_util::chunking::FastCdcParams;
use bb_util::grpc::{Guard, ListenAddress, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

/// The CAS and the Action Cache, opened from config.
#[derive(Clone)]
pub struct Storage {
    pub content: ContentStore,
    pub action_cache: Arc<dyn ActionCache>,
    pub instances: Instances,
    /// The Remote Asset services, when configured.
    assets: Option<(FetchService, PushService)>,
    chunking: FastCdcParams,
    config: StorageConfig,
}

/// Where records of spliced blobs and fetched assets go when neither the
/// configuration nor a local Action Cache store says.
const RECORDS_IN_MEMORY: u64 = 64 << 20;

impl Storage {
    pub fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let ac = &config.action_cache;
        // Records of spliced blobs and of assets: small entries under keys
        // of their own, like the Action Cache's.
        let records: Arc<dyn BlobStore> = match (&config.records, ac.store.holds_bytes()) {
            (Some(records), _) => records.open(false)?,
            (None, true) => ac.store.open(false)?,
            (None, false) => Arc::new(MemoryStore::new(RECORDS_IN_MEMORY)),
        };
        let content = ContentStore::new(config.cas.open(true)?)
            .with_max_blob_size(config.max_blob_size.bytes())
            .with_spliced(records.clone());
        let instances = Instances::new(&config.instance_names);
        let assets = match &config.remote_asset {
            Some(asset) => Some(crate::asset::services(
                asset,
                instances.clone(),
                AssetRecords::new(records, content.clone()),
                content.clone(),
            )?),
            None => None,
        };
        let mut action_cache = ac.store.open_action_cache(&content, ac.max_inline_size.bytes())?;
        if ac.completeness_check {
            let incomplete = || metrics::counter!(crate::metrics::AC_INCOMPLETE).increment(1);
            action_cache =
                Arc::new(CompletenessChecking::new(action_cache, Arc::new(content.clone()), incomplete));
        }
        let chunking = config.chunking.params().map_err(anyhow::Error::msg)?;
        Ok(Storage { content, action_cache, instances, assets, chunking, config: config.clone() })
    }

    pub fn max_message_size(&self) -> usize {
        self.config.max_message_size.as_usize()
    }

    pub fn cache_capabilities(&self) -> reapi::CacheCapabilities {
        let mut capabilities =
            cache_capabilities(self.config.max_batch_size.bytes(), self.config.action_cache.allow_updates);
        capabilities.max_cas_blob_size_bytes = self.config.max_blob_size.bytes() as i64;
        capabilities.split_blob_support = true;
        capabilities.splice_blob_support = true;
        capabilities.fast_cdc_2020_params = Some(self.chunking.to_proto());
        capabilities
    }

    /// CAS, Action Cache, ByteStream and (when configured) Remote Asset,
    /// without Capabilities (whose
    /// contents depend on what else the process serves).
    pub fn routes(&self) -> Routes {
        let limit = self.max_message_size();
        let cas = CasService::new(
            self.content.clone(),
            self.instances.clone(),
            self.config.max_batch_size.bytes(),
            self.chunking,
        );
        let ac = ActionCacheService::new(
            self.action_cache.clone(),
            self.instances.clone(),
            self.config.action_cache.allow_updates,
        );
        let bytestream = ByteStreamService::new(self.content.clone(), self.instances.clone());
        let (gzip, zstd) = (CompressionEncoding::Gzip, CompressionEncoding::Zstd);
        let routes = Routes::new(
            ContentAddressableStorageServer::new(cas)
                .max_decoding_message_size(limit)
                .accept_compressed(gzip)
                .accept_compressed(zstd),
        )
        .add_service(
            ActionCacheServer::new(ac)
                .max_decoding_message_size(limit)
                .accept_compressed(gzip)
                .accept_compressed(zstd),
        )
        .add_service(
            ByteStreamServer::new(bytestream)
                .max_decoding_message_size(limit)
                .accept_compressed(gzip)
                .accept_compressed(zstd),
        );
        match &self.assets {
            Some((fetch, push)) => routes
                .add_service(FetchServer::new(fetch.clone()).max_decoding_message_size(limit))
                .add_service(PushServer::new(push.clone()).max_decoding_message_size(limit)),
            None => routes,
        }
    }
}

/// A bound bb-storage: listeners open, ready to serve.
pub struct StorageServer {
    storage: Storage,
    grpc: Vec<Listener>,
    /// The TLS and authentication of the gRPC and HTTP listeners.
    guards: [Guard; 2],
    http: Option<TcpListener>,
}

impl StorageServer {
    /// Opens the stores and binds every listener.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        bb_util::metrics::register(crate::metrics::FAMILIES);
        let storage = Storage::open(&config.storage)?;
        let grpc = bb_util::grpc::bind_all(&config.grpc_listen).await?;
        let authentication = Authentication::new(&config.authentication, &["grpc", "http"])?;
        let http_addresses: Vec<ListenAddress> =
            config.http_listen.iter().copied().map(ListenAddress::Tcp).collect();
        let guard = |name, addresses: &[ListenAddress]| {
            Guard::for_listener(&authentication, name, addresses, config.tls.as_ref())
        };
        let guards = [guard("grpc", &config.grpc_listen)?, guard("http", &http_addresses)?];
        let http = match config.http_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} for HTTP"))?,
            ),
            None => None,
        };
        Ok(StorageServer { storage, grpc, guards, http })
    }

    pub fn grpc_addresses(&self) -> Vec<ListenAddress> {
        self.grpc.iter().filter_map(|l| l.local_address().ok()).collect()
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let capabilities = CapabilitiesService::new(
            self.storage.instances.clone(),
            Some(self.storage.cache_capabilities()),
            None,
        );
        let routes = self.storage.routes().add_service(CapabilitiesServer::new(capabilities));
        let [grpc_guard, http_guard] = self.guards;
        let http = self.http.map(|listener| {
            tokio::spawn(bb_util::http::serve(
                bb_util::metrics::router(),
                listener,
                http_guard,
                shutdown.clone(),
            ))
        });
        bb_util::grpc::serve_guarded(routes, self.grpc, grpc_guard, shutdown).await?;
        if let Some(http) = http {
            http.await??;
        }
        Ok(())
    }
}

/// Everything `bb-storage` does once its config is loaded: logging, then
/// serving until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _telemetry = bb_util::logging::init(&config.log, "bb-storage")?;
    let shutdown = bb_util::shutdown::on_signals()?;
    let server = StorageServer::bind(&config).await?;
    for address in server.grpc_addresses() {
        tracing::info!("storage API (gRPC) on {address}");
    }
    if let Some(address) = server.http_address() {
        tracing::info!("metrics on http://{address}/metrics");
    }
    server.run(shutdown).await
}
