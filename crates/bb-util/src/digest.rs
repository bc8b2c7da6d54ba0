//! Blob digests: the hash function, the hash and the size that together name
//! a blob in the CAS. Everything that comes from a client is validated here
//! once; past this point a `Digest` is known to be well formed.

use bb_proto::reapi;
use sha2::Digest as _;
use std::fmt;

/// The largest hash any supported function produces (SHA-512).
const MAX_HASH_LEN: usize = 64;

/// A digest function this farm implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestFunction {
    Sha256,
    Sha1,
    Sha384,
    Sha512,
    Blake3,
}

impl DigestFunction {
    /// Every supported function, SHA-256 (the default) first.
    pub const ALL: [DigestFunction; 5] = [Self::Sha256, Self::Sha1, Self::Sha384, Self::Sha512, Self::Blake3];

    /// Hash length in bytes.
    pub fn hash_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Blake3 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The `DigestFunction.Value` number.
    pub fn to_proto(self) -> i32 {
        use reapi::digest_function::Value;
        (match self {
            Self::Sha256 => Value::Sha256,
            Self::Sha1 => Value::Sha1,
            Self::Sha384 => Value::Sha384,
            Self::Sha512 => Value::Sha512,
            Self::Blake3 => Value::Blake3,
        }) as i32
    }

    /// The function for a `DigestFunction.Value` number; `None` for UNKNOWN
    /// and for functions this farm does not implement.
    pub fn from_proto(value: i32) -> Option<Self> {
        use reapi::digest_function::Value;
        match Value::try_from(value).ok()? {
            Value::Sha256 => Some(Self::Sha256),
            Value::Sha1 => Some(Self::Sha1),
            Value::Sha384 => Some(Self::Sha384),
            Value::Sha512 => Some(Self::Sha512),
            Value::Blake3 => Some(Self::Blake3),
            _ => None,
        }
    }

    /// Lowercase name, as used in ByteStream resource names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha1 => "sha1",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Blake3 => "blake3",
        }
    }

    /// The function for a lowercase name; `None` if unknown.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether REv2 lets clients leave this function out of requests and
    /// resource names (it is then inferred from the hash length).
    pub fn is_inferable(self) -> bool {
        self != Self::Blake3
    }

    /// Resolves a request's `digest_function` field. When it is UNKNOWN the
    /// function is inferred from the length of `hex_hash`, as REv2 prescribes
    /// (a 64-digit hash is SHA-256, never BLAKE3).
    pub fn resolve(requested: i32, hex_hash: &str) -> Result<Self, DigestError> {
        if requested != reapi::digest_function::Value::Unknown as i32 {
            return Self::from_proto(requested).ok_or(DigestError::UnsupportedFunction(requested));
        }
        Self::ALL
            .into_iter()
            .find(|f| f.is_inferable() && f.hash_len() * 2 == hex_hash.len())
            .ok_or_else(|| DigestError::UninferableFunction { hash: hex_hash.to_string() })
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Self::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Self::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Self::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Self::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

impl fmt::Display for DigestFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Incremental hashing with any supported function.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything passed to `update`, which came to `size` bytes.
    pub fn finish(self, size: u64) -> Digest {
        let mut hash = [0u8; MAX_HASH_LEN];
        let function = match self {
            Self::Sha256(h) => {
                hash[..32].copy_from_slice(&h.finalize());
                DigestFunction::Sha256
            }
            Self::Sha1(h) => {
                hash[..20].copy_from_slice(&h.finalize());
                DigestFunction::Sha1
            }
            Self::Sha384(h) => {
                hash[..48].copy_from_slice(&h.finalize());
                DigestFunction::Sha384
            }
            Self::Sha512(h) => {
                hash.copy_from_slice(&h.finalize());
                DigestFunction::Sha512
            }
            Self::Blake3(h) => {
                hash[..32].copy_from_slice(h.finalize().as_bytes());
                DigestFunction::Blake3
            }
        };
        Digest { function, hash, size }
    }
}

/// What is wrong with a digest a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest function {0} is not supported (supported: sha256, sha1, sha384, sha512, blake3)")]
    UnsupportedFunction(i32),
    #[error("cannot infer the digest function of hash {hash:?} from its length {}", hash.len())]
    UninferableFunction { hash: String },
    #[error("hash {hash:?} is not lowercase hexadecimal")]
    InvalidHex { hash: String },
    #[error("hash {hash:?} has {} hex digits, {function} needs {}", hash.len(), function.hash_len() * 2)]
    WrongLength { hash: String, function: DigestFunction },
    #[error("digest {hash}/{size} has a negative size")]
    NegativeSize { hash: String, size: i64 },
    #[error("digest is missing")]
    Missing,
    #[error("data has digest {actual}, not {expected}")]
    Mismatch { expected: String, actual: String },
}

impl From<DigestError> for tonic::Status {
    fn from(error: DigestError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// A validated blob name: function, hash and size. Small and `Copy`, so it
/// can key maps without allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    function: DigestFunction,
    hash: [u8; MAX_HASH_LEN],
    size: u64,
}

impl Digest {
    /// Parses a hex hash and a size from a client.
    pub fn parse(function: DigestFunction, hex_hash: &str, size: i64) -> Result<Self, DigestError> {
        let len = function.hash_len();
        if hex_hash.len() != len * 2 {
            return Err(DigestError::WrongLength { hash: hex_hash.to_string(), function });
        }
        // REv2 hashes are lowercase; uppercase would name a second copy.
        if hex_hash.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestError::InvalidHex { hash: hex_hash.to_string() });
        }
        let mut hash = [0u8; MAX_HASH_LEN];
        hex::decode_to_slice(hex_hash, &mut hash[..len])
            .map_err(|_| DigestError::InvalidHex { hash: hex_hash.to_string() })?;
        let size = u64::try_from(size)
            .map_err(|_| DigestError::NegativeSize { hash: hex_hash.to_string(), size })?;
        Ok(Digest { function, hash, size })
    }

    /// Validates a `Digest` message of a request whose function is known.
    pub fn from_proto(function: DigestFunction, digest: &reapi::Digest) -> Result<Self, DigestError> {
        Self::parse(function, &digest.hash, digest.size_bytes)
    }

    /// Like `from_proto`, for an optional field that must be set.
    pub fn from_required(
        function: DigestFunction,
        digest: Option<&reapi::Digest>,
    ) -> Result<Self, DigestError> {
        Self::from_proto(function, digest.ok_or(DigestError::Missing)?)
    }

    /// The digest of `data`.
    pub fn of(function: DigestFunction, data: &[u8]) -> Self {
        let mut hasher = function.hasher();
        hasher.update(data);
        hasher.finish(data.len() as u64)
    }

    /// The digest of a message's wire encoding.
    pub fn of_message(function: DigestFunction, message: &impl prost::Message) -> Self {
        Self::of(function, &message.encode_to_vec())
    }

    /// The digest of the empty blob, which REv2 says is always present.
    pub fn empty(function: DigestFunction) -> Self {
        Self::of(function, &[])
    }

    /// Checks that `data` is the blob this digest names.
    pub fn verify(&self, data: &[u8]) -> Result<(), DigestError> {
        let actual = Self::of(self.function, data);
        if actual == *self {
            Ok(())
        } else {
            Err(DigestError::Mismatch { expected: self.to_string(), actual: actual.to_string() })
        }
    }

    pub fn function(&self) -> DigestFunction {
        self.function
    }

    pub fn hash(&self) -> &[u8] {
        &self.hash[..self.function.hash_len()]
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// `<function>-<hash>-<size>`: the name a store keeps the blob under
    /// (a file of the disk store, an object of a bucket).
    pub fn storage_name(&self) -> String {
        format!("{}-{}-{}", self.function.name(), self.hash_hex(), self.size)
    }

    /// The digest a `storage_name` names, if it is one.
    pub fn from_storage_name(name: &str) -> Option<Digest> {
        let mut parts = name.splitn(3, '-');
        let function = DigestFunction::from_name(parts.next()?)?;
        let hash = parts.next()?;
        let size = parts.next()?.parse().ok()?;
        Digest::parse(function, hash, size).ok()
    }

    pub fn to_proto(&self) -> reapi::Digest {
        reapi::Digest { hash: self.hash_hex(), size_bytes: self.size as i64 }
    }

    /// `blobs/<hash>/<size>`: the subject of a PreconditionFailure violation.
    pub fn blob_subject(&self) -> String {
        format!("blobs/{}/{}", self.hash_hex(), self.size)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.function.is_inferable() {
            write!(f, "{}/{}", self.hash_hex(), self.size)
        } else {
            write!(f, "{}:{}/{}", self.function, self.hash_hex(), self.size)
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}:{}/{})", self.function, self.hash_hex(), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn known_hashes() {
        assert_eq!(Digest::of(DigestFunction::Sha256, b"hello").hash_hex(), HELLO_SHA256);
        assert_eq!(
            Digest::of(DigestFunction::Sha1, b"hello").hash_hex(),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        assert_eq!(
            Digest::empty(DigestFunction::Blake3).hash_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(Digest::of(DigestFunction::Sha384, b"").hash().len(), 48);
        assert_eq!(Digest::of(DigestFunction::Sha512, b"").hash().len(), 64);
    }

    #[test]
    fn parse_round_trips() {
        let d = Digest::parse(DigestFunction::Sha256, HELLO_SHA256, 5).unwrap();
        assert_eq!(d.to_proto(), reapi::Digest { hash: HELLO_SHA256.into(), size_bytes: 5 });
        assert_eq!(d, Digest::of(DigestFunction::Sha256, b"hello"));
        d.verify(b"hello").unwrap();
        assert!(matches!(d.verify(b"hellO"), Err(DigestError::Mismatch { .. })));
    }

    #[test]
    fn rejects_bad_digests() {
        let f = DigestFunction::Sha256;
        assert!(matches!(Digest::parse(f, "abc", 1), Err(DigestError::WrongLength { .. })));
        assert!(matches!(Digest::parse(f, &"g".repeat(64), 1), Err(DigestError::InvalidHex { .. })));
        assert!(matches!(
            Digest::parse(f, &HELLO_SHA256.to_uppercase(), 5),
            Err(DigestError::InvalidHex { .. })
        ));
        assert!(matches!(Digest::parse(f, HELLO_SHA256, -1), Err(DigestError::NegativeSize { .. })));
        let message = Digest::parse(f, HELLO_SHA256, -1).unwrap_err().to_string();
        assert!(message.contains(HELLO_SHA256), "{message}");
    }

    #[test]
    fn resolves_functions() {
        use reapi::digest_function::Value;
        let unknown = Value::Unknown as i32;
        assert_eq!(DigestFunction::resolve(unknown, HELLO_SHA256), Ok(DigestFunction::Sha256));
        assert_eq!(DigestFunction::resolve(unknown, &"a".repeat(40)), Ok(DigestFunction::Sha1));
        assert_eq!(DigestFunction::resolve(unknown, &"a".repeat(96)), Ok(DigestFunction::Sha384));
        assert_eq!(DigestFunction::resolve(unknown, &"a".repeat(128)), Ok(DigestFunction::Sha512));
        assert!(DigestFunction::resolve(unknown, "abcd").is_err());
        assert_eq!(DigestFunction::resolve(Value::Blake3 as i32, ""), Ok(DigestFunction::Blake3));
        assert_eq!(
            DigestFunction::resolve(Value::Md5 as i32, ""),
            Err(DigestError::UnsupportedFunction(Value::Md5 as i32))
        );
        assert_eq!(DigestFunction::resolve(99, ""), Err(DigestError::UnsupportedFunction(99)));
        for f in DigestFunction::ALL {
            assert_eq!(DigestFunction::from_proto(f.to_proto()), Some(f));
            assert_eq!(DigestFunction::from_name(f.name()), Some(f));
        }
    }
}
