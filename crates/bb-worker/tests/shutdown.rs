//! SIGTERM on the worker: running actions finish within the grace period,
//! or are handed back to the scheduler after it; then the worker exits.

mod common;

use common::{Farm, TestAction, code};
use std::time::Duration;

#[tokio::test]
async fn running_actions_finish_before_the_worker_exits() {
    let mut farm = Farm::start_with_grace(1, "30s").await;
    let action = TestAction::shell("sleep 1; echo finished");
    let client = common::Client { channel: farm.client.channel.clone() };
    let run = tokio::spawn(async move { client.run(action).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    farm.worker_drain.cancel();
    let response = run.await.unwrap();
    assert_eq!(code(&response), tonic::Code::Ok);
    assert_eq!(farm.read(response.result.unwrap().stdout_digest.as_ref().unwrap()).await, "finished\n");
    tokio::time::timeout(Duration::from_secs(10), &mut farm.worker)
        .await
        .expect("worker exits")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn actions_past_the_grace_period_are_handed_back() {
    let mut farm = Farm::start_with_grace(1, "300ms").await;
    let action = TestAction::shell("sleep 30");
    let (digest, blobs) = action.build();
    farm.upload(blobs).await;
    let mut stream = bb_proto::reapi::execution_client::ExecutionClient::new(farm.client.channel.clone())
        .execute(bb_proto::reapi::ExecuteRequest {
            action_digest: Some(digest.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Wait until it runs, then shut the worker down.
    loop {
        let op = stream.message().await.unwrap().unwrap();
        let metadata: bb_proto::reapi::ExecuteOperationMetadata =
            prost::Message::decode(op.metadata.unwrap().value.as_slice()).unwrap();
        if metadata.stage == bb_proto::reapi::execution_stage::Value::Executing as i32 {
            break;
        }
    }
    farm.worker_drain.cancel();
    tokio::time::timeout(Duration::from_secs(10), &mut farm.worker)
        .await
        .expect("worker exits")
        .unwrap()
        .unwrap();
    // The scheduler put the action back in the queue for another worker.
    let op = loop {
        let op = stream.message().await.unwrap().unwrap();
        let metadata: bb_proto::reapi::ExecuteOperationMetadata =
            prost::Message::decode(op.metadata.clone().unwrap().value.as_slice()).unwrap();
        if metadata.stage == bb_proto::reapi::execution_stage::Value::Queued as i32 {
            break op;
        }
    };
    assert!(!op.done, "the client sees the action queued again, not failed");
}
