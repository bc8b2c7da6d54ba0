//! What chunked uploads save: a large blob is uploaded, then the same blob
//! with a region in the middle changed, once whole (ByteStream) and once
//! split (FastCDC with the server's announced parameters, FindMissingBlobs,
//! the missing chunks, SpliceBlob). Reports bytes sent, time and what the
//! server's CAS directory grew by, next to the in-process SHA-256 time of
//! the blob (the floor: every upload hashes it at least once).
//!
//!     cargo run --release -p bb-storage --example split_bench -- \
//!         --endpoint grpc://127.0.0.1:8981 --cas-dir DIR --size 1GiB
//!
//! checks/bench/split.sh starts a server and runs this against it.

mod common;

use bb_client::GrpcStore;
use bb_proto::reapi;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_storage::store::BlobStore;
use bb_util::chunking::{Chunker, FastCdcParams};
use bb_util::config::ByteSize;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::Parser;
use common::pseudo_random;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Flags {
    /// bb-storage's gRPC endpoint.
    #[arg(long, default_value = "grpc://127.0.0.1:8981")]
    endpoint: String,
    /// The server's CAS directory, to measure what each upload stored.
    #[arg(long)]
    cas_dir: PathBuf,
    /// Size of the blob.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Size of the region changed in the middle for the second upload.
    #[arg(long, default_value = "1MiB")]
    change: ByteSize,
    /// Chunk uploads in flight at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

/// Bytes of the files under `dir`.
fn stored_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => stored_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// One upload's cost.
struct Cost {
    sent: u64,
    time: Duration,
    stored: u64,
}

struct Client {
    store: GrpcStore,
    cas: ContentAddressableStorageClient<bb_util::grpc::Channel>,
    params: FastCdcParams,
    parallel: usize,
    cas_dir: PathBuf,
}

impl Client {
    async fn whole(&self, data: Bytes) -> anyhow::Result<Cost> {
        let before = stored_bytes(&self.cas_dir);
        let start = Instant::now();
        let digest = Digest::of(DigestFunction::Sha256, &data);
        let sent = data.len() as u64;
        self.store.put(&digest, data).await?;
        Ok(Cost { sent, time: start.elapsed(), stored: stored_bytes(&self.cas_dir) - before })
    }

    async fn split(&self, data: Bytes) -> anyhow::Result<Cost> {
        let before = stored_bytes(&self.cas_dir);
        let start = Instant::now();
        let digest = Digest::of(DigestFunction::Sha256, &data);
        let chunks: Vec<(Digest, Bytes)> = Chunker::split(self.params, &data)
            .into_iter()
            .map(|chunk| (Digest::of(DigestFunction::Sha256, &chunk), chunk))
            .collect();
        let digests: Vec<Digest> = chunks.iter().map(|(d, _)| *d).collect();
        let missing = self.store.find_missing(&digests).await?;
        let uploads: Vec<(Digest, Bytes)> = chunks.into_iter().filter(|(d, _)| missing.contains(d)).collect();
        let sent = uploads.iter().map(|(_, c)| c.len() as u64).sum();
        let results: Vec<_> = futures::stream::iter(uploads)
            .map(|(d, chunk)| async move { self.store.put(&d, chunk).await })
            .buffer_unordered(self.parallel)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let request = reapi::SpliceBlobRequest {
            blob_digest: Some(digest.to_proto()),
            chunk_digests: digests.iter().map(Digest::to_proto).collect(),
            digest_function: DigestFunction::Sha256.to_proto(),
            chunking_function: reapi::chunking_function::Value::FastCdc2020 as i32,
            ..Default::default()
        };
        self.cas.clone().splice_blob(request).await?;
        Ok(Cost { sent, time: start.elapsed(), stored: stored_bytes(&self.cas_dir) - before })
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let channel = bb_util::grpc::channel(&flags.endpoint)?;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let caps = bb_proto::reapi::capabilities_client::CapabilitiesClient::new(channel.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await?
        .into_inner();
    let announced = caps.cache_capabilities.and_then(|c| c.fast_cdc_2020_params);
    let params =
        FastCdcParams::from_proto(&announced.ok_or_else(|| anyhow::anyhow!("no FastCDC announced"))?)
            .map_err(anyhow::Error::msg)?;
    cas = cas.max_decoding_message_size(64 << 20);
    let client = Client {
        store: GrpcStore::new(channel, ""),
        cas,
        params,
        parallel: flags.parallel,
        cas_dir: flags.cas_dir.clone(),
    };
    let (size, change) = (flags.size.as_usize(), flags.change.as_usize());

    let floor = {
        let data = pseudo_random(size, 1);
        let start = Instant::now();
        Digest::of(DigestFunction::Sha256, &data);
        start.elapsed()
    };
    println!(
        "blob {}, {} changed in the middle; chunks average {} KiB",
        flags.size,
        flags.change,
        params.average() >> 10
    );
    println!("floor: sha256 of the blob in-process, {:.2} s", floor.as_secs_f64());
    println!("{:<8} {:<10} {:>12} {:>12} {:>10}", "upload", "blob", "sent MiB", "stored MiB", "time/floor");
    for (method, seed) in [("whole", 2u64), ("split", 3)] {
        let first = pseudo_random(size, seed);
        let mut second = first.clone();
        let middle = size / 2;
        second[middle..middle + change].copy_from_slice(&pseudo_random(change, seed + 100));
        for (which, data) in [("original", first), ("changed", second)] {
            let data = Bytes::from(data);
            let cost = match method {
                "whole" => client.whole(data).await?,
                _ => client.split(data).await?,
            };
            println!(
                "{method:<8} {which:<10} {:>12.1} {:>12.1} {:>10.2}",
                mib(cost.sent),
                mib(cost.stored),
                cost.time.as_secs_f64() / floor.as_secs_f64()
            );
        }
    }
    Ok(())
}
