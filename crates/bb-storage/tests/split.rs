//! SplitBlob and SpliceBlob over real gRPC: announced parameters, splicing
//! checked against the digest, missing chunks, splitting a stored blob,
//! spliced blobs read like any other, chunks shared between blobs.

mod common;

use bb_proto::reapi;
use bb_util::Digest;
use bb_util::chunking::{Chunker, FastCdcParams};
use bb_util::config::ByteSize;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource};
use common::{TestServer, config, noise, sha256};
use tonic::Code;

const AVERAGE: u64 = 16 << 10;

async fn server() -> TestServer {
    let mut config = config(None);
    config.storage.chunking.average_chunk_size = ByteSize(AVERAGE);
    TestServer::start(config).await
}

fn params() -> FastCdcParams {
    FastCdcParams::new(AVERAGE, 0).unwrap()
}

/// Uploads each chunk of `data` the server lacks; returns all chunk digests
/// and the bytes sent.
async fn upload_chunks(server: &TestServer, data: &[u8]) -> (Vec<Digest>, usize) {
    let chunks = Chunker::split(params(), data);
    let digests: Vec<Digest> = chunks.iter().map(|c| sha256(c)).collect();
    let missing = server.missing(&digests).await;
    let mut sent = 0;
    for (chunk, digest) in chunks.iter().zip(&digests) {
        if missing.contains(&digest.to_proto()) {
            server.upload(chunk).await;
            sent += chunk.len();
        }
    }
    (digests, sent)
}

fn splice_request(blob: &Digest, chunks: &[Digest]) -> reapi::SpliceBlobRequest {
    reapi::SpliceBlobRequest {
        blob_digest: Some(blob.to_proto()),
        chunk_digests: chunks.iter().map(|d| d.to_proto()).collect(),
        chunking_function: reapi::chunking_function::Value::FastCdc2020 as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn capabilities_announce_split_splice_and_the_chunking_parameters() {
    let server = server().await;
    let caps =
        server.capabilities().get_capabilities(reapi::GetCapabilitiesRequest::default()).await.unwrap();
    let cache = caps.into_inner().cache_capabilities.unwrap();
    assert!(cache.split_blob_support && cache.splice_blob_support);
    assert_eq!(
        cache.fast_cdc_2020_params,
        Some(reapi::FastCdc2020Params { avg_chunk_size_bytes: AVERAGE, seed: 0 })
    );
}

#[tokio::test]
async fn a_spliced_blob_reads_like_any_other() {
    let server = server().await;
    let data = noise(300_000, 1);
    let blob = sha256(&data);
    let (chunks, _) = upload_chunks(&server, &data).await;
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    assert_eq!(server.missing(&[blob]).await.len(), 1);
    let response = server.cas().splice_blob(splice_request(&blob, &chunks)).await.unwrap().into_inner();
    assert_eq!(response.blob_digest, Some(blob.to_proto()));

    assert!(server.missing(&[blob]).await.is_empty());
    let name = ReadResource::format("", &blob, Compressor::Identity);
    assert_eq!(server.read(&name, 0, 0).await.unwrap().concat(), data);
    assert_eq!(server.read(&name, 123_457, 1000).await.unwrap().concat(), &data[123_457..124_457]);
    let at_chunk = chunks[0].size() as i64;
    assert_eq!(server.read(&name, at_chunk, 0).await.unwrap().concat(), &data[at_chunk as usize..]);

    // Split answers with the chunks it was spliced from.
    let split = reapi::SplitBlobRequest { blob_digest: Some(blob.to_proto()), ..Default::default() };
    let split = server.cas().split_blob(split).await.unwrap().into_inner();
    assert_eq!(split.chunk_digests, chunks.iter().map(|d| d.to_proto()).collect::<Vec<_>>());
}

#[tokio::test]
async fn splicing_is_checked_against_the_digest_and_stores_nothing_when_wrong() {
    let server = server().await;
    let data = noise(100_000, 2);
    let (mut chunks, _) = upload_chunks(&server, &data).await;
    chunks.swap(0, 1);
    let blob = sha256(&data);
    let err = server.cas().splice_blob(splice_request(&blob, &chunks)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nothing was stored"), "{}", err.message());
    assert_eq!(server.missing(&[blob]).await.len(), 1);

    // Sizes that cannot add up are refused before anything is read.
    let wrong_size = Digest::parse(blob.function(), &blob.hash_hex(), 99).unwrap();
    let err = server.cas().splice_blob(splice_request(&wrong_size, &chunks)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("add up"), "{}", err.message());
}

#[tokio::test]
async fn a_missing_chunk_is_not_found_naming_it() {
    let server = server().await;
    let data = noise(100_000, 3);
    let (chunks, _) = upload_chunks(&server, &data).await;
    let absent = sha256(b"never uploaded");
    let mut with_absent = chunks.clone();
    with_absent.push(absent);
    let total: u64 = with_absent.iter().map(Digest::size).sum();
    let blob = Digest::parse(absent.function(), &sha256(b"x").hash_hex(), total as i64).unwrap();
    let err = server.cas().splice_blob(splice_request(&blob, &with_absent)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&absent.hash_hex()), "{}", err.message());
}

#[tokio::test]
async fn split_cuts_a_stored_blob_into_stored_chunks() {
    let server = server().await;
    let data = noise(500_000, 4);
    let blob = sha256(&data);
    server.write(&WriteResource::format("", "u", &blob, Compressor::Identity), &data, 100_000).await.unwrap();
    let request = reapi::SplitBlobRequest { blob_digest: Some(blob.to_proto()), ..Default::default() };
    let split = server.cas().split_blob(request.clone()).await.unwrap().into_inner();
    assert_eq!(split.chunking_function, reapi::chunking_function::Value::FastCdc2020 as i32);
    let chunks: Vec<Digest> =
        split.chunk_digests.iter().map(|d| Digest::from_proto(blob.function(), d).unwrap()).collect();
    // The server cut where a client with the announced parameters cuts.
    let expected: Vec<Digest> = Chunker::split(params(), &data).iter().map(|c| sha256(c)).collect();
    assert_eq!(chunks, expected);
    assert!(server.missing(&chunks).await.is_empty(), "every chunk is stored");

    let missing =
        reapi::SplitBlobRequest { blob_digest: Some(sha256(b"absent").to_proto()), ..Default::default() };
    assert_eq!(server.cas().split_blob(missing).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn blobs_differing_in_the_middle_share_all_other_chunks() {
    let server = server().await;
    let first = noise(1 << 20, 5);
    let mut second = first.clone();
    second[500_000..500_100].fill(0xff);
    let (chunks, sent_first) = upload_chunks(&server, &first).await;
    server.cas().splice_blob(splice_request(&sha256(&first), &chunks)).await.unwrap();
    let (chunks, sent_second) = upload_chunks(&server, &second).await;
    server.cas().splice_blob(splice_request(&sha256(&second), &chunks)).await.unwrap();
    assert_eq!(sent_first, first.len());
    assert!(sent_second < 4 * (4 * AVERAGE as usize), "{sent_second} bytes sent for a 100-byte change");
    let name = ReadResource::format("", &sha256(&second), Compressor::Identity);
    assert_eq!(server.read(&name, 0, 0).await.unwrap().concat(), second);
}
