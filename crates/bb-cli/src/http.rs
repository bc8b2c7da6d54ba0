//! Calls to a scheduler's status page API, through hyper's HTTP client.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `method` on `base` + `path` (path and query); the body of a 2xx answer.
pub async fn request(base: &str, method: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("status address {base:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("status address {base:?} must start with http://");
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::builder().method(method).uri(uri).body(Empty::new())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the status page at {url}: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        anyhow::bail!("{url}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

/// A query string from pairs, percent-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// The status page of the scheduler serving `endpoint`: the same host, the
/// status port (7982) over HTTP.
pub fn status_url_of(endpoint: &str) -> String {
    let host = endpoint.parse::<http::Uri>().ok().and_then(|uri| uri.host().map(str::to_string));
    format!("http://{}:7982", host.as_deref().unwrap_or("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_derived_status_urls() {
        assert_eq!(query(&[("worker", "host=a,slot=1")]), "worker=host%3Da%2Cslot%3D1");
        assert_eq!(status_url_of("grpc://farm.example:8980"), "http://farm.example:7982");
        assert_eq!(status_url_of("grpcs://10.0.0.5:443"), "http://10.0.0.5:7982");
        assert_eq!(status_url_of("grpc://[::1]:8980"), "http://[::1]:7982");
        assert_eq!(status_url_of("unix:/run/bb.sock"), "http://localhost:7982");
    }
}
