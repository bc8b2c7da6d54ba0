//! The Action Cache interface: action digests to ActionResults, per
//! instance name. bb-storage keeps one in a blob store; the remote client
//! reaches one over gRPC; the decorators here spread one over several
//! (`sharded`) and serve only results whose outputs are all in the CAS
//! (`completeness`).

mod completeness;
mod sharded;

pub use completeness::CompletenessChecking;
pub use sharded::{CacheShard, ShardedActionCache};

use bb_proto::reapi;
use bb_util::{Digest, DigestFunction};
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

/// Every blob an ActionResult depends on (with the files of the given output
/// trees), validated.
pub fn referenced_digests(
    function: DigestFunction,
    result: &reapi::ActionResult,
    trees: &[reapi::Tree],
) -> Result<Vec<Digest>, Status> {
    let parse = |d: &reapi::Digest, what: &str| {
        Digest::from_proto(function, d).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
    };
    let mut digests = Vec::new();
    for file in &result.output_files {
        if let Some(d) = &file.digest {
            digests.push(parse(d, &format!("output file {:?}", file.path))?);
        }
    }
    for dir in &result.output_directories {
        for d in [&dir.tree_digest, &dir.root_directory_digest].into_iter().flatten() {
            digests.push(parse(d, &format!("output directory {:?}", dir.path))?);
        }
    }
    for (d, what) in [(&result.stdout_digest, "stdout"), (&result.stderr_digest, "stderr")] {
        if let Some(d) = d {
            digests.push(parse(d, what)?);
        }
    }
    for tree in trees {
        for directory in tree.root.iter().chain(&tree.children) {
            for file in &directory.files {
                if let Some(d) = &file.digest {
                    digests.push(parse(d, &format!("file {:?} in an output tree", file.name))?);
                }
            }
        }
    }
    digests.sort_unstable();
    digests.dedup();
    Ok(digests)
}
