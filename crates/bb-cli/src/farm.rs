//! `bb farm`: a complete farm on this machine, in the foreground.
//!
//! The scheduler (with embedded storage), each worker and each runner are
//! processes of their own (this same binary: `bb scheduler`, `bb worker`,
//! `bb runner`), supervised; this process reaches the scheduler only over
//! the network, like any client. As root they run as users `bb-worker` and `bb-runner`
//! (created when missing) with no capabilities, as a NixOS host would run
//! them: foreign code never runs as root. Otherwise they run as the current
//! user, with a warning. A worker or runner that dies is started again (see
//! `supervise`).

use crate::farm_config;
use crate::farm_tls::FarmCredentials;
use crate::supervise::{Program, RunAs, Supervised};
use bb_util::config::ByteSize;
use clap::Args;
use nix::unistd::{Uid, User};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct FarmArgs {
    /// Directory for the farm's state: storage, file caches, build
    /// directories, logs. Created if missing.
    #[arg(long, value_name = "DIR", default_value = "bb-farm")]
    pub state_dir: PathBuf,
    /// Worker processes, each with its own runner.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Actions each worker runs at once (default: one per CPU core).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Port of the client API (REv2: Execution, CAS, Action Cache).
    #[arg(long, default_value_t = 8980)]
    pub port: u16,
    /// Port of the status page and /metrics.
    #[arg(long, default_value_t = 7982)]
    pub http_port: u16,
    /// Port of the worker API (on 127.0.0.1: the workers are local).
    #[arg(long, default_value_t = 8983)]
    pub worker_port: u16,
    /// Address the client API and status page listen on. Beyond loopback
    /// only with --tls: a farm without authentication must not serve a
    /// network.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// TLS on every port, and credentials required: a private CA, a server
    /// certificate, a certificate for the workers and a client token are
    /// made in the state directory (kept across restarts), and the flags
    /// for Bazel and bb are printed.
    #[arg(long)]
    pub tls: bool,
    /// Credentials required, as with --tls, but over plaintext: for clients
    /// that cannot speak TLS, on loopback only.
    #[arg(long, conflicts_with = "tls")]
    pub require_token: bool,
    /// An origin the Remote Asset API may fetch from (`https://github.com`,
    /// `http://127.0.0.1:8000`), for Bazel's
    /// --experimental_remote_downloader; repeat for more. None: only pushed
    /// assets are served.
    #[arg(long = "asset-origin", value_name = "ORIGIN")]
    pub asset_origins: Vec<String>,
    /// Size of the CAS.
    #[arg(long, default_value = "10GiB")]
    pub storage_size: ByteSize,
    /// Keep the CAS and the Action Cache on this bb-storage node
    /// (`grpc://host:port`) instead of the farm's own disk; repeat for
    /// more: blobs and results are sharded over them.
    #[arg(long = "storage-node", value_name = "ENDPOINT")]
    pub storage_nodes: Vec<String>,
    /// How many of the --storage-node nodes hold each blob and result (at
    /// most their number). With 2 or more, one node down stops nothing, and
    /// its copies are repaired when it is back.
    #[arg(long, default_value_t = 2)]
    pub storage_copies: usize,
    /// Keep the CAS and the Action Cache in this S3 bucket (it must
    /// exist), with the farm's own disk (--storage-size) as a read cache in
    /// front: the state directory can then be lost without losing the
    /// cache. Credentials: --bucket-credentials, else the standard AWS
    /// environment and files.
    #[arg(long, value_name = "NAME", conflicts_with = "storage_nodes")]
    pub bucket: Option<String>,
    /// The S3 API of a server other than AWS, e.g. http://127.0.0.1:8333
    /// (SeaweedFS, MinIO).
    #[arg(long, value_name = "URL", requires = "bucket")]
    pub bucket_endpoint: Option<String>,
    /// A file with the bucket's access keys, in the AWS shared credentials
    /// format ([default] aws_access_key_id = ..., aws_secret_access_key = ...).
    #[arg(long, value_name = "FILE", requires = "bucket")]
    pub bucket_credentials: Option<PathBuf>,
    /// Size of each worker's file cache.
    #[arg(long, default_value = "10GiB")]
    pub cache_size: ByteSize,
    /// A platform property the workers offer, as KEY=VALUE (repeatable).
    /// They offer OSFamily=linux and this machine's ISA (BuildStream's
    /// spelling, e.g. x86-64) unless told otherwise for the same key.
    #[arg(long = "platform", value_name = "KEY=VALUE")]
    pub platform: Vec<String>,
    /// Memory one action may use (swap off), e.g. 4GiB; past it the action
    /// is OOM-killed. Default: unlimited.
    #[arg(long, value_name = "SIZE")]
    pub action_memory: Option<ByteSize>,
    /// Processes and threads one action may have at once. Default: unlimited.
    #[arg(long, value_name = "N")]
    pub action_processes: Option<u64>,
    /// CPU cores' worth of time one action may use. Default: unlimited.
    #[arg(long, value_name = "CORES")]
    pub action_cpus: Option<f64>,
    /// Give actions the host's network (by default they have only a
    /// loopback interface of their own).
    #[arg(long)]
    pub allow_network: bool,
    /// Let an action ask for the host's network with the platform property
    /// dockerNetwork=bridge.
    #[arg(long)]
    pub network_property: bool,
    /// Actions see their input root as `/` (chroot_into_input_root), as
    /// BuildStream's sysroot actions expect: the input root must hold
    /// everything an action runs.
    #[arg(long, conflicts_with = "unsandboxed")]
    pub chroot: bool,
    /// Run actions without a sandbox: no namespaces and no cgroups, so they
    /// share the host's processes, /tmp and network, unlimited. For
    /// measuring what the sandbox costs; never for untrusted actions.
    #[arg(long)]
    pub unsandboxed: bool,
    /// Export the spans of every action (Execute, queueing, each worker
    /// phase, the runner), one trace per action, to this OpenTelemetry
    /// collector's OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// Who the worker and runner processes run as.
enum Identity {
    /// As the user running `bb farm`: actions are not separated from the worker.
    Current,
    /// As `bb-worker` and `bb-runner`, with no capabilities.
    Separate { worker: Box<User>, runner: Box<User> },
}

/// The commands that make the two users, the worker in the runner's group
/// (it reaches the runner's socket through it).
const CREATE_USERS: [&str; 2] = [
    "useradd --system --no-create-home --shell /usr/sbin/nologin bb-runner",
    "useradd --system --no-create-home --shell /usr/sbin/nologin -G bb-runner bb-worker",
];

fn identity() -> anyhow::Result<Identity> {
    if !Uid::effective().is_root() {
        eprintln!(
            "bb farm: warning: not running as root, so actions run as your user, like the worker: they could \
             change the worker's cached inputs. Run as root to separate them (users bb-worker and bb-runner)."
        );
        return Ok(Identity::Current);
    }
    let users = || (User::from_name("bb-worker").ok().flatten(), User::from_name("bb-runner").ok().flatten());
    if let (Some(worker), Some(runner)) = users() {
        return Ok(Identity::Separate { worker: Box::new(worker), runner: Box::new(runner) });
    }
    // Foreign code never runs as root: make the users, or refuse.
    for (user, command) in ["bb-runner", "bb-worker"].iter().zip(CREATE_USERS) {
        if User::from_name(user).ok().flatten().is_some() {
            continue;
        }
        let words: Vec<&str> = command.split(' ').collect();
        let made = std::process::Command::new(words[0]).args(&words[1..]).status().is_ok_and(|s| s.success());
        // Another `bb farm` starting at the same moment may have made it.
        let exists = || User::from_name(user).ok().flatten().is_some();
        if !made && !exists() {
            anyhow::bail!(
                "bb farm runs actions as user bb-runner and the worker as bb-worker, never as root, and could \
                 not create them; create them with:\n  {}\n  {}",
                CREATE_USERS[0],
                CREATE_USERS[1]
            );
        }
        if made {
            eprintln!("bb farm: created user {user} ({command})");
        }
    }
    match users() {
        (Some(worker), Some(runner)) => {
            Ok(Identity::Separate { worker: Box::new(worker), runner: Box::new(runner) })
        }
        _ => anyhow::bail!("users bb-worker and bb-runner were created but cannot be found"),
    }
}

fn make_directory(path: &Path, mode: u32, owner: Option<&User>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    if let Some(user) = owner {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

struct WorkerProcesses {
    name: String,
    directory: PathBuf,
    runner: Supervised,
    worker: Supervised,
    /// Removed once the runner is gone (fields drop in order).
    _cgroups: Option<crate::farm_cgroups::Delegated>,
}

/// Writes the scheduler's configuration and starts it; its warnings go to
/// the farm's stderr.
fn start_scheduler(args: &FarmArgs, credentials: Option<&FarmCredentials>) -> anyhow::Result<Supervised> {
    let state = args.state_dir.canonicalize()?;
    let listen = |port: u16| std::net::SocketAddr::new(args.listen, port).to_string();
    let mut table = farm_config::scheduler(
        &listen(args.port),
        args.worker_port,
        &listen(args.http_port),
        &state,
        args.storage_size,
        &args.asset_origins,
    );
    if !args.storage_nodes.is_empty() {
        farm_config::shard_storage(&mut table, &args.storage_nodes, args.storage_copies);
    }
    if let Some(bucket) = &args.bucket {
        let credentials = args.bucket_credentials.as_deref().map(std::path::absolute).transpose()?;
        let bucket = farm_config::Bucket {
            name: bucket,
            endpoint: args.bucket_endpoint.as_deref(),
            credentials_file: credentials.as_deref(),
        };
        farm_config::bucket_storage(&mut table, &bucket);
    }
    let scheme = if credentials.is_some() { "https" } else { "http" };
    let status_page = format!("{scheme}://{}:{}", public_host(args), args.http_port);
    if let Some(toml::Value::Table(scheduler)) = table.get_mut("scheduler") {
        scheduler.insert("status_page_url".into(), toml::Value::String(status_page));
    }
    if let Some(credentials) = credentials {
        crate::farm_tls::secure_scheduler(&mut table, credentials, args.tls);
    }
    farm_config::export_spans(&mut table, args.otlp_endpoint.as_deref());
    let config = state.join("scheduler.toml");
    std::fs::write(&config, toml::to_string(&table)?)?;
    for port in [args.port, args.http_port] {
        check_free(std::net::SocketAddr::new(args.listen, port))?;
    }
    check_free(std::net::SocketAddr::from(([127, 0, 0, 1], args.worker_port)))?;
    Supervised::start(Program {
        role: "scheduler",
        owner: None,
        config,
        log: None,
        run_as: None,
        stop_grace: Duration::from_secs(15),
        stale_socket: None,
    })
}

/// A port the farm is to serve must be free, or it says who to blame.
fn check_free(address: std::net::SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(address).map(drop).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {address}: {e} (is another farm running? choose other ports with --port, \
             --http-port, --worker-port)"
        )
    })
}

/// Prepares one worker's directories and configs, and starts its runner
/// and then the worker.
async fn start_worker(
    args: &FarmArgs,
    index: usize,
    identity: &Identity,
    hostname: &str,
    credentials: Option<&FarmCredentials>,
) -> anyhow::Result<WorkerProcesses> {
    let directory = args.state_dir.canonicalize()?.join(format!("worker-{index}"));
    let (worker_user, runner_user) = match identity {
        Identity::Separate { worker, runner } => (Some(worker.as_ref()), Some(runner.as_ref())),
        Identity::Current => (None, None),
    };
    make_directory(&directory, 0o755, None)?;
    let (build, cache, run) = (directory.join("build"), directory.join("cache"), directory.join("run"));
    // What earlier runs left behind (maybe files of the runner's user).
    if build.exists() {
        std::fs::remove_dir_all(&build)?;
    }
    make_directory(&build, 0o711, worker_user)?;
    make_directory(&cache, 0o700, worker_user)?;
    make_directory(&run, 0o750, runner_user)?;
    let socket = run.join("runner.sock");
    let _ = std::fs::remove_file(&socket);
    let name = if args.workers == 1 { hostname.to_string() } else { format!("{hostname}-{index}") };
    let slots = args.slots.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    // A dedicated runner user may have all its processes killed after each
    // action, unless several runners (whose actions would be killed too)
    // share it. Process groups are killed in any case.
    let kill_user_processes = runner_user.is_some() && args.workers == 1;
    let cgroups =
        runner_user.filter(|_| !args.unsandboxed).and_then(|user| crate::farm_cgroups::delegate(index, user));
    let runner_config = directory.join("runner.toml");
    let runner = farm_config::Runner {
        socket: &socket,
        build: &build,
        kill_user_processes,
        cgroup_parent: cgroups.as_ref().map(|c| c.name.as_str()),
        memory: args.action_memory,
        processes: args.action_processes,
        cpus: args.action_cpus,
        allow_network: args.allow_network,
        network_property: args.network_property,
        sandboxed: !args.unsandboxed,
        chroot: args.chroot,
    };
    let mut runner_table = farm_config::runner(&runner);
    farm_config::export_spans(&mut runner_table, args.otlp_endpoint.as_deref());
    std::fs::write(&runner_config, toml::to_string(&runner_table)?)?;
    let worker_config = directory.join("worker.toml");
    let worker = farm_config::Worker {
        scheduler_port: args.worker_port,
        storage_port: args.port,
        socket: &socket,
        build: &build,
        cache: &cache,
        cache_size: args.cache_size,
        slots,
        name: &name,
        platform: &farm_config::platform(&args.platform)?,
    };
    let mut worker_table = farm_config::worker(&worker);
    if let Some(credentials) = credentials {
        crate::farm_tls::secure_worker(
            &mut worker_table,
            credentials,
            args.tls,
            [args.worker_port, args.port],
        );
    }
    farm_config::export_spans(&mut worker_table, args.otlp_endpoint.as_deref());
    std::fs::write(&worker_config, toml::to_string(&worker_table)?)?;
    let runner_as: RunAs = runner_user.map(|u| (u.uid, u.gid, vec![u.gid]));
    // The worker joins the runner's group, for the socket.
    let worker_as: RunAs =
        worker_user.map(|u| (u.uid, u.gid, vec![u.gid, runner_user.map_or(u.gid, |r| r.gid)]));
    let program = |role, config: PathBuf, run_as, stop_grace, stale_socket| Program {
        role,
        owner: Some(name.clone()),
        log: Some(directory.join(format!("{role}.log"))),
        config,
        run_as,
        stop_grace,
        stale_socket,
    };
    let runner = Supervised::start(program(
        "runner",
        runner_config,
        runner_as,
        Duration::from_secs(5),
        Some(socket.clone()),
    ))?;
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Running actions get the worker's shutdown grace.
    let worker =
        Supervised::start(program("worker", worker_config, worker_as, Duration::from_secs(15), None))?;
    Ok(WorkerProcesses { name, directory, runner, worker, _cgroups: cgroups })
}

/// How the farm reads its scheduler's status page: over loopback, with
/// the farm's own client credentials, as `bb status` does.
struct StatusPage(crate::admin::StatusPage);

impl StatusPage {
    fn new(args: &FarmArgs, credentials: Option<&FarmCredentials>) -> Self {
        let host = if args.listen.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { args.listen };
        let scheme = if args.tls { "https" } else { "http" };
        let connection = crate::remote::Connection {
            endpoint: String::new(),
            tls_ca: credentials.filter(|_| args.tls).map(|c| c.ca.clone()),
            tls_client_cert: None,
            tls_client_key: None,
            token_file: credentials.map(|c| c.token_file.clone()),
            token: None,
        };
        let url = format!("{scheme}://{}", std::net::SocketAddr::new(host, args.http_port));
        StatusPage(crate::admin::StatusPage { connection, status_url: Some(url) })
    }

    /// The worker slots the scheduler lists, once it answers.
    async fn registered(&self) -> anyhow::Result<usize> {
        Ok(crate::admin::fetch(&self.0).await?.0.workers.len())
    }

    /// Waits until the scheduler answers; an error if it does not in time.
    async fn wait_until_up(&self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..200 {
            match self.registered().await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "the scheduler did not come up: {:#}",
            last.unwrap_or_else(|| anyhow::anyhow!("no answer"))
        )
    }

    /// Waits until the scheduler lists `slots` worker slots, or a while.
    async fn wait_for_workers(&self, slots: usize) -> usize {
        let mut registered = 0;
        for _ in 0..100 {
            registered = self.registered().await.unwrap_or(registered);
            if registered >= slots {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        registered
    }
}

/// The worker's and runner's users must be able to reach the state
/// directory: every directory above it must let others pass.
fn check_reachable(state: &Path) -> anyhow::Result<()> {
    for ancestor in state.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            anyhow::bail!(
                "{} (mode {:o}) keeps users bb-worker and bb-runner out of the state directory {}; \
                 choose a --state-dir they can reach, or `chmod o+x {}`",
                ancestor.display(),
                mode & 0o777,
                state.display(),
                ancestor.display()
            );
        }
    }
    Ok(())
}

pub async fn run(args: FarmArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let warnings = bb_util::logging::LogConfig { level: "warn".into(), ..Default::default() };
    let _telemetry = bb_util::logging::init(&warnings, "bb-farm")?;
    let identity = identity()?;
    make_directory(&args.state_dir, 0o755, None)?;
    if let Identity::Separate { .. } = identity {
        check_reachable(&args.state_dir.canonicalize()?)?;
    }
    if !args.tls && !args.listen.is_loopback() {
        anyhow::bail!(
            "bb farm --listen {} without --tls would let anyone who reaches it run commands on this machine \
             (or read its token off the network): add --tls (TLS, and a token required), or listen on 127.0.0.1",
            args.listen
        );
    }
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let worker_user = match &identity {
        Identity::Separate { worker, .. } => Some(worker.as_ref()),
        Identity::Current => None,
    };
    let credentials = match args.tls || args.require_token {
        true => {
            let names = crate::farm_tls::server_names(&hostname, args.listen);
            Some(crate::farm_tls::prepare(&args.state_dir.canonicalize()?, &names, worker_user)?)
        }
        false => None,
    };
    let shutdown = bb_util::shutdown::on_signals()?;
    let scheduler = start_scheduler(&args, credentials.as_ref())?;
    let status = StatusPage::new(&args, credentials.as_ref());
    if let Err(e) = status.wait_until_up().await {
        scheduler.stop().await;
        return Err(e);
    }

    let mut workers = Vec::new();
    for index in 0..args.workers {
        workers.push(start_worker(&args, index, &identity, &hostname, credentials.as_ref()).await?);
    }
    let slots = args.slots.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let registered = status.wait_for_workers(slots * args.workers).await;

    let host = public_host(&args);
    let separation = match &identity {
        Identity::Separate { .. } => "actions run as bb-runner, apart from the worker (bb-worker)",
        Identity::Current => "actions run as the same user as the worker",
    };
    println!("bb farm is up: {} worker(s), {registered} slots registered; {separation}.", args.workers);
    let jobs = (slots * args.workers * 2).max(8);
    match &credentials {
        None => announce_plain(&args, &host, &workers, jobs)?,
        Some(credentials) => announce_secure(&args, &host, &workers, jobs, credentials)?,
    }
    println!("Ctrl-C stops the farm.");

    // Run until a signal; whatever dies meanwhile is started again.
    shutdown.cancelled().await;

    eprintln!("bb farm: stopping");
    let (runners, workers): (Vec<Supervised>, Vec<Supervised>) =
        workers.into_iter().map(|w| (w.runner, w.worker)).unzip();
    futures::future::join_all(workers.into_iter().map(Supervised::stop)).await;
    futures::future::join_all(runners.into_iter().map(Supervised::stop)).await;
    scheduler.stop().await;
    Ok(())
}

/// The host users reach the farm by, as a URL writes it.
fn public_host(args: &FarmArgs) -> String {
    match args.listen {
        address if address.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(address) => format!("[{address}]"),
        IpAddr::V4(address) => address.to_string(),
    }
}

fn announce_common(args: &FarmArgs, workers: &[WorkerProcesses]) -> anyhow::Result<()> {
    println!("  state        {}", args.state_dir.canonicalize()?.display());
    for worker in workers {
        println!("  worker {}: logs in {}", worker.name, worker.directory.display());
    }
    Ok(())
}

const BAZEL_EXECUTION: &str = "--remote_default_exec_properties=OSFamily=linux --spawn_strategy=remote \
                               --remote_timeout=600";

fn announce_plain(
    args: &FarmArgs,
    host: &str,
    workers: &[WorkerProcesses],
    jobs: usize,
) -> anyhow::Result<()> {
    let endpoint = format!("grpc://{host}:{}", args.port);
    println!(
        "  endpoint     {endpoint}  (REv2 Execution, CAS, Action Cache; instance name: any, \"\" included)"
    );
    println!("  status page  http://{host}:{}/", args.http_port);
    announce_common(args, workers)?;
    println!("Build with Bazel through the farm:");
    println!("  bazel build --remote_executor={endpoint} {BAZEL_EXECUTION} --jobs={jobs} //...");
    println!("Or run one command on it:  bb exec -- echo hello");
    Ok(())
}

/// Prints the flags that reach a `--tls` farm, each credential by path
/// except Bazel's header, which can only hold the token itself.
fn announce_secure(
    args: &FarmArgs,
    host: &str,
    workers: &[WorkerProcesses],
    jobs: usize,
    credentials: &FarmCredentials,
) -> anyhow::Result<()> {
    let token = credentials.token()?;
    let ca = credentials.ca.display();
    let token_file = credentials.token_file.display();
    let (endpoint, bazel_tls, bb_tls) = match args.tls {
        true => {
            let endpoint = format!("grpcs://{host}:{}", args.port);
            println!("  endpoint     {endpoint}  (TLS; a token is required)");
            println!(
                "  status page  https://{host}:{}/  (any user name, the token as password)",
                args.http_port
            );
            println!("  CA           {ca}");
            (endpoint, format!(" --tls_certificate={ca}"), format!(" --tls-ca {ca}"))
        }
        false => {
            let endpoint = format!("grpc://{host}:{}", args.port);
            println!("  endpoint     {endpoint}  (plaintext, loopback only; a token is required)");
            println!(
                "  status page  http://{host}:{}/  (any user name, the token as password)",
                args.http_port
            );
            (endpoint, String::new(), String::new())
        }
    };
    println!("  token        {token_file}");
    announce_common(args, workers)?;
    println!("Bazel flags:");
    println!("  --remote_executor={endpoint}{bazel_tls} --remote_header=authorization=Bearer {token}");
    println!("Build with Bazel through the farm:");
    println!(
        "  bazel build --remote_executor={endpoint}{bazel_tls} '--remote_header=authorization=Bearer {token}' \
         {BAZEL_EXECUTION} --jobs={jobs} //..."
    );
    println!("bb flags:");
    println!("  --endpoint {endpoint}{bb_tls} --token-file {token_file}");
    println!(
        "Or run one command on it:  bb exec --endpoint {endpoint}{bb_tls} --token-file {token_file} -- echo hello"
    );
    Ok(())
}
