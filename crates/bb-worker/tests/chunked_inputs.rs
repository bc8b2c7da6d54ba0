//! Large inputs come as chunks (SplitBlob) where storage splits them, so a
//! large file changed in one place downloads a chunk or two, not all of it.

mod common;

use bb_client::{Source, StorageClient};
use bb_util::{Digest, DigestFunction};
use bb_worker::file_cache::FileCache;
use bytes::Bytes;
use common::Farm;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

#[tokio::test]
async fn a_large_input_changed_in_one_place_downloads_only_new_chunks() {
    let farm = Farm::start(1).await;
    let storage = StorageClient::new(farm.client.channel.clone());
    let first = noise(16 << 20, 7);
    let mut second = first.clone();
    second[8 << 20..(8 << 20) + 1000].fill(0);
    let keys: Vec<(Digest, bool)> =
        [&first, &second].iter().map(|d| (Digest::of(DigestFunction::Sha256, d), false)).collect();
    for (data, key) in [&first, &second].iter().zip(&keys) {
        storage.upload("", vec![(key.0, Source::Bytes(Bytes::from((*data).clone())))]).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::open(&dir.path().join("cache"), 1 << 30, 10_000, 4).unwrap();

    cache.ensure(&keys[..1], &storage, "").await.unwrap();
    let first_downloads = cache.downloads();
    assert!(first_downloads > 10, "the file came as chunks: {first_downloads} downloads");
    assert_eq!(std::fs::read(cache.path(&keys[0])).unwrap(), first);

    cache.ensure(&keys[1..], &storage, "").await.unwrap();
    let second_downloads = cache.downloads() - first_downloads;
    // The file itself and the chunks around the change.
    assert!(second_downloads <= 4, "{second_downloads} downloads for a 1000-byte change");
    assert_eq!(std::fs::read(cache.path(&keys[1])).unwrap(), second);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cache.path(&keys[1])).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o444);
}
