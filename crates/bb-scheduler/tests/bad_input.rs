//! Bad requests get the REv2-prescribed status and a message saying what was
//! wrong; none of them disturbs another client's operation.

mod common;

use bb_proto::buildbarn::remoteworker::SynchronizeRequest;
use bb_proto::longrunning::operations_client::OperationsClient;
use bb_proto::longrunning::{CancelOperationRequest, GetOperationRequest};
use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
use common::{SimWorker, TestFarm, collect, config, execute_response};
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

const LINUX: &[(&str, &str)] = &[("OSFamily", "linux")];

async fn execute_error(farm: &TestFarm, request: reapi::ExecuteRequest) -> tonic::Status {
    farm.execution().execute(request).await.expect_err("Execute must fail")
}

/// Uploads an Action with the given platform and timeout.
async fn action_with(
    farm: &TestFarm,
    platform: &[(&str, &str)],
    timeout: Option<prost_types::Duration>,
) -> Digest {
    let command = farm
        .upload(&reapi::Command { arguments: vec!["x".into()], ..Default::default() }.encode_to_vec())
        .await;
    let action = reapi::Action {
        command_digest: Some(command.to_proto()),
        input_root_digest: Some(Digest::empty(DigestFunction::Sha256).to_proto()),
        timeout,
        platform: Some(reapi::Platform {
            properties: platform
                .iter()
                .map(|(n, v)| reapi::platform::Property { name: n.to_string(), value: v.to_string() })
                .collect(),
        }),
        ..Default::default()
    };
    farm.upload(&action.encode_to_vec()).await
}

#[tokio::test]
async fn unknown_instances_and_malformed_digests() {
    let farm = TestFarm::start(config("instance_names = [\"main\"]")).await;
    let action = farm.action(&["x"], LINUX, false).await;
    let mut request = farm.execute_request(&action);
    request.instance_name = "other".into();
    let err = execute_error(&farm, request).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("other"), "{}", err.message());

    for digest in [
        reapi::Digest { hash: "nothex".into(), size_bytes: 1 },
        reapi::Digest { hash: "ab".repeat(32), size_bytes: -1 },
    ] {
        let request = reapi::ExecuteRequest {
            instance_name: "main".into(),
            action_digest: Some(digest.clone()),
            ..Default::default()
        };
        let err = execute_error(&farm, request).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{digest:?}");
        assert!(err.message().contains(&digest.hash), "{}", err.message());
    }
    let err =
        execute_error(&farm, reapi::ExecuteRequest { instance_name: "main".into(), ..Default::default() })
            .await;
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn missing_action_is_failed_precondition_with_violation() {
    let farm = TestFarm::start(config("")).await;
    let missing = Digest::of(DigestFunction::Sha256, b"never uploaded");
    let err = execute_error(&farm, farm.execute_request(&missing)).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    let failure = err.get_details_precondition_failure().expect("PreconditionFailure details");
    assert_eq!(failure.violations[0].r#type, "MISSING");
    assert_eq!(failure.violations[0].subject, missing.blob_subject());
}

#[tokio::test]
async fn bad_platforms_and_timeouts() {
    let farm = TestFarm::start(config("")).await;
    for platform in [&[("b", "1"), ("a", "1")][..], &[("a", "1"), ("a", "1")][..]] {
        let action = action_with(&farm, platform, None).await;
        let err = execute_error(&farm, farm.execute_request(&action)).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{platform:?}");
        assert!(err.message().contains("platform"), "{}", err.message());
    }
    let too_long = prost_types::Duration { seconds: 2 * 3600, nanos: 0 };
    let negative = prost_types::Duration { seconds: -5, nanos: 0 };
    for timeout in [too_long, negative, prost_types::Duration { seconds: 0, nanos: 0 }] {
        let action = action_with(&farm, LINUX, Some(timeout)).await;
        let err = execute_error(&farm, farm.execute_request(&action)).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{timeout:?}");
        assert!(err.message().contains("timeout"), "{}", err.message());
    }
}

#[tokio::test]
async fn garbage_operation_names() {
    let farm = TestFarm::start(config("")).await;
    for name in ["", "nope", "../../etc", "\u{0}"] {
        let err = farm
            .execution()
            .wait_execution(reapi::WaitExecutionRequest { name: name.into() })
            .await
            .expect_err("unknown operation");
        assert_eq!(err.code(), Code::NotFound, "{name:?}");
        let mut operations = OperationsClient::new(farm.client.clone());
        let err = operations.get_operation(GetOperationRequest { name: name.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err =
            operations.cancel_operation(CancelOperationRequest { name: name.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn workers_reporting_on_foreign_actions_are_refused() {
    let farm = TestFarm::start(config("")).await;
    let action = farm.action(&["mine"], LINUX, false).await;
    let stream = farm.execution().execute(farm.execute_request(&action)).await.unwrap().into_inner();
    let mut honest = SimWorker::new(&farm, "honest", LINUX);
    honest.take().await.unwrap();

    // A worker that was given nothing claims the action's completion.
    let mut impostor = SimWorker::new(&farm, "impostor", LINUX);
    let completed = bb_proto::buildbarn::remoteworker::current_state::executing::ExecutionState::Completed(
        reapi::ExecuteResponse::default(),
    );
    let err = impostor.sync(SimWorker::executing(&action.to_proto(), completed.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("impostor"), "{}", err.message());
    // The honest worker reports on a different action than it was given.
    let other = Digest::of(DigestFunction::Sha256, b"other").to_proto();
    let err = honest.sync(SimWorker::executing(&other, completed)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = honest.client.synchronize(SynchronizeRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The real operation is unharmed.
    honest.complete(&action.to_proto(), 0).await;
    let ops = collect(stream).await;
    assert_eq!(
        execute_response(ops.last().unwrap()).result.unwrap().execution_metadata.unwrap().worker,
        "honest"
    );
}

#[tokio::test]
async fn capabilities_advertise_execution() {
    let farm = TestFarm::start(config("")).await;
    let caps = reapi::capabilities_client::CapabilitiesClient::new(farm.client.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let execution = caps.execution_capabilities.unwrap();
    assert!(execution.exec_enabled);
    assert_eq!(execution.digest_function, reapi::digest_function::Value::Sha256 as i32);
    assert!(caps.cache_capabilities.is_some(), "embedded storage's cache capabilities are merged in");
    assert_eq!(caps.low_api_version.unwrap().minor, 0);
}

/// A variable named `A=INJECTED` would reach the action as `A=INJECTED=1`:
/// a different variable than the client asked for. Refused before queueing.
#[tokio::test]
async fn environment_names_with_equals_or_nul_are_refused() {
    let farm = TestFarm::start(config("")).await;
    for (name, value) in [("A=INJECTED", "1"), ("A\0B", "1"), ("A", "1\0")] {
        let command = reapi::Command {
            arguments: vec!["env".into()],
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: name.into(),
                value: value.into(),
            }],
            ..Default::default()
        };
        let command = farm.upload(&command.encode_to_vec()).await;
        let action = reapi::Action {
            command_digest: Some(command.to_proto()),
            input_root_digest: Some(Digest::empty(DigestFunction::Sha256).to_proto()),
            platform: Some(reapi::Platform {
                properties: vec![reapi::platform::Property {
                    name: "OSFamily".into(),
                    value: "linux".into(),
                }],
            }),
            ..Default::default()
        };
        let action = farm.upload(&action.encode_to_vec()).await;
        let err = execute_error(&farm, farm.execute_request(&action)).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {}", err.message());
        assert!(err.message().contains("environment variable"), "{}", err.message());
    }
}
