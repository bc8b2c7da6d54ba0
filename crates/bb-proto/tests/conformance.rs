//! Proves that the protos in `proto/` have the published REv2 wire contract:
//! fully populated messages encoded with our types decode with the types of
//! the `bazel-remote-apis` crate (generated from the upstream protos) with the
//! same value in every field, and encode back to the same message.
//!
//! Every field gets a distinct, non-default value, so a wrong number, a
//! swapped pair of numbers or a wrong type shows up as a difference.

use bazel_remote_apis::build::bazel::remote::execution::v2 as theirs;
use bazel_remote_apis::google::bytestream as theirs_bs;
use bb_proto::google::bytestream as bs;
use bb_proto::reapi as ours;
use prost::Message;
use std::fmt::Debug;

/// Encodes `value` with our types, decodes it with theirs, compares the two
/// field by field (through their Debug renderings, which name every field),
/// then encodes theirs and decodes it with ours again.
fn cross_check<O, T>(value: &O) -> T
where
    O: Message + Default + Debug + PartialEq,
    T: Message + Default + Debug,
{
    let theirs = T::decode(value.encode_to_vec().as_slice()).expect("their types decode ours");
    assert_eq!(
        normalize(&format!("{value:#?}")),
        normalize(&without_newer_fields(&format!("{theirs:#?}"))),
        "field-by-field difference"
    );
    let back = O::decode(theirs.encode_to_vec().as_slice()).expect("our types decode theirs");
    assert_eq!(&back, value, "round trip through their types changed the message");
    theirs
}

/// Fields upstream added after the revision this project implements: absent
/// from our types, so their rendering drops them when they hold their
/// default value. A non-default value would remain and fail the comparison.
/// (None today: the protos are at the 2.12 level.)
const NEWER_UPSTREAM_FIELDS: &[&str] = &[];

/// Their `google.protobuf.UInt32Value` is a message type of theirs; ours is
/// prost's `Option<u32>`. Both print the same once the wrapper is unwrapped.
fn without_newer_fields(debug: &str) -> String {
    let mut out = normalize(debug);
    for field in NEWER_UPSTREAM_FIELDS {
        out = out.replace(&format!(" {field}"), "");
    }
    while let Some(start) = out.find("UInt32Value { value: ") {
        let value_start = start + "UInt32Value { value: ".len();
        let value_end = value_start + out[value_start..].find(',').expect("value");
        let close = value_end + out[value_end..].find('}').expect("close");
        let value = out[value_start..value_end].to_string();
        out.replace_range(start..=close, &value);
    }
    out
}

/// Renders `b"..."` (bytes::Bytes) the way `Vec<u8>` prints, so byte fields
/// of either representation compare equal. Test data is plain ASCII.
fn normalize(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(start) = rest.find("b\"") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('"').expect("closing quote");
        let bytes: Vec<String> = after[..end].bytes().map(|b| b.to_string()).collect();
        out.push_str(&format!("[{}]", bytes.join(", ")));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    // Vec<u8> prints one element per line under {:#?}; fold whitespace.
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("[ ", "[")
        .replace(", ]", "]")
        .replace(" ]", "]")
}

fn digest(n: u8) -> ours::Digest {
    ours::Digest { hash: format!("{:064x}", n), size_bytes: 1000 + i64::from(n) }
}

fn timestamp(n: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: 1_700_000_000 + n, nanos: 1000 + n as i32 }
}

fn duration(n: i64) -> prost_types::Duration {
    prost_types::Duration { seconds: n, nanos: 7 }
}

fn any(type_url: &str) -> prost_types::Any {
    prost_types::Any { type_url: type_url.into(), value: vec![8, 42] }
}

fn platform() -> ours::Platform {
    ours::Platform {
        properties: vec![ours::platform::Property { name: "OSFamily".into(), value: "linux".into() }],
    }
}

fn node_properties(n: u8) -> ours::NodeProperties {
    ours::NodeProperties {
        properties: vec![ours::NodeProperty { name: format!("prop{n}"), value: format!("val{n}") }],
        mtime: Some(timestamp(i64::from(n))),
        unix_mode: Some(0o755),
    }
}

fn directory() -> ours::Directory {
    ours::Directory {
        files: vec![ours::FileNode {
            name: "file".into(),
            digest: Some(digest(1)),
            is_executable: true,
            node_properties: Some(node_properties(1)),
        }],
        directories: vec![ours::DirectoryNode { name: "dir".into(), digest: Some(digest(2)) }],
        symlinks: vec![ours::SymlinkNode {
            name: "link".into(),
            target: "../target".into(),
            node_properties: Some(node_properties(2)),
        }],
        node_properties: Some(node_properties(3)),
    }
}

fn executed_action_metadata() -> ours::ExecutedActionMetadata {
    ours::ExecutedActionMetadata {
        worker: "worker-1".into(),
        queued_timestamp: Some(timestamp(2)),
        worker_start_timestamp: Some(timestamp(3)),
        worker_completed_timestamp: Some(timestamp(4)),
        input_fetch_start_timestamp: Some(timestamp(5)),
        input_fetch_completed_timestamp: Some(timestamp(6)),
        execution_start_timestamp: Some(timestamp(7)),
        execution_completed_timestamp: Some(timestamp(8)),
        virtual_execution_duration: Some(duration(12)),
        output_upload_start_timestamp: Some(timestamp(9)),
        output_upload_completed_timestamp: Some(timestamp(10)),
        auxiliary_metadata: vec![any("type.googleapis.com/buildbarn.resourceusage.POSIXResourceUsage")],
    }
}

fn symlink(path: &str, n: u8) -> ours::OutputSymlink {
    ours::OutputSymlink {
        path: path.into(),
        target: format!("target{n}"),
        node_properties: Some(node_properties(n)),
    }
}

fn action_result() -> ours::ActionResult {
    ours::ActionResult {
        output_files: vec![ours::OutputFile {
            path: "out/file".into(),
            digest: Some(digest(3)),
            is_executable: true,
            contents: b"contents".to_vec(),
            node_properties: Some(node_properties(4)),
        }],
        output_file_symlinks: vec![symlink("out/filelink", 5)],
        output_symlinks: vec![symlink("out/link", 6)],
        output_directories: vec![ours::OutputDirectory {
            path: "out/dir".into(),
            tree_digest: Some(digest(4)),
            is_topologically_sorted: true,
            root_directory_digest: Some(digest(5)),
        }],
        output_directory_symlinks: vec![symlink("out/dirlink", 7)],
        exit_code: 3,
        stdout_raw: b"out".to_vec(),
        stdout_digest: Some(digest(6)),
        stderr_raw: b"err".to_vec(),
        stderr_digest: Some(digest(7)),
        execution_metadata: Some(executed_action_metadata()),
    }
}

fn status() -> tonic_types::Status {
    tonic_types::Status { code: 9, message: "missing".into(), details: vec![any("type.googleapis.com/x.Y")] }
}

#[test]
fn action() {
    let value = ours::Action {
        command_digest: Some(digest(1)),
        input_root_digest: Some(digest(2)),
        timeout: Some(duration(60)),
        do_not_cache: true,
        salt: b"salt".to_vec(),
        platform: Some(platform()),
    };
    let t: theirs::Action = cross_check(&value);
    assert_eq!(t.platform.unwrap().properties[0].name, "OSFamily");
}

#[test]
fn command() {
    let value = ours::Command {
        arguments: vec!["/bin/echo".into(), "hi".into()],
        environment_variables: vec![ours::command::EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        output_files: vec!["a".into()],
        output_directories: vec!["b".into()],
        output_paths: vec!["c".into()],
        platform: Some(platform()),
        working_directory: "wd".into(),
        output_node_properties: vec!["mtime".into()],
        output_directory_format: ours::command::OutputDirectoryFormat::TreeAndDirectory as i32,
    };
    let t: theirs::Command = cross_check(&value);
    assert_eq!(t.output_paths, vec!["c".to_string()]);
}

#[test]
fn directory_and_tree() {
    cross_check::<_, theirs::Directory>(&directory());
    let tree = ours::Tree { root: Some(directory()), children: vec![directory(), directory()] };
    cross_check::<_, theirs::Tree>(&tree);
}

#[test]
fn action_result_all_fields() {
    let t: theirs::ActionResult = cross_check(&action_result());
    assert_eq!(t.stderr_digest.unwrap().size_bytes, 1007);
}

#[test]
fn execute_request() {
    let value = ours::ExecuteRequest {
        instance_name: "main".into(),
        skip_cache_lookup: true,
        action_digest: Some(digest(8)),
        execution_policy: Some(ours::ExecutionPolicy { priority: -5 }),
        results_cache_policy: Some(ours::ResultsCachePolicy { priority: 6 }),
        digest_function: ours::digest_function::Value::Blake3 as i32,
        inline_stdout: true,
        inline_stderr: true,
        inline_output_files: vec!["x".into()],
    };
    cross_check::<_, theirs::ExecuteRequest>(&value);
}

#[test]
fn execute_response_and_metadata() {
    let value = ours::ExecuteResponse {
        result: Some(action_result()),
        cached_result: true,
        status: Some(status()),
        server_logs: [("log".to_string(), ours::LogFile { digest: Some(digest(9)), human_readable: true })]
            .into(),
        message: "hello".into(),
    };
    cross_check::<_, theirs::ExecuteResponse>(&value);

    let metadata = ours::ExecuteOperationMetadata {
        stage: ours::execution_stage::Value::Executing as i32,
        action_digest: Some(digest(10)),
        stdout_stream_name: "out".into(),
        stderr_stream_name: "err".into(),
        partial_execution_metadata: Some(executed_action_metadata()),
        digest_function: ours::digest_function::Value::Sha512 as i32,
    };
    cross_check::<_, theirs::ExecuteOperationMetadata>(&metadata);
}

#[test]
fn server_capabilities() {
    let semver = |n| bb_proto::semver::SemVer { major: 2, minor: n, patch: 1, prerelease: format!("p{n}") };
    let priorities = |n: i32| ours::PriorityCapabilities {
        priorities: vec![ours::priority_capabilities::PriorityRange { min_priority: -n, max_priority: n }],
    };
    use ours::digest_function::Value as F;
    let value = ours::ServerCapabilities {
        cache_capabilities: Some(ours::CacheCapabilities {
            digest_functions: vec![F::Sha256 as i32, F::Blake3 as i32, F::Gitsha1 as i32],
            action_cache_update_capabilities: Some(ours::ActionCacheUpdateCapabilities {
                update_enabled: true,
            }),
            cache_priority_capabilities: Some(priorities(3)),
            max_batch_total_size_bytes: 4 << 20,
            symlink_absolute_path_strategy: ours::symlink_absolute_path_strategy::Value::Allowed as i32,
            supported_compressors: vec![ours::compressor::Value::Zstd as i32],
            supported_batch_update_compressors: vec![ours::compressor::Value::Deflate as i32],
            max_cas_blob_size_bytes: 1 << 40,
            split_blob_support: true,
            splice_blob_support: true,
            fast_cdc_2020_params: Some(ours::FastCdc2020Params { avg_chunk_size_bytes: 1 << 19, seed: 7 }),
            rep_max_cdc_params: Some(ours::RepMaxCdcParams {
                min_chunk_size_bytes: 5,
                horizon_size_bytes: 6,
            }),
        }),
        execution_capabilities: Some(ours::ExecutionCapabilities {
            digest_function: F::Sha256 as i32,
            exec_enabled: true,
            execution_priority_capabilities: Some(priorities(4)),
            supported_node_properties: vec!["mtime".into()],
            digest_functions: vec![F::Sha256 as i32, F::Sha384 as i32],
        }),
        deprecated_api_version: Some(semver(0)),
        low_api_version: Some(semver(1)),
        high_api_version: Some(semver(12)),
    };
    cross_check::<_, theirs::ServerCapabilities>(&value);
}

#[test]
fn cas_and_action_cache_requests() {
    use ours::compressor::Value as C;
    let digest_function = ours::digest_function::Value::Sha1 as i32;
    cross_check::<_, theirs::FindMissingBlobsRequest>(&ours::FindMissingBlobsRequest {
        instance_name: "i".into(),
        blob_digests: vec![digest(1), digest(2)],
        digest_function,
    });
    cross_check::<_, theirs::FindMissingBlobsResponse>(&ours::FindMissingBlobsResponse {
        missing_blob_digests: vec![digest(3)],
    });
    cross_check::<_, theirs::BatchUpdateBlobsRequest>(&ours::BatchUpdateBlobsRequest {
        instance_name: "i".into(),
        requests: vec![ours::batch_update_blobs_request::Request {
            digest: Some(digest(4)),
            data: "abc".into(),
            compressor: C::Zstd as i32,
        }],
        digest_function,
    });
    cross_check::<_, theirs::BatchUpdateBlobsResponse>(&ours::BatchUpdateBlobsResponse {
        responses: vec![ours::batch_update_blobs_response::Response {
            digest: Some(digest(5)),
            status: Some(status()),
        }],
    });
    cross_check::<_, theirs::BatchReadBlobsRequest>(&ours::BatchReadBlobsRequest {
        instance_name: "i".into(),
        digests: vec![digest(6)],
        acceptable_compressors: vec![C::Zstd as i32, C::Brotli as i32],
        digest_function,
    });
    cross_check::<_, theirs::BatchReadBlobsResponse>(&ours::BatchReadBlobsResponse {
        responses: vec![ours::batch_read_blobs_response::Response {
            digest: Some(digest(7)),
            data: "xyz".into(),
            compressor: C::Zstd as i32,
            status: Some(status()),
        }],
    });
    cross_check::<_, theirs::GetTreeRequest>(&ours::GetTreeRequest {
        instance_name: "i".into(),
        root_digest: Some(digest(8)),
        page_size: 10,
        page_token: "tok".into(),
        digest_function,
    });
    cross_check::<_, theirs::GetTreeResponse>(&ours::GetTreeResponse {
        directories: vec![directory()],
        next_page_token: "next".into(),
    });
    cross_check::<_, theirs::GetActionResultRequest>(&ours::GetActionResultRequest {
        instance_name: "i".into(),
        action_digest: Some(digest(9)),
        inline_stdout: true,
        inline_stderr: true,
        inline_output_files: vec!["f".into()],
        digest_function,
    });
    cross_check::<_, theirs::UpdateActionResultRequest>(&ours::UpdateActionResultRequest {
        instance_name: "i".into(),
        action_digest: Some(digest(10)),
        action_result: Some(action_result()),
        results_cache_policy: Some(ours::ResultsCachePolicy { priority: 2 }),
        digest_function,
    });
    cross_check::<_, theirs::WaitExecutionRequest>(&ours::WaitExecutionRequest { name: "op".into() });
    cross_check::<_, theirs::GetCapabilitiesRequest>(&ours::GetCapabilitiesRequest {
        instance_name: "i".into(),
    });
    cross_check::<_, theirs::RequestMetadata>(&ours::RequestMetadata {
        tool_details: Some(ours::ToolDetails { tool_name: "bazel".into(), tool_version: "4.2.3".into() }),
        action_id: "a".into(),
        tool_invocation_id: "b".into(),
        correlated_invocations_id: "c".into(),
        action_mnemonic: "d".into(),
        target_id: "e".into(),
        configuration_id: "f".into(),
    });
}

#[test]
fn split_and_splice() {
    let sha1 = ours::digest_function::Value::Sha1 as i32;
    let fast_cdc = ours::chunking_function::Value::FastCdc2020 as i32;
    cross_check::<_, theirs::SplitBlobRequest>(&ours::SplitBlobRequest {
        instance_name: "i".into(),
        blob_digest: Some(digest(1)),
        digest_function: sha1,
        chunking_function: fast_cdc,
    });
    cross_check::<_, theirs::SplitBlobResponse>(&ours::SplitBlobResponse {
        chunk_digests: vec![digest(2), digest(3)],
        chunking_function: ours::chunking_function::Value::RepMaxCdc as i32,
    });
    cross_check::<_, theirs::SpliceBlobRequest>(&ours::SpliceBlobRequest {
        instance_name: "i".into(),
        blob_digest: Some(digest(4)),
        chunk_digests: vec![digest(5), digest(6)],
        digest_function: sha1,
        chunking_function: fast_cdc,
    });
    cross_check::<_, theirs::SpliceBlobResponse>(&ours::SpliceBlobResponse { blob_digest: Some(digest(7)) });
}

#[test]
fn remote_asset() {
    use bazel_remote_apis::build::bazel::remote::asset::v1 as theirs_asset;
    use bb_proto::asset;
    let qualifiers = vec![asset::Qualifier { name: "checksum.sri".into(), value: "sha256-x".into() }];
    let sha1 = ours::digest_function::Value::Sha1 as i32;
    let time = |seconds| prost_types::Timestamp { seconds, nanos: 3 };
    let status = tonic_types::Status { code: 10, message: "m".into(), details: vec![] };
    cross_check::<_, theirs_asset::FetchBlobRequest>(&asset::FetchBlobRequest {
        instance_name: "i".into(),
        timeout: Some(prost_types::Duration { seconds: 5, nanos: 6 }),
        oldest_content_accepted: Some(time(7)),
        uris: vec!["https://a".into(), "https://b".into()],
        qualifiers: qualifiers.clone(),
        digest_function: sha1,
    });
    cross_check::<_, theirs_asset::FetchBlobResponse>(&asset::FetchBlobResponse {
        status: Some(status.clone()),
        uri: "https://a".into(),
        qualifiers: qualifiers.clone(),
        expires_at: Some(time(8)),
        blob_digest: Some(digest(1)),
        digest_function: sha1,
    });
    cross_check::<_, theirs_asset::FetchDirectoryRequest>(&asset::FetchDirectoryRequest {
        instance_name: "i".into(),
        timeout: Some(prost_types::Duration { seconds: 5, nanos: 6 }),
        oldest_content_accepted: Some(time(7)),
        uris: vec!["https://a".into()],
        qualifiers: qualifiers.clone(),
        digest_function: sha1,
    });
    cross_check::<_, theirs_asset::FetchDirectoryResponse>(&asset::FetchDirectoryResponse {
        status: Some(status),
        uri: "https://a".into(),
        qualifiers: qualifiers.clone(),
        expires_at: Some(time(8)),
        root_directory_digest: Some(digest(2)),
        digest_function: sha1,
    });
    cross_check::<_, theirs_asset::PushBlobRequest>(&asset::PushBlobRequest {
        instance_name: "i".into(),
        uris: vec!["https://a".into()],
        qualifiers: qualifiers.clone(),
        expire_at: Some(time(9)),
        blob_digest: Some(digest(3)),
        references_blobs: vec![digest(4)],
        references_directories: vec![digest(5)],
        digest_function: sha1,
    });
    cross_check::<_, theirs_asset::PushDirectoryRequest>(&asset::PushDirectoryRequest {
        instance_name: "i".into(),
        uris: vec!["https://a".into()],
        qualifiers,
        expire_at: Some(time(9)),
        root_directory_digest: Some(digest(6)),
        references_blobs: vec![digest(7)],
        references_directories: vec![digest(8)],
        digest_function: sha1,
    });
}

#[test]
fn bytestream() {
    cross_check::<_, theirs_bs::ReadRequest>(&bs::ReadRequest {
        resource_name: "blobs/x/1".into(),
        read_offset: 5,
        read_limit: 6,
    });
    cross_check::<_, theirs_bs::ReadResponse>(&bs::ReadResponse { data: "chunk".into() });
    cross_check::<_, theirs_bs::WriteRequest>(&bs::WriteRequest {
        resource_name: "uploads/u/blobs/x/1".into(),
        write_offset: 7,
        finish_write: true,
        data: "chunk".into(),
    });
    cross_check::<_, theirs_bs::WriteResponse>(&bs::WriteResponse { committed_size: 8 });
    cross_check::<_, theirs_bs::QueryWriteStatusRequest>(&bs::QueryWriteStatusRequest {
        resource_name: "r".into(),
    });
    cross_check::<_, theirs_bs::QueryWriteStatusResponse>(&bs::QueryWriteStatusResponse {
        committed_size: 9,
        complete: true,
    });
}

#[test]
fn operation() {
    use bazel_remote_apis::google::longrunning as theirs_lr;
    use bb_proto::longrunning as lr;
    let done = lr::Operation {
        name: "operations/1".into(),
        metadata: Some(any("type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata")),
        done: true,
        result: Some(lr::operation::Result::Response(any(
            "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse",
        ))),
    };
    cross_check::<_, theirs_lr::Operation>(&done);
    let failed = lr::Operation { result: Some(lr::operation::Result::Error(status())), ..done };
    cross_check::<_, theirs_lr::Operation>(&failed);
}

/// The enum values clients send as plain integers.
#[test]
fn enum_values() {
    use ours::digest_function::Value as F;
    use theirs::digest_function::Value as TF;
    for (o, t) in [
        (F::Sha256, TF::Sha256),
        (F::Sha1, TF::Sha1),
        (F::Sha384, TF::Sha384),
        (F::Sha512, TF::Sha512),
        (F::Blake3, TF::Blake3),
        (F::Sha256tree, TF::Sha256tree),
        (F::Gitsha1, TF::Gitsha1),
    ] {
        assert_eq!(o as i32, t as i32, "{o:?}");
    }
    use ours::execution_stage::Value as S;
    use theirs::execution_stage::Value as TS;
    for (o, t) in [
        (S::CacheCheck, TS::CacheCheck),
        (S::Queued, TS::Queued),
        (S::Executing, TS::Executing),
        (S::Completed, TS::Completed),
    ] {
        assert_eq!(o as i32, t as i32, "{o:?}");
    }
}
