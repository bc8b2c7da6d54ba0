//! A scheduler without embedded storage, pointed at a standalone bb-storage.

mod common;

use bb_proto::reapi;
use bb_storage::StorageServer;
use common::{SimWorker, collect, execute_response};
use prost::Message;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn executes_with_a_standalone_storage() {
    let storage_config: bb_storage::Config = bb_util::config::parse(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage.cas]\nbackend = \"memory\"\nmax_size = \"16MiB\"\n\
         [storage.action_cache]\n[storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"1MiB\"\n",
        "storage",
    )
    .unwrap();
    let storage = StorageServer::bind(&storage_config).await.unwrap();
    let storage_address = storage.grpc_addresses()[0].to_string();
    let shutdown = CancellationToken::new();
    tokio::spawn(storage.run(shutdown.clone()));

    let mut config = common::config("");
    config.storage = None;
    config.remote_storage =
        Some(bb_scheduler::config::RemoteStorageConfig { endpoint: storage_address.clone() });
    let farm = common::TestFarm::start(config).await;

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
