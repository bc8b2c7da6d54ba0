//! A real bb-storage on an ephemeral port, and clients for it.
#![allow(dead_code)]

use bb_proto::bytestream::byte_stream_client::ByteStreamClient;
use bb_proto::bytestream::{ReadRequest, WriteRequest};
use bb_proto::reapi;
use bb_proto::reapi::action_cache_client::ActionCacheClient;
use bb_proto::reapi::capabilities_client::CapabilitiesClient;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_storage::{Config, StorageServer};
use bb_util::grpc::Channel;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use std::path::Path;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub channel: Channel,
    pub address: String,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A config with memory stores, or disk stores under `dir`.
pub fn config(dir: Option<&Path>) -> Config {
    let stores = match dir {
        None => "[storage.cas]\nbackend = \"memory\"\nmax_size = \"256MiB\"\n\
                 [storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"16MiB\"\n"
            .to_string(),
        Some(dir) => format!(
            "[storage.cas]\nbackend = \"disk\"\npath = \"{}/cas\"\nmax_size = \"256MiB\"\n\
             [storage.action_cache.store]\nbackend = \"disk\"\npath = \"{}/ac\"\nmax_size = \"16MiB\"\n",
            dir.display(),
            dir.display()
        ),
    };
    let text = format!(
        "grpc_listen = [\"127.0.0.1:0\"]\n[storage]\nmax_batch_size = \"1MiB\"\n[storage.action_cache]\n{stores}"
    );
    bb_util::config::parse(&text, "test").expect("test config")
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let server = StorageServer::bind(&config).await.expect("bind");
        let address = server.grpc_addresses()[0].to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let channel = bb_util::grpc::channel(&address).expect("channel");
        TestServer { channel, address, shutdown, task: Some(task) }
    }

    pub async fn memory() -> Self {
        Self::start(config(None)).await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server ran cleanly");
        }
    }

    pub fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
    }

    pub fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub fn ac(&self) -> ActionCacheClient<Channel> {
        ActionCacheClient::new(self.channel.clone())
    }

    pub fn capabilities(&self) -> CapabilitiesClient<Channel> {
        CapabilitiesClient::new(self.channel.clone())
    }

    pub async fn missing(&self, digests: &[Digest]) -> Vec<reapi::Digest> {
        let request = reapi::FindMissingBlobsRequest {
            blob_digests: digests.iter().map(|d| d.to_proto()).collect(),
            ..Default::default()
        };
        self.cas().find_missing_blobs(request).await.expect("find missing").into_inner().missing_blob_digests
    }

    pub async fn upload(&self, data: &[u8]) -> Digest {
        let digest = sha256(data);
        let request = reapi::BatchUpdateBlobsRequest {
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data: Bytes::copy_from_slice(data),
                compressor: 0,
            }],
            ..Default::default()
        };
        let response = self.cas().batch_update_blobs(request).await.expect("batch update").into_inner();
        assert_eq!(response.responses[0].status.as_ref().map(|s| s.code), Some(0));
        digest
    }

    /// ByteStream write of `data` in `chunk`-sized messages.
    pub async fn write(&self, name: &str, data: &[u8], chunk: usize) -> Result<i64, tonic::Status> {
        let requests = write_requests(name, data, chunk, 0);
        self.bytestream().write(futures::stream::iter(requests)).await.map(|r| r.into_inner().committed_size)
    }

    /// ByteStream read, returning each chunk.
    pub async fn read(&self, name: &str, offset: i64, limit: i64) -> Result<Vec<Bytes>, tonic::Status> {
        let request = ReadRequest { resource_name: name.to_string(), read_offset: offset, read_limit: limit };
        let mut stream = self.bytestream().read(request).await?.into_inner();
        let mut chunks = Vec::new();
        while let Some(response) = stream.message().await? {
            chunks.push(response.data);
        }
        Ok(chunks)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn write_requests(name: &str, data: &[u8], chunk: usize, start: usize) -> Vec<WriteRequest> {
    let mut requests = Vec::new();
    let mut offset = start;
    loop {
        let end = (offset + chunk).min(data.len());
        requests.push(WriteRequest {
            resource_name: if offset == start { name.to_string() } else { String::new() },
            write_offset: offset as i64,
            finish_write: end == data.len(),
            data: Bytes::copy_from_slice(&data[offset..end]),
        });
        if end == data.len() {
            return requests;
        }
        offset = end;
    }
}

pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(DigestFunction::Sha256, data)
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
