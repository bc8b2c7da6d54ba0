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
