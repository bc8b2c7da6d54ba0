//! The qualifiers of a request: checked for duplicates, split into what
//! names the asset (part of its record's key) and what only says how to
//! reach it, and the `checksum.sri` they may carry.

use base64::Engine;
use bb_proto::asset::Qualifier;
use sha2::Digest as _;
use std::collections::BTreeMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// Subresource Integrity checksums the content must match.
pub const CHECKSUM_SRI: &str = "checksum.sri";
/// Bazel's name for an asset beyond its URLs: part of the key only.
pub const CANONICAL_ID: &str = "bazel.canonical_id";
/// Bazel's per-URL HTTP headers (JSON), sent to the origin. They say how to
/// reach the content, not what it is, so they are not part of the key.
pub const AUTH_HEADERS: &str = "bazel.auth_headers";

/// FetchDirectory: the subdirectory of the unpacked archive wanted.
pub const DIRECTORY: &str = "directory";

/// The qualifiers this server can honour when it fetches from an origin.
const FETCHABLE: [&str; 3] = [CHECKSUM_SRI, CANONICAL_ID, AUTH_HEADERS];

/// A request's qualifiers, by name.
#[derive(Clone, Debug, Default)]
pub struct Qualifiers {
    by_name: BTreeMap<String, String>,
}

impl Qualifiers {
    /// INVALID_ARGUMENT when a name appears twice, as the API forbids.
    pub fn parse(qualifiers: Vec<Qualifier>) -> Result<Self, Status> {
        let mut by_name = BTreeMap::new();
        for Qualifier { name, value } in qualifiers {
            if by_name.contains_key(&name) {
                return Err(Status::invalid_argument(format!("qualifier {name:?} is given twice")));
            }
            by_name.insert(name, value);
        }
        Ok(Qualifiers { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    /// The qualifiers that name the asset, sorted by name: the key's part.
    pub fn identifying(&self) -> Vec<Qualifier> {
        let mut qualifiers = self.to_proto();
        qualifiers.retain(|q| q.name != AUTH_HEADERS);
        qualifiers
    }

    /// All of them, as the response repeats them.
    pub fn to_proto(&self) -> Vec<Qualifier> {
        self.by_name
            .iter()
            .map(|(name, value)| Qualifier { name: name.clone(), value: value.clone() })
            .collect()
    }

    /// INVALID_ARGUMENT, with a BadRequest violation per qualifier, unless
    /// every qualifier is one this server honours when fetching (a blob, or
    /// a `directory`).
    pub fn check_fetchable(&self, directory: bool) -> Result<(), Status> {
        let honoured = |name: &str| FETCHABLE.contains(&name) || directory && name == DIRECTORY;
        let unsupported: Vec<&str> =
            self.by_name.keys().map(String::as_str).filter(|n| !honoured(n)).collect();
        if unsupported.is_empty() {
            return Ok(());
        }
        let mut details = ErrorDetails::new();
        for name in &unsupported {
            details.add_bad_request_violation("qualifiers.name", format!("\"{name}\" not supported"));
        }
        Err(Status::with_error_details(
            tonic::Code::InvalidArgument,
            format!("unsupported qualifiers {unsupported:?}; this server honours {FETCHABLE:?}"),
            details,
        ))
    }

    /// The checksum the content must match, if the request gives one.
    pub fn checksum(&self) -> Result<Option<Sri>, Status> {
        self.get(CHECKSUM_SRI).map(Sri::parse).transpose()
    }

    /// The HTTP headers `bazel.auth_headers` gives for `url`:
    /// `{"<url>": {"<header>": "<value>" or ["<value>", ...]}}`.
    pub fn headers_for(&self, url: &str) -> Result<Vec<(String, String)>, Status> {
        let Some(json) = self.get(AUTH_HEADERS) else { return Ok(Vec::new()) };
        let bad = |e: String| Status::invalid_argument(format!("qualifier {AUTH_HEADERS}: {e}"));
        let all: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
            serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let Some(headers) = all.get(url) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (name, value) in headers {
            match value {
                serde_json::Value::String(v) => out.push((name.clone(), v.clone())),
                serde_json::Value::Array(values) => {
                    for v in values {
                        let v = v.as_str().ok_or_else(|| bad(format!("header {name}: not a string")))?;
                        out.push((name.clone(), v.to_string()));
                    }
                }
                _ => return Err(bad(format!("header {name}: not a string or a list of strings"))),
            }
        }
        Ok(out)
    }
}

/// The hash functions SRI names that this server checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SriAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

/// A `checksum.sri` value: by the SRI rules, the content must match one of
/// the hashes of the strongest function listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sri {
    algorithm: SriAlgorithm,
    /// The expected hashes (raw bytes).
    hashes: Vec<Vec<u8>>,
    text: String,
}

impl Sri {
    /// INVALID_ARGUMENT unless `text` lists at least one sha256, sha384 or
    /// sha512 hash in base64.
    pub fn parse(text: &str) -> Result<Self, Status> {
        let mut parsed: Vec<(SriAlgorithm, Vec<u8>)> = Vec::new();
        for token in text.split_ascii_whitespace() {
            // Options after `?` carry nothing this server uses.
            let token = token.split('?').next().unwrap_or_default();
            let Some((name, hash)) = token.split_once('-') else { continue };
            let algorithm = match name {
                "sha256" => SriAlgorithm::Sha256,
                "sha384" => SriAlgorithm::Sha384,
                "sha512" => SriAlgorithm::Sha512,
                // SRI says to ignore functions one does not know.
                _ => continue,
            };
            let bytes = base64::engine::general_purpose::STANDARD.decode(hash).map_err(|e| {
                Status::invalid_argument(format!("qualifier {CHECKSUM_SRI}: {token:?} is not base64: {e}"))
            })?;
            if bytes.len() != algorithm.len() {
                return Err(Status::invalid_argument(format!(
                    "qualifier {CHECKSUM_SRI}: {token:?} has {} bytes, not {}",
                    bytes.len(),
                    algorithm.len()
                )));
            }
            parsed.push((algorithm, bytes));
        }
        let Some(strongest) = parsed.iter().map(|(a, _)| *a).max() else {
            return Err(Status::invalid_argument(format!(
                "qualifier {CHECKSUM_SRI} {text:?} has no sha256, sha384 or sha512 hash"
            )));
        };
        let hashes = parsed.into_iter().filter(|(a, _)| *a == strongest).map(|(_, h)| h).collect();
        Ok(Sri { algorithm: strongest, hashes, text: text.to_string() })
    }

    pub fn hasher(&self) -> SriHasher {
        match self.algorithm {
            SriAlgorithm::Sha256 => SriHasher::Sha256(sha2::Sha256::new()),
            SriAlgorithm::Sha384 => SriHasher::Sha384(sha2::Sha384::new()),
            SriAlgorithm::Sha512 => SriHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Whether `hash` (from this checksum's `hasher`) is one of those
    /// expected; `Err` names what was found instead.
    pub fn check(&self, hash: &[u8]) -> Result<(), String> {
        if self.hashes.iter().any(|h| h == hash) {
            return Ok(());
        }
        let prefix = match self.algorithm {
            SriAlgorithm::Sha256 => "sha256",
            SriAlgorithm::Sha384 => "sha384",
            SriAlgorithm::Sha512 => "sha512",
        };
        let found = base64::engine::general_purpose::STANDARD.encode(hash);
        Err(format!("checksum mismatch: the content is {prefix}-{found}, not {}", self.text))
    }
}

impl SriAlgorithm {
    fn len(self) -> usize {
        match self {
            SriAlgorithm::Sha256 => 32,
            SriAlgorithm::Sha384 => 48,
            SriAlgorithm::Sha512 => 64,
        }
    }
}

/// Hashes content for an [`Sri`] check.
pub enum SriHasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl SriHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            SriHasher::Sha256(h) => h.update(data),
            SriHasher::Sha384(h) => h.update(data),
            SriHasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            SriHasher::Sha256(h) => h.finalize().to_vec(),
            SriHasher::Sha384(h) => h.finalize().to_vec(),
            SriHasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qualifier(name: &str, value: &str) -> Qualifier {
        Qualifier { name: name.into(), value: value.into() }
    }

    fn sri_of(algorithm: &str, data: &[u8]) -> String {
        let hash = match algorithm {
            "sha256" => sha2::Sha256::digest(data).to_vec(),
            "sha384" => sha2::Sha384::digest(data).to_vec(),
            _ => sha2::Sha512::digest(data).to_vec(),
        };
        format!("{algorithm}-{}", base64::engine::general_purpose::STANDARD.encode(hash))
    }

    fn check(sri: &Sri, data: &[u8]) -> Result<(), String> {
        let mut hasher = sri.hasher();
        hasher.update(data);
        sri.check(&hasher.finish())
    }

    #[test]
    fn duplicate_names_are_refused() {
        let err = Qualifiers::parse(vec![qualifier("a", "1"), qualifier("a", "2")]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn unsupported_qualifiers_are_named_with_bad_request_details() {
        let q =
            Qualifiers::parse(vec![qualifier("resource_type", "x"), qualifier(CHECKSUM_SRI, "s")]).unwrap();
        let err = q.check_fetchable(false).unwrap_err();
        assert!(Qualifiers::parse(vec![qualifier(DIRECTORY, "a")]).unwrap().check_fetchable(true).is_ok());
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("resource_type"), "{}", err.message());
        let bad = err.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "qualifiers.name");
        assert_eq!(bad.field_violations[0].description, "\"resource_type\" not supported");
    }

    #[test]
    fn auth_headers_are_not_part_of_the_key() {
        let q = Qualifiers::parse(vec![
            qualifier(AUTH_HEADERS, r#"{"https://h/a": {"Authorization": ["Bearer t"], "X": "y"}}"#),
            qualifier(CANONICAL_ID, "id"),
        ])
        .unwrap();
        assert_eq!(q.identifying(), vec![qualifier(CANONICAL_ID, "id")]);
        let headers = q.headers_for("https://h/a").unwrap();
        assert_eq!(headers, vec![("Authorization".into(), "Bearer t".into()), ("X".into(), "y".into())]);
        assert!(q.headers_for("https://h/b").unwrap().is_empty());
    }

    #[test]
    fn sri_matches_the_strongest_function_listed() {
        let data = b"archive bytes";
        let sri = Sri::parse(&sri_of("sha256", data)).unwrap();
        assert!(check(&sri, data).is_ok());
        let err = check(&sri, b"other bytes").unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");

        // A wrong sha256 is not looked at when a sha512 is given.
        let both = format!("{} {}", sri_of("sha256", b"other"), sri_of("sha512", data));
        assert!(check(&Sri::parse(&both).unwrap(), data).is_ok());
        let two = format!("{} {}", sri_of("sha384", b"x"), sri_of("sha384", data));
        assert!(check(&Sri::parse(&two).unwrap(), data).is_ok());
    }

    #[test]
    fn sri_without_a_known_function_or_with_bad_base64_is_refused() {
        assert!(Sri::parse("md5-AAAA").is_err());
        assert!(Sri::parse("sha256-!!!").is_err());
        assert!(Sri::parse("sha256-AAAA").is_err());
    }
}
