//! A remote Action Cache.

use super::{StorageClient, with_context};
use crate::action_cache::{ActionCache, Inline};
use bb_proto::reapi;
use bb_util::Digest;
use tonic::Status;

#[tonic::async_trait]
impl ActionCache for StorageClient {
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status> {
        let request = reapi::GetActionResultRequest {
            instance_name: instance_name.to_string(),
            action_digest: Some(action.to_proto()),
            inline_stdout: inline.stdout,
            inline_stderr: inline.stderr,
            inline_output_files: inline.files.clone(),
            digest_function: action.function().to_proto(),
        };
        match self.action_cache.clone().get_action_result(request).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(with_context("Action Cache".into())(status)),
        }
    }

    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status> {
        let request = reapi::UpdateActionResultRequest {
            instance_name: instance_name.to_string(),
            action_digest: Some(action.to_proto()),
            action_result: Some(result.clone()),
            results_cache_policy: None,
            digest_function: action.function().to_proto(),
        };
        self.action_cache
            .clone()
            .update_action_result(request)
            .await
            .map_err(with_context("UpdateActionResult".into()))?;
        Ok(())
    }
}
