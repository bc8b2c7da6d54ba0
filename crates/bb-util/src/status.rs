//! Errors as REv2 wants them: the right code, a message naming the digest or
//! path, and `PreconditionFailure` details for missing blobs.

use crate::digest::Digest;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, PreconditionViolation, StatusExt};

/// FAILED_PRECONDITION with one `MISSING` violation per blob, subject
/// `blobs/<hash>/<size>`: how REv2 tells a client which inputs to upload.
pub fn missing_blobs(what: &str, digests: &[Digest]) -> Status {
    let violations: Vec<PreconditionViolation> = digests
        .iter()
        .map(|d| PreconditionViolation::new("MISSING", d.blob_subject(), format!("{what} is not in the CAS")))
        .collect();
    let names: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
    Status::with_error_details(
        Code::FailedPrecondition,
        format!("{what} missing from the CAS: {}", names.join(", ")),
        ErrorDetails::with_precondition_failure(violations),
    )
}

/// The `google.rpc.Status` message for a tonic error, for embedding in batch
/// responses and ExecuteResponse. Details attached to the error survive.
pub fn to_rpc(status: &Status) -> tonic_types::Status {
    use prost::Message;
    let details = if status.details().is_empty() {
        Vec::new()
    } else {
        tonic_types::Status::decode(status.details()).map(|s| s.details).unwrap_or_default()
    };
    tonic_types::Status { code: status.code() as i32, message: status.message().to_string(), details }
}

/// The OK `google.rpc.Status`.
pub fn rpc_ok() -> tonic_types::Status {
    tonic_types::Status { code: Code::Ok as i32, message: String::new(), details: Vec::new() }
}

/// A tonic error from an embedded `google.rpc.Status`, details included.
pub fn from_rpc(status: &tonic_types::Status) -> Status {
    use prost::Message;
    Status::with_details(
        Code::from_i32(status.code),
        status.message.clone(),
        bytes::Bytes::from(status.encode_to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;
    use tonic_types::RpcStatusExt;

    #[test]
    fn missing_blobs_carry_violations() {
        let d = Digest::of(DigestFunction::Sha256, b"x");
        let status = missing_blobs("input file", &[d]);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains(&d.hash_hex()));
        let rpc = to_rpc(&status);
        let failure = rpc.get_details_precondition_failure().expect("precondition failure");
        assert_eq!(failure.violations[0].r#type, "MISSING");
        assert_eq!(failure.violations[0].subject, d.blob_subject());
        let back = from_rpc(&rpc);
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(to_rpc(&back).details, rpc.details);
    }
}
