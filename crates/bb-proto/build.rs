//! Compiles `proto/` with protox (pure Rust): no `protoc` is needed anywhere.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "build/bazel/remote/execution/v2/remote_execution.proto",
    "build/bazel/remote/asset/v1/remote_asset.proto",
    "build/bazel/semver/semver.proto",
    "google/bytestream/bytestream.proto",
    "google/longrunning/operations.proto",
    "google/rpc/code.proto",
    "google/rpc/status.proto",
    "buildbarn/remoteworker/remoteworker.proto",
    "buildbarn/runner/runner.proto",
    "buildbarn/resourceusage/resourceusage.proto",
    "bbrs/sandbox/sandbox.proto",
    "bbrs/asset/asset.proto",
    "bbrs/storage/storage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;

    let mut config = prost_build::Config::new();
    // `prost::Name` impls, so messages pack into `prost_types::Any`.
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    // Blob data without copies.
    config.bytes([
        ".google.bytestream",
        ".build.bazel.remote.execution.v2.BatchUpdateBlobsRequest.Request.data",
        ".build.bazel.remote.execution.v2.BatchReadBlobsResponse.Response.data",
    ]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // One Status type everywhere, with tonic-types' error details.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
