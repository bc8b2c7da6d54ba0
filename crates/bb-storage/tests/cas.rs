//! The CAS and Capabilities services over real gRPC.

mod common;

use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use common::{TestServer, config, sha256};
use prost::Message;

#[tokio::test]
async fn capabilities_suit_bazel() {
    let server = TestServer::memory().await;
    let caps = server
        .capabilities()
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let low = caps.low_api_version.unwrap();
    assert_eq!((low.major, low.minor), (2, 0), "Bazel 4.2.3 needs 2.0");
    let high = caps.high_api_version.unwrap();
    assert_eq!((high.major, high.minor), (2, 12));
    let cache = caps.cache_capabilities.unwrap();
    assert_eq!(cache.digest_functions[0], reapi::digest_function::Value::Sha256 as i32);
    assert!(cache.digest_functions.contains(&(reapi::digest_function::Value::Blake3 as i32)));
    assert_eq!(cache.max_batch_total_size_bytes, 1 << 20);
    assert!(cache.supported_compressors.contains(&(reapi::compressor::Value::Zstd as i32)));
    assert!(cache.action_cache_update_capabilities.unwrap().update_enabled);
    assert!(caps.execution_capabilities.is_none(), "storage alone does not execute");
}

#[tokio::test]
async fn batch_round_trip_and_find_missing() {
    let server = TestServer::memory().await;
    let a = server.upload(b"alpha").await;
    let b = sha256(b"beta");
    let empty = sha256(b"");
    let missing = server.missing(&[a, b, empty]).await;
    assert_eq!(missing, vec![b.to_proto()], "only beta is missing; the empty blob is always there");

    let response = server
        .cas()
        .batch_read_blobs(reapi::BatchReadBlobsRequest {
            digests: vec![a.to_proto(), b.to_proto(), empty.to_proto()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = response.responses.iter().map(|r| r.status.as_ref().unwrap().code).collect();
    assert_eq!(codes, vec![0, tonic::Code::NotFound as i32, 0]);
    assert_eq!(response.responses[0].data, Bytes::from_static(b"alpha"));
}

#[tokio::test]
async fn blake3_and_zstd_batch_updates() {
    let server = TestServer::memory().await;
    let data = b"compressible ".repeat(1000);
    let digest = Digest::of(DigestFunction::Blake3, &data);
    let compressed = zstd::encode_all(&data[..], 3).unwrap();
    let response = server
        .cas()
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data: compressed.into(),
                compressor: reapi::compressor::Value::Zstd as i32,
            }],
            digest_function: reapi::digest_function::Value::Blake3 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.responses[0].status.as_ref().unwrap().code, 0);
    let response = server
        .cas()
        .batch_read_blobs(reapi::BatchReadBlobsRequest {
            digests: vec![digest.to_proto()],
            digest_function: reapi::digest_function::Value::Blake3 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.responses[0].data, Bytes::from(data));
}

fn directory(files: &[&str], dirs: &[(&str, Digest)]) -> (reapi::Directory, Digest, Vec<u8>) {
    let directory = reapi::Directory {
        files: files
            .iter()
            .map(|f| reapi::FileNode {
                name: f.to_string(),
                digest: Some(sha256(f.as_bytes()).to_proto()),
                ..Default::default()
            })
            .collect(),
        directories: dirs
            .iter()
            .map(|(name, d)| reapi::DirectoryNode { name: name.to_string(), digest: Some(d.to_proto()) })
            .collect(),
        ..Default::default()
    };
    let bytes = directory.encode_to_vec();
    let digest = sha256(&bytes);
    (directory, digest, bytes)
}

#[tokio::test]
async fn get_tree_pages_through_every_directory() {
    let server = TestServer::memory().await;
    // root -> a -> (c, d), root -> b; d is referenced twice.
    let (c, c_digest, c_bytes) = directory(&["c1"], &[]);
    let (d, d_digest, d_bytes) = directory(&["d1", "d2"], &[]);
    let (a, a_digest, a_bytes) = directory(&["a1"], &[("c", c_digest), ("d", d_digest)]);
    let (b, b_digest, b_bytes) = directory(&[], &[("d", d_digest)]);
    let (root, root_digest, root_bytes) = directory(&[], &[("a", a_digest), ("b", b_digest)]);
    for bytes in [&c_bytes, &d_bytes, &a_bytes, &b_bytes, &root_bytes] {
        server.upload(bytes).await;
    }
    let expected = vec![root, a, b, c, d];

    // Everything in one call.
    let mut stream = server
        .cas()
        .get_tree(reapi::GetTreeRequest { root_digest: Some(root_digest.to_proto()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        assert!(response.next_page_token.is_empty());
        all.extend(response.directories);
    }
    assert_eq!(all, expected);

    // Pages of two.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut stream = server
            .cas()
            .get_tree(reapi::GetTreeRequest {
                root_digest: Some(root_digest.to_proto()),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        assert!(response.directories.len() <= 2);
        paged.extend(response.directories);
        pages += 1;
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    assert_eq!(paged, expected);
    assert_eq!(pages, 3);

    let err = server
        .cas()
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(root_digest.to_proto()),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = server
        .cas()
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(sha256(b"nope").to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn disk_store_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(Some(dir.path()))).await;
    let digest = server.upload(b"kept across restarts").await;
    server.stop().await;
    let server = TestServer::start(config(Some(dir.path()))).await;
    assert!(server.missing(&[digest]).await.is_empty());
}

#[tokio::test]
async fn configured_instances_only() {
    let mut config = config(None);
    config.storage.instance_names = vec!["main".into()];
    let server = TestServer::start(config).await;
    let request =
        |name: &str| reapi::FindMissingBlobsRequest { instance_name: name.into(), ..Default::default() };
    server.cas().find_missing_blobs(request("main")).await.unwrap();
    let err = server.cas().find_missing_blobs(request("other")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("other"), "{}", err.message());
}

#[tokio::test]
async fn serves_on_unix_sockets_and_metrics_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("storage.sock");
    let mut config = config(None);
    config.grpc_listen = vec![format!("unix:{}", socket.display()).parse().unwrap()];
    config.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = bb_storage::StorageServer::bind(&config).await.unwrap();
    let http = server.http_address().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let channel = bb_util::grpc::channel(&format!("unix:{}", socket.display())).unwrap();
    let mut cas = reapi::content_addressable_storage_client::ContentAddressableStorageClient::new(channel);
    let data = Bytes::from_static(b"over a unix socket");
    let d = sha256(&data);
    cas.batch_update_blobs(reapi::BatchUpdateBlobsRequest {
        requests: vec![reapi::batch_update_blobs_request::Request {
            digest: Some(d.to_proto()),
            data,
            compressor: 0,
        }],
        ..Default::default()
    })
    .await
    .unwrap();

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("bb_storage_written_bytes_total"), "{response}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}
