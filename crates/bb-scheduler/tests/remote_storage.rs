//! A scheduler without embedded storage, pointed at a standalone bb-storage.

mod common;

use bb_proto::reapi;
use bb_storage::StorageServer;
use common::{SimWorker, collect, execute_response};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// A standalone storage on a loopback port, and a scheduler pointed at it.
async fn scheduler_with_remote_storage(shutdown: &CancellationToken) -> (String, common::TestFarm) {
    let storage_config: bb_storage::Config = bb_util::config::parse(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage.cas]\nbackend = \"memory\"\nmax_size = \"16MiB\"\n\
         [storage.action_cache]\n[storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"1MiB\"\n",
        "storage",
    )
    .unwrap();
    let storage = StorageServer::bind(&storage_config).await.unwrap();
    let storage_address = storage.grpc_addresses()[0].to_string();
    tokio::spawn(storage.run(shutdown.clone()));
    let mut config = common::config("");
    config.storage = None;
    config.remote_storage = Some(bb_scheduler::config::RemoteStorageConfig {
        endpoint: storage_address.clone(),
        tls: None,
        token_file: None,
    });
    (storage_address, common::TestFarm::start(config).await)
}

#[tokio::test]
async fn executes_with_a_standalone_storage() {
    let shutdown = CancellationToken::new();
    let (storage_address, farm) = scheduler_with_remote_storage(&shutdown).await;

    // Blobs go to the storage; the scheduler reads them from there.
    let storage_channel = bb_util::grpc::channel(&storage_address).unwrap();
    let mut cas =
        reapi::content_addressable_storage_client::ContentAddressableStorageClient::new(storage_channel);
    let command = reapi::Command { arguments: vec!["true".into()], ..Default::default() }.encode_to_vec();
    let command_digest = bb_util::Digest::of(bb_util::DigestFunction::Sha256, &command);
    let action = reapi::Action { command_digest: Some(command_digest.to_proto()), ..Default::default() }
        .encode_to_vec();
    let action_digest = bb_util::Digest::of(bb_util::DigestFunction::Sha256, &action);
    let requests = [(command_digest, command), (action_digest, action)]
        .into_iter()
        .map(|(d, data)| reapi::batch_update_blobs_request::Request {
            digest: Some(d.to_proto()),
            data: data.into(),
            compressor: 0,
        })
        .collect();
    cas.batch_update_blobs(reapi::BatchUpdateBlobsRequest { requests, ..Default::default() }).await.unwrap();

    let stream = farm.execution().execute(farm.execute_request(&action_digest)).await.unwrap().into_inner();
    let mut worker = SimWorker::new(&farm, "w", &[]);
    worker.take().await.expect("task");
    worker.complete(&action_digest.to_proto(), 0).await;
    let ops = collect(stream).await;
    assert_eq!(execute_response(ops.last().unwrap()).result.unwrap().exit_code, 0);

    let caps = reapi::capabilities_client::CapabilitiesClient::new(farm.client.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(caps.cache_capabilities.is_some(), "asked of the remote storage");
    assert!(caps.execution_capabilities.unwrap().exec_enabled);
    shutdown.cancel();
}

async fn is_missing(channel: bb_util::grpc::Channel, digest: &bb_util::Digest) -> bool {
    let mut cas = reapi::content_addressable_storage_client::ContentAddressableStorageClient::new(channel);
    let request =
        reapi::FindMissingBlobsRequest { blob_digests: vec![digest.to_proto()], ..Default::default() };
    !cas.find_missing_blobs(request).await.unwrap().into_inner().missing_blob_digests.is_empty()
}

/// The scheduler's client port serves CAS, ByteStream and the Action Cache
/// by forwarding to the storage: a client needs that one endpoint only.
#[tokio::test]
async fn one_endpoint_serves_storage_too() {
    use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
    use bb_proto::bytestream::{ReadRequest, WriteRequest};
    let shutdown = CancellationToken::new();
    let (storage_address, farm) = scheduler_with_remote_storage(&shutdown).await;
    let function = bb_util::DigestFunction::Sha256;
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = bb_util::Digest::of(function, &large);

    assert!(is_missing(farm.client.clone(), &digest).await);

    // A streamed upload and download through the scheduler.
    let name = format!("uploads/{}/blobs/{}/{}", uuid::Uuid::new_v4(), digest.hash_hex(), digest.size());
    let chunks: Vec<WriteRequest> = large
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, chunk)| WriteRequest {
            resource_name: if i == 0 { name.clone() } else { String::new() },
            write_offset: (i << 20) as i64,
            finish_write: (i + 1) << 20 >= large.len(),
            data: chunk.to_vec().into(),
        })
        .collect();
    let mut bytestream = ByteStreamClient::new(farm.client.clone());
    let written = bytestream.write(futures::stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(written.committed_size, large.len() as i64);
    let read = ReadRequest {
        resource_name: format!("blobs/{}/{}", digest.hash_hex(), digest.size()),
        ..Default::default()
    };
    let mut stream = bytestream.read(read).await.unwrap().into_inner();
    let mut back = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        back.extend_from_slice(&response.data);
    }
    assert!(back == large, "the blob read back through the scheduler differs");

    // It is in the storage itself.
    assert!(!is_missing(bb_util::grpc::channel(&storage_address).unwrap(), &digest).await);

    // The Action Cache too.
    let mut ac = reapi::action_cache_client::ActionCacheClient::new(farm.client.clone());
    let unknown = bb_util::Digest::of(function, b"no such action");
    let err = ac
        .get_action_result(reapi::GetActionResultRequest {
            action_digest: Some(unknown.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    shutdown.cancel();
}

/// With authentication on both, storage calls through the scheduler are
/// judged by bb-storage with the caller's token, never as the scheduler: a
/// caller limited to instance `a` gets PERMISSION_DENIED on `b` even though
/// the scheduler itself may read everything.
#[tokio::test]
async fn forwarded_calls_are_judged_as_their_caller() {
    use bb_util::auth::policy::Rule;
    use bb_util::auth::{AuthenticationConfig, Permission};
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let hash = bb_util::auth::tokens::hash;
    std::fs::write(
        &tokens,
        format!("ci = \"{}\"\nscheduler = \"{}\"\n", hash("ci-secret"), hash("sched-secret")),
    )
    .unwrap();
    std::fs::write(dir.path().join("scheduler-token"), "sched-secret\n").unwrap();
    let rule = |identity: &str, prefix: &str, permissions: &[Permission]| Rule {
        identities: vec![identity.into()],
        instance_prefix: prefix.into(),
        permissions: permissions.to_vec(),
    };
    let authentication = AuthenticationConfig {
        tokens_file: Some(tokens),
        policy: vec![
            rule("ci", "a", &[Permission::Read, Permission::Execute]),
            rule("scheduler", "", &[Permission::Read]),
        ],
        ..Default::default()
    };
    let mut storage_config: bb_storage::Config = bb_util::config::parse(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage.cas]\nbackend = \"memory\"\nmax_size = \"16MiB\"\n\
         [storage.action_cache]\n[storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"1MiB\"\n",
        "storage",
    )
    .unwrap();
    storage_config.authentication = authentication.clone();
    let shutdown = CancellationToken::new();
    let storage = StorageServer::bind(&storage_config).await.unwrap();
    let storage_address = storage.grpc_addresses()[0].to_string();
    tokio::spawn(storage.run(shutdown.clone()));
    let mut config = common::config("");
    config.storage = None;
    config.authentication = authentication;
    config.remote_storage = Some(bb_scheduler::config::RemoteStorageConfig {
        endpoint: storage_address,
        tls: None,
        token_file: Some(dir.path().join("scheduler-token")),
    });
    let farm = common::TestFarm::start(config).await;

    let token = bb_util::grpc::BearerToken::new("ci-secret").unwrap();
    let ci = bb_util::grpc::channel_with(&farm.client_address, None, Some(&token)).unwrap();
    let find = |instance: &str| reapi::FindMissingBlobsRequest {
        instance_name: instance.into(),
        blob_digests: vec![bb_util::Digest::of(bb_util::DigestFunction::Sha256, b"x").to_proto()],
        ..Default::default()
    };
    let mut cas = reapi::content_addressable_storage_client::ContentAddressableStorageClient::new(ci);
    cas.find_missing_blobs(find("a")).await.expect("ci may read instance a");
    let status = cas.find_missing_blobs(find("b")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("ci lacks"), "judged as the caller: {status:?}");
    shutdown.cancel();
}
