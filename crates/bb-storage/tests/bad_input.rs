//! Every kind of bad input gets the right status with a message naming the
//! digest, and nothing is stored.

mod common;

use bb_proto::bytestream::{QueryWriteStatusRequest, ReadRequest, WriteRequest};
use bb_proto::reapi;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource};
use bytes::Bytes;
use common::{TestServer, sha256, write_requests};
use tonic::Code;

const HASH: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

fn digest(hash: &str, size: i64) -> reapi::Digest {
    reapi::Digest { hash: hash.into(), size_bytes: size }
}

async fn find_missing_error(server: &TestServer, digest: reapi::Digest, function: i32) -> tonic::Status {
    server
        .cas()
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: vec![digest],
            digest_function: function,
            ..Default::default()
        })
        .await
        .unwrap_err()
}

#[tokio::test]
async fn malformed_digests_are_invalid_argument() {
    let server = TestServer::memory().await;
    for (bad, needle) in [
        (digest(&"z".repeat(64), 5), "z".repeat(64)),
        (digest("abc123", 5), "abc123".to_string()),
        (digest(&HASH.to_uppercase(), 5), HASH.to_uppercase()),
        (digest(HASH, -5), HASH.to_string()),
        (digest(&HASH[..63], 5), HASH[..63].to_string()),
    ] {
        let err = find_missing_error(&server, bad.clone(), 0).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert!(err.message().contains(&needle), "{bad:?}: {}", err.message());
    }
    // SHA-1 declared, SHA-256 length given.
    let err = find_missing_error(&server, digest(HASH, 5), reapi::digest_function::Value::Sha1 as i32).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(HASH));
}

#[tokio::test]
async fn unknown_digest_functions_are_invalid_argument() {
    let server = TestServer::memory().await;
    for function in [reapi::digest_function::Value::Md5 as i32, reapi::digest_function::Value::Vso as i32, 42]
    {
        let err = find_missing_error(&server, digest(HASH, 5), function).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{function}");
        assert!(err.message().contains(&function.to_string()), "{}", err.message());
    }
    let name = format!("blobs/md5/{}/5", &HASH[..32]);
    let err = server.read(&name, 0, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn data_that_does_not_match_is_refused_and_not_stored() {
    let server = TestServer::memory().await;
    let claimed = sha256(b"the real thing");
    let response = server
        .cas()
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(claimed.to_proto()),
                data: Bytes::from_static(b"an impostor!!!"),
                compressor: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = response.responses[0].status.as_ref().unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains(&claimed.hash_hex()), "{}", status.message);

    let name = WriteResource::format("", "u", &claimed, Compressor::Identity);
    let err = server.write(&name, b"an impostor!!!", 4).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(&claimed.hash_hex()), "{}", err.message());
    assert_eq!(server.missing(&[claimed]).await.len(), 1);
}

#[tokio::test]
async fn writes_longer_or_shorter_than_declared() {
    let server = TestServer::memory().await;
    let data = b"exactly twenty bytes";
    let d = sha256(data);
    let name = WriteResource::format("", "u", &d, Compressor::Identity);

    let mut longer = data.to_vec();
    longer.extend_from_slice(b"and more");
    let err = server.write(&name, &longer, 7).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("exceeds the declared size"), "{}", err.message());

    let err = server.write(&name, &data[..10], 7).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("short of the declared size"), "{}", err.message());

    // Offsets that skip or repeat data.
    let mut requests = write_requests(&name, data, 5, 0);
    requests[2].write_offset = 12;
    let err = server.bytestream().write(futures::stream::iter(requests)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A compressed write that inflates past the declared size.
    let bomb = zstd::encode_all(&vec![0u8; 10 << 20][..], 3).unwrap();
    let small = sha256(b"tiny");
    let err = server
        .write(&WriteResource::format("", "b", &small, Compressor::Zstd), &bomb, 1 << 16)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = server.bytestream().write(futures::stream::iter(Vec::<WriteRequest>::new())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(server.missing(&[d, small]).await.len(), 2);
}

#[tokio::test]
async fn batches_over_the_limit() {
    let server = TestServer::memory().await;
    let big = vec![1u8; 600 << 10];
    let requests = (0..2)
        .map(|i| {
            let mut data = big.clone();
            data[0] = i;
            reapi::batch_update_blobs_request::Request {
                digest: Some(sha256(&data).to_proto()),
                data: data.into(),
                compressor: 0,
            }
        })
        .collect();
    let err = server
        .cas()
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest { requests, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max_batch_total_size_bytes"), "{}", err.message());

    let err = server
        .cas()
        .batch_read_blobs(reapi::BatchReadBlobsRequest {
            digests: vec![digest(HASH, 2 << 20)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn reads_outside_the_blob() {
    let server = TestServer::memory().await;
    let d = server.upload(b"twelve bytes").await;
    let name = ReadResource::format("", &d, Compressor::Identity);
    for offset in [13, -1] {
        let err = server.read(&name, offset, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "offset {offset}");
        assert!(err.message().contains(&d.hash_hex()));
    }
    let err = server.read(&name, 0, -1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = server.read(&ReadResource::format("", &d, Compressor::Zstd), 0, 5).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn missing_blobs_are_not_found() {
    let server = TestServer::memory().await;
    let d = sha256(b"never uploaded");
    let err = server.read(&ReadResource::format("", &d, Compressor::Identity), 0, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&d.hash_hex()));
    let err = server
        .ac()
        .get_action_result(reapi::GetActionResultRequest {
            action_digest: Some(d.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn garbage_resource_names_and_requests() {
    let server = TestServer::memory().await;
    for name in ["", "/", "blobs//5", "uploads/x/blobs", "blobs/../../etc/passwd/5", "\0", "blobs/\u{fffd}/1"]
    {
        let err = server.read(name, 0, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
        let err = server.write(name, b"x", 1).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
        let err = server
            .bytestream()
            .query_write_status(QueryWriteStatusRequest { resource_name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
    }
    let err = server
        .bytestream()
        .read(ReadRequest {
            resource_name: format!("blobs/{HASH}/99999999999999999999"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Requests with required fields unset.
    let err = server.cas().get_tree(reapi::GetTreeRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err =
        server.ac().update_action_result(reapi::UpdateActionResultRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = server
        .ac()
        .update_action_result(reapi::UpdateActionResultRequest {
            action_digest: Some(sha256(b"a").to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The server is still fine.
    server.upload(b"still alive").await;
}

#[tokio::test]
async fn blobs_over_the_announced_limit_are_refused_before_storing() {
    let mut config = common::config(None);
    config.storage.max_blob_size = bb_util::config::ByteSize(1024);
    let server = TestServer::start(config).await;
    let caps =
        server.capabilities().get_capabilities(reapi::GetCapabilitiesRequest::default()).await.unwrap();
    assert_eq!(caps.into_inner().cache_capabilities.unwrap().max_cas_blob_size_bytes, 1024);

    let big = vec![7u8; 2048];
    let d = sha256(&big);
    let request = reapi::BatchUpdateBlobsRequest {
        requests: vec![reapi::batch_update_blobs_request::Request {
            digest: Some(d.to_proto()),
            data: bytes::Bytes::from(big.clone()),
            compressor: 0,
        }],
        ..Default::default()
    };
    let response = server.cas().batch_update_blobs(request).await.unwrap().into_inner();
    let status = response.responses[0].status.clone().unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("max_cas_blob_size_bytes of 1024"), "{}", status.message);

    let name = WriteResource::format("", "u", &d, Compressor::Identity);
    let err = server.write(&name, &big, 512).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max_cas_blob_size_bytes of 1024"), "{}", err.message());
    assert_eq!(server.missing(&[d]).await.len(), 1, "nothing of it was stored");
    server.upload(&[1u8; 1024]).await;
}
