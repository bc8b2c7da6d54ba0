//! FastCDC 2020 against the test vectors remote-apis publishes beside
//! REv2 (fastcdc2020_test_vectors.txt): the offsets, lengths and SHA-256 of
//! every chunk of one image, with seeds 0 and 666, average 16 KiB.
//!
//! The image is not part of this repository (it is fastcdc-rs's test
//! fixture `test/fixtures/SekienAkashita.jpg`, SHA-256 d9e749d9...). Run with
//! `BB_FASTCDC_FIXTURE=/path/to/SekienAkashita.jpg cargo test -p bb-util
//! --test fastcdc_vectors -- --ignored`; without it the test fails saying so.
//! The vectors list a maximum of 65535 where REv2 derives 65536 from the
//! average; no chunk of the image comes near either.

use bb_util::chunking::{Chunker, FastCdcParams};
use sha2::Digest;

const FIXTURE_SHA256: &str = "d9e749d9367fc908876749d6502eb212fee88c9a94892fb07da5ef3ba8bc39ed";

const SEED_0: &[(usize, usize, &str)] = &[
    (0, 19186, "0f9efa589121d5d9e9e2c4ace91337d77cae866537143f6f15a0ffd525a77c2d"),
    (19186, 19279, "c7c86a165573c16448cda35c9169742e85645af42be22889f8b96b8ee0ec7cb0"),
    (38465, 17354, "bc88521e28a8b4479cdea5f75aa721a24f3a0a7d0be903aa6d505c574e51e89d"),
    (55819, 16387, "4b8dac2652e4685c629d2bb1ae9d4448e676b86f2e67ca0b2fff3d9580184b79"),
    (72206, 19940, "c0a7062da6f2386c28e086ee0cedd5732252741269838773cff1ddb05b2df6ed"),
    (92146, 17320, "7fa5b12134dc75cd2ac8dc60d3a8f3c8d22f0ee9d4cf74a4aa937e2a0d2d79a5"),
];

const SEED_666: &[(usize, usize, &str)] = &[
    (0, 17635, "cb3a9d80a3569772d4ed331ca37ab0c862c759897b890fc1aac90a4f2ea3a407"),
    (17635, 17334, "d758c6b7b0b7eef1e996f8ccd17de6c645360b03a26c35541e7581348ac08944"),
    (34969, 19136, "24846aefd89e510594bae3e9d7d5ea5012067601512610fed126a3c57ba993f5"),
    (54105, 17467, "efa785e1fefb49f190e665f72fd246c1442079874508c312196da1fb3040d00b"),
    (71572, 23593, "a2f557bdd8d40d8faada963ad5f91ec54b10ccee7c5ae72754a65137592dc607"),
    (95165, 14301, "e131100b4a7147ccad19dc63c4a2fac1f5d8b644e1373eeb6803825024234efc"),
];

fn fixture() -> Vec<u8> {
    let path = std::env::var("BB_FASTCDC_FIXTURE").expect(
        "BB_FASTCDC_FIXTURE must name SekienAkashita.jpg from fastcdc-rs (test/fixtures/) to check the vectors",
    );
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert_eq!(hex::encode(sha2::Sha256::digest(&data)), FIXTURE_SHA256, "{path} is not the fixture");
    data
}

fn check(seed: u32, expected: &[(usize, usize, &str)]) {
    let data = fixture();
    let chunks = Chunker::split(FastCdcParams::new(16 << 10, seed).unwrap(), &data);
    let mut offset = 0;
    let got: Vec<(usize, usize, String)> = chunks
        .iter()
        .map(|chunk| {
            let row = (offset, chunk.len(), hex::encode(sha2::Sha256::digest(chunk)));
            offset += chunk.len();
            row
        })
        .collect();
    let expected: Vec<(usize, usize, String)> =
        expected.iter().map(|(o, l, s)| (*o, *l, s.to_string())).collect();
    assert_eq!(got, expected, "seed {seed}");
}

#[test]
#[ignore = "needs BB_FASTCDC_FIXTURE (fastcdc-rs's SekienAkashita.jpg), which this repository does not ship"]
fn published_vectors_with_seed_0() {
    check(0, SEED_0);
}

#[test]
#[ignore = "needs BB_FASTCDC_FIXTURE (fastcdc-rs's SekienAkashita.jpg), which this repository does not ship"]
fn published_vectors_with_seed_666() {
    check(666, SEED_666);
}
