//! Authentication and authorization on a real scheduler: who gets
//! UNAUTHENTICATED, who gets PERMISSION_DENIED, on the client API, the
//! worker API and the status page.

mod common;

use bb_client::{Source, StorageClient};
use bb_proto::buildbarn::remoteworker::SynchronizeRequest;
use bb_proto::buildbarn::remoteworker::operation_queue_client::OperationQueueClient;
use bb_proto::reapi;
use bb_proto::reapi::action_cache_client::ActionCacheClient;
use bb_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use bb_proto::reapi::execution_client::ExecutionClient;
use bb_util::auth::policy::Rule;
use bb_util::auth::{AuthenticationConfig, Permission};
use bb_util::grpc::{BearerToken, Channel};
use bb_util::{Digest, DigestFunction};
use common::{TestFarm, http_with};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::Code;

fn rule(identity: &str, prefix: &str, permissions: &[Permission]) -> Rule {
    Rule {
        identities: vec![identity.into()],
        instance_prefix: prefix.into(),
        permissions: permissions.to_vec(),
    }
}

/// Writes a tokens file and a JWKS file; returns the key to sign JWTs with.
fn credentials(dir: &Path) -> EncodingKey {
    let tokens: String = ["reader", "writer", "worker1"]
        .iter()
        .map(|name| format!("{name} = \"{}\"\n", bb_util::auth::tokens::hash(&format!("{name}-secret"))))
        .collect();
    std::fs::write(dir.join("tokens.toml"), tokens).unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key = EncodingKey::from_ed_der(&pair.serialize_der());
    use base64::Engine;
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
    let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": public, "kid": "k1", "alg": "EdDSA" });
    let set = serde_json::json!({ "keys": [jwk] });
    std::fs::write(dir.join("jwks.json"), set.to_string()).unwrap();
    key
}

fn jwt(key: &EncodingKey, subject: &str, audience: &str, expires_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = serde_json::json!({ "sub": subject, "aud": audience, "exp": now + expires_in });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

async fn start(dir: &Path) -> TestFarm {
    let mut config = common::config("");
    config.authentication = authentication(dir);
    TestFarm::start(config).await
}

/// Tokens, JWTs and the policy every test here uses.
fn authentication(dir: &Path) -> AuthenticationConfig {
    AuthenticationConfig {
        tokens_file: Some(dir.join("tokens.toml")),
        jwt: Some(bb_util::auth::jwt::JwtConfig {
            jwks_file: dir.join("jwks.json"),
            audience: vec!["farm".into()],
            issuer: vec![],
            identity_claim: "sub".into(),
            leeway_seconds: 0,
        }),
        policy: vec![
            rule("reader", "", &[Permission::Read]),
            rule("writer", "", &[Permission::Read, Permission::WriteCas, Permission::WriteActionCache]),
            rule("alice", "a/", &[Permission::Execute, Permission::Read, Permission::WriteCas]),
            rule("worker1", "", &[Permission::Worker]),
        ],
        ..Default::default()
    }
}

fn channel(farm: &TestFarm, token: Option<&str>) -> Channel {
    let address = farm.client_address.clone();
    let token = token.map(|t| BearerToken::new(t).unwrap());
    bb_util::grpc::channel_with(&address, None, token.as_ref()).unwrap()
}

async fn find_missing(channel: Channel, instance: &str) -> Result<(), (Code, String)> {
    let request = reapi::FindMissingBlobsRequest {
        instance_name: instance.into(),
        blob_digests: vec![Digest::of(DigestFunction::Sha256, b"x").to_proto()],
        digest_function: DigestFunction::Sha256.to_proto(),
    };
    let result = ContentAddressableStorageClient::new(channel).find_missing_blobs(request).await;
    result.map(|_| ()).map_err(|status| (status.code(), status.message().to_string()))
}

/// That `result` is an error with `code` whose message says `needle`.
fn expect(result: Result<(), (Code, String)>, code: Code, needle: &str) {
    match result {
        Err((got, message)) if got == code => assert!(message.contains(needle), "{message}"),
        other => panic!("expected {code:?} ({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn callers_without_valid_credentials_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let key = credentials(dir.path());
    let farm = start(dir.path()).await;
    let refused = |result, needle| expect(result, Code::Unauthenticated, needle);
    refused(find_missing(channel(&farm, None), "").await, "present credentials");
    refused(find_missing(channel(&farm, Some("guess")), "").await, "not known");
    let expired = jwt(&key, "alice", "farm", -60);
    refused(find_missing(channel(&farm, Some(&expired)), "a").await, "expired");
    let elsewhere = jwt(&key, "alice", "another-farm", 3600);
    refused(find_missing(channel(&farm, Some(&elsewhere)), "a").await, "audience");
    let good = jwt(&key, "alice", "farm", 3600);
    assert_eq!(find_missing(channel(&farm, Some(&good)), "a").await, Ok(()));
    assert_eq!(find_missing(channel(&farm, Some("reader-secret")), "").await, Ok(()));
}

#[tokio::test]
async fn permissions_are_enforced_per_identity_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let key = credentials(dir.path());
    let farm = start(dir.path()).await;
    let denied = |result, needle| expect(result, Code::PermissionDenied, needle);

    // An identity limited to instance a/ cannot touch b.
    let alice = jwt(&key, "alice", "farm", 3600);
    assert_eq!(find_missing(channel(&farm, Some(&alice)), "a/x").await, Ok(()));
    denied(find_missing(channel(&farm, Some(&alice)), "b").await, "alice lacks the read or write-cas");

    // A client token on the worker API.
    let worker_api = |token: &str| {
        let token = BearerToken::new(token).unwrap();
        let address = farm.worker_address.clone();
        OperationQueueClient::new(bb_util::grpc::channel_with(&address, None, Some(&token)).unwrap())
    };
    let request = SynchronizeRequest {
        worker_id: [("host".to_string(), "w".to_string())].into(),
        ..Default::default()
    };
    let status = worker_api("writer-secret").synchronize(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("worker permission"), "{status:?}");
    let posing = worker_api("worker1-secret").synchronize(request).await.map_err(|s| s.code());
    assert_ne!(posing.err(), Some(Code::PermissionDenied), "the worker's own token is let in");

    // Written by the writer, read by the reader; the reader may not write
    // the Action Cache nor execute.
    let action = Digest::of(DigestFunction::Sha256, b"an action");
    let result = reapi::ActionResult { exit_code: 7, ..Default::default() };
    let update = reapi::UpdateActionResultRequest {
        action_digest: Some(action.to_proto()),
        action_result: Some(result),
        digest_function: DigestFunction::Sha256.to_proto(),
        ..Default::default()
    };
    let writer = ActionCacheClient::new(channel(&farm, Some("writer-secret")));
    writer.clone().update_action_result(update.clone()).await.unwrap();
    let mut reader = ActionCacheClient::new(channel(&farm, Some("reader-secret")));
    let get = reapi::GetActionResultRequest {
        action_digest: Some(action.to_proto()),
        digest_function: DigestFunction::Sha256.to_proto(),
        ..Default::default()
    };
    assert_eq!(reader.get_action_result(get).await.unwrap().into_inner().exit_code, 7);
    let status = reader.update_action_result(update).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("write-action-cache"), "{status:?}");
    let execute = reapi::ExecuteRequest {
        action_digest: Some(action.to_proto()),
        digest_function: DigestFunction::Sha256.to_proto(),
        ..Default::default()
    };
    let status =
        ExecutionClient::new(channel(&farm, Some("reader-secret"))).execute(execute).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("reader lacks the execute permission"), "{status:?}");
}

#[tokio::test]
async fn the_status_page_needs_read_to_view_and_admin_to_drain() {
    let dir = tempfile::tempdir().unwrap();
    credentials(dir.path());
    let farm = start(dir.path()).await;
    let bearer = |token: &str| format!("Authorization: Bearer {token}\r\n");
    let anonymous = http_with(farm.http, "GET", "/", "", "").await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(anonymous.to_lowercase().contains("www-authenticate: basic"), "{anonymous}");
    let viewed = http_with(farm.http, "GET", "/", &bearer("reader-secret"), "").await;
    assert!(viewed.starts_with("HTTP/1.1 200"), "{viewed}");
    let drained = http_with(farm.http, "POST", "/api/drain?host=w", &bearer("reader-secret"), "").await;
    assert!(drained.starts_with("HTTP/1.1 403") && drained.contains("admin"), "{drained}");
    let metrics = http_with(farm.http, "GET", "/metrics", &bearer("worker1-secret"), "").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "workers may read: {metrics}");
}

#[tokio::test]
async fn stored_contents_need_read_on_their_instance() {
    let dir = tempfile::tempdir().unwrap();
    let key = credentials(dir.path());
    let mut config = common::config("");
    config.authentication = AuthenticationConfig { public_pages: true, ..authentication(dir.path()) };
    let farm = TestFarm::start(config).await;
    let data = b"secret sauce";
    let digest = Digest::of(DigestFunction::Sha256, data);
    let blob = Source::Bytes(bytes::Bytes::from_static(data));
    StorageClient::new(channel(&farm, Some("writer-secret")))
        .upload("a/x", vec![(digest, blob)])
        .await
        .unwrap();
    let url =
        |instance: &str| format!("/blob/sha256/{}/{}?instance={instance}", digest.hash_hex(), digest.size());
    let alice = format!("Authorization: Bearer {}\r\n", jwt(&key, "alice", "farm", 3600));

    let allowed = http_with(farm.http, "GET", &url("a%2Fx"), &alice, "").await;
    assert!(allowed.starts_with("HTTP/1.1 200") && allowed.ends_with("secret sauce"), "{allowed}");
    let elsewhere = http_with(farm.http, "GET", &url("b"), &alice, "").await;
    assert!(elsewhere.starts_with("HTTP/1.1 403") && elsewhere.contains("alice may not read"), "{elsewhere}");
    // Public pages show the queue to anyone, and stored contents to no one.
    let public = http_with(farm.http, "GET", "/", "", "").await;
    assert!(public.starts_with("HTTP/1.1 200"), "{public}");
    let public_blob = http_with(farm.http, "GET", &url("a%2Fx"), "", "").await;
    assert!(
        public_blob.starts_with("HTTP/1.1 403") && !public_blob.contains("secret sauce"),
        "{public_blob}"
    );
}

#[tokio::test]
async fn operations_show_who_submitted_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = credentials(dir.path());
    let mut farm = start(dir.path()).await;
    farm.client = channel(&farm, Some("writer-secret"));
    let action = farm.action(&["true"], &[("OSFamily", "linux")], false).await;
    let alice = jwt(&key, "alice", "farm", 3600);
    let mut request = farm.execute_request(&action);
    request.instance_name = "a".into();
    let mut stream =
        ExecutionClient::new(channel(&farm, Some(&alice))).execute(request).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the operation");
    let bearer = "Authorization: Bearer reader-secret\r\n";
    let status = http_with(farm.http, "GET", "/api/status", bearer, "").await;
    assert!(status.contains("\"submitter\":\"alice\""), "{status}");
    assert!(!status.contains(&alice), "the JWT itself is never shown");
}
