//! Benchmark: laying out an input root of 10,000 files (100 MB) from a cold
//! file cache (every file downloaded from a bb-storage over loopback gRPC)
//! and from a warm one (hardlinks only), next to `cp -al` and `cp -r` of the
//! same tree on the same disk.
//!
//!     cargo run --release -p bb-worker --example materialize_bench -- [--dir /var/tmp]

use bb_client::{Source, StorageClient};
use bb_proto::reapi;
use bb_util::dir::Directory;
use bb_util::{Digest, DigestFunction};
use bb_worker::file_cache::FileCache;
use bb_worker::inputs::{DirectoryCache, InputLimits, InputTree};
use bytes::Bytes;
use clap::Parser;
use prost::Message;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Flags {
    /// Where to make the trees (the disk being measured).
    #[arg(long, default_value = "/var/tmp")]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100)]
    directories: usize,
    #[arg(long, default_value_t = 100)]
    files_per_directory: usize,
    #[arg(long, default_value_t = 10_000)]
    file_size: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn drop_caches() {
    let _ = std::process::Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn run(command: &str, args: &[&Path]) {
    let status = std::process::Command::new(command).args(args).status().expect("run");
    assert!(status.success(), "{command} failed");
}

/// Fetches the tree, fills the cache, lays the tree out under `target`.
async fn materialize(
    target: &Path,
    cache: &std::sync::Arc<FileCache>,
    storage: &StorageClient,
    root: &Digest,
    directories: &DirectoryCache,
) -> Duration {
    std::fs::create_dir(target).unwrap();
    let start = Instant::now();
    let limits = InputLimits::default();
    let tree = InputTree::fetch(storage, "", root, directories, &limits, u64::MAX).await.unwrap();
    cache.ensure(&tree.keys(), storage, "").await.unwrap();
    let (cache, target) = (cache.clone(), Directory::open(target).unwrap());
    tokio::task::spawn_blocking(move || tree.materialize(&target, &cache)).await.unwrap().unwrap();
    start.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let work = tempfile::Builder::new().prefix("bb-materialize").tempdir_in(&flags.dir)?;

    // A storage to download from.
    let config: bb_storage::Config = bb_util::config::parse(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage.cas]\nbackend = \"memory\"\nmax_size = \"2GiB\"\n\
         [storage.action_cache]\n[storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"1MiB\"\n",
        "bench",
    )?;
    let server = bb_storage::StorageServer::bind(&config).await?;
    let address = server.grpc_addresses()[0].to_string();
    tokio::spawn(server.run(tokio_util::sync::CancellationToken::new()));
    let storage = StorageClient::new(bb_util::grpc::channel(&address)?);

    // The tree: distinct pseudo-random files in nested directories.
    let mut uploads = Vec::new();
    let mut root = reapi::Directory::default();
    let mut state = 0x9e3779b97f4a7c15u64;
    for d in 0..flags.directories {
        let mut directory = reapi::Directory::default();
        for f in 0..flags.files_per_directory {
            let data: Vec<u8> = (0..flags.file_size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let digest = Digest::of(DigestFunction::Sha256, &data);
            uploads.push((digest, Source::Bytes(Bytes::from(data))));
            directory.files.push(reapi::FileNode {
                name: format!("file{f:04}.dat"),
                digest: Some(digest.to_proto()),
                is_executable: f % 10 == 0,
                node_properties: None,
            });
        }
        let bytes = Bytes::from(directory.encode_to_vec());
        let digest = Digest::of(DigestFunction::Sha256, &bytes);
        uploads.push((digest, Source::Bytes(bytes)));
        root.directories
            .push(reapi::DirectoryNode { name: format!("dir{d:03}"), digest: Some(digest.to_proto()) });
    }
    let root_bytes = Bytes::from(root.encode_to_vec());
    let root_digest = Digest::of(DigestFunction::Sha256, &root_bytes);
    uploads.push((root_digest, Source::Bytes(root_bytes)));
    storage.upload("", uploads).await?;
    let total_files = flags.directories * flags.files_per_directory;
    println!(
        "input root: {total_files} files of {} bytes ({} MB) in {} directories, under {}",
        flags.file_size,
        total_files * flags.file_size / 1_000_000,
        flags.directories,
        flags.dir.display()
    );

    let (mut cold, mut warm, mut cp_al, mut cp_r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..flags.rounds {
        let cache_dir = work.path().join(format!("cache{round}"));
        let cache = std::sync::Arc::new(FileCache::open(&cache_dir, 4 << 30, 1_000_000, 16)?);
        let directories = DirectoryCache::new(64 << 20);
        drop_caches();
        let target = |name: String| work.path().join(name);
        cold.push(
            materialize(&target(format!("cold{round}")), &cache, &storage, &root_digest, &directories).await,
        );
        // A fresh directory cache: the warm run fetches the tree again.
        let fresh_directories = DirectoryCache::new(64 << 20);
        warm.push(
            materialize(&target(format!("warm{round}")), &cache, &storage, &root_digest, &fresh_directories)
                .await,
        );

        let source = work.path().join(format!("cold{round}"));
        cp_al
            .push(timed(|| run("cp", &["-al".as_ref(), &source, &work.path().join(format!("cpal{round}"))])));
        drop_caches();
        cp_r.push(timed(|| run("cp", &["-r".as_ref(), &source, &work.path().join(format!("cpr{round}"))])));
    }
    let (cold, warm, cp_al, cp_r) = (median(cold), median(warm), median(cp_al), median(cp_r));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("medians of {} rounds:", flags.rounds);
    println!("  warm file cache (hardlinks):     {:8.1} ms  ({:.2}x cp -al)", ms(warm), ms(warm) / ms(cp_al));
    println!("  cp -al                           {:8.1} ms", ms(cp_al));
    println!("  cold file cache (download+write): {:7.1} ms  ({:.2}x cp -r)", ms(cold), ms(cold) / ms(cp_r));
    println!("  cp -r                            {:8.1} ms", ms(cp_r));
    Ok(())
}
