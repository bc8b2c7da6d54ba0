//! ByteStream reads and writes over real gRPC.

mod common;

use bb_proto::bytestream::QueryWriteStatusRequest;
use bb_util::resource_name::{Compressor, ReadResource, WriteResource};
use common::{TestServer, config, noise, sha256, write_requests};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn large_blob_in_chunks_with_offsets() {
    let server = TestServer::memory().await;
    let data = noise(3 * MIB + 12345, 1);
    let digest = sha256(&data);
    let write_name = WriteResource::format("", "u1", &digest, Compressor::Identity);
    assert_eq!(server.write(&write_name, &data, 200_000).await.unwrap(), data.len() as i64);

    let read_name = ReadResource::format("", &digest, Compressor::Identity);
    let chunks = server.read(&read_name, 0, 0).await.unwrap();
    assert!(chunks.iter().all(|c| c.len() <= MIB), "chunks of at most 1 MiB");
    assert_eq!(chunks.concat(), data);

    let tail = server.read(&read_name, 2 * MIB as i64 + 7, 0).await.unwrap().concat();
    assert_eq!(tail, &data[2 * MIB + 7..]);
    let window = server.read(&read_name, 100, 5000).await.unwrap().concat();
    assert_eq!(window, &data[100..5100]);
    let at_end = server.read(&read_name, data.len() as i64, 0).await.unwrap().concat();
    assert!(at_end.is_empty());
}

#[tokio::test]
async fn disk_store_serves_large_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(Some(dir.path()))).await;
    let data = noise(5 * MIB, 2);
    let digest = sha256(&data);
    server.write(&WriteResource::format("i", "u", &digest, Compressor::Identity), &data, MIB).await.unwrap();
    let read =
        server.read(&ReadResource::format("i", &digest, Compressor::Identity), MIB as i64 + 1, 0).await;
    assert_eq!(read.unwrap().concat(), &data[MIB + 1..]);
}

#[tokio::test]
async fn interrupted_write_resumes() {
    let server = TestServer::memory().await;
    let data = noise(300_000, 3);
    let digest = sha256(&data);
    let name = WriteResource::format("", "resume-me", &digest, Compressor::Identity);

    // Send the first 100 kB and hang up without finish_write.
    let mut first_part = write_requests(&name, &data, 50_000, 0);
    first_part.truncate(2);
    let err = server.bytestream().write(futures::stream::iter(first_part)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let status = server
        .bytestream()
        .query_write_status(QueryWriteStatusRequest { resource_name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.committed_size, status.complete), (100_000, false));
    assert_eq!(server.missing(&[digest]).await.len(), 1, "nothing visible yet");

    // A wrong offset is refused; the right one continues.
    let mut wrong = write_requests(&name, &data, 50_000, 150_000);
    wrong[0].resource_name = name.clone();
    let err = server.bytestream().write(futures::stream::iter(wrong)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let rest = write_requests(&name, &data, 50_000, 100_000);
    let committed = server.bytestream().write(futures::stream::iter(rest)).await.unwrap().into_inner();
    assert_eq!(committed.committed_size, data.len() as i64);

    let status = server
        .bytestream()
        .query_write_status(QueryWriteStatusRequest { resource_name: name })
        .await
        .unwrap()
        .into_inner();
    assert!(status.complete);
}

#[tokio::test]
async fn zstd_both_ways() {
    let server = TestServer::memory().await;
    let data = b"zstd makes this small. ".repeat(100_000);
    let digest = sha256(&data);
    let compressed = zstd::encode_all(&data[..], 3).unwrap();
    let name = WriteResource::format("", "z", &digest, Compressor::Zstd);
    let committed = server.write(&name, &compressed, 10_000).await.unwrap();
    assert_eq!(committed, compressed.len() as i64);
    // Already there: a second compressed write says -1 at once.
    assert_eq!(server.write(&name, &compressed, 10_000).await.unwrap(), -1);

    let read_name = ReadResource::format("", &digest, Compressor::Zstd);
    let chunks = server.read(&read_name, 0, 0).await.unwrap();
    assert!(chunks.iter().all(|c| c.len() <= MIB));
    let got = zstd::decode_all(&chunks.concat()[..]).unwrap();
    assert_eq!(got, data);
    let offset = server.read(&read_name, 1000, 0).await.unwrap();
    assert_eq!(zstd::decode_all(&offset.concat()[..]).unwrap(), &data[1000..]);
}

#[tokio::test]
async fn concurrent_writers_of_one_blob_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(Some(dir.path()))).await;
    let data = noise(2 * MIB, 4);
    let digest = sha256(&data);
    let writes = (0..4).map(|i| {
        let name = WriteResource::format("", &format!("writer-{i}"), &digest, Compressor::Identity);
        let requests = write_requests(&name, &data, 64 << 10, 0);
        let mut client = server.bytestream();
        async move { client.write(futures::stream::iter(requests)).await }
    });
    for result in futures::future::join_all(writes).await {
        assert_eq!(result.unwrap().into_inner().committed_size, data.len() as i64);
    }
    let files: Vec<_> = walk(dir.path().join("cas/blobs"));
    assert_eq!(files.len(), 1, "one copy kept: {files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), data);
    assert_eq!(std::fs::read_dir(dir.path().join("cas/tmp")).unwrap().count(), 0);
}

fn walk(dir: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(path)) } else { files.push(path) }
    }
    files
}

#[tokio::test]
async fn a_routing_header_must_name_the_requested_resource() {
    use bb_proto::bytestream::ReadRequest;
    use bb_util::resource_name::routed;
    let server = TestServer::memory().await;
    let data = noise(1000, 3);
    let digest = server.upload(&data).await;
    let name = ReadResource::format("", &digest, Compressor::Identity);
    let request =
        |header: &str| routed(ReadRequest { resource_name: name.clone(), ..Default::default() }, header);

    let read = server.bytestream().read(request(&name)).await.unwrap().into_inner();
    let chunks: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(read).await.unwrap();
    assert_eq!(chunks.iter().map(|c| c.data.len()).sum::<usize>(), data.len());

    let other = ReadResource::format("", &sha256(b"other"), Compressor::Identity);
    let err = server.bytestream().read(request(&other)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("build.bazel.remote.execution.v2.resource-name"), "{}", err.message());

    let write_name = WriteResource::format("", "u9", &sha256(b"new"), Compressor::Identity);
    let writes = write_requests(&write_name, b"new", 2, 0);
    let err = server.bytestream().write(routed(futures::stream::iter(writes), &other)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let status = QueryWriteStatusRequest { resource_name: write_name.clone() };
    let err = server.bytestream().query_write_status(routed(status, &other)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
