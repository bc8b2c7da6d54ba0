//! A storage frontend over three real bb-storage nodes, each blob and each
//! action result on two of them: a node goes away and everything stays
//! readable and writable; it comes back empty and catches up.

mod common;

use bb_client::{ActionCache, Inline, Source, StorageClient};
use bb_proto::reapi;
use bb_storage::Config;
use bytes::Bytes;
use common::TestServer;
use std::time::Duration;

/// A node: memory stores, and no completeness check of its own (it holds a
/// share of the CAS only).
fn node_config(address: &str) -> Config {
    let text = format!(
        "grpc_listen = [\"{address}\"]\n[storage]\n[storage.cas]\nbackend = \"memory\"\nmax_size = \"64MiB\"\n\
         [storage.action_cache]\ncompleteness_check = false\n\
         [storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"16MiB\"\n"
    );
    bb_util::config::parse(&text, "node").expect("node config")
}

/// The frontend: the CAS and the Action Cache sharded over the nodes.
fn frontend_config(nodes: &[String]) -> Config {
    let shards = nodes
        .iter()
        .enumerate()
        .map(|(i, address)| {
            format!(
                "{{ name = \"node{i}\", store = {{ backend = \"grpc\", endpoint = \"grpc://{address}\" }} }}"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage]\n\
         [storage.cas]\nbackend = \"sharding\"\ncopies = 2\nshards = [{shards}]\n\
         [storage.action_cache]\n\
         [storage.action_cache.store]\nbackend = \"sharding\"\ncopies = 2\nshards = [{shards}]\n"
    );
    bb_util::config::parse(&text, "frontend").expect("frontend config")
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn blobs(salt: &str, n: usize) -> Vec<(bb_util::Digest, Bytes)> {
    let mut blobs: Vec<_> = (0..n)
        .map(|i| {
            let data = Bytes::from(format!("{salt} blob {i}"));
            (bb_util::Digest::of(bb_util::DigestFunction::Sha256, &data), data)
        })
        .collect();
    // One over the batch limit, streamed over ByteStream.
    let large = Bytes::from(format!("{salt} large ").repeat(300_000));
    blobs.push((bb_util::Digest::of(bb_util::DigestFunction::Sha256, &large), large));
    blobs
}

async fn upload(client: &StorageClient, blobs: &[(bb_util::Digest, Bytes)]) {
    let sources = blobs.iter().map(|(d, b)| (*d, Source::Bytes(b.clone()))).collect();
    client.upload("", sources).await.expect("upload through the frontend");
}

fn result_with(stdout: &bb_util::Digest) -> reapi::ActionResult {
    reapi::ActionResult { exit_code: 0, stdout_digest: Some(stdout.to_proto()), ..Default::default() }
}

#[tokio::test]
async fn two_copies_over_three_nodes_survive_a_node_and_catch_up() {
    let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
    let mut nodes = Vec::new();
    for address in &addresses {
        nodes.push(Some(TestServer::start(node_config(address)).await));
    }
    let frontend = TestServer::start(frontend_config(&addresses)).await;
    let client = StorageClient::new(frontend.channel.clone());

    let before = blobs("before", 60);
    upload(&client, &before).await;
    let actions: Vec<bb_util::Digest> = before.iter().take(20).map(|(d, _)| *d).collect();
    for (action, (stdout, _)) in actions.iter().zip(before.iter().skip(20)) {
        client.update_action_result("", action, &result_with(stdout)).await.unwrap();
    }

    // Node 1 goes away.
    nodes[1].take().unwrap().stop().await;
    let digests: Vec<_> = before.iter().map(|(d, _)| *d).collect();
    let read = client.read_blobs("", &digests, "blob").await.expect("every blob readable with a node down");
    for (d, data) in &before {
        assert_eq!(read.get(d), Some(data));
    }
    for action in &actions {
        let result = client.get_action_result("", action, &Inline::default()).await.unwrap();
        assert!(result.is_some(), "the result of {action} is served, complete, with a node down");
    }
    let during = blobs("during", 30);
    upload(&client, &during).await;
    assert!(
        client
            .find_missing("", &during.iter().map(|(d, _)| *d).collect::<Vec<_>>())
            .await
            .unwrap()
            .is_empty()
    );

    // It comes back empty; reading everything through the frontend repairs
    // what it should hold.
    let revived = TestServer::start(node_config(&addresses[1])).await;
    let all: Vec<_> = before.iter().chain(&during).map(|(d, _)| *d).collect();
    assert!(client.find_missing("", &all).await.unwrap().is_empty());
    let node_client = StorageClient::new(revived.channel.clone());
    let mut held = 0;
    for _ in 0..200 {
        held = all.len() - node_client.find_missing("", &all).await.unwrap().len();
        if held > all.len() / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two copies over three nodes: each node owns about two thirds.
    assert!(held > all.len() / 2, "the revived node holds {held} of {} blobs", all.len());
    for action in &actions {
        client.get_action_result("", action, &Inline::default()).await.unwrap();
    }
    revived.stop().await;
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
    frontend.stop().await;
}
