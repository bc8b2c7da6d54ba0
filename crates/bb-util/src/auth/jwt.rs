//! JSON Web Tokens as bearer credentials, verified with the public keys of
//! a JWKS file (read again when it changes): EdDSA, ECDSA (ES256, ES384)
//! and RSA (RS*, PS*) signatures; `exp` is required, `nbf` honoured, and
//! `aud` must name one of the configured audiences. Symmetric keys (HS*)
//! are refused: a key file anyone may read must not be able to sign.

use crate::watched::Watched;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[authentication.jwt]`: JWTs accepted as bearer tokens.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The JWKS file (RFC 7517) with the issuer's public keys. Read again
    /// when it changes, so keys rotate without a restart.
    pub jwks_file: PathBuf,
    /// Audiences accepted: a token's `aud` must name one of them.
    pub audience: Vec<String>,
    /// Issuers accepted (`iss`); empty accepts any.
    #[serde(default)]
    pub issuer: Vec<String>,
    /// The claim whose value is the caller's identity, which the policy
    /// names.
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_identity_claim() -> String {
    "sub".into()
}

fn default_leeway() -> u64 {
    30
}

/// Signature algorithms accepted: every asymmetric one.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("JWKS file {path}: {reason}")]
    Keys { path: PathBuf, reason: String },
    #[error("[authentication.jwt] audience must name at least one audience")]
    NoAudience,
}

struct Key {
    id: Option<String>,
    /// The algorithm the JWKS file ties the key to, if any (`alg`).
    algorithm: Option<String>,
    decoding: DecodingKey,
}

pub struct JwtVerifier {
    keys: Watched<Vec<Key>>,
    /// One per accepted algorithm: the library checks the key against every
    /// algorithm a validation lists, so each lists only its own.
    validations: Vec<AlgorithmValidation>,
    identity_claim: String,
}

struct AlgorithmValidation {
    algorithm: Algorithm,
    /// Its name as a JWKS `alg` says it.
    name: String,
    validation: Validation,
}

fn load_keys(path: &Path) -> Result<Vec<Key>, JwtError> {
    let error = |reason: String| JwtError::Keys { path: path.to_owned(), reason };
    let text = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| error(e.to_string()))?;
    let keys = set.keys.iter().map(|jwk| key(jwk).map_err(&error)).collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(error("no keys".into()));
    }
    Ok(keys)
}

fn key(jwk: &Jwk) -> Result<Key, String> {
    let id = jwk.common.key_id.clone();
    let name = id.as_deref().unwrap_or("(no kid)");
    match jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_)
        | AlgorithmParameters::RSA(_)
        | AlgorithmParameters::OctetKeyPair(_) => {}
        _ => return Err(format!("key {name}: only public EC, RSA and OKP keys are accepted")),
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {name}: {e}"))?;
    let algorithm = jwk.common.key_algorithm.map(|algorithm| format!("{algorithm:?}"));
    Ok(Key { id, algorithm, decoding })
}

/// Why a JWT was refused, without any of its content.
fn refusal(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "JWT has expired".into(),
        ErrorKind::ImmatureSignature => "JWT is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "JWT is for another audience".into(),
        ErrorKind::InvalidIssuer => "JWT is from an issuer not accepted".into(),
        ErrorKind::InvalidSignature => "JWT signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("JWT has no {claim:?} claim"),
        ErrorKind::InvalidAlgorithm => "JWT algorithm does not match its key".into(),
        _ => "JWT is malformed".into(),
    }
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<Self, JwtError> {
        if config.audience.is_empty() {
            return Err(JwtError::NoAudience);
        }
        let path = config.jwks_file.clone();
        let keys = Watched::new("JWKS file", vec![path.clone()], move || load_keys(&path))?;
        let validations = ALGORITHMS
            .iter()
            .map(|&algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.set_required_spec_claims(&["exp", "aud"]);
                validation.validate_nbf = true;
                validation.leeway = config.leeway_seconds;
                validation.set_audience(&config.audience);
                if !config.issuer.is_empty() {
                    validation.set_issuer(&config.issuer);
                }
                AlgorithmValidation { algorithm, name: format!("{algorithm:?}"), validation }
            })
            .collect();
        Ok(JwtVerifier { keys, validations, identity_claim: config.identity_claim.clone() })
    }

    /// The identity a valid token names, or why it is refused.
    pub fn identify(&self, token: &str) -> Result<Arc<str>, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refusal(&e))?;
        let accepted = self
            .validations
            .iter()
            .find(|accepted| accepted.algorithm == header.alg)
            .ok_or_else(|| format!("JWT algorithm {:?} is not accepted", header.alg))?;
        let keys = self.keys.current();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|key| key.id.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or("JWT names no key of the JWKS file (kid)")?;
        if key.algorithm.as_ref().is_some_and(|algorithm| *algorithm != accepted.name) {
            return Err("JWT algorithm is not its key's".into());
        }
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &accepted.validation,
        )
        .map_err(|e| refusal(&e))?
        .claims;
        match claims.get(&self.identity_claim) {
            Some(serde_json::Value::String(name)) if !name.is_empty() => Ok(Arc::from(name.as_str())),
            _ => Err(format!("JWT has no {:?} claim naming its holder", self.identity_claim)),
        }
    }
}
