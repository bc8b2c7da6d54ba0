//! Checks every storage request starts with: is the instance name one we
//! serve, and which digest function does the request use.

use bb_proto::reapi;
use bb_util::auth::{Permission, Principal};
use bb_util::resource_name::validate_instance_name;
use bb_util::{Digest, DigestFunction};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::Status;

/// The instance names a server accepts: any valid name, or a configured set.
#[derive(Clone, Debug, Default)]
pub struct Instances {
    only: Option<Arc<HashSet<String>>>,
}

impl Instances {
    /// `names` empty means any instance name is accepted.
    pub fn new(names: &[String]) -> Self {
        if names.is_empty() {
            Instances { only: None }
        } else {
            Instances { only: Some(Arc::new(names.iter().cloned().collect())) }
        }
    }

    pub fn check(&self, name: &str) -> Result<(), Status> {
        validate_instance_name(name)?;
        match &self.only {
            Some(names) if !names.contains(name) => {
                let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                known.sort_unstable();
                Err(Status::invalid_argument(format!(
                    "unknown instance name {name:?}; this server serves {known:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl Instances {
    /// [`Instances::check`], then PERMISSION_DENIED unless `principal`
    /// holds one of `permissions` on the instance.
    pub fn admit(&self, principal: &Principal, name: &str, permissions: &[Permission]) -> Result<(), Status> {
        self.check(name)?;
        principal.require_any(name, permissions)
    }
}

/// The principal of a request (see `bb_util::auth`), kept past
/// `into_inner`.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    bb_util::auth::principal(request).cloned()
}

/// The digest function of a request whose `digest_function` field is
/// `requested`, inferring it from `hash` when unset.
pub fn digest_function(requested: i32, hash: &str) -> Result<DigestFunction, Status> {
    Ok(DigestFunction::resolve(requested, hash)?)
}

/// Parses the digests of a request, each with the request's function (or
/// the one its length implies when the request names none).
pub fn parse_digests(requested: i32, digests: &[reapi::Digest]) -> Result<Vec<Digest>, Status> {
    digests.iter().map(|d| parse_digest(requested, d)).collect()
}

pub fn parse_digest(requested: i32, digest: &reapi::Digest) -> Result<Digest, Status> {
    let function = digest_function(requested, &digest.hash)?;
    Ok(Digest::from_proto(function, digest)?)
}

/// Like `parse_digest` for a field that must be set.
pub fn required_digest(
    requested: i32,
    digest: Option<&reapi::Digest>,
    field: &str,
) -> Result<Digest, Status> {
    let digest = digest.ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    parse_digest(requested, digest)
}
