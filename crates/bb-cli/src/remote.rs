//! Reaching a farm: endpoints, and errors turned into one line a person can
//! act on.

use bb_util::grpc::{BearerToken, Channel};
use std::path::PathBuf;

/// The default client endpoint: a `bb farm` on this machine.
pub const DEFAULT_ENDPOINT: &str = "grpc://localhost:8980";

/// Where a farm is, and the credentials to reach it with.
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// The farm's client endpoint (or a bb-storage's).
    #[arg(long, default_value = DEFAULT_ENDPOINT, env = "BB_ENDPOINT")]
    pub endpoint: String,
    /// For a grpcs:// endpoint: the CA certificate (PEM) to trust.
    #[arg(long, value_name = "PEM", env = "BB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for mutual TLS.
    #[arg(long, value_name = "PEM", env = "BB_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", env = "BB_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// A file holding the bearer token to present.
    #[arg(long, value_name = "FILE", env = "BB_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (prefer --token-file: arguments are visible
    /// to every user of the machine).
    #[arg(long, env = "BB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Connection {
    /// A channel to the endpoint with these credentials.
    pub fn channel(&self) -> anyhow::Result<Channel> {
        bb_util::grpc::channel_with(&self.endpoint, self.tls().as_ref(), self.token()?.as_ref())
    }

    /// The TLS settings, when a CA is given.
    pub fn tls(&self) -> Option<bb_util::tls::ClientTls> {
        self.tls_ca.as_ref().map(|ca| bb_util::tls::ClientTls {
            ca: ca.clone(),
            certificate: self.tls_client_cert.clone(),
            private_key: self.tls_client_key.clone(),
        })
    }

    /// The bearer token, from --token-file or --token.
    pub fn token(&self) -> anyhow::Result<Option<BearerToken>> {
        Ok(match (&self.token_file, &self.token) {
            (Some(file), _) => Some(BearerToken::from_file(file)?),
            (None, Some(token)) => Some(BearerToken::new(token)?),
            (None, None) => None,
        })
    }
}

/// Says what went wrong with a call to `endpoint`, in one line.
pub fn explain(endpoint: &str, what: &str, status: &tonic::Status) -> anyhow::Error {
    let message = status.message();
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown
            if message.contains("transport") || message.contains("connect") =>
        {
            anyhow::anyhow!("cannot reach {endpoint} ({what}): is the farm running? ({message})")
        }
        tonic::Code::Unavailable => anyhow::anyhow!("{endpoint} is unavailable ({what}): {message}"),
        tonic::Code::NotFound => anyhow::anyhow!("{what}: not found: {message}"),
        tonic::Code::InvalidArgument => anyhow::anyhow!("{what}: rejected by {endpoint}: {message}"),
        tonic::Code::Unauthenticated => {
            anyhow::anyhow!("{what}: {endpoint} does not know who you are: {message}")
        }
        tonic::Code::PermissionDenied => anyhow::anyhow!("{what}: {endpoint} refused: {message}"),
        code => anyhow::anyhow!("{what} failed ({code:?}): {message}"),
    }
}

/// Parses `HASH/SIZE` (or `HASH-SIZE`); the function follows from the
/// hash length unless named, like `blake3:HASH/SIZE`.
pub fn parse_digest(text: &str) -> anyhow::Result<bb_util::Digest> {
    let (function, rest) = match text.split_once(':') {
        Some((name, rest)) => (
            Some(
                bb_util::DigestFunction::from_name(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown digest function {name:?} in {text:?}"))?,
            ),
            rest,
        ),
        None => (None, text),
    };
    let not_a_digest =
        |why: String| anyhow::anyhow!("{text:?} is not a digest ({why}): write it as HASH/SIZE");
    let (hash, size) = rest
        .split_once('/')
        .or_else(|| rest.rsplit_once('-'))
        .ok_or_else(|| not_a_digest("no size".into()))?;
    let size: i64 = size.parse().map_err(|_| not_a_digest(format!("the size {size:?} is not a number")))?;
    let function = match function {
        Some(function) => function,
        None => bb_util::DigestFunction::resolve(0, hash).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))?,
    };
    bb_util::Digest::parse(function, hash, size).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_the_command_line() {
        let d = parse_digest("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/5").unwrap();
        assert_eq!(d.size(), 5);
        let b = parse_digest("blake3:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/5")
            .unwrap();
        assert_eq!(b.function(), bb_util::DigestFunction::Blake3);
        assert!(parse_digest("nonsense").is_err());
        assert!(parse_digest("abc/5").unwrap_err().to_string().contains("abc"));
        assert!(parse_digest("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824/x").is_err());
    }
}
