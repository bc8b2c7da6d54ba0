//! Calls to a scheduler's status page API, through hyper's HTTP client,
//! over HTTPS (rustls) when the farm has TLS, with the farm credentials.

use crate::remote::Connection;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `method` on `base` + `path` (path and query), presenting `connection`'s
/// credentials; the body of a 2xx answer.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    connection: &Connection,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("status address {base:?}: {e}"))?;
    let tls = match (uri.scheme_str(), connection.tls()) {
        (Some("http"), _) => rustls_config_for_plain()?,
        (Some("https"), Some(tls)) => tls.rustls_config()?,
        (Some("https"), None) => anyhow::bail!("status address {base:?}: HTTPS needs --tls-ca"),
        _ => anyhow::bail!("status address {base:?} must start with http:// or https://"),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(token) = connection.token()? {
        request = request.header(http::header::AUTHORIZATION, token.header_value());
    }
    let response = client
        .request(request.body(Empty::new())?)
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

/// The connector wants a TLS configuration even for plain HTTP, where it
/// is never used: one that trusts nothing.
fn rustls_config_for_plain() -> anyhow::Result<tokio_rustls::rustls::ClientConfig> {
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    Ok(tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// A query string from pairs, percent-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// The status page of the scheduler serving `endpoint`: the same host, the
/// status port (7982), over HTTPS when the endpoint is `grpcs://`.
pub fn status_url_of(endpoint: &str) -> String {
    let uri = endpoint.parse::<http::Uri>().ok();
    let host = uri.as_ref().and_then(|uri| uri.host().map(str::to_string));
    let scheme = match uri.as_ref().and_then(|uri| uri.scheme_str()) {
        Some("grpcs" | "https") => "https",
        _ => "http",
    };
    format!("{scheme}://{}:7982", host.as_deref().unwrap_or("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_derived_status_urls() {
        assert_eq!(query(&[("worker", "host=a,slot=1")]), "worker=host%3Da%2Cslot%3D1");
        assert_eq!(status_url_of("grpc://farm.example:8980"), "http://farm.example:7982");
        assert_eq!(status_url_of("grpcs://10.0.0.5:443"), "https://10.0.0.5:7982");
        assert_eq!(status_url_of("grpc://[::1]:8980"), "http://[::1]:7982");
        assert_eq!(status_url_of("unix:/run/bb.sock"), "http://localhost:7982");
    }
}
