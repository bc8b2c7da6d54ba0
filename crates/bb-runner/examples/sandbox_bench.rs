//! What the sandbox costs per action: `/bin/true` through an in-process
//! runner with namespaces and a cgroup each, and through one without
//! either, against the floor of spawning `/bin/true` directly.
//!
//!     cargo run --release -p bb-runner --example sandbox_bench [-- --actions 500]
//!
//! Needs a host where the runner gets both (as root here: cgroup v1).

use bb_proto::buildbarn::runner::RunRequest;
use bb_proto::buildbarn::runner::runner_client::RunnerClient;
use clap::Parser;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Flags {
    /// Actions per runner, after a warm-up.
    #[arg(long, default_value_t = 500)]
    actions: usize,
    /// Idle time between actions, as between a worker's actions: what the
    /// runner prepares ahead is then ready (0: back to back, the
    /// preparing competes with the actions for the CPU).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// Median milliseconds per Run of `/bin/true`, with `sandbox` as the
/// runner's `[sandbox]` table.
async fn measure(sandbox: &str, actions: usize, pause: Duration) -> anyhow::Result<(f64, String)> {
    let build = tempfile::tempdir()?;
    let socket = build.path().join("runner.sock");
    let text = format!(
        "listen = \"unix:{}\"\nbuild_directory = \"{}\"\n[sandbox]\n{sandbox}",
        socket.display(),
        build.path().display()
    );
    let config: bb_runner::config::Config = bb_util::config::parse(&text, "bench")?;
    let isolation = bb_runner::service::RunnerService::new(config.clone())?.describe_isolation();
    let shutdown = CancellationToken::new();
    tokio::spawn(bb_runner::serve(config, shutdown.clone()));
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut client = RunnerClient::new(bb_util::grpc::channel(&format!("unix:{}", socket.display()))?);
    let mut samples = Vec::with_capacity(actions);
    for i in 0..actions + 50 {
        let id = format!("a{i}");
        for sub in ["root", "tmp"] {
            std::fs::create_dir_all(build.path().join(&id).join(sub))?;
        }
        let request = RunRequest {
            arguments: vec!["/bin/true".into()],
            stdout_path: format!("{id}/stdout"),
            stderr_path: format!("{id}/stderr"),
            input_root_directory: format!("{id}/root"),
            temporary_directory: format!("{id}/tmp"),
            ..Default::default()
        };
        let start = Instant::now();
        let response = client.run(request).await?.into_inner();
        anyhow::ensure!(response.exit_code == 0, "/bin/true failed: {response:?}");
        if i >= 50 {
            samples.push(start.elapsed());
        }
        std::fs::remove_dir_all(build.path().join(&id))?;
        tokio::time::sleep(pause).await;
    }
    shutdown.cancel();
    Ok((median(samples), isolation))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let pause = Duration::from_millis(flags.pause_ms);
    let spawns = (0..200)
        .map(|_| {
            let start = Instant::now();
            std::process::Command::new("/bin/true").status().expect("spawn /bin/true");
            start.elapsed()
        })
        .collect();
    let floor = median(spawns);
    let bare_config = "namespaces = false\ncgroup_parent = \"bb-bench-no-such-cgroup\"\n";
    let (bare, bare_isolation) = measure(bare_config, flags.actions, pause).await?;
    let parts = [
        "namespaces = false\n",
        "cgroup_parent = \"bb-bench-no-such-cgroup\"\n",
        "cgroup_parent = \"bb-bench-no-such-cgroup\"\nread_only_paths = []\nhidden_paths = []\n",
    ];
    let mut measured = Vec::new();
    for part in parts {
        measured.push(measure(part, flags.actions, pause).await?);
    }
    let (sandboxed, isolation) = measure("require_isolation = true\n", flags.actions, pause).await?;
    println!("spawning /bin/true directly (the floor): median {floor:.3} ms");
    println!("runner, {bare_isolation}: median {bare:.3} ms ({:.2}x the floor)", bare / floor);
    for ((time, isolation), part) in measured.iter().zip(parts) {
        println!(
            "runner, {isolation} ({}): median {time:.3} ms ({:.2}x the floor)",
            part.trim().replace('\n', ", "),
            time / floor
        );
    }
    println!("runner, {isolation}: median {sandboxed:.3} ms ({:.2}x the floor)", sandboxed / floor);
    let added = sandboxed - bare;
    println!("the sandbox adds {added:.3} ms per action ({:.2}x the floor)", added / floor);
    Ok(())
}
