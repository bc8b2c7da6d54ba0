//! Benchmark of a running bb-storage over gRPC: ByteStream upload and
//! download of one large blob (MB/s), and FindMissingBlobs of many digests
//! (ms), next to the in-process SHA-256 speed on the same data, which is the
//! floor for uploads (the server must hash everything it stores).
//!
//!     cargo run --release -p bb-storage --example storage_bench -- \
//!         --endpoint grpc://127.0.0.1:8981 --size 1GiB
//!
//! checks/bench/storage.sh starts a server and runs this against it.

mod common;

use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{ReadRequest, WriteRequest};
use bb_proto::reapi;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_util::config::ByteSize;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource};
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use clap::Parser;
use common::pseudo_random;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Flags {
    /// bb-storage's gRPC endpoint.
    #[arg(long, default_value = "grpc://127.0.0.1:8981")]
    endpoint: String,
    /// Size of the blob moved through ByteStream.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Bytes per WriteRequest.
    #[arg(long, default_value = "1MiB")]
    chunk: ByteSize,
    /// Digests per FindMissingBlobs call (half of them stored).
    #[arg(long, default_value_t = 10_000)]
    find_missing: usize,
    /// Repetitions of FindMissingBlobs.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Upload/download rounds, each with a new blob; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn upload(
    client: &mut ByteStreamClient<bb_util::grpc::Channel>,
    data: &Bytes,
    digest: &Digest,
    chunk: usize,
) -> anyhow::Result<Duration> {
    let size = data.len();
    let name = WriteResource::format("", &uuid::Uuid::new_v4().to_string(), digest, Compressor::Identity);
    let requests: Vec<WriteRequest> = (0..size.div_ceil(chunk))
        .map(|i| {
            let (from, to) = (i * chunk, ((i + 1) * chunk).min(size));
            WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: from as i64,
                finish_write: to == size,
                data: data.slice(from..to),
            }
        })
        .collect();
    let start = Instant::now();
    let response = client.write(futures::stream::iter(requests)).await?.into_inner();
    let elapsed = start.elapsed();
    anyhow::ensure!(response.committed_size == size as i64, "upload committed {}", response.committed_size);
    Ok(elapsed)
}

async fn download(
    client: &mut ByteStreamClient<bb_util::grpc::Channel>,
    digest: &Digest,
    size: usize,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let request = ReadRequest {
        resource_name: ReadResource::format("", digest, Compressor::Identity),
        read_offset: 0,
        read_limit: 0,
    };
    let mut stream = client.read(request).await?.into_inner();
    let mut received = 0;
    while let Some(response) = stream.message().await? {
        received += response.data.len();
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(received == size, "downloaded {received} bytes");
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let channel = bb_util::grpc::channel(&flags.endpoint)?;
    let size = flags.size.as_usize();
    let mut bytestream = ByteStreamClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let (mut hashing, mut uploads, mut downloads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..flags.repeat {
        let seed = 0x5eed
            ^ round as u64
            ^ (u64::from(std::process::id()) << 20)
            ^ uuid::Uuid::new_v4().as_u64_pair().0;
        let data = Bytes::from(pseudo_random(size, seed));
        let start = Instant::now();
        let digest = Digest::of(DigestFunction::Sha256, &data);
        hashing.push(start.elapsed());
        uploads.push(upload(&mut bytestream, &data, &digest, flags.chunk.as_usize()).await?);
        downloads.push(download(&mut bytestream, &digest, size).await?);
    }
    let (hash, up, down) = (median(&mut hashing), median(&mut uploads), median(&mut downloads));
    println!("medians of {} rounds of {}:", flags.repeat, flags.size);
    println!("  sha256 in-process, one core: {:>6.0} MB/s", mb_per_s(size, hash));
    println!(
        "  ByteStream upload:           {:>6.0} MB/s ({:.0}% of the hash speed)",
        mb_per_s(size, up),
        100.0 * hash.as_secs_f64() / up.as_secs_f64()
    );
    println!("  ByteStream download:         {:>6.0} MB/s", mb_per_s(size, down));

    // FindMissingBlobs: half the digests stored, half not.
    let mut cas = ContentAddressableStorageClient::new(channel);
    let mut digests = Vec::with_capacity(flags.find_missing);
    let mut batch = Vec::new();
    let salt = uuid::Uuid::new_v4();
    for i in 0..flags.find_missing {
        let blob = Bytes::from(format!("find-missing {salt} {i}"));
        let d = Digest::of(DigestFunction::Sha256, &blob);
        if i % 2 == 0 {
            batch.push(reapi::batch_update_blobs_request::Request {
                digest: Some(d.to_proto()),
                data: blob,
                compressor: 0,
            });
        }
        digests.push(d.to_proto());
        if batch.len() == 1000 || i + 1 == flags.find_missing {
            cas.batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                requests: std::mem::take(&mut batch),
                ..Default::default()
            })
            .await?;
        }
    }
    let mut times = Vec::new();
    for _ in 0..flags.rounds {
        let request = reapi::FindMissingBlobsRequest { blob_digests: digests.clone(), ..Default::default() };
        let start = Instant::now();
        let missing = cas.find_missing_blobs(request).await?.into_inner().missing_blob_digests;
        times.push(start.elapsed());
        anyhow::ensure!(missing.len() == flags.find_missing / 2, "{} missing", missing.len());
    }
    times.sort();
    let find_missing_ms = times[times.len() / 2].as_secs_f64() * 1e3;
    println!(
        "  FindMissingBlobs of {} digests: median {:.1} ms, min {:.1} ms",
        flags.find_missing,
        find_missing_ms,
        times[0].as_secs_f64() * 1e3
    );
    // One line for scripts that compare runs (checks/bench/storage-tiers.sh).
    println!(
        "result: sha256_mbps={:.0} upload_mbps={:.0} download_mbps={:.0} find_missing_ms={find_missing_ms:.2}",
        mb_per_s(size, hash),
        mb_per_s(size, up),
        mb_per_s(size, down)
    );
    Ok(())
}
