//! Fetching assets from their origins over HTTP(S), only from the origins
//! the operator allows (redirects included). The body is spooled to an
//! unlinked temporary file while it is hashed, bounded in size, checked
//! against the request's checksum, and only then stored in the CAS: a
//! mismatch or a broken transfer stores nothing.

use super::qualifiers::Sri;
use crate::content::ContentStore;
use bb_util::{Digest, DigestFunction};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::Url;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tonic::{Code, Status};

/// Where one body is copied through on its way to the CAS.
const COPY_CHUNK: usize = 1 << 20;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// One origin the operator allows: a scheme, a host (or `*.` and a
/// domain, for its subdomains) and a port (the scheme's by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl std::str::FromStr for AllowedOrigin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("allowed origin {text:?}: {why}; write it as \"https://host\" or \"http://host:port\"")
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("only http and https are fetched"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin is a scheme, a host and a port, nothing more"));
        }
        let port = |text: &str| text.parse::<u16>().map_err(|_| bad("the port is not a number"));
        let (host, port) = match rest.strip_prefix('[') {
            // An IPv6 address, as URLs write it: [::1]:8000.
            Some(v6) => {
                let (address, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
                let port = match after {
                    "" => None,
                    after => Some(port(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)?),
                };
                (format!("[{address}]"), port)
            }
            None => match rest.split_once(':') {
                Some((host, text)) => (host.to_string(), Some(port(text)?)),
                None => (rest.to_string(), None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(AllowedOrigin { scheme: scheme.to_string(), host: host.to_ascii_lowercase(), port })
    }
}

impl<'de> Deserialize<'de> for AllowedOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl AllowedOrigin {
    fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host = host.to_ascii_lowercase();
        let host_matches = match self.host.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() && host.ends_with(domain) && {
                    host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                }
            }
            None => host == self.host,
        };
        url.scheme() == self.scheme
            && host_matches
            && self.port.or_else(|| default_port(&self.scheme)) == url.port_or_known_default()
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The origins assets may come from, and the client that reaches them.
pub struct Origins {
    allowed: Arc<Vec<AllowedOrigin>>,
    client: reqwest::Client,
    max_size: u64,
}

/// What to fetch: a URI, how to check it, and how long it may take.
pub struct Request<'a> {
    pub uri: &'a str,
    pub checksum: Option<&'a Sri>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub function: DigestFunction,
}

impl Origins {
    pub fn new(allowed: Vec<AllowedOrigin>, max_size: u64) -> Result<Self, String> {
        let allowed = Arc::new(allowed);
        let for_redirects = allowed.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if for_redirects.iter().any(|o| o.allows(attempt.url())) {
                attempt.follow()
            } else {
                let url = attempt.url().to_string();
                attempt.error(format!("redirected to {url}, which is not an allowed origin"))
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .user_agent(concat!("bb-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Origins { allowed, client, max_size })
    }

    /// Whether `uri` may be fetched at all.
    pub fn check(&self, uri: &str) -> Result<Url, Status> {
        let url =
            Url::parse(uri).map_err(|e| Status::invalid_argument(format!("{uri:?} is not a URL: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Status::invalid_argument(format!("{uri}: only http and https URLs are fetched")));
        }
        if !self.allowed.iter().any(|o| o.allows(&url)) {
            return Err(Status::permission_denied(format!(
                "{uri}: not an allowed origin of this server (storage.remote_asset.allowed_origins)"
            )));
        }
        Ok(url)
    }

    /// Fetches into the CAS and returns the blob's digest. The error is the
    /// status for the response's `status` field.
    pub async fn fetch(&self, request: Request<'_>, content: &ContentStore) -> Result<Digest, Status> {
        let url = self.check(request.uri)?;
        let timeout = request.timeout;
        let spooled = tokio::time::timeout(timeout, self.download(url, &request)).await.map_err(|_| {
            Status::deadline_exceeded(format!("{}: not fetched within {timeout:?}", request.uri))
        })??;
        store(spooled, content).await
    }

    async fn download(&self, url: Url, request: &Request<'_>) -> Result<Spooled, Status> {
        let mut call = self.client.get(url.clone());
        for (name, value) in &request.headers {
            call = call.header(name, value);
        }
        let response = call.send().await.map_err(|e| transport_error(request.uri, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Status::new(
                http_code(status),
                format!("{}: the origin answered {status}", request.uri),
            ));
        }
        if response.content_length().is_some_and(|n| n > self.max_size) {
            return Err(self.too_large(request.uri));
        }
        let mut spool = Spool::new(request.function, request.checksum)?;
        let mut body = response.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| transport_error(request.uri, &e))?;
            if spool.size + piece.len() as u64 > self.max_size {
                return Err(self.too_large(request.uri));
            }
            spool.write(&piece).await?;
        }
        spool.finish(request.uri, request.checksum).await
    }

    fn too_large(&self, uri: &str) -> Status {
        Status::resource_exhausted(format!(
            "{uri}: larger than this server's storage.remote_asset.max_asset_size of {} bytes",
            self.max_size
        ))
    }
}

fn transport_error(uri: &str, error: &reqwest::Error) -> Status {
    let code = if error.is_timeout() { Code::DeadlineExceeded } else { Code::Unavailable };
    // The chain says why (refused, redirect not allowed, TLS, ...).
    let mut message = format!("{uri}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Status::new(code, message)
}

/// The response status for an origin's HTTP error.
fn http_code(status: reqwest::StatusCode) -> Code {
    match status.as_u16() {
        404 | 410 => Code::NotFound,
        401 | 403 => Code::PermissionDenied,
        408 | 504 => Code::DeadlineExceeded,
        429 => Code::ResourceExhausted,
        _ => Code::Unavailable,
    }
}

/// A body on its way in: written to a temporary file, hashed for the CAS
/// and for the checksum.
struct Spool {
    file: tokio::fs::File,
    size: u64,
    digest: bb_util::digest::Hasher,
    checksum: Option<super::qualifiers::SriHasher>,
}

/// A body that arrived whole and matched its checksum.
struct Spooled {
    file: tokio::fs::File,
    digest: Digest,
}

impl Spool {
    fn new(function: DigestFunction, checksum: Option<&Sri>) -> Result<Self, Status> {
        let file = tempfile::tempfile()
            .map(tokio::fs::File::from_std)
            .map_err(|e| Status::internal(format!("no temporary file for a fetch: {e}")))?;
        Ok(Spool { file, size: 0, digest: function.hasher(), checksum: checksum.map(Sri::hasher) })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), Status> {
        self.file.write_all(data).await.map_err(|e| Status::internal(format!("spooling a fetch: {e}")))?;
        self.digest.update(data);
        if let Some(checksum) = &mut self.checksum {
            checksum.update(data);
        }
        self.size += data.len() as u64;
        Ok(())
    }

    async fn finish(mut self, uri: &str, checksum: Option<&Sri>) -> Result<Spooled, Status> {
        if let (Some(expected), Some(hasher)) = (checksum, self.checksum.take()) {
            expected
                .check(&hasher.finish())
                .map_err(|why| Status::aborted(format!("{uri}: {why}; nothing was stored")))?;
        }
        self.file.rewind().await.map_err(|e| Status::internal(format!("spooling a fetch: {e}")))?;
        Ok(Spooled { file: self.file, digest: self.digest.finish(self.size) })
    }
}

/// Copies a spooled body into the CAS (unless it is there already).
async fn store(spooled: Spooled, content: &ContentStore) -> Result<Digest, Status> {
    let Spooled { mut file, digest } = spooled;
    if content.find_missing(&[digest]).await?.is_empty() {
        return Ok(digest);
    }
    let mut upload = content.begin_upload(&digest).await?;
    let mut buffer = vec![0u8; COPY_CHUNK];
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| Status::internal(format!("reading a spooled fetch: {e}")))?;
        if n == 0 {
            break;
        }
        upload.write(Bytes::copy_from_slice(&buffer[..n])).await?;
    }
    upload.finish().await?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(text: &str) -> AllowedOrigin {
        text.parse().unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port_exactly() {
        let github = allowed("https://github.com");
        assert!(github.allows(&url("https://github.com/a/b.tar.gz")));
        assert!(github.allows(&url("https://GitHub.com:443/a")));
        assert!(!github.allows(&url("http://github.com/a")));
        assert!(!github.allows(&url("https://github.com:8443/a")));
        assert!(!github.allows(&url("https://github.com.evil.org/a")));
        assert!(!github.allows(&url("https://evil.org/github.com")));

        let v6 = allowed("http://[::1]:8000");
        assert!(v6.allows(&url("http://[::1]:8000/x")));
        assert!(!v6.allows(&url("http://[::2]:8000/x")));

        let local = allowed("http://127.0.0.1:8000");
        assert!(local.allows(&url("http://127.0.0.1:8000/x")));
        assert!(!local.allows(&url("http://127.0.0.1:8001/x")));
        assert!(!local.allows(&url("http://127.0.0.1/x")));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let any = allowed("https://*.example.org");
        assert!(any.allows(&url("https://a.example.org/x")));
        assert!(any.allows(&url("https://a.b.example.org/x")));
        assert!(!any.allows(&url("https://example.org/x")));
        assert!(!any.allows(&url("https://badexample.org/x")));
    }

    #[test]
    fn origins_that_are_more_than_an_origin_are_refused() {
        for text in
            ["github.com", "ftp://h", "https://h/path", "https://user@h", "https://h:port", "https://"]
        {
            assert!(text.parse::<AllowedOrigin>().is_err(), "{text}");
        }
        assert_eq!(allowed("https://h/"), allowed("https://h"));
    }
}
