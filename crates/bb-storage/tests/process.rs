//! The bb-storage binary as a separate process: default config printing,
//! config errors, and a kill in the middle of a write.

mod common;

use bb_proto::bytestream::WriteRequest;
use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_util::resource_name::{Compressor, WriteResource};
use common::{noise, sha256, write_requests};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_bb-storage");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(config: &std::path::Path) -> Child {
    Command::new(BINARY).arg("--config").arg(config).stderr(Stdio::null()).spawn().expect("start bb-storage")
}

async fn wait_until_serving(address: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bb-storage did not start listening on {address}");
}

#[test]
fn prints_its_default_config() {
    let output = Command::new(BINARY).arg("--print-default-config").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("grpc_listen = [\"127.0.0.1:8981\"]"));
    let parsed: bb_storage::Config = bb_util::config::parse(&text, "printed").unwrap();
    assert!(parsed.storage.validate().is_ok());
}

#[test]
fn config_errors_name_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "grpc_listen = [\"127.0.0.1:0\"]\n\n[storage]\nmax_batch_sise = \"1MiB\"\n")
        .unwrap();
    let output = Command::new(BINARY).arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_batch_sise") && stderr.contains("line 4"), "{stderr}");
}

#[tokio::test]
async fn killed_mid_write_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("storage.toml");
    std::fs::write(
        &config,
        format!(
            "grpc_listen = [\"{address}\"]\n[storage.cas]\nbackend = \"disk\"\npath = \"{0}/cas\"\nmax_size = \"1GiB\"\n\
             [storage.action_cache.store]\nbackend = \"disk\"\npath = \"{0}/ac\"\nmax_size = \"16MiB\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = start(&config);
    wait_until_serving(&address).await;

    let data = noise(8 << 20, 9);
    let digest = sha256(&data);
    let name = WriteResource::format("", "killed", &digest, Compressor::Identity);
    let (sender, receiver) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let mut client = ByteStreamClient::new(bb_util::grpc::channel(&address).unwrap());
    let upload =
        tokio::spawn(
            async move { client.write(tokio_stream::wrappers::ReceiverStream::new(receiver)).await },
        );
    // Half the blob, then the process dies.
    for request in write_requests(&name, &data, 1 << 20, 0).into_iter().take(4) {
        sender.send(request).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::fs::read_dir(dir.path().join("cas/tmp")).unwrap().count() > 0, "a write was in progress");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(upload.await.unwrap().is_err());

    let mut child = start(&config);
    wait_until_serving(&address).await;
    let server_channel = bb_util::grpc::channel(&address).unwrap();
    let mut cas = bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient::new(
        server_channel,
    );
    let missing = cas
        .find_missing_blobs(bb_proto::reapi::FindMissingBlobsRequest {
            blob_digests: vec![digest.to_proto()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(missing.len(), 1, "the half-written blob is not visible");
    assert_eq!(std::fs::read_dir(dir.path().join("cas/tmp")).unwrap().count(), 0, "leftovers removed");
    child.kill().unwrap();
    child.wait().unwrap();
}
