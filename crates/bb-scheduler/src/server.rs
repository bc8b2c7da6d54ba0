//! Wiring: storage, the build queue, the client and worker APIs on their
//! listeners, the status page.

use crate::config::Config;
use crate::queue::BuildQueue;
use crate::service::{ExecutionService, OperationQueueService, OperationsService, SchedulerCapabilities};
use anyhow::Context;
use bb_client::StorageBackend;
use bb_proto::buildbarn::remoteworker::operation_queue_server::OperationQueueServer;
use bb_proto::longrunning::operations_server::OperationsServer;
use bb_proto::reapi::capabilities_server::CapabilitiesServer;
use bb_proto::reapi::execution_server::ExecutionServer;
use bb_storage::service::Instances;
use bb_util::auth::Authentication;
use bb_util::grpc::{BearerToken, Guard, ListenAddress, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// How often the queue looks for lost workers and abandoned operations.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// A bound scheduler: listeners open, ready to serve.
pub struct SchedulerServer {
    pub queue: Arc<BuildQueue>,
    storage: Arc<dyn StorageBackend>,
    /// The CAS, Action Cache and ByteStream on the client port.
    storage_routes: Routes,
    instances: Instances,
    client: Vec<Listener>,
    worker: Vec<Listener>,
    guards: Guards,
    http: Option<TcpListener>,
}

/// The TLS and authentication of each listener.
struct Guards {
    client: Guard,
    worker: Guard,
    http: Guard,
}

impl Guards {
    fn new(config: &Config) -> anyhow::Result<Self> {
        let authentication = Authentication::new(&config.authentication, &["client", "worker", "http"])?;
        let http: Vec<ListenAddress> = config.http_listen.iter().copied().map(ListenAddress::Tcp).collect();
        let guard = |name, addresses: &[ListenAddress]| {
            Guard::for_listener(&authentication, name, addresses, config.tls.as_ref())
        };
        Ok(Guards {
            client: guard("client", &config.client_listen)?,
            worker: guard("worker", &config.worker_listen)?,
            http: guard("http", &http)?,
        })
    }
}

impl SchedulerServer {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        bb_util::metrics::register(crate::metrics::FAMILIES);
        let (storage, storage_routes) = match (&config.storage, &config.remote_storage) {
            (Some(storage), _) => {
                bb_util::metrics::register(bb_storage::metrics::FAMILIES);
                let storage = bb_storage::Storage::open(storage)?;
                let routes = storage.routes();
                (Arc::new(storage) as Arc<dyn StorageBackend>, routes)
            }
            (None, Some(remote)) => {
                let token = remote.token_file.as_deref().map(BearerToken::from_file).transpose()?;
                let channel =
                    bb_util::grpc::channel_with(&remote.endpoint, remote.tls.as_ref(), token.as_ref())?;
                // Calls passed on carry their caller's credentials and none
                // of the scheduler's: neither its token nor its certificate.
                let anonymous_tls = remote.tls.clone().map(|tls| bb_util::tls::ClientTls {
                    certificate: None,
                    private_key: None,
                    ..tls
                });
                let forward = bb_util::grpc::channel_with(&remote.endpoint, anonymous_tls.as_ref(), None)?;
                (
                    Arc::new(bb_client::StorageClient::new(channel)) as Arc<dyn StorageBackend>,
                    crate::service::forward::storage_routes(&forward),
                )
            }
            (None, None) => unreachable!("validate() requires one of them"),
        };
        let guards = Guards::new(config)?;
        let http = match config.http_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} for HTTP"))?,
            ),
            None => None,
        };
        Ok(SchedulerServer {
            queue: BuildQueue::new(config.scheduler.clone()),
            storage,
            storage_routes,
            instances: Instances::new(&config.scheduler.instance_names),
            client: bb_util::grpc::bind_all(&config.client_listen).await?,
            worker: bb_util::grpc::bind_all(&config.worker_listen).await?,
            guards,
            http,
        })
    }

    pub fn client_addresses(&self) -> Vec<ListenAddress> {
        self.client.iter().filter_map(|l| l.local_address().ok()).collect()
    }

    pub fn worker_addresses(&self) -> Vec<ListenAddress> {
        self.worker.iter().filter_map(|l| l.local_address().ok()).collect()
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let queue = self.queue;
        queue.spawn_maintenance(MAINTENANCE_INTERVAL, shutdown.clone());

        let execution = ExecutionService::new(queue.clone(), self.storage.clone(), self.instances.clone());
        let capabilities = SchedulerCapabilities::new(self.storage.clone(), self.instances.clone());
        let client_routes = self
            .storage_routes
            .add_service(ExecutionServer::new(execution))
            .add_service(CapabilitiesServer::new(capabilities))
            .add_service(OperationsServer::new(OperationsService::new(queue.clone())));
        let worker_routes = Routes::new(
            OperationQueueServer::new(OperationQueueService::new(queue.clone(), self.storage.clone()))
                .max_decoding_message_size(64 << 20),
        );

        let serve = |routes, listeners, guard| {
            tokio::spawn(bb_util::grpc::serve_guarded(routes, listeners, guard, shutdown.clone()))
        };
        let Guards { client: client_guard, worker: worker_guard, http: http_guard } = self.guards;
        let client = serve(client_routes, self.client, client_guard);
        let worker = serve(worker_routes, self.worker, worker_guard);
        let http = self.http.map(|listener| {
            let router = crate::status::router(queue.clone(), self.storage.clone());
            tokio::spawn(bb_util::http::serve(router, listener, http_guard, shutdown.clone()))
        });
        client.await??;
        worker.await??;
        if let Some(http) = http {
            http.await??;
        }
        Ok(())
    }
}

/// Everything `bb-scheduler` does once its config is loaded: logging, then
/// serving until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _telemetry = bb_util::logging::init(&config.log, "bb-scheduler")?;
    let shutdown = bb_util::shutdown::on_signals()?;
    let server = SchedulerServer::bind(&config).await?;
    for address in server.client_addresses() {
        tracing::info!("client API (REv2) on {address}");
    }
    for address in server.worker_addresses() {
        tracing::info!("worker API on {address}");
    }
    if let Some(address) = server.http_address() {
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        tracing::info!("status page on {scheme}://{address}/");
    }
    server.run(shutdown).await
}
