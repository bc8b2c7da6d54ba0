//! bb-runner: the only process of the farm that runs foreign code. It holds
//! the least privilege: no capabilities beyond those configured, and
//! `no_new_privs` for everything it starts.

pub mod capabilities;
pub mod cleanup;
pub mod config;
pub mod process;
pub mod sandbox;
pub mod service;

use bb_proto::buildbarn::runner::runner_server::RunnerServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Serves the Runner API on the configured socket until `shutdown`.
pub async fn serve(config: config::Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let service = service::RunnerService::new(config.clone())?;
    let missing = service.missing_isolation();
    if !missing.is_empty() {
        let missing = missing.join("; ");
        if config.sandbox.require_isolation {
            anyhow::bail!("require_isolation is set, but this host cannot give actions {missing}");
        }
        tracing::warn!("actions run without {missing}");
    }
    tracing::info!("each action runs with {}", service.describe_isolation());
    let listeners = bb_util::grpc::bind_all(std::slice::from_ref(&config.listen)).await?;
    if let bb_util::grpc::ListenAddress::Unix(path) = &config.listen {
        // Reachable by the socket's group (the worker), nobody else.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    let routes = Routes::new(RunnerServer::new(service));
    bb_util::grpc::serve(routes, listeners, shutdown).await
}

/// Everything `bb-runner` does once its config is loaded: logging, dropping
/// capabilities (before any other thread exists: they are per thread), then
/// serving until SIGTERM or SIGINT.
pub fn run(config: config::Config) -> anyhow::Result<()> {
    let _telemetry = bb_util::logging::init(&config.log, "bb-runner")?;
    let worker_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&config.build_directory).ok().map(|m| m.uid())
    };
    config.check_kill_scope(nix::unistd::geteuid().as_raw(), worker_uid).map_err(anyhow::Error::msg)?;
    let keep = config.capabilities().map_err(anyhow::Error::msg)?;
    let held = capabilities::drop_all_but(&keep)?;
    tracing::info!(
        "capabilities kept: {} (bounding set: {}); actions start with no_new_privs",
        capabilities::names(&held.effective),
        capabilities::names(&held.bounding)
    );
    if held.bounding_kept {
        tracing::warn!(
            "the bounding set could not be emptied (no CAP_SETPCAP): start bb-runner as root or with an empty \
             CapabilityBoundingSet so actions cannot regain capabilities"
        );
    }
    if !keep.is_subset(&held.effective) {
        anyhow::bail!(
            "keep_capabilities asks for {} but the runner only has {}",
            capabilities::names(&keep),
            capabilities::names(&held.effective)
        );
    }
    // One thread for the RPCs, the blocking work on tokio's blocking pool:
    // the runner's own work per call is short, and action starts are
    // serialized anyway. Sandboxes are not forks of this process but of
    // its zygote (see sandbox::zygote), forked as the service is made.
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let shutdown = bb_util::shutdown::on_signals()?;
        tracing::info!(
            "runner API on {}, build directory {}",
            config.listen,
            config.build_directory.display()
        );
        serve(config, shutdown).await
    })
}
