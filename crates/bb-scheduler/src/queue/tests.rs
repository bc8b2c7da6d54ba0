//! The queue's rules, driven directly (the gRPC layer has its own tests).
//! Time is tokio's paused clock, so timeouts pass instantly.

use super::*;
use crate::config::QueueConfig;
use crate::platform::{MatchMode, Platform};
use bb_proto::buildbarn::remoteworker::{CurrentState, SynchronizeRequest, current_state, desired_state};
use bb_proto::longrunning::operation;
use bb_util::config::HumanDuration;
use bb_util::{Digest, DigestFunction};
use prost::Message;
use std::time::Duration;

fn config() -> QueueConfig {
    QueueConfig {
        instance_names: vec![],
        platform_matching: MatchMode::Subset,
        execution_properties: vec![],
        default_action_timeout: HumanDuration::from_secs(60),
        maximum_action_timeout: HumanDuration::from_secs(600),
        keepalive_interval: HumanDuration::from_secs(5),
        client_disconnect_grace: HumanDuration::from_secs(10),
        completed_retention: HumanDuration::from_secs(10),
        worker_timeout: HumanDuration::from_secs(20),
        executing_sync_interval: HumanDuration::from_secs(2),
        idle_sync_wait: HumanDuration::from_secs(5),
        max_attempts: 2,
        unmatched_platform_timeout: HumanDuration::from_secs(30),
        status_page_url: None,
    }
}

fn linux() -> Platform {
    Platform::from_pairs(&[("OSFamily", "linux")])
}

fn task(seed: &str, platform: Platform, priority: i32, invocation: &str) -> NewTask {
    let action = bb_proto::reapi::Action { do_not_cache: false, ..Default::default() };
    NewTask {
        instance_name: String::new(),
        action_digest: Digest::of(DigestFunction::Sha256, seed.as_bytes()),
        action,
        command: Default::default(),
        platform,
        priority,
        invocation: invocation.to_string(),
        submitter: "test".to_string(),
        skip_cache_lookup: false,
        auxiliary_metadata: vec![],
    }
}

fn idle_request(name: &str, platform: &Platform) -> SynchronizeRequest {
    SynchronizeRequest {
        worker_id: [("worker".to_string(), name.to_string())].into(),
        platform: Some(platform.to_proto()),
        current_state: Some(CurrentState { worker_state: Some(current_state::WorkerState::Idle(())) }),
        ..Default::default()
    }
}

fn executing_request(
    name: &str,
    platform: &Platform,
    digest: &Digest,
    state: current_state::executing::ExecutionState,
) -> SynchronizeRequest {
    SynchronizeRequest {
        current_state: Some(CurrentState {
            worker_state: Some(current_state::WorkerState::Executing(current_state::Executing {
                action_digest: Some(digest.to_proto()),
                execution_state: Some(state),
            })),
        }),
        ..idle_request(name, platform)
    }
}

fn success(exit_code: i32) -> current_state::executing::ExecutionState {
    current_state::executing::ExecutionState::Completed(bb_proto::reapi::ExecuteResponse {
        result: Some(bb_proto::reapi::ActionResult { exit_code, ..Default::default() }),
        ..Default::default()
    })
}

/// The action digest a Synchronize response hands out, if any.
fn given(response: &bb_proto::buildbarn::remoteworker::SynchronizeResponse) -> Option<Digest> {
    match response.desired_state.as_ref()?.worker_state.as_ref()? {
        desired_state::WorkerState::Executing(e) => {
            Some(Digest::from_proto(DigestFunction::Sha256, e.action_digest.as_ref()?).unwrap())
        }
        desired_state::WorkerState::Idle(()) => None,
    }
}

fn is_told_idle(response: &bb_proto::buildbarn::remoteworker::SynchronizeResponse) -> bool {
    matches!(
        response.desired_state.as_ref().and_then(|d| d.worker_state.as_ref()),
        Some(desired_state::WorkerState::Idle(()))
    )
}

fn response_of(watch: &OperationWatch) -> Option<bb_proto::reapi::ExecuteResponse> {
    let progress = watch.updates.borrow().clone();
    let operation = watch.header.operation(&progress);
    match &operation.result {
        Some(operation::Result::Response(any)) => {
            Some(bb_proto::reapi::ExecuteResponse::decode(any.value.as_slice()).unwrap())
        }
        _ => None,
    }
}

fn status_code(watch: &OperationWatch) -> Option<tonic::Code> {
    response_of(watch).map(|r| tonic::Code::from_i32(r.status.map(|s| s.code).unwrap_or(0)))
}

#[tokio::test(start_paused = true)]
async fn identical_executes_share_one_run() {
    let queue = BuildQueue::new(config());
    let a = queue.execute(task("same", linux(), 0, "i1"));
    let b = queue.execute(task("same", linux(), 0, "i2"));
    assert_eq!(a.name, b.name);
    let w = idle_request("w1", &linux());
    let response = queue.synchronize(w.clone()).await.unwrap();
    let digest = given(&response).expect("work");
    // Nothing else is queued.
    let response = queue.synchronize(idle_request("w2", &linux())).await.unwrap();
    assert_eq!(given(&response), None);
    queue.synchronize(executing_request("w1", &linux(), &digest, success(0))).await.unwrap();
    assert_eq!(response_of(&a).unwrap().result.unwrap().exit_code, 0);
    assert_eq!(response_of(&b).unwrap().result.unwrap().exit_code, 0);
    // After completion, the same action runs anew.
    let c = queue.execute(task("same", linux(), 0, "i1"));
    assert_ne!(c.name, a.name);
}

#[tokio::test(start_paused = true)]
async fn do_not_cache_actions_are_not_shared() {
    let queue = BuildQueue::new(config());
    let mut request = task("uncached", linux(), 0, "i");
    request.action.do_not_cache = true;
    let a = queue.execute(request.clone());
    let b = queue.execute(request);
    assert_ne!(a.name, b.name);
}

#[tokio::test(start_paused = true)]
async fn priority_then_fairness_between_invocations() {
    let queue = BuildQueue::new(config());
    let mut watches = Vec::new();
    for i in 0..4 {
        watches.push(queue.execute(task(&format!("big{i}"), linux(), 0, "big")));
    }
    for i in 0..2 {
        watches.push(queue.execute(task(&format!("small{i}"), linux(), 0, "small")));
    }
    watches.push(queue.execute(task("late-but-urgent", linux(), -10, "other")));
    watches.push(queue.execute(task("unimportant", linux(), 10, "other")));

    let mut order = Vec::new();
    let mut request = idle_request("w", &linux());
    for _ in 0..8 {
        let response = queue.synchronize(request).await.unwrap();
        let digest = given(&response).expect("work");
        order.push(digest);
        request = executing_request("w", &linux(), &digest, success(0));
    }
    let name = |s: &str| Digest::of(DigestFunction::Sha256, s.as_bytes());
    let expected: Vec<Digest> =
        ["late-but-urgent", "big0", "small0", "big1", "small1", "big2", "big3", "unimportant"]
            .iter()
            .map(|s| name(s))
            .collect();
    assert_eq!(order, expected);
}

#[tokio::test(start_paused = true)]
async fn lost_worker_requeues_and_another_finishes() {
    let queue = BuildQueue::new(config());
    let watch = queue.execute(task("work", linux(), 0, "i"));
    let digest = given(&queue.synchronize(idle_request("doomed", &linux())).await.unwrap()).unwrap();
    // The worker reports once, then falls silent.
    let running = current_state::executing::ExecutionState::Running(());
    queue.synchronize(executing_request("doomed", &linux(), &digest, running)).await.unwrap();
    tokio::time::advance(Duration::from_secs(21)).await;
    queue.maintain();
    assert!(response_of(&watch).is_none(), "the client sees no error yet");
    let response = queue.synchronize(idle_request("rescuer", &linux())).await.unwrap();
    assert_eq!(given(&response), Some(digest));
    queue.synchronize(executing_request("rescuer", &linux(), &digest, success(0))).await.unwrap();
    assert_eq!(status_code(&watch), Some(tonic::Code::Ok));
    assert_eq!(queue.status().workers.len(), 1, "the lost worker is forgotten");
}

#[tokio::test(start_paused = true)]
async fn an_action_that_kills_every_worker_fails_internal() {
    let queue = BuildQueue::new(config());
    let watch = queue.execute(task("poison", linux(), 0, "i"));
    for name in ["w1", "w2"] {
        assert!(given(&queue.synchronize(idle_request(name, &linux())).await.unwrap()).is_some());
        tokio::time::advance(Duration::from_secs(21)).await;
        queue.maintain();
    }
    let response = response_of(&watch).expect("done");
    let status = response.status.unwrap();
    assert_eq!(tonic::Code::from_i32(status.code), tonic::Code::Internal);
    assert!(status.message.contains("2 workers"), "{}", status.message);
}

#[tokio::test(start_paused = true)]
async fn abandoned_operations_are_cancelled() {
    let queue = BuildQueue::new(config());
    // Queued: removed from the queue.
    let watch = queue.execute(task("abandoned", linux(), 0, "i"));
    let name = watch.name.clone();
    drop(watch);
    tokio::time::advance(Duration::from_secs(5)).await;
    queue.maintain();
    // Still within the grace period: a client may re-attach.
    let again = queue.attach(&name).expect("still there");
    drop(again);
    tokio::time::advance(Duration::from_secs(11)).await;
    queue.maintain();
    assert_eq!(queue.status().platforms.iter().map(|p| p.queued).sum::<usize>(), 0);
    assert!(queue.operation(&name).unwrap().done);

    // Executing: the worker is told to stop.
    let watch = queue.execute(task("running", linux(), 0, "i"));
    let digest = given(&queue.synchronize(idle_request("w", &linux())).await.unwrap()).unwrap();
    drop(watch);
    tokio::time::advance(Duration::from_secs(11)).await;
    queue.maintain();
    let running = current_state::executing::ExecutionState::Running(());
    let response = queue.synchronize(executing_request("w", &linux(), &digest, running)).await.unwrap();
    assert!(is_told_idle(&response));
}

#[tokio::test(start_paused = true)]
async fn unmatched_platforms_fail_after_a_while() {
    let queue = BuildQueue::new(config());
    // A Linux worker exists; nobody offers Windows.
    let linux_worker = queue.clone();
    tokio::spawn(async move { linux_worker.synchronize(idle_request("lw", &linux())).await });
    tokio::task::yield_now().await;
    let windows = Platform::from_pairs(&[("OSFamily", "windows")]);
    let watch = queue.execute(task("win", windows, 0, "i"));
    tokio::time::advance(Duration::from_secs(31)).await;
    queue.maintain();
    let status = response_of(&watch).unwrap().status.unwrap();
    assert_eq!(tonic::Code::from_i32(status.code), tonic::Code::FailedPrecondition);
    assert!(status.message.contains("OSFamily=windows"), "{}", status.message);
    assert!(status.message.contains("OSFamily=linux"), "{}", status.message);
}

#[tokio::test(start_paused = true)]
async fn matching_modes() {
    let bigger = Platform::from_pairs(&[("OSFamily", "linux"), ("cpu", "x86_64")]);
    let queue = BuildQueue::new(config());
    let _w = queue.execute(task("subset", linux(), 0, "i"));
    assert!(given(&queue.synchronize(idle_request("w", &bigger)).await.unwrap()).is_some());

    let mut exact = config();
    exact.platform_matching = MatchMode::Exact;
    let queue = BuildQueue::new(exact);
    let _w = queue.execute(task("exact", linux(), 0, "i"));
    assert!(given(&queue.synchronize(idle_request("w", &bigger)).await.unwrap()).is_none());
    assert!(given(&queue.synchronize(idle_request("w2", &linux())).await.unwrap()).is_some());
}

#[tokio::test(start_paused = true)]
async fn reports_on_actions_not_given_are_refused() {
    let queue = BuildQueue::new(config());
    let watch = queue.execute(task("mine", linux(), 0, "i"));
    let digest = given(&queue.synchronize(idle_request("honest", &linux())).await.unwrap()).unwrap();
    let stranger = Digest::of(DigestFunction::Sha256, b"something else");
    for (worker, reported) in [("honest", stranger), ("liar", digest)] {
        let err =
            queue.synchronize(executing_request(worker, &linux(), &reported, success(0))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains(worker));
    }
    assert!(response_of(&watch).is_none(), "the real operation is untouched");
    queue.synchronize(executing_request("honest", &linux(), &digest, success(0))).await.unwrap();
    assert_eq!(status_code(&watch), Some(tonic::Code::Ok));
    let err = queue.synchronize(SynchronizeRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_wait_for_work() {
    let queue = BuildQueue::new(config());
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.synchronize(idle_request("w", &linux())).await })
    };
    tokio::time::advance(Duration::from_secs(1)).await;
    let _watch = queue.execute(task("arrives later", linux(), 0, "i"));
    let response = waiting.await.unwrap().unwrap();
    assert!(given(&response).is_some(), "the waiting call got the task");
    // With nothing to do, the call returns after idle_sync_wait.
    let start = tokio::time::Instant::now();
    let response = queue.synchronize(idle_request("w2", &linux())).await.unwrap();
    assert!(given(&response).is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn drained_workers_finish_but_take_nothing_new() {
    let queue = BuildQueue::new(config());
    let _a = queue.execute(task("a", linux(), 0, "i"));
    let _b = queue.execute(task("b", linux(), 0, "i"));
    let first = given(&queue.synchronize(idle_request("w", &linux())).await.unwrap()).unwrap();
    let key = queue.status().workers[0].id.clone();
    assert!(queue.set_drained(&key, true));
    let response = queue.synchronize(executing_request("w", &linux(), &first, success(0))).await.unwrap();
    assert!(is_told_idle(&response));
    assert_eq!(queue.status().workers[0].state, "drained");
    assert!(queue.set_drained(&key, false));
    assert!(given(&queue.synchronize(idle_request("w", &linux())).await.unwrap()).is_some());
    assert!(!queue.set_drained("nobody", true));
}

#[tokio::test(start_paused = true)]
async fn only_successful_cacheable_current_results_are_cached_by_the_scheduler() {
    let queue = BuildQueue::new(config());
    let mut uncached = task("uncached", linux(), 0, "i");
    uncached.action.do_not_cache = true;
    let _watches = [queue.execute(task("ok", linux(), 0, "i")), queue.execute(uncached)];
    let to_w1 = given(&queue.synchronize(idle_request("w1", &linux())).await.unwrap()).unwrap();
    let to_w2 = given(&queue.synchronize(idle_request("w2", &linux())).await.unwrap()).unwrap();
    // first: the cacheable action; second: the do_not_cache one.
    let (first, second) =
        if to_w1 == Digest::of(DigestFunction::Sha256, b"ok") { (to_w1, to_w2) } else { (to_w2, to_w1) };
    let holder = |digest: &Digest| if *digest == to_w1 { "w1" } else { "w2" };

    // Still running, failed, or another action than the one given: nothing.
    let running = current_state::executing::ExecutionState::Running(());
    assert!(queue.result_to_cache(&executing_request(holder(&first), &linux(), &first, running)).is_none());
    assert!(
        queue.result_to_cache(&executing_request(holder(&first), &linux(), &first, success(1))).is_none()
    );
    assert!(
        queue.result_to_cache(&executing_request(holder(&first), &linux(), &second, success(0))).is_none()
    );
    // do_not_cache: nothing.
    assert!(
        queue.result_to_cache(&executing_request(holder(&second), &linux(), &second, success(0))).is_none()
    );
    // A success of the worker's own cacheable action: its entry.
    let request = executing_request(holder(&first), &linux(), &first, success(0));
    let (instance, action, result) = queue.result_to_cache(&request).expect("an entry");
    assert_eq!((instance.as_str(), action, result.exit_code), ("", first, 0));
    // Once reported, the task is done: a repeated report caches nothing.
    queue.synchronize(request.clone()).await.unwrap();
    assert!(queue.result_to_cache(&request).is_none());
}
