//! bb-worker: takes actions from the scheduler, lays out their inputs from a
//! hardlink file cache, has bb-runner run them, and ships the results.

pub mod config;
pub mod executor;
pub mod file_cache;
pub mod inputs;
pub mod metrics;
pub mod outputs;
pub mod sandbox_report;
pub mod slot;

use anyhow::Context;

/// Parses a configuration as bb-worker would at start: for programs that
/// write one (`bb farm`) and check it without knowing its types.
pub fn check_config(text: &str) -> anyhow::Result<()> {
    let _: Config = bb_util::config::parse(text, "worker")?;
    Ok(())
}
use bb_proto::buildbarn::remoteworker::operation_queue_client::OperationQueueClient;
use bb_proto::buildbarn::runner::runner_client::RunnerClient;
use config::Config;
use executor::Executor;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Worker {
    config: Config,
    executor: Arc<Executor>,
}

impl Worker {
    /// Prepares the build directory (emptied) and the file cache (emptied,
    /// private to this user), and the clients.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let build = &config.build_directory;
        if build.exists() {
            for entry in std::fs::read_dir(build)? {
                let path = entry?.path();
                if let Err(e) = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path)) {
                    tracing::warn!("cannot remove stale {}: {e}", path.display());
                }
            }
        }
        std::fs::create_dir_all(build).with_context(|| format!("cannot create {}", build.display()))?;
        // The runner's user must be able to pass through; nobody needs to list it.
        std::fs::set_permissions(build, std::fs::Permissions::from_mode(0o711))?;
        let file_cache = file_cache::FileCache::open(
            &config.cache_directory,
            config.cache_max_size.bytes(),
            config.cache_max_files,
            config.max_parallel_downloads,
        )
        .with_context(|| format!("cannot create the file cache in {}", config.cache_directory.display()))?;
        let build_directory = build.canonicalize()?;
        let executor = Executor {
            name: config.worker_name(),
            build_directory_handle: bb_util::dir::Directory::open(&build_directory)?,
            build_directory,
            instance_name_prefix: config.instance_name_prefix.clone(),
            storage: bb_client::StorageClient::new(config.channel(&config.storage)?)
                .with_zstd(config.storage_zstd),
            runner: RunnerClient::new(bb_util::grpc::channel(&config.runner)?),
            file_cache: Arc::new(file_cache),
            directory_cache: inputs::DirectoryCache::new(config.directory_cache_size.bytes()),
            input_limits: config.input_limits,
        };
        Ok(Worker { config, executor: Arc::new(executor) })
    }

    pub fn file_cache(&self) -> Arc<file_cache::FileCache> {
        self.executor.file_cache.clone()
    }

    /// Waits for the runner, then runs the slots. `draining` stops taking
    /// work; running actions get `shutdown_grace` to finish, then are handed
    /// back to the scheduler.
    pub async fn run(self, draining: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("waiting for the runner at {}", self.config.runner);
        if !self.executor.wait_for_runner(&draining).await {
            return Ok(());
        }
        let stopping = CancellationToken::new();
        let grace = self.config.shutdown_grace.get();
        tokio::spawn({
            let (draining, stopping) = (draining.clone(), stopping.clone());
            async move {
                draining.cancelled().await;
                tokio::time::sleep(grace).await;
                stopping.cancel();
            }
        });
        let scheduler = OperationQueueClient::new(self.config.channel(&self.config.scheduler)?);
        let slots = self.config.slots();
        tracing::info!(
            "worker {} with {slots} slots, scheduler {}",
            self.executor.name,
            self.config.scheduler
        );
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..slots {
            let slot = slot::Slot {
                executor: self.executor.clone(),
                scheduler: scheduler.clone(),
                worker_id: [
                    ("host".to_string(), self.executor.name.clone()),
                    ("slot".to_string(), index.to_string()),
                ]
                .into(),
                platform: self.config.platform(),
                instance_name_prefix: self.config.instance_name_prefix.clone(),
                draining: draining.clone(),
                stopping: stopping.clone(),
            };
            tasks.spawn(slot.run());
        }
        while let Some(result) = tasks.join_next().await {
            result?;
        }
        Ok(())
    }
}

/// Everything `bb-worker` does once its config is loaded: logging, metrics,
/// then working until SIGTERM or SIGINT (and the shutdown grace after it).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _telemetry = bb_util::logging::init(&config.log, "bb-worker")?;
    bb_util::metrics::register(metrics::FAMILIES);
    let draining = bb_util::shutdown::on_signals()?;
    if let Some(address) = config.http_listen {
        let authentication = bb_util::auth::Authentication::new(&config.authentication, &["http"])?;
        let addresses = [bb_util::grpc::ListenAddress::Tcp(address)];
        let guard = bb_util::grpc::Guard::for_listener(
            &authentication,
            "http",
            &addresses,
            config.http_tls.as_ref(),
        )?;
        let listener = tokio::net::TcpListener::bind(address).await?;
        let scheme = if config.http_tls.is_some() { "https" } else { "http" };
        tracing::info!("metrics on {scheme}://{address}/metrics");
        let router = bb_util::metrics::router();
        tokio::spawn(bb_util::http::serve(router, listener, guard, draining.clone()));
    }
    Worker::new(config)?.run(draining).await
}
