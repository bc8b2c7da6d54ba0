//! The Action Cache interface: action digests to ActionResults, per
//! instance name. bb-storage keeps one in a blob store; the remote client
//! reaches one over gRPC.

use bb_proto::reapi;
use bb_util::Digest;
use tonic::Status;

/// What a reader asks to have inlined into an ActionResult (REv2's
/// `inline_stdout`, `inline_stderr`, `inline_output_files`).
#[derive(Clone, Debug, Default)]
pub struct Inline {
    pub stdout: bool,
    pub stderr: bool,
    pub files: Vec<String>,
}

#[tonic::async_trait]
pub trait ActionCache: Send + Sync + 'static {
    /// The cached result of `action`, with the outputs asked for inlined
    /// where they fit; `None` when there is none (or, where the cache checks
    /// completeness, when something it references is gone).
    async fn get_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        inline: &Inline,
    ) -> Result<Option<reapi::ActionResult>, Status>;

    /// Stores `result` as the result of `action`.
    async fn update_action_result(
        &self,
        instance_name: &str,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), Status>;
}
