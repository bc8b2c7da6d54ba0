//! Which S3-compatible bucket an `object_storage` store uses, and the
//! credentials it signs its requests with.
//!
//! Credentials come from, in this order: the configured `credentials_file`;
//! the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`); the standard shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`); and last
//! what the host offers (EC2 instance metadata, ECS, web identity).

use anyhow::Context;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The bucket, which must exist.
    pub bucket: String,
    /// The S3 API's URL for a server other than AWS (SeaweedFS, MinIO,
    /// RGW: `http://127.0.0.1:8333`); `http://` is allowed only here.
    /// Default: AWS's endpoint for `region` (or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default: `AWS_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Objects are named under this prefix, so one bucket can hold the CAS
    /// and the Action Cache (or several farms) apart.
    #[serde(default)]
    pub prefix: String,
    /// A file in the AWS shared credentials format (`[profile]` sections
    /// with `aws_access_key_id`, `aws_secret_access_key` and optionally
    /// `aws_session_token`), e.g. one passed with systemd's `LoadCredential=`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The section of the credentials file to use. Default: `AWS_PROFILE`,
    /// else `default`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Address the bucket as `https://<bucket>.<endpoint>` instead of
    /// `<endpoint>/<bucket>`: AWS's preferred style; S3-compatible servers
    /// usually want the default, the path style.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// How long a request the server fails (HTTP 5xx, a timeout, a
    /// dropped connection) is retried, with backoff, before the store
    /// reports the failure: a bucket that is down fails a client's write
    /// within this time instead of holding it for minutes.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
}

fn default_retry_seconds() -> u64 {
    30
}

/// Access keys read from a credentials file.
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

impl BucketConfig {
    /// The client of the bucket. It makes no request yet.
    pub fn open(&self) -> anyhow::Result<AmazonS3> {
        let retry = RetryConfig {
            retry_timeout: Duration::from_secs(self.retry_seconds),
            max_retries: 5,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_retry(retry)
            .with_virtual_hosted_style_request(self.virtual_hosted_style);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let region = self.region.clone().or_else(|| std::env::var("AWS_REGION").ok());
        builder = builder.with_region(region.unwrap_or_else(|| "us-east-1".into()));
        if let Some(keys) = self.keys()? {
            builder = builder.with_access_key_id(keys.id).with_secret_access_key(keys.secret);
            if let Some(token) = keys.token {
                builder = builder.with_token(token);
            }
        }
        builder.build().with_context(|| format!("object storage: bucket {}", self.bucket))
    }

    /// Keys from a file, unless the environment has them (then the
    /// builder took them from there).
    fn keys(&self) -> anyhow::Result<Option<Keys>> {
        let profile = self.profile.clone().or_else(|| std::env::var("AWS_PROFILE").ok());
        let profile = profile.unwrap_or_else(|| "default".into());
        if let Some(file) = &self.credentials_file {
            return read_keys(file, &profile).map(Some);
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
            return Ok(None);
        }
        let shared = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".aws/credentials")));
        match shared {
            Some(file) if file.exists() => read_keys(&file, &profile).map(Some),
            _ => Ok(None),
        }
    }
}

fn read_keys(file: &Path, profile: &str) -> anyhow::Result<Keys> {
    let context = || format!("object storage credentials {}", file.display());
    let ini = ini::Ini::load_from_file(file).with_context(context)?;
    let section = ini
        .section(Some(profile))
        .with_context(|| format!("no [{profile}] section"))
        .with_context(context)?;
    let key = |name: &str| section.get(name).map(str::to_string);
    let (Some(id), Some(secret)) = (key("aws_access_key_id"), key("aws_secret_access_key")) else {
        anyhow::bail!("{}: [{profile}] needs aws_access_key_id and aws_secret_access_key", context());
    };
    Ok(Keys { id, secret, token: key("aws_session_token") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn keys_come_from_the_named_profile_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cret\n\n\
             [farm]\naws_access_key_id=FARM\naws_secret_access_key=other\naws_session_token=t\n",
        )
        .unwrap();
        let keys = read_keys(&file, "farm").unwrap();
        assert_eq!(
            (keys.id.as_str(), keys.secret.as_str(), keys.token.as_deref()),
            ("FARM", "other", Some("t"))
        );
        assert_eq!(read_keys(&file, "default").unwrap().id, "AKID");
        let missing = read_keys(&file, "nope").err().unwrap();
        assert!(format!("{missing:#}").contains("no [nope] section"), "{missing:#}");
        std::fs::write(&file, "[default]\naws_access_key_id = only-the-id\n").unwrap();
        let partial = read_keys(&file, "default").err().unwrap();
        assert!(partial.to_string().contains("needs aws_access_key_id and aws_secret_access_key"));
    }

    /// A server that answers every request, a second late, with HTTP 503,
    /// and counts them.
    async fn failing_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = socket.read(&mut head).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let reply =
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        (endpoint, requests)
    }

    #[tokio::test]
    async fn a_bucket_that_is_down_fails_a_write_within_the_retry_time() {
        let (endpoint, requests) = failing_server().await;
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::write(&credentials, "[default]\naws_access_key_id = K\naws_secret_access_key = S\n")
            .unwrap();
        let config = BucketConfig {
            bucket: "down".into(),
            endpoint: Some(endpoint),
            region: None,
            prefix: String::new(),
            credentials_file: Some(credentials),
            profile: None,
            virtual_hosted_style: false,
            retry_seconds: 2,
        };
        let bucket = config.open().unwrap();
        let started = std::time::Instant::now();
        let put = bucket.put(&"blob".into(), bytes::Bytes::from_static(b"x").into()).await;
        assert!(put.is_err(), "a write to a failing server succeeded");
        // Five retries of a one-second failure would take six seconds.
        assert!(started.elapsed() < Duration::from_secs(5), "the write took {:?}", started.elapsed());
        assert!(requests.load(Ordering::SeqCst) >= 2, "the failed request was not retried");
    }
}
