//! Static bearer tokens for small farms: a TOML file of
//! `name = "<SHA-256 of the token, hex>"`, so the file holds no secret a
//! reader could present. Read again when it changes.

use crate::watched::Watched;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Tokens {
    file: Watched<HashMap<[u8; 32], Arc<str>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}: {reason}")]
pub struct TokensError {
    path: PathBuf,
    reason: String,
}

/// The hex SHA-256 of `token`, as the tokens file lists it.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse(path: &Path) -> Result<HashMap<[u8; 32], Arc<str>>, TokensError> {
    let error = |reason: String| TokensError { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| error(e.message().to_string()))?;
    let mut names = HashMap::new();
    for (name, value) in table {
        let hash = value
            .as_str()
            .and_then(|text| hex::decode(text).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| error(format!("{name}: not the hex SHA-256 of a token (64 hex digits)")))?;
        if names.insert(hash, Arc::from(name.as_str())).is_some() {
            return Err(error(format!("{name}: the same token is listed twice")));
        }
    }
    Ok(names)
}

impl Tokens {
    pub fn open(path: &Path) -> Result<Self, TokensError> {
        let owned = path.to_owned();
        Ok(Tokens { file: Watched::new("tokens file", vec![owned.clone()], move || parse(&owned))? })
    }

    /// The name of the token presented, if it is listed.
    pub fn identify(&self, token: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.file.current().get(&digest).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_tokens_are_known_by_their_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, format!("ci = \"{}\"\n", hash("s3cret"))).unwrap();
        let tokens = Tokens::open(&path).unwrap();
        assert_eq!(tokens.identify("s3cret").as_deref(), Some("ci"));
        assert_eq!(tokens.identify("s3cre"), None);
        std::fs::write(&path, "ci = \"s3cret\"\n").unwrap();
        let error = Tokens::open(&path).err().unwrap().to_string();
        assert!(error.contains("ci: not the hex SHA-256"), "{error}");
    }
}
