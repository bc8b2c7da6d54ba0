//! `bb cas put|get` and `bb ac get`.

use crate::remote;
use bb_client::tree::hash_file;
use bb_client::{Source, StorageClient};
use bb_proto::reapi;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct Endpoint {
    #[command(flatten)]
    pub connection: remote::Connection,
    /// Instance name.
    #[arg(long, default_value = "")]
    pub instance: String,
}

#[derive(Subcommand)]
pub enum CasCommand {
    /// Upload a file; prints its digest (HASH/SIZE).
    Put {
        file: PathBuf,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Download a blob (HASH/SIZE) to stdout or to a file.
    Get {
        digest: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(Subcommand)]
pub enum AcCommand {
    /// Show the cached result of an action (its digest, HASH/SIZE).
    Get {
        action: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub async fn cas(command: CasCommand) -> anyhow::Result<()> {
    match command {
        CasCommand::Put { file, endpoint } => {
            let digest = hash_file(&file, bb_util::DigestFunction::Sha256)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let storage = StorageClient::new(endpoint.connection.channel()?);
            storage.upload(&endpoint.instance, vec![(digest, Source::File(file.clone()))]).await.map_err(
                |s| {
                    remote::explain(
                        &endpoint.connection.endpoint,
                        &format!("uploading {}", file.display()),
                        &s,
                    )
                },
            )?;
            println!("{}/{}", digest.hash_hex(), digest.size());
            Ok(())
        }
        CasCommand::Get { digest, output, endpoint } => {
            let digest = remote::parse_digest(&digest)?;
            let storage = StorageClient::new(endpoint.connection.channel()?);
            let temporary;
            let path = match &output {
                Some(path) => path.clone(),
                None => {
                    temporary = tempfile::NamedTempFile::new()?;
                    temporary.path().to_path_buf()
                }
            };
            storage
                .read_to_file(&endpoint.instance, &digest, &path, "blob")
                .await
                .map_err(|s| remote::explain(&endpoint.connection.endpoint, &format!("blob {digest}"), &s))?;
            if output.is_none() {
                std::io::stdout().write_all(&std::fs::read(&path)?)?;
            }
            Ok(())
        }
    }
}

pub async fn ac(command: AcCommand) -> anyhow::Result<()> {
    let AcCommand::Get { action, endpoint } = command;
    let digest = remote::parse_digest(&action)?;
    let mut client = reapi::action_cache_client::ActionCacheClient::new(endpoint.connection.channel()?);
    let request = reapi::GetActionResultRequest {
        instance_name: endpoint.instance.clone(),
        action_digest: Some(digest.to_proto()),
        digest_function: digest.function().to_proto(),
        ..Default::default()
    };
    let result = client
        .get_action_result(request)
        .await
        .map_err(|s| {
            remote::explain(&endpoint.connection.endpoint, &format!("action result of {digest}"), &s)
        })?
        .into_inner();
    print!("{}", describe(&result));
    Ok(())
}

fn show(digest: &Option<reapi::Digest>) -> String {
    digest.as_ref().map_or("-".into(), |d| format!("{}/{}", d.hash, d.size_bytes))
}

/// An ActionResult in a few lines.
pub fn describe(result: &reapi::ActionResult) -> String {
    let mut text = format!("exit code: {}\n", result.exit_code);
    text += &format!("stdout: {}\nstderr: {}\n", show(&result.stdout_digest), show(&result.stderr_digest));
    for file in &result.output_files {
        text += &format!(
            "output file {}: {}{}\n",
            file.path,
            show(&file.digest),
            if file.is_executable { " (executable)" } else { "" }
        );
    }
    for directory in &result.output_directories {
        text += &format!("output directory {}: tree {}\n", directory.path, show(&directory.tree_digest));
    }
    #[allow(deprecated)]
    for symlink in result
        .output_symlinks
        .iter()
        .chain(&result.output_file_symlinks)
        .chain(&result.output_directory_symlinks)
    {
        text += &format!("output symlink {} -> {}\n", symlink.path, symlink.target);
    }
    if let Some(metadata) = &result.execution_metadata {
        text += &format!("worker: {}\n", metadata.worker);
    }
    text
}
