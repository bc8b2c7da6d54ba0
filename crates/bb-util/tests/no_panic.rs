//! Parsers of client input never panic, whatever the input.

use bb_util::resource_name::{ReadResource, WriteResource};
use bb_util::{Digest, DigestFunction};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn resource_names(name in "[a-z0-9/\\-_.]{0,200}|.{0,200}") {
        let _ = ReadResource::parse(&name);
        let _ = WriteResource::parse(&name);
    }

    #[test]
    fn structured_resource_names(
        prefix in "[a-z/]{0,12}",
        kind in prop::sample::select(vec!["blobs", "compressed-blobs/zstd", "compressed-blobs/x", "uploads/u/blobs"]),
        function in prop::sample::select(vec!["", "blake3/", "sha256/", "md5/"]),
        hash in "[0-9a-fA-F]{0,130}",
        size in any::<i64>().prop_map(|n| n.to_string()),
    ) {
        let name = format!("{prefix}{kind}/{function}{hash}/{size}");
        let _ = ReadResource::parse(&name);
        let _ = WriteResource::parse(&name);
    }

    #[test]
    fn digests(hash in ".{0,140}", size in any::<i64>(), function in any::<i32>()) {
        if let Ok(f) = DigestFunction::resolve(function, &hash) {
            let _ = Digest::parse(f, &hash, size);
        }
    }
}
