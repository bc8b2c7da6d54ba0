//! bb: one command for the farm. `bb farm` runs a whole farm on this
//! machine; `bb exec` runs a command on a farm; the rest inspects and
//! administers one. The services themselves are here too (`bb scheduler`,
//! `bb worker`, `bb runner`, `bb storage`), so one binary is a whole farm.

mod action;
mod admin;
mod blobs;
mod exec;
mod farm;
mod farm_cgroups;
mod farm_config;
mod farm_tls;
mod http;
mod remote;
mod supervise;
mod token;

use bb_util::cli::ConfigFlags;
use clap::{Parser, Subcommand};

/// A remote-execution build farm for Bazel and every other REv2 client.
///
/// Start a farm on this machine with `bb farm`, then point Bazel at it with
/// the flags it prints, or run a command on it with `bb exec -- CMD`.
#[derive(Parser)]
#[command(name = "bb", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a complete farm here, in the foreground: a scheduler with
    /// storage, and workers with their runners. Ctrl-C stops it.
    Farm(farm::FarmArgs),
    /// Run one command on a farm: upload its inputs, execute it, print its
    /// output, download its outputs, exit with its exit code.
    Exec(exec::ExecArgs),
    /// Show a farm's queues and workers.
    Status(admin::StatusArgs),
    /// Let a worker finish its action and take no new one (by worker ID or host name).
    Drain(admin::WorkerArgs),
    /// Let a drained worker take actions again.
    Undrain(admin::WorkerArgs),
    /// Put blobs into and get them out of the CAS.
    #[command(subcommand)]
    Cas(blobs::CasCommand),
    /// Look up results in the Action Cache.
    #[command(subcommand)]
    Ac(blobs::AcCommand),
    /// Fetch a stored action's inputs, to look at it and run it again.
    #[command(subcommand)]
    Action(action::ActionCommand),
    /// Make bearer tokens for a farm's tokens file.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run bb-scheduler (the same as the bb-scheduler program).
    #[command(hide = true)]
    Scheduler(ConfigFlags),
    /// Run bb-worker.
    #[command(hide = true)]
    Worker(ConfigFlags),
    /// Run bb-runner.
    #[command(hide = true)]
    Runner(ConfigFlags),
    /// Run bb-storage.
    #[command(hide = true)]
    Storage(ConfigFlags),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs the command; `Ok(code)` is the process exit code.
fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        // Before any thread: the runner drops capabilities, which are per thread.
        Command::Runner(flags) => {
            if let Some(config) = flags.load(bb_runner::config::DEFAULT_CONFIG)? {
                bb_runner::run(config)?;
            }
            Ok(0)
        }
        Command::Scheduler(flags) => {
            if let Some(config) = flags.load(bb_scheduler::config::DEFAULT_CONFIG)? {
                runtime()?.block_on(bb_scheduler::server::run(config))?;
            }
            Ok(0)
        }
        Command::Worker(flags) => {
            if let Some(config) = flags.load(bb_worker::config::DEFAULT_CONFIG)? {
                runtime()?.block_on(bb_worker::run(config))?;
            }
            Ok(0)
        }
        Command::Storage(flags) => {
            if let Some(config) = flags.load(bb_storage::config::DEFAULT_CONFIG)? {
                runtime()?.block_on(bb_storage::server::run(config))?;
            }
            Ok(0)
        }
        Command::Farm(args) => runtime()?.block_on(farm::run(args)).map(|()| 0),
        Command::Exec(args) => runtime()?.block_on(exec::run(args)),
        Command::Status(args) => runtime()?.block_on(admin::status(args)).map(|()| 0),
        Command::Drain(args) => runtime()?.block_on(admin::set_drained(args, true)).map(|()| 0),
        Command::Undrain(args) => runtime()?.block_on(admin::set_drained(args, false)).map(|()| 0),
        Command::Cas(command) => runtime()?.block_on(blobs::cas(command)).map(|()| 0),
        Command::Ac(command) => runtime()?.block_on(blobs::ac(command)).map(|()| 0),
        Command::Action(command) => runtime()?.block_on(action::run(command)).map(|()| 0),
        Command::Token(command) => token::run(command).map(|()| 0),
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            // One line a person can act on: the error and its causes.
            eprintln!("bb: {error:#}");
            std::process::exit(1);
        }
    }
}
