//! The scheduler over real gRPC: clients executing, simulated workers.

mod common;

use bb_proto::buildbarn::remoteworker::current_state;
use bb_proto::reapi;
use bb_proto::reapi::execution_stage::Value as Stage;
use common::{SimWorker, TestFarm, collect, config, execute_response, stage, told_idle};
use std::time::Duration;

const LINUX: &[(&str, &str)] = &[("OSFamily", "linux")];

#[tokio::test]
async fn two_executes_one_run_both_get_the_result() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["/bin/true"], LINUX, false).await;
    let first = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let second = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let mut worker = SimWorker::new(&farm, "w1", LINUX);
    let task = worker.take().await.expect("one task");
    assert_eq!(task.action_digest.as_ref(), Some(&action.to_proto()));
    assert!(task.action.as_ref().unwrap().timeout.is_some(), "the default timeout is filled in");
    let mut other = SimWorker::new(&farm, "w2", LINUX);
    assert!(other.take().await.is_none(), "only one run");
    worker.complete(&action.to_proto(), 0).await;

    let (a, b) = tokio::join!(collect(first), collect(second));
    assert_eq!(a.last().unwrap().name, b.last().unwrap().name);
    for ops in [a, b] {
        let last = ops.last().unwrap();
        assert!(last.done);
        assert_eq!(stage(last), Stage::Completed as i32);
        let response = execute_response(last);
        assert!(!response.cached_result);
        assert_eq!(response.result.unwrap().execution_metadata.unwrap().worker, "w1");
    }
}

#[tokio::test]
async fn cache_hits_answer_at_once_unless_skipped() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["/bin/echo", "cached"], LINUX, false).await;
    let stdout = farm.upload(b"cached\n").await;
    let result =
        reapi::ActionResult { exit_code: 0, stdout_digest: Some(stdout.to_proto()), ..Default::default() };
    reapi::action_cache_client::ActionCacheClient::new(farm.client.clone())
        .update_action_result(reapi::UpdateActionResultRequest {
            action_digest: Some(action.to_proto()),
            action_result: Some(result),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut request = farm.execute_request(&action);
    request.inline_stdout = true;
    let ops = collect(farm.execution().execute(request.clone()).await.unwrap().into_inner()).await;
    assert_eq!(ops.len(), 1, "a cache hit is one done message");
    let response = execute_response(&ops[0]);
    assert!(response.cached_result);
    assert_eq!(response.result.unwrap().stdout_raw, b"cached\n");

    request.skip_cache_lookup = true;
    let stream = farm.execution().execute(request).await.unwrap().into_inner();
    let mut worker = SimWorker::new(&farm, "w", LINUX);
    assert!(worker.take().await.is_some(), "skip_cache_lookup forces a run");
    worker.complete(&action.to_proto(), 0).await;
    let ops = collect(stream).await;
    assert!(!execute_response(ops.last().unwrap()).cached_result);
}

#[tokio::test]
async fn stages_stream_with_keepalives() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["sleep"], LINUX, false).await;
    let mut stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(stage(&first), Stage::Queued as i32);
    // Nothing happens for a while: keep-alives (300 ms) still arrive.
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let op = stream.message().await.unwrap().unwrap();
        assert_eq!(stage(&op), Stage::Queued as i32);
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    let mut worker = SimWorker::new(&farm, "w", LINUX);
    worker.take().await.unwrap();
    let op = loop {
        let op = stream.message().await.unwrap().unwrap();
        if stage(&op) == Stage::Executing as i32 {
            break op;
        }
    };
    assert!(!op.done);
    worker.complete(&action.to_proto(), 7).await;
    let ops = collect(stream).await;
    assert_eq!(execute_response(ops.last().unwrap()).result.unwrap().exit_code, 7);
}

#[tokio::test]
async fn lost_worker_hands_the_action_to_another() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["long"], LINUX, false).await;
    let stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let mut doomed = SimWorker::new(&farm, "doomed", LINUX);
    doomed.take().await.expect("task");
    // "doomed" never reports again. After worker_timeout (2 s) it is lost.
    let mut rescuer = SimWorker::new(&farm, "rescuer", LINUX);
    let task = loop {
        if let Some(task) = rescuer.take().await {
            break task;
        }
    };
    assert_eq!(task.action_digest.as_ref(), Some(&action.to_proto()));
    rescuer.complete(&action.to_proto(), 0).await;
    let ops = collect(stream).await;
    let response = execute_response(ops.last().unwrap());
    assert_eq!(response.status.unwrap().code, 0, "the client never saw the loss");
    assert_eq!(response.result.unwrap().execution_metadata.unwrap().worker, "rescuer");
}

#[tokio::test]
async fn action_killing_every_worker_fails_internal() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["crash"], LINUX, false).await;
    let stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    for name in ["victim1", "victim2"] {
        let mut worker = SimWorker::new(&farm, name, LINUX);
        loop {
            if worker.take().await.is_some() {
                break;
            }
        }
    }
    let ops = tokio::time::timeout(Duration::from_secs(10), collect(stream)).await.unwrap();
    let status = execute_response(ops.last().unwrap()).status.unwrap();
    assert_eq!(status.code, tonic::Code::Internal as i32);
    assert!(status.message.contains("lost"), "{}", status.message);
}

#[tokio::test]
async fn client_gone_cancels_and_waitexecution_reattaches() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["reattach"], LINUX, false).await;
    let mut stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let name = stream.message().await.unwrap().unwrap().name;
    drop(stream);
    // Reconnect within the grace period.
    let stream = farm
        .execution()
        .wait_execution(reapi::WaitExecutionRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut worker = SimWorker::new(&farm, "w", LINUX);
    worker.take().await.unwrap();
    worker.complete(&action.to_proto(), 0).await;
    let ops = collect(stream).await;
    assert_eq!(ops.last().unwrap().name, name);
    assert!(ops.last().unwrap().done);

    // Now a client that goes away for good while its action runs.
    let cancelled = farm.action(&["abandoned"], LINUX, false).await;
    let stream = farm.execution().execute(farm.execute_request(&cancelled)).await.unwrap().into_inner();
    let task = worker.take().await.unwrap();
    drop(stream);
    let digest = task.action_digest.unwrap();
    let running = current_state::executing::ExecutionState::Running(());
    let told = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let response = worker.sync(SimWorker::executing(&digest, running.clone())).await.unwrap();
        if told_idle(&response) {
            break true;
        }
    };
    assert!(told, "the worker was told to stop");
}

#[tokio::test]
async fn unmatched_platform_fails_naming_both() {
    let farm = TestFarm::start(config("")).await;
    let mut worker = SimWorker::new(&farm, "linux-box", LINUX);
    let action = farm.action(&["x"], &[("OSFamily", "Windows")], false).await;
    let stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let waiting = tokio::spawn(async move { while worker.take().await.is_none() {} });
    let ops = tokio::time::timeout(Duration::from_secs(10), collect(stream)).await.unwrap();
    waiting.abort();
    let status = execute_response(ops.last().unwrap()).status.unwrap();
    assert_eq!(status.code, tonic::Code::FailedPrecondition as i32);
    assert!(
        status.message.contains("OSFamily=Windows") && status.message.contains("OSFamily=linux"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn exact_matching_mode_over_grpc() {
    let farm = TestFarm::start(config("platform_matching = \"exact\"")).await;
    let action = farm.action(&["x"], LINUX, false).await;
    let _stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let mut bigger = SimWorker::new(&farm, "bigger", &[("OSFamily", "linux"), ("gpu", "none")]);
    assert!(bigger.take().await.is_none());
    let mut exact = SimWorker::new(&farm, "exact", LINUX);
    assert!(exact.take().await.is_some());
}

#[tokio::test]
async fn status_page_and_metrics_have_real_content() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["shown"], LINUX, false).await;
    let mut stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let name = stream.message().await.unwrap().unwrap().name;
    let mut worker = SimWorker::new(&farm, "visible-worker", LINUX);
    worker.take().await.unwrap();

    let page = farm.http_get("/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("worker=visible-worker") && page.contains("{OSFamily=linux}"), "{page}");
    assert!(
        page.contains(&name) && page.contains("<form method=\"post\" action=\"/workers/drain\""),
        "{page}"
    );
    let json = farm.http_get("/api/status").await;
    assert!(json.contains("\"executing\":1"), "{json}");
    let detail = farm.http_get(&format!("/operation/{name}")).await;
    assert!(detail.contains(&action.hash_hex()), "{detail}");

    // Drain through the form, as the page's button does.
    let response = common::http(farm.http, "POST", "/workers/drain", "worker=worker%3Dvisible-worker").await;
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    assert!(farm.http_get("/api/status").await.contains("\"drained\":true"));

    worker.complete(&action.to_proto(), 0).await;
    let metrics = farm.http_get("/metrics").await;
    for needle in [
        "bb_scheduler_completed_operations_total",
        "bb_scheduler_queue_wait_seconds",
        "bb_scheduler_executing_operations",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    assert!(farm.http_get("/operation/no-such-operation").await.starts_with("HTTP/1.1 404"));
}

/// Every metric family is on /metrics from the first scrape, at zero, so
/// dashboards and alerts have series before anything happened.
#[tokio::test]
async fn every_metric_family_is_exported_from_the_start() {
    let farm = TestFarm::start(config("")).await;
    let text = farm.http_get("/metrics").await;
    let families = bb_scheduler::metrics::FAMILIES.iter().chain(bb_storage::metrics::FAMILIES);
    for family in families {
        assert!(text.contains(&format!("# TYPE {} ", family.name)), "{} missing from:\n{text}", family.name);
    }
    // Other tests of this process may have counted some already.
    assert!(text.contains("bb_scheduler_completed_operations_total{outcome=\"cancelled\"} "), "{text}");
}
