//! The Action Cache over real gRPC: keyed by instance, complete results
//! only, inlining on request.

mod common;

use bb_proto::reapi;
use common::{TestServer, sha256};

fn result_with_stdout(stdout: &bb_util::Digest) -> reapi::ActionResult {
    reapi::ActionResult { exit_code: 0, stdout_digest: Some(stdout.to_proto()), ..Default::default() }
}

async fn update(server: &TestServer, instance: &str, action: &bb_util::Digest, result: reapi::ActionResult) {
    server
        .ac()
        .update_action_result(reapi::UpdateActionResultRequest {
            instance_name: instance.into(),
            action_digest: Some(action.to_proto()),
            action_result: Some(result),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn get(
    server: &TestServer,
    instance: &str,
    action: &bb_util::Digest,
    inline_stdout: bool,
) -> Result<reapi::ActionResult, tonic::Status> {
    server
        .ac()
        .get_action_result(reapi::GetActionResultRequest {
            instance_name: instance.into(),
            action_digest: Some(action.to_proto()),
            inline_stdout,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn results_round_trip_per_instance_with_inlining() {
    let server = TestServer::memory().await;
    let stdout = server.upload(b"hello from the action\n").await;
    let action = sha256(b"action");
    update(&server, "a", &action, result_with_stdout(&stdout)).await;

    let plain = get(&server, "a", &action, false).await.unwrap();
    assert!(plain.stdout_raw.is_empty());
    let inlined = get(&server, "a", &action, true).await.unwrap();
    assert_eq!(inlined.stdout_raw, b"hello from the action\n");
    assert_eq!(get(&server, "b", &action, false).await.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn results_whose_outputs_are_gone_are_not_found() {
    let server = TestServer::memory().await;
    let action = sha256(b"action");
    let never_uploaded = sha256(b"lost output");
    update(&server, "", &action, result_with_stdout(&never_uploaded)).await;
    let err = get(&server, "", &action, false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.upload(b"lost output").await;
    assert!(get(&server, "", &action, false).await.is_ok());
}

#[tokio::test]
async fn updates_can_be_turned_off() {
    let mut config = common::config(None);
    config.storage.action_cache.allow_updates = false;
    let server = TestServer::start(config).await;
    let err = server
        .ac()
        .update_action_result(reapi::UpdateActionResultRequest {
            action_digest: Some(sha256(b"x").to_proto()),
            action_result: Some(reapi::ActionResult::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
