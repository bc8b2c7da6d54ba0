//! The Remote Asset API against a real bb-storage and a real HTTP origin on
//! loopback: fetching, checksums, the asset cache, the allow-list,
//! redirects, timeouts, size limits, pushes.

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use base64::Engine;
use bb_proto::asset::fetch_client::FetchClient;
use bb_proto::asset::push_client::PushClient;
use bb_proto::asset::{
    FetchBlobRequest, FetchDirectoryRequest, PushBlobRequest, PushDirectoryRequest, Qualifier,
};
use bb_proto::reapi;
use common::{TestServer, config, sha256};
use prost::Message;
use sha2::Digest as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tonic::Code;
use tonic_types::StatusExt;

const CONTENT: &[u8] = b"the archive's bytes";

/// An HTTP origin that counts the requests it answers.
struct Origin {
    base: String,
    requests: Arc<AtomicUsize>,
}

async fn origin(redirect_to: Option<String>) -> Origin {
    let requests = Arc::new(AtomicUsize::new(0));
    let redirect_to = redirect_to.unwrap_or_default();
    let app = Router::new()
        .route("/asset", get(|| async { CONTENT }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                CONTENT
            }),
        )
        .route("/big", get(|| async { vec![7u8; 4096] }))
        .route("/tree.tar.gz", get(|| async { tree_archive() }))
        .route("/redirect", get(move || async move { Redirect::temporary(&redirect_to) }))
        .route(
            "/headers",
            get(|h: axum::http::HeaderMap| async move {
                let auth = h.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string());
                auth.unwrap_or_default().into_response()
            }),
        )
        .layer(axum::middleware::from_fn_with_state(requests.clone(), count))
        .with_state(());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Origin { base, requests }
}

async fn count(
    State(requests): State<Arc<AtomicUsize>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    requests.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

/// A gzipped tar of `top/a.txt`, `top/sub/run.sh` (executable) and
/// `top/link` -> `sub/run.sh`.
fn tree_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("top/a.txt", b"a", 0o644);
    add("top/sub/run.sh", b"#!/bin/sh\n", 0o755);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder.append_link(&mut link, "top/link", "sub/run.sh").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// bb-storage allowing `allowed` origins, with a 1 KiB asset limit.
async fn server(allowed: &[&str]) -> TestServer {
    let mut config = config(None);
    let origins: Vec<String> = allowed.iter().map(|o| format!("{o:?}")).collect();
    let text = format!(
        "allowed_origins = [{}]\nfetch_timeout = \"1s\"\nmax_asset_size = \"1KiB\"\n",
        origins.join(", ")
    );
    config.storage.remote_asset = Some(bb_util::config::parse(&text, "asset test").unwrap());
    TestServer::start(config).await
}

fn sri(data: &[u8]) -> String {
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data)))
}

fn qualifier(name: &str, value: &str) -> Qualifier {
    Qualifier { name: name.into(), value: value.into() }
}

fn fetch(uris: &[String], qualifiers: Vec<Qualifier>) -> FetchBlobRequest {
    FetchBlobRequest { uris: uris.to_vec(), qualifiers, ..Default::default() }
}

fn code(status: &Option<tonic_types::Status>) -> i32 {
    status.as_ref().map_or(0, |s| s.code)
}

#[tokio::test]
async fn fetched_once_then_served_from_the_cache() {
    let origin = origin(None).await;
    let server = server(&[&origin.base]).await;
    let mut client = FetchClient::new(server.channel.clone());
    let uri = format!("{}/asset", origin.base);
    let request = fetch(std::slice::from_ref(&uri), vec![qualifier("checksum.sri", &sri(CONTENT))]);

    let first = client.fetch_blob(request.clone()).await.unwrap().into_inner();
    assert_eq!(code(&first.status), 0, "{:?}", first.status);
    assert_eq!(first.blob_digest, Some(sha256(CONTENT).to_proto()));
    assert_eq!(first.uri, uri);
    assert!(first.expires_at.is_some());
    assert!(server.missing(&[sha256(CONTENT)]).await.is_empty(), "the content is in the CAS");

    let again = client.fetch_blob(request.clone()).await.unwrap().into_inner();
    assert_eq!(again.blob_digest, first.blob_digest);
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1, "the second fetch did not reach the origin");

    // Content older than what the client accepts is fetched again.
    let mut fresh = request;
    fresh.oldest_content_accepted = Some((SystemTime::now() + Duration::from_secs(1)).into());
    client.fetch_blob(fresh).await.unwrap();
    assert_eq!(origin.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_checksum_mismatch_is_aborted_and_stores_nothing() {
    let origin = origin(None).await;
    let server = server(&[&origin.base]).await;
    let mut client = FetchClient::new(server.channel.clone());
    let request = fetch(&[format!("{}/asset", origin.base)], vec![qualifier("checksum.sri", &sri(b"other"))]);
    let response = client.fetch_blob(request.clone()).await.unwrap().into_inner();
    let status = response.status.unwrap();
    assert_eq!(status.code, Code::Aborted as i32);
    assert!(status.message.contains("checksum mismatch"), "{}", status.message);
    assert_eq!(response.blob_digest, None);
    assert_eq!(server.missing(&[sha256(CONTENT)]).await.len(), 1, "nothing was stored");
    // Nor was the failure cached: the origin is asked again.
    client.fetch_blob(request).await.unwrap();
    assert_eq!(origin.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unsupported_qualifiers_are_invalid_arguments_naming_them() {
    let origin = origin(None).await;
    let server = server(&[&origin.base]).await;
    let request =
        fetch(&[format!("{}/asset", origin.base)], vec![qualifier("resource_type", "application/x-git")]);
    let err = FetchClient::new(server.channel.clone()).fetch_blob(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("resource_type"), "{}", err.message());
    let violations = err.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].description, "\"resource_type\" not supported");
    assert_eq!(origin.requests.load(Ordering::SeqCst), 0);

    let twice = fetch(&[format!("{}/asset", origin.base)], vec![qualifier("a", "1"), qualifier("a", "2")]);
    let err = FetchClient::new(server.channel.clone()).fetch_blob(twice).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let none = FetchClient::new(server.channel.clone()).fetch_blob(fetch(&[], vec![])).await.unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn only_allowed_origins_are_fetched_from_redirects_included() {
    let allowed = origin(None).await;
    let other = origin(None).await;
    let redirecting = origin(Some(format!("{}/asset", other.base))).await;
    let server = server(&[&allowed.base, &redirecting.base]).await;
    let mut client = FetchClient::new(server.channel.clone());

    let denied =
        client.fetch_blob(fetch(&[format!("{}/asset", other.base)], vec![])).await.unwrap().into_inner();
    assert_eq!(code(&denied.status), Code::PermissionDenied as i32, "{:?}", denied.status);
    let redirected = client
        .fetch_blob(fetch(&[format!("{}/redirect", redirecting.base)], vec![]))
        .await
        .unwrap()
        .into_inner();
    let status = redirected.status.unwrap();
    assert!(status.message.contains("not an allowed origin"), "{}", status.message);
    assert_eq!(other.requests.load(Ordering::SeqCst), 0, "the disallowed origin was never contacted");

    // Of several URIs, the first that works answers.
    let uris = [
        format!("{}/asset", other.base),
        format!("{}/missing", allowed.base),
        format!("{}/asset", allowed.base),
    ];
    let response = client.fetch_blob(fetch(&uris, vec![])).await.unwrap().into_inner();
    assert_eq!(code(&response.status), 0);
    assert_eq!(response.uri, uris[2]);

    let missing =
        client.fetch_blob(fetch(&[format!("{}/missing", allowed.base)], vec![])).await.unwrap().into_inner();
    assert_eq!(code(&missing.status), Code::NotFound as i32);
}

#[tokio::test]
async fn slow_and_large_assets_fail_and_store_nothing() {
    let origin = origin(None).await;
    let server = server(&[&origin.base]).await;
    let mut client = FetchClient::new(server.channel.clone());
    let slow =
        client.fetch_blob(fetch(&[format!("{}/slow", origin.base)], vec![])).await.unwrap().into_inner();
    assert_eq!(code(&slow.status), Code::DeadlineExceeded as i32, "{:?}", slow.status);
    let big = client.fetch_blob(fetch(&[format!("{}/big", origin.base)], vec![])).await.unwrap().into_inner();
    assert_eq!(code(&big.status), Code::ResourceExhausted as i32, "{:?}", big.status);
    assert_eq!(server.missing(&[sha256(&[7u8; 4096])]).await.len(), 1);
}

#[tokio::test]
async fn bazel_auth_headers_reach_the_origin_for_their_url_only() {
    let origin = origin(None).await;
    let server = server(&[&origin.base]).await;
    let uri = format!("{}/headers", origin.base);
    let headers = format!(r#"{{"{uri}": {{"Authorization": ["Bearer secret"]}}}}"#);
    let request = fetch(std::slice::from_ref(&uri), vec![qualifier("bazel.auth_headers", &headers)]);
    let response = FetchClient::new(server.channel.clone()).fetch_blob(request).await.unwrap().into_inner();
    assert_eq!(response.blob_digest, Some(sha256(b"Bearer secret").to_proto()));
}

#[tokio::test]
async fn pushed_assets_are_served_without_an_origin() {
    let server = server(&[]).await;
    let mut push = PushClient::new(server.channel.clone());
    let mut fetch_client = FetchClient::new(server.channel.clone());
    let uri = "https://mirror.invalid/asset.tar.gz".to_string();
    let qualifiers = vec![qualifier("checksum.sri", &sri(CONTENT)), qualifier("vcs.commit", "abc")];

    // The blob must be stored before it is pushed.
    let push_request = PushBlobRequest {
        uris: vec![uri.clone()],
        qualifiers: qualifiers.clone(),
        blob_digest: Some(sha256(CONTENT).to_proto()),
        ..Default::default()
    };
    let err = push.push_blob(push_request.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.upload(CONTENT).await;
    push.push_blob(push_request).await.unwrap();

    // Qualifiers in another order name the same asset; pushed ones need
    // not be ones the server could fetch with.
    let reordered: Vec<Qualifier> = qualifiers.iter().rev().cloned().collect();
    let response =
        fetch_client.fetch_blob(fetch(std::slice::from_ref(&uri), reordered)).await.unwrap().into_inner();
    assert_eq!(response.blob_digest, Some(sha256(CONTENT).to_proto()));

    // Without an allowed origin, an unknown asset is PERMISSION_DENIED.
    let other = fetch(&["https://mirror.invalid/other".into()], vec![]);
    let response = fetch_client.fetch_blob(other).await.unwrap().into_inner();
    assert_eq!(code(&response.status), Code::PermissionDenied as i32);

    // An expired push is not served.
    let expired = PushBlobRequest {
        uris: vec!["https://mirror.invalid/old".into()],
        blob_digest: Some(sha256(CONTENT).to_proto()),
        expire_at: Some((SystemTime::now() - Duration::from_secs(1)).into()),
        ..Default::default()
    };
    push.push_blob(expired).await.unwrap();
    let old = fetch_client.fetch_blob(fetch(&["https://mirror.invalid/old".into()], vec![])).await.unwrap();
    assert_ne!(code(&old.into_inner().status), 0);
}

#[tokio::test]
async fn pushed_directories_are_served_while_their_tree_is_whole() {
    let server = server(&[]).await;
    let file = server.upload(b"a file").await;
    let directory = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "f".into(),
            digest: Some(file.to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let root = server.upload(&directory.encode_to_vec()).await;
    let uri = "https://example.invalid/tree".to_string();
    PushClient::new(server.channel.clone())
        .push_directory(PushDirectoryRequest {
            uris: vec![uri.clone()],
            root_directory_digest: Some(root.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap();
    let request = FetchDirectoryRequest { uris: vec![uri], ..Default::default() };
    let response = FetchClient::new(server.channel.clone()).fetch_directory(request.clone()).await.unwrap();
    assert_eq!(response.into_inner().root_directory_digest, Some(root.to_proto()));

    // Not pushed, and no origin allowed.
    let unknown =
        FetchDirectoryRequest { uris: vec!["https://example.invalid/none".into()], ..Default::default() };
    let response =
        FetchClient::new(server.channel.clone()).fetch_directory(unknown).await.unwrap().into_inner();
    assert_eq!(code(&response.status), Code::PermissionDenied as i32);
}

#[tokio::test]
async fn directories_are_fetched_as_archives_and_unpacked() {
    let origin = origin(None).await;
    let mut server_config = config(None);
    let text = format!("allowed_origins = [{:?}]\n", origin.base);
    server_config.storage.remote_asset = Some(bb_util::config::parse(&text, "asset test").unwrap());
    let server = TestServer::start(server_config).await;
    let mut client = FetchClient::new(server.channel.clone());
    let archive = tree_archive();
    let request = FetchDirectoryRequest {
        uris: vec![format!("{}/tree.tar.gz", origin.base)],
        qualifiers: vec![qualifier("checksum.sri", &sri(&archive)), qualifier("directory", "top")],
        ..Default::default()
    };
    let response = client.fetch_directory(request.clone()).await.unwrap().into_inner();
    assert_eq!(code(&response.status), 0, "{:?}", response.status);
    let root = bb_util::Digest::from_required(
        bb_util::DigestFunction::Sha256,
        response.root_directory_digest.as_ref(),
    )
    .unwrap();
    let read = |digest: bb_util::Digest| {
        let server = &server;
        async move {
            let name = bb_util::resource_name::ReadResource::format(
                "",
                &digest,
                bb_util::resource_name::Compressor::Identity,
            );
            server.read(&name, 0, 0).await.unwrap().concat()
        }
    };
    let top = reapi::Directory::decode(read(root).await.as_slice()).unwrap();
    assert_eq!(top.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["a.txt"]);
    assert_eq!(top.symlinks[0].target, "sub/run.sh");
    let sub_digest =
        bb_util::Digest::from_required(bb_util::DigestFunction::Sha256, top.directories[0].digest.as_ref())
            .unwrap();
    let sub = reapi::Directory::decode(read(sub_digest).await.as_slice()).unwrap();
    assert!(sub.files[0].is_executable);
    assert_eq!(
        read(
            bb_util::Digest::from_required(bb_util::DigestFunction::Sha256, sub.files[0].digest.as_ref())
                .unwrap()
        )
        .await,
        b"#!/bin/sh\n"
    );

    // Served from the record the second time.
    client.fetch_directory(request).await.unwrap();
    assert_eq!(origin.requests.load(Ordering::SeqCst), 1);

    // A subdirectory the archive does not have.
    let absent = FetchDirectoryRequest {
        uris: vec![format!("{}/tree.tar.gz", origin.base)],
        qualifiers: vec![qualifier("directory", "nothere")],
        ..Default::default()
    };
    let response = client.fetch_directory(absent).await.unwrap().into_inner();
    assert_eq!(code(&response.status), Code::FailedPrecondition as i32, "{:?}", response.status);
}
