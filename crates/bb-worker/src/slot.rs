//! One worker slot: a loop of Synchronize calls to the scheduler. Idle, it
//! asks for work; executing, it reports each phase that lasts more than a
//! moment and whenever the scheduler asked to hear back, and stops the
//! action if told to; done, it reports the result and receives its next
//! action in the same call.

use crate::executor::{Executor, Outcome, Phase};
use bb_proto::buildbarn::remoteworker::operation_queue_client::OperationQueueClient;
use bb_proto::buildbarn::remoteworker::{
    CurrentState, SynchronizeRequest, SynchronizeResponse, current_state, desired_state,
};
use bb_proto::reapi;
use bb_util::grpc::Channel;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a new phase lasts before it is reported to the scheduler.
const PHASE_REPORT_DELAY: Duration = Duration::from_millis(20);

pub struct Slot {
    pub executor: Arc<Executor>,
    pub scheduler: OperationQueueClient<Channel>,
    pub worker_id: HashMap<String, String>,
    pub platform: reapi::Platform,
    pub instance_name_prefix: String,
    /// Fired on SIGTERM: take no new work.
    pub draining: CancellationToken,
    /// Fired when the shutdown grace has passed: hand running actions back.
    pub stopping: CancellationToken,
}

/// When the scheduler wants to hear back, as an instant.
fn next_report(response: &SynchronizeResponse) -> Instant {
    let wait = response
        .next_synchronization_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    Instant::now() + wait.min(Duration::from_secs(60))
}

fn executing(
    digest: &reapi::Digest,
    state: current_state::executing::ExecutionState,
) -> current_state::WorkerState {
    current_state::WorkerState::Executing(current_state::Executing {
        action_digest: Some(digest.clone()),
        execution_state: Some(state),
    })
}

fn phase_state(phase: Phase) -> current_state::executing::ExecutionState {
    use current_state::executing::ExecutionState;
    match phase {
        Phase::Started => ExecutionState::Started(()),
        Phase::FetchingInputs => ExecutionState::FetchingInputs(()),
        Phase::Running => ExecutionState::Running(()),
        Phase::UploadingOutputs => ExecutionState::UploadingOutputs(()),
    }
}

impl Slot {
    async fn synchronize(
        &mut self,
        state: current_state::WorkerState,
    ) -> Result<SynchronizeResponse, tonic::Status> {
        let prefer_idle = self.draining.is_cancelled();
        self.synchronize_preferring(state, prefer_idle).await
    }

    /// `prefer_idle`: take no new work in this call (draining, or handing
    /// an action back).
    async fn synchronize_preferring(
        &mut self,
        state: current_state::WorkerState,
        prefer_idle: bool,
    ) -> Result<SynchronizeResponse, tonic::Status> {
        let request = SynchronizeRequest {
            worker_id: self.worker_id.clone(),
            instance_name_prefix: self.instance_name_prefix.clone(),
            platform: Some(self.platform.clone()),
            size_class: 0,
            current_state: Some(CurrentState { worker_state: Some(state) }),
            prefer_being_idle: prefer_idle,
        };
        self.scheduler.synchronize(request).await.map(|r| r.into_inner())
    }

    /// Runs until drained (and idle) or stopped.
    pub async fn run(mut self) {
        let mut state = current_state::WorkerState::Idle(());
        let mut backoff = Duration::from_millis(100);
        // A report cut short by draining is sent again; the scheduler may
        // have taken the first one already.
        let mut resending = false;
        loop {
            let idle = matches!(state, current_state::WorkerState::Idle(()));
            if (self.draining.is_cancelled() && idle) || self.stopping.is_cancelled() {
                return;
            }
            // A slot waiting for work stops waiting when draining starts; a
            // report still in flight is sent again, now preferring to be idle
            // (the scheduler answers those at once).
            let draining = self.draining.clone();
            let call = tokio::select! {
                call = self.synchronize(state.clone()) => call,
                _ = draining.cancelled(), if !self.draining.is_cancelled() => {
                    if idle {
                        return;
                    }
                    resending = true;
                    continue;
                }
            };
            let response = match call {
                Ok(response) => response,
                Err(status) if status.code() == tonic::Code::FailedPrecondition && !idle => {
                    // The scheduler no longer expects this report: it took
                    // the first copy of a report sent again, or it
                    // restarted. Drop it and start afresh.
                    if resending {
                        tracing::debug!("scheduler already had the report: {}", status.message());
                    } else {
                        tracing::warn!("scheduler refused a report: {}", status.message());
                    }
                    state = current_state::WorkerState::Idle(());
                    resending = false;
                    continue;
                }
                Err(status) => {
                    let what = match status.code() {
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                            "the scheduler refuses this worker (check its certificate or token)"
                        }
                        _ => "cannot reach the scheduler",
                    };
                    tracing::warn!("{what}: {}; retrying in {backoff:?}", status.message());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stopping.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            resending = false;
            state = match response.desired_state.clone().and_then(|d| d.worker_state) {
                Some(desired_state::WorkerState::Executing(task)) => {
                    self.execute(task, next_report(&response)).await
                }
                _ => current_state::WorkerState::Idle(()),
            };
        }
    }

    /// Saying "idle" while holding an action hands it back: the scheduler
    /// queues it again at once (counting the attempt).
    async fn hand_back(&mut self) {
        if let Err(status) = self.synchronize_preferring(current_state::WorkerState::Idle(()), true).await {
            tracing::warn!("could not hand the action back: {}", status.message());
        }
    }

    /// Runs one action while keeping the scheduler informed; returns the
    /// state to report next (the result, or idle if the action was stopped).
    async fn execute(
        &mut self,
        task: desired_state::Executing,
        mut report_at: Instant,
    ) -> current_state::WorkerState {
        let digest = task.action_digest.clone().unwrap_or_default();
        let (phase_sender, mut phases) = watch::channel(Phase::Started);
        let executor = self.executor.clone();
        let execution = async move { executor.execute(task, &phase_sender).await };
        tokio::pin!(execution);
        loop {
            tokio::select! {
                outcome = &mut execution => match outcome {
                    Outcome::Done(response) => {
                        return executing(&digest, current_state::executing::ExecutionState::Completed(*response));
                    }
                    Outcome::RunnerLost(why) => {
                        tracing::warn!("handing action {} back to the scheduler: {why}", digest.hash);
                        self.hand_back().await;
                        self.executor.wait_for_runner(&self.stopping).await;
                        return current_state::WorkerState::Idle(());
                    }
                },
                changed = phases.changed() => {
                    // A phase is reported once it has lasted a little: the
                    // phases of a quick action cost no round trips, its
                    // completion says everything.
                    if changed.is_ok() {
                        report_at = report_at.min(Instant::now() + PHASE_REPORT_DELAY);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(report_at) => {}
                _ = self.stopping.cancelled() => {
                    tracing::warn!("shutdown grace passed: handing action {} back to the scheduler", digest.hash);
                    self.hand_back().await;
                    return current_state::WorkerState::Idle(());
                }
            }
            let phase = *phases.borrow_and_update();
            match self.synchronize(executing(&digest, phase_state(phase))).await {
                Ok(response) => {
                    let stop = matches!(
                        response.desired_state.as_ref().and_then(|d| d.worker_state.as_ref()),
                        Some(desired_state::WorkerState::Idle(()))
                    );
                    if stop {
                        tracing::info!("scheduler cancelled action {}", digest.hash);
                        return current_state::WorkerState::Idle(());
                    }
                    report_at = next_report(&response);
                }
                Err(status) => {
                    tracing::warn!("progress report failed: {}", status.message());
                    report_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }
}
