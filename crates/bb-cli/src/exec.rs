//! `bb exec`: one command, run on a farm as an REv2 action.

use crate::remote;
use bb_client::remote::BATCH_BLOB_LIMIT;
use bb_client::tree::TreeBuilder;
use bb_client::{Source, StorageClient};
use bb_proto::longrunning::operation;
use bb_proto::reapi;
use bb_util::config::HumanDuration;
use bb_util::path::RelativePath;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::Args;
use prost::Message;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Uploads bigger than this show a progress bar.
const PROGRESS_THRESHOLD: u64 = 16 << 20;
/// Bytes per upload round (one progress step).
const UPLOAD_ROUND: u64 = 8 << 20;

#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub connection: remote::Connection,
    /// Instance name.
    #[arg(long, default_value = "")]
    pub instance: String,
    /// A directory whose contents become the action's input root.
    #[arg(long, value_name = "DIR")]
    pub input: Option<PathBuf>,
    /// An output (file or directory) to download afterwards, relative to the
    /// working directory. Repeatable.
    #[arg(long = "output", value_name = "PATH")]
    pub outputs: Vec<String>,
    /// Where downloaded outputs go.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
    /// A platform property the action needs, NAME=VALUE. Repeatable.
    #[arg(long = "platform", value_name = "NAME=VALUE")]
    pub platform: Vec<String>,
    /// An environment variable of the action, NAME=VALUE. Repeatable.
    /// Without any, the action gets this shell's PATH.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The working directory, inside the input root.
    #[arg(long, value_name = "DIR", default_value = "")]
    pub cwd: String,
    /// The action's timeout, like "90s" or "10m" (the farm's default otherwise).
    #[arg(long)]
    pub timeout: Option<HumanDuration>,
    /// Run even when a cached result exists, and do not cache this one.
    #[arg(long)]
    pub no_cache: bool,
    /// Print where and how the action ran, on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn pairs(values: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{what} {v:?} is not NAME=VALUE"))
        })
        .collect()
}

/// The action and everything to upload for it.
struct Prepared {
    action_digest: Digest,
    uploads: Vec<(Digest, Source)>,
}

fn prepare(args: &ExecArgs) -> anyhow::Result<Prepared> {
    let function = DigestFunction::Sha256;
    let mut uploads = Vec::new();
    let root_digest = match &args.input {
        Some(directory) => {
            let handle = std::sync::Arc::new(
                bb_util::dir::Directory::open(directory)
                    .map_err(|e| anyhow::anyhow!("input {}: {e}", directory.display()))?,
            );
            let built = TreeBuilder::new(function, &mut uploads)
                .build(&handle, &bb_util::path::RelativePath::default())
                .map_err(|s| anyhow::anyhow!("input {}: {}", directory.display(), s.message()))?;
            for (digest, encoded) in built.directories {
                uploads.push((digest, Source::Bytes(encoded)));
            }
            uploads.push((built.root_digest, Source::Bytes(built.root_encoded)));
            built.root_digest
        }
        None => {
            let empty = Bytes::from(reapi::Directory::default().encode_to_vec());
            let digest = Digest::of(function, &empty);
            uploads.push((digest, Source::Bytes(empty)));
            digest
        }
    };
    let mut environment = pairs(&args.env, "--env")?;
    if environment.is_empty()
        && let Ok(path) = std::env::var("PATH")
    {
        environment.push(("PATH".into(), path));
    }
    environment.sort();
    let mut properties = pairs(&args.platform, "--platform")?;
    properties.sort();
    properties.dedup();
    let platform = reapi::Platform {
        properties: properties
            .into_iter()
            .map(|(name, value)| reapi::platform::Property { name, value })
            .collect(),
    };
    for output in &args.outputs {
        RelativePath::parse("--output", output).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let command = reapi::Command {
        arguments: args.command.clone(),
        environment_variables: environment
            .into_iter()
            .map(|(name, value)| reapi::command::EnvironmentVariable { name, value })
            .collect(),
        output_paths: args.outputs.clone(),
        // For REv2.0 servers, which read the platform from the Command.
        platform: Some(platform.clone()),
        working_directory: args.cwd.clone(),
        ..Default::default()
    };
    let command = Bytes::from(command.encode_to_vec());
    let command_digest = Digest::of(function, &command);
    uploads.push((command_digest, Source::Bytes(command)));
    let action = reapi::Action {
        command_digest: Some(command_digest.to_proto()),
        input_root_digest: Some(root_digest.to_proto()),
        timeout: args.timeout.map(|t| prost_types::Duration::try_from(t.get())).transpose()?,
        do_not_cache: args.no_cache,
        platform: Some(platform),
        ..Default::default()
    };
    let action = Bytes::from(action.encode_to_vec());
    let action_digest = Digest::of(function, &action);
    uploads.push((action_digest, Source::Bytes(action)));
    Ok(Prepared { action_digest, uploads })
}

/// Uploads what the farm lacks, with a progress bar for large inputs.
async fn upload(
    args: &ExecArgs,
    storage: &StorageClient,
    uploads: Vec<(Digest, Source)>,
) -> anyhow::Result<()> {
    let total: u64 = uploads.iter().map(|(d, _)| d.size()).sum();
    let bar = (total > PROGRESS_THRESHOLD && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading inputs {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let mut round = Vec::new();
    let mut round_bytes = 0;
    let mut rest = uploads.into_iter().peekable();
    while let Some((digest, source)) = rest.next() {
        round_bytes += digest.size();
        round.push((digest, source));
        if round_bytes >= UPLOAD_ROUND || rest.peek().is_none() {
            storage
                .upload(&args.instance, std::mem::take(&mut round))
                .await
                .map_err(|s| remote::explain(&args.connection.endpoint, "uploading inputs", &s))?;
            if let Some(bar) = &bar {
                bar.inc(round_bytes);
            }
            round_bytes = 0;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

fn stage_name(stage: i32) -> &'static str {
    use reapi::execution_stage::Value;
    match Value::try_from(stage).unwrap_or(Value::Unknown) {
        Value::CacheCheck => "checking the cache",
        Value::Queued => "queued",
        Value::Executing => "executing",
        Value::Completed => "completed",
        Value::Unknown => "unknown",
    }
}

/// Executes the action and returns its ExecuteResponse.
async fn execute(args: &ExecArgs, action: &Digest) -> anyhow::Result<reapi::ExecuteResponse> {
    let channel = args.connection.channel()?;
    let mut request = tonic::Request::new(reapi::ExecuteRequest {
        instance_name: args.instance.clone(),
        skip_cache_lookup: args.no_cache,
        action_digest: Some(action.to_proto()),
        digest_function: action.function().to_proto(),
        ..Default::default()
    });
    let metadata = reapi::RequestMetadata {
        tool_details: Some(reapi::ToolDetails {
            tool_name: "bb".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
        }),
        tool_invocation_id: format!("bb-exec-{}", std::process::id()),
        ..Default::default()
    };
    request.metadata_mut().insert_bin(
        "build.bazel.remote.execution.v2.requestmetadata-bin",
        tonic::metadata::MetadataValue::from_bytes(&metadata.encode_to_vec()),
    );
    // A caller's trace (TRACEPARENT) gets the farm's spans of the action.
    bb_util::trace_context::TraceContext::from_environment().insert_into(request.metadata_mut());
    let mut stream = reapi::execution_client::ExecutionClient::new(channel)
        .execute(request)
        .await
        .map_err(|s| remote::explain(&args.connection.endpoint, "Execute", &s))?
        .into_inner();
    let mut last_stage = None;
    while let Some(operation) =
        stream.message().await.map_err(|s| remote::explain(&args.connection.endpoint, "Execute", &s))?
    {
        if args.verbose
            && let Some(metadata) = &operation.metadata
            && let Ok(metadata) = reapi::ExecuteOperationMetadata::decode(metadata.value.as_slice())
            && last_stage != Some(metadata.stage)
        {
            eprintln!("bb: {}", stage_name(metadata.stage));
            last_stage = Some(metadata.stage);
        }
        match operation.result {
            Some(operation::Result::Response(any)) => {
                return reapi::ExecuteResponse::decode(any.value.as_slice())
                    .map_err(|e| anyhow::anyhow!("the farm sent an undecodable result: {e}"));
            }
            Some(operation::Result::Error(status)) => {
                anyhow::bail!("the operation failed: {}", status.message);
            }
            None => {}
        }
    }
    anyhow::bail!("the farm ended the operation without a result")
}

/// A blob's contents.
async fn fetch(
    args: &ExecArgs,
    storage: &StorageClient,
    digest: &reapi::Digest,
    what: &str,
) -> anyhow::Result<Bytes> {
    let digest = Digest::from_proto(DigestFunction::Sha256, digest)?;
    if digest.size() <= BATCH_BLOB_LIMIT {
        let mut blobs = storage
            .read_blobs(&args.instance, &[digest], what)
            .await
            .map_err(|s| remote::explain(&args.connection.endpoint, what, &s))?;
        return Ok(blobs.remove(&digest).unwrap_or_default());
    }
    let file = tempfile::NamedTempFile::new()?;
    storage
        .read_to_file(&args.instance, &digest, file.path(), what)
        .await
        .map_err(|s| remote::explain(&args.connection.endpoint, what, &s))?;
    Ok(Bytes::from(std::fs::read(file.path())?))
}

async fn write_file(
    args: &ExecArgs,
    storage: &StorageClient,
    path: &Path,
    digest: &reapi::Digest,
    executable: bool,
) -> anyhow::Result<()> {
    let data = fetch(args, storage, digest, "output file").await?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, &data).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Where an output named by the farm goes locally; refuses names that
/// would climb out of the output directory.
fn destination(args: &ExecArgs, name: &str) -> anyhow::Result<PathBuf> {
    let relative =
        RelativePath::parse("output", name).map_err(|e| anyhow::anyhow!("the farm returned {e}"))?;
    Ok(relative.under(&args.output_dir))
}

async fn download_outputs(
    args: &ExecArgs,
    storage: &StorageClient,
    result: &reapi::ActionResult,
) -> anyhow::Result<()> {
    for file in &result.output_files {
        let Some(digest) = &file.digest else { continue };
        write_file(args, storage, &destination(args, &file.path)?, digest, file.is_executable).await?;
    }
    for directory in &result.output_directories {
        let Some(tree_digest) = &directory.tree_digest else { continue };
        let tree = reapi::Tree::decode(fetch(args, storage, tree_digest, "output tree").await?)?;
        let root = destination(args, &directory.path)?;
        let children: std::collections::HashMap<Digest, &reapi::Directory> = tree
            .children
            .iter()
            .map(|c| (Digest::of(DigestFunction::Sha256, &c.encode_to_vec()), c))
            .collect();
        let mut pending = vec![(root, tree.root.clone().unwrap_or_default())];
        while let Some((path, node)) = pending.pop() {
            std::fs::create_dir_all(&path)?;
            for file in &node.files {
                bb_util::path::check_name("file", &file.name).map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(digest) = &file.digest {
                    write_file(args, storage, &path.join(&file.name), digest, file.is_executable).await?;
                }
            }
            for symlink in &node.symlinks {
                bb_util::path::check_name("symlink", &symlink.name).map_err(|e| anyhow::anyhow!("{e}"))?;
                let _ = std::fs::remove_file(path.join(&symlink.name));
                std::os::unix::fs::symlink(&symlink.target, path.join(&symlink.name))?;
            }
            for sub in &node.directories {
                bb_util::path::check_name("directory", &sub.name).map_err(|e| anyhow::anyhow!("{e}"))?;
                let digest = Digest::from_required(DigestFunction::Sha256, sub.digest.as_ref())?;
                let child =
                    children.get(&digest).ok_or_else(|| anyhow::anyhow!("tree lacks directory {digest}"))?;
                pending.push((path.join(&sub.name), (*child).clone()));
            }
        }
    }
    #[allow(deprecated)]
    for symlink in result
        .output_symlinks
        .iter()
        .chain(&result.output_file_symlinks)
        .chain(&result.output_directory_symlinks)
    {
        let path = destination(args, &symlink.path)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&symlink.target, &path)?;
    }
    Ok(())
}

/// Runs the command; returns the exit code to exit with.
pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let prepared = prepare(&args)?;
    let storage = StorageClient::new(args.connection.channel()?);
    upload(&args, &storage, prepared.uploads).await?;
    let response = execute(&args, &prepared.action_digest).await?;
    let status = response.status.clone().unwrap_or_default();
    let Some(result) = response.result else {
        anyhow::bail!(
            "action {} did not run: {:?}: {}",
            prepared.action_digest,
            tonic::Code::from_i32(status.code),
            status.message
        );
    };
    for (raw, digest, mut sink) in [
        (&result.stdout_raw, &result.stdout_digest, Box::new(std::io::stdout()) as Box<dyn Write>),
        (&result.stderr_raw, &result.stderr_digest, Box::new(std::io::stderr())),
    ] {
        let data = match digest {
            _ if !raw.is_empty() => Bytes::from(raw.clone()),
            Some(digest) => fetch(&args, &storage, digest, "action output").await?,
            None => Bytes::new(),
        };
        sink.write_all(&data)?;
        sink.flush()?;
    }
    download_outputs(&args, &storage, &result).await?;
    let worker = result.execution_metadata.as_ref().map_or("", |m| m.worker.as_str());
    if args.verbose {
        eprintln!(
            "bb: action={} worker={worker} cached={} exit={}",
            prepared.action_digest, response.cached_result, result.exit_code
        );
    } else if response.cached_result {
        eprintln!("bb: result served from the cache (it ran on {worker})");
    }
    if status.code == 0 && !response.message.is_empty() {
        // What the farm says of the run, e.g. that it ran out of memory.
        eprintln!("bb: {}", response.message);
    }
    if status.code != 0 {
        eprintln!(
            "bb: the action did not complete: {:?}: {}",
            tonic::Code::from_i32(status.code),
            status.message
        );
        return Ok(if status.code == tonic::Code::DeadlineExceeded as i32 { 124 } else { 1 });
    }
    Ok(result.exit_code)
}
