//! Reaching a farm: endpoints, and errors turned into one line a person can
//! act on.

use tonic::transport::Channel;

/// The default client endpoint: a `bb farm` on this machine.
pub const DEFAULT_ENDPOINT: &str = "grpc://localhost:8980";

/// A channel to `endpoint`; a `grpcs://` one trusts the CA in `tls_ca`.
pub fn channel(endpoint: &str, tls_ca: Option<&std::path::Path>) -> anyhow::Result<Channel> {
    let tls = tls_ca.map(|ca| bb_util::tls::ClientTls { ca: ca.to_owned() });
    bb_util::grpc::channel_with_tls(endpoint, tls.as_ref())
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
