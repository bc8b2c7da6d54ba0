//! bb-runner: the only process of the farm that runs foreign code. It holds
//! the least privilege: no capabilities beyond those configured, and
//! `no_new_privs` for everything it starts.

pub mod capabilities;
pub mod cleanup;
pub mod config;
pub mod process;
pub mod service;

use bb_proto::buildbarn::runner::runner_server::RunnerServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Serves the Runner API on the configured socket until `shutdown`.
pub async fn serve(config: config::Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listeners = bb_util::grpc::bind_all(std::slice::from_ref(&config.listen)).await?;
    if let bb_util::grpc::ListenAddress::Unix(path) = &config.listen {
        // Reachable by the socket's group (the worker), nobody else.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    let routes = Routes::new(RunnerServer::new(service::RunnerService::new(config)));
    bb_util::grpc::serve(routes, listeners, shutdown).await
}
