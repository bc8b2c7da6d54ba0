//! ByteStream resource names for CAS blobs, in every form REv2 allows:
//!
//! - read:  `{instance}/blobs/{function/}{hash}/{size}` and
//!   `{instance}/compressed-blobs/{compressor}/{function/}{hash}/{size}`;
//! - write: `{instance}/uploads/{uuid}/blobs/{function/}{hash}/{size}{/metadata}`
//!   and the same with `compressed-blobs/{compressor}/`.
//!
//! The instance name may span several segments or be empty (then there is no
//! leading slash). The `{function/}` segment is present only for functions
//! that cannot be inferred from the hash length (BLAKE3); it is accepted for
//! any function.

use crate::digest::{Digest, DigestError, DigestFunction};

/// Path segments that may not appear in an instance name.
const RESERVED_SEGMENTS: [&str; 7] =
    ["blobs", "uploads", "actions", "actionResults", "operations", "capabilities", "compressed-blobs"];

/// How blob bytes travel on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compressor {
    Identity,
    Zstd,
}

impl Compressor {
    pub fn from_proto(value: i32) -> Option<Self> {
        use bb_proto::reapi::compressor::Value;
        match Value::try_from(value).ok()? {
            Value::Identity => Some(Self::Identity),
            Value::Zstd => Some(Self::Zstd),
            _ => None,
        }
    }

    pub fn to_proto(self) -> i32 {
        use bb_proto::reapi::compressor::Value;
        (match self {
            Self::Identity => Value::Identity,
            Self::Zstd => Value::Zstd,
        }) as i32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceNameError {
    #[error("resource name {name:?}: {reason}")]
    Malformed { name: String, reason: &'static str },
    #[error("resource name {name:?}: compressor {compressor:?} is not supported (supported: zstd)")]
    UnsupportedCompressor { name: String, compressor: String },
    #[error("resource name {name:?}: {source}")]
    Digest { name: String, source: DigestError },
    #[error("instance name {name:?} contains the reserved segment {segment:?}")]
    ReservedInstanceSegment { name: String, segment: String },
}

impl From<ResourceNameError> for tonic::Status {
    fn from(error: ResourceNameError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Checks an instance name from a request: no segment may be one of REv2's
/// reserved words, since resource names could not be parsed otherwise.
pub fn validate_instance_name(name: &str) -> Result<(), ResourceNameError> {
    if name.is_empty() {
        return Ok(());
    }
    match name.split('/').find(|s| RESERVED_SEGMENTS.contains(s)) {
        Some(segment) => Err(ResourceNameError::ReservedInstanceSegment {
            name: name.to_string(),
            segment: segment.to_string(),
        }),
        None => Ok(()),
    }
}

/// A parsed read resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResource {
    pub instance_name: String,
    pub digest: Digest,
    pub compressor: Compressor,
}

/// A parsed write resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResource {
    pub instance_name: String,
    pub upload_id: String,
    pub digest: Digest,
    pub compressor: Compressor,
}

impl ReadResource {
    pub fn parse(name: &str) -> Result<Self, ResourceNameError> {
        let segments: Vec<&str> = name.split('/').collect();
        let Some(at) = segments.iter().position(|s| *s == "blobs" || *s == "compressed-blobs") else {
            return Err(malformed(name, "expected a blobs/ or compressed-blobs/ segment"));
        };
        let instance_name = join_instance(name, &segments[..at])?;
        let (digest, compressor, rest) = parse_blob(name, &segments[at..])?;
        if !rest.is_empty() {
            return Err(malformed(name, "unexpected segments after the size"));
        }
        Ok(ReadResource { instance_name, digest, compressor })
    }

    pub fn format(instance_name: &str, digest: &Digest, compressor: Compressor) -> String {
        format!("{}{}", instance_prefix(instance_name), blob_path(digest, compressor))
    }
}

impl WriteResource {
    pub fn parse(name: &str) -> Result<Self, ResourceNameError> {
        let segments: Vec<&str> = name.split('/').collect();
        let Some(at) = segments.iter().position(|s| *s == "uploads") else {
            return Err(malformed(name, "expected an uploads/ segment"));
        };
        let instance_name = join_instance(name, &segments[..at])?;
        let upload_id = match segments.get(at + 1) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => return Err(malformed(name, "expected an upload ID after uploads/")),
        };
        // Whatever follows the size is optional metadata, which we ignore.
        let (digest, compressor, _metadata) = parse_blob(name, &segments[at + 2..])?;
        Ok(WriteResource { instance_name, upload_id, digest, compressor })
    }

    pub fn format(instance_name: &str, upload_id: &str, digest: &Digest, compressor: Compressor) -> String {
        format!("{}uploads/{upload_id}/{}", instance_prefix(instance_name), blob_path(digest, compressor))
    }
}

fn malformed(name: &str, reason: &'static str) -> ResourceNameError {
    ResourceNameError::Malformed { name: name.to_string(), reason }
}

fn join_instance(name: &str, segments: &[&str]) -> Result<String, ResourceNameError> {
    if segments.iter().any(|s| s.is_empty()) {
        return Err(malformed(name, "empty segment in the instance name"));
    }
    let instance = segments.join("/");
    validate_instance_name(&instance)?;
    Ok(instance)
}

fn instance_prefix(instance_name: &str) -> String {
    if instance_name.is_empty() { String::new() } else { format!("{instance_name}/") }
}

fn blob_path(digest: &Digest, compressor: Compressor) -> String {
    let kind = match compressor {
        Compressor::Identity => "blobs/".to_string(),
        Compressor::Zstd => "compressed-blobs/zstd/".to_string(),
    };
    let function = if digest.function().is_inferable() {
        String::new()
    } else {
        format!("{}/", digest.function().name())
    };
    format!("{kind}{function}{}/{}", digest.hash_hex(), digest.size())
}

/// Parses `blobs/{function/}{hash}/{size}` or
/// `compressed-blobs/{compressor}/{function/}{hash}/{size}`, returning the
/// segments after the size.
fn parse_blob<'a>(
    name: &str,
    segments: &'a [&'a str],
) -> Result<(Digest, Compressor, &'a [&'a str]), ResourceNameError> {
    let (compressor, rest) = match segments {
        ["blobs", rest @ ..] => (Compressor::Identity, rest),
        ["compressed-blobs", compressor, rest @ ..] => match *compressor {
            "zstd" => (Compressor::Zstd, rest),
            other => {
                return Err(ResourceNameError::UnsupportedCompressor {
                    name: name.to_string(),
                    compressor: other.to_string(),
                });
            }
        },
        _ => return Err(malformed(name, "expected blobs/ or compressed-blobs/{compressor}/")),
    };
    let (explicit, rest) = match rest.first().and_then(|s| DigestFunction::from_name(s)) {
        Some(function) => (Some(function), &rest[1..]),
        None => (None, rest),
    };
    let [hash, size, rest @ ..] = rest else {
        return Err(malformed(name, "expected {hash}/{size}"));
    };
    let size: i64 = size.parse().map_err(|_| malformed(name, "size is not a decimal integer"))?;
    let digest_error = |source| ResourceNameError::Digest { name: name.to_string(), source };
    let function = match explicit {
        Some(function) => function,
        None => DigestFunction::resolve(0, hash).map_err(digest_error)?,
    };
    let digest = Digest::parse(function, hash, size).map_err(digest_error)?;
    Ok((digest, compressor, rest))
}

/// The plain-text header that repeats a ByteStream call's resource name
/// (REv2 2.12), so a proxy can route the call without decoding it.
pub const ROUTING_HEADER: &str = "build.bazel.remote.execution.v2.resource-name";

/// A ByteStream request with its routing header set to `resource_name`.
pub fn routed<T>(message: T, resource_name: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    // Resource names this crate formats are ASCII; one that is not is sent
    // without the header, which is optional.
    if let Ok(value) = resource_name.parse() {
        request.metadata_mut().insert(ROUTING_HEADER, value);
    }
    request
}

/// INVALID_ARGUMENT when the call carries a routing header that differs
/// from the resource name of its request message, as REv2 requires.
pub fn check_routing_header(
    metadata: &tonic::metadata::MetadataMap,
    resource_name: &str,
) -> Result<(), tonic::Status> {
    let Some(header) = metadata.get(ROUTING_HEADER) else { return Ok(()) };
    match header.to_str() {
        Ok(value) if value == resource_name => Ok(()),
        _ => Err(tonic::Status::invalid_argument(format!(
            "the {ROUTING_HEADER} header {header:?} does not match the resource name {resource_name:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn sha256() -> Digest {
        Digest::parse(DigestFunction::Sha256, H, 5).unwrap()
    }

    #[test]
    fn read_names() {
        let r = ReadResource::parse(&format!("blobs/{H}/5")).unwrap();
        assert_eq!(
            r,
            ReadResource { instance_name: "".into(), digest: sha256(), compressor: Compressor::Identity }
        );
        let r = ReadResource::parse(&format!("a/b/compressed-blobs/zstd/{H}/5")).unwrap();
        assert_eq!(r.instance_name, "a/b");
        assert_eq!(r.compressor, Compressor::Zstd);
        let r = ReadResource::parse(&format!("main/blobs/blake3/{H}/5")).unwrap();
        assert_eq!(r.digest.function(), DigestFunction::Blake3);
        let r = ReadResource::parse(&format!("blobs/sha256/{H}/5")).unwrap();
        assert_eq!(r.digest, sha256());
    }

    #[test]
    fn write_names() {
        let w = WriteResource::parse(&format!("inst/uploads/1234/blobs/{H}/5/extra/meta")).unwrap();
        assert_eq!(w.instance_name, "inst");
        assert_eq!(w.upload_id, "1234");
        assert_eq!(w.digest, sha256());
        let w = WriteResource::parse(&format!("uploads/u/compressed-blobs/zstd/blake3/{H}/5")).unwrap();
        assert_eq!(w.compressor, Compressor::Zstd);
        assert_eq!(w.digest.function(), DigestFunction::Blake3);
    }

    #[test]
    fn formats_round_trip() {
        let blake = Digest::parse(DigestFunction::Blake3, H, 5).unwrap();
        for digest in [sha256(), blake] {
            for compressor in [Compressor::Identity, Compressor::Zstd] {
                for instance in ["", "x/y"] {
                    let read = ReadResource::format(instance, &digest, compressor);
                    assert_eq!(
                        ReadResource::parse(&read).unwrap(),
                        ReadResource { instance_name: instance.into(), digest, compressor }
                    );
                    let write = WriteResource::format(instance, "u", &digest, compressor);
                    let parsed = WriteResource::parse(&write).unwrap();
                    assert_eq!((parsed.digest, parsed.compressor), (digest, compressor));
                }
            }
        }
        assert_eq!(ReadResource::format("", &sha256(), Compressor::Identity), format!("blobs/{H}/5"));
    }

    #[test]
    fn bad_names() {
        for name in [
            "".to_string(),
            "blobs".to_string(),
            format!("blobs/{H}"),
            format!("blobs/{H}/-1"),
            format!("blobs/{H}/five"),
            "blobs/xyz/5".to_string(),
            format!("blobs/{}/5", &H[..60]),
            format!("compressed-blobs/gzip/{H}/5"),
            format!("a//blobs/{H}/5"),
            format!("uploads/blobs/{H}/5/blobs/{H}/5"),
            format!("blobs/{H}/5/trailing"),
        ] {
            assert!(ReadResource::parse(&name).is_err(), "{name}");
        }
        assert!(WriteResource::parse(&format!("blobs/{H}/5")).is_err());
        assert!(WriteResource::parse(&format!("uploads//blobs/{H}/5")).is_err());
        assert!(WriteResource::parse(&format!("actions/uploads/u/blobs/{H}/5")).is_err());
    }

    #[test]
    fn instance_names() {
        assert!(validate_instance_name("").is_ok());
        assert!(validate_instance_name("main/linux").is_ok());
        assert!(validate_instance_name("main/blobs").is_err());
        assert!(validate_instance_name("operations").is_err());
    }

    #[test]
    fn routing_header_must_match_the_resource_name() {
        let name = "main/blobs/0123/4";
        let request = routed((), name);
        assert!(check_routing_header(request.metadata(), name).is_ok());
        let err = check_routing_header(request.metadata(), "main/blobs/0123/5").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(ROUTING_HEADER), "{}", err.message());
        assert!(check_routing_header(&tonic::metadata::MetadataMap::new(), name).is_ok());
    }
}
