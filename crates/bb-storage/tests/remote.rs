//! GrpcStore: the BlobStore that is a remote CAS, against a real server.

mod common;

use bb_client::GrpcStore;
use bb_storage::store::BlobStore;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use common::{TestServer, noise, sha256};

#[tokio::test]
async fn small_and_large_blobs_round_trip() {
    let server = TestServer::memory().await;
    let store = GrpcStore::new(server.channel.clone(), "");
    let small = Bytes::from_static(b"small blob");
    let large = Bytes::from(noise(3 << 20, 5));
    let blake = Bytes::from(noise(2 << 20, 6));
    let digests = [sha256(&small), sha256(&large), Digest::of(DigestFunction::Blake3, &blake)];
    assert_eq!(store.find_missing(&digests).await.unwrap().len(), 3);
    store.put(&digests[0], small.clone()).await.unwrap();
    store.put(&digests[1], large.clone()).await.unwrap();
    let mut writer = store.begin_write(&digests[2]).await.unwrap();
    for chunk in blake.chunks(300_000) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    writer.commit().await.unwrap();
    assert!(store.find_missing(&digests).await.unwrap().is_empty());

    for (digest, data) in digests.iter().zip([small, large, blake]) {
        let blob = store.get(digest).await.unwrap().expect("stored");
        assert_eq!(blob.into_bytes().await.unwrap(), data);
    }
    let offset_read = store.get(&digests[1]).await.unwrap().unwrap();
    let mut reader = offset_read.reader(1_000_000);
    let mut tail = Vec::new();
    while let Some(chunk) = reader.next_chunk(100_000).await.unwrap() {
        assert!(chunk.len() <= 100_000);
        tail.extend_from_slice(&chunk);
    }
    assert_eq!(tail.len(), (3 << 20) - 1_000_000);
    assert!(store.get(&sha256(b"absent")).await.unwrap().is_none());
    assert!(store.get(&sha256(&noise(2 << 20, 7))).await.unwrap().is_none());
}

#[tokio::test]
async fn wrong_data_is_refused_by_the_server() {
    let server = TestServer::memory().await;
    let store = GrpcStore::new(server.channel.clone(), "");
    let claimed = sha256(&noise(2 << 20, 8));
    let err = store.put(&claimed, Bytes::from(noise(2 << 20, 9))).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
    let err = store.put(&sha256(b"abc"), Bytes::from_static(b"abd")).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
}

/// A loopback relay to `target` that counts the bytes going through it.
async fn counting_relay(target: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(&target).await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    counted.fetch_add(up + down, Ordering::SeqCst);
                }
            });
        }
    });
    (address, count)
}

#[tokio::test]
async fn zstd_streams_compress_what_crosses_the_network() {
    use std::sync::atomic::Ordering;
    let server = TestServer::memory().await;
    let text: Vec<u8> = (0..(4 << 20) / 32)
        .flat_map(|i: u32| format!("line {i:>10} of a build log\n").into_bytes())
        .collect();
    let data = Bytes::from(text);
    let mut moved = Vec::new();
    for zstd in [false, true] {
        let (relay, count) = counting_relay(server.address.clone()).await;
        let client = bb_client::StorageClient::new(bb_util::grpc::channel(&relay).unwrap()).with_zstd(zstd);
        let store = GrpcStore::of(client.clone(), if zstd { "compressed" } else { "plain" });
        let digest = sha256(&data);
        store.put(&digest, data.clone()).await.unwrap();
        let mut writer = store.begin_write(&sha256(&data[1..])).await.unwrap();
        writer.write(data.slice(1..)).await.unwrap();
        writer.commit().await.unwrap();
        assert_eq!(store.get(&digest).await.unwrap().unwrap().into_bytes().await.unwrap(), data);
        let file = tempfile::NamedTempFile::new().unwrap();
        client.read_to_file("", &sha256(&data[1..]), file.path(), "blob").await.unwrap();
        assert_eq!(std::fs::read(file.path()).unwrap(), &data[1..]);
        drop((store, client));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        moved.push(count.load(Ordering::SeqCst));
    }
    // Four transfers of 4 MiB: plain, about 16 MiB cross; compressed, a fraction.
    assert!(moved[0] > 15 << 20, "plain transfers moved {} bytes", moved[0]);
    assert!(moved[1] * 5 < moved[0], "zstd moved {} bytes, plain {}", moved[1], moved[0]);
}
