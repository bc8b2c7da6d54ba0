//! TLS for the farm's gRPC listeners and clients (rustls, no OpenSSL).
//!
//! A server's certificate and key are PEM files read again whenever they
//! change (checked at most once a second, on a handshake), so a rotated
//! certificate is served without a restart; a file that does not parse
//! keeps the last good one in use and says so. Clients trust the CA files
//! they are given (the farm's own CA), never the system's roots implicitly.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// How often, at most, a server looks at its certificate files again.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// TLS on a server's listeners (`[tls]` of its configuration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The certificate chain, PEM, leaf first. Read again when it changes.
    pub certificate: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1). Read again when it
    /// changes.
    pub private_key: PathBuf,
}

/// TLS for a client's connections to one server (`grpcs://` endpoints).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: no PEM {what} in it")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: {error}")]
    Pem { path: PathBuf, error: rustls::pki_types::pem::Error },
    #[error("{certificate} and {key}: {error}")]
    Key { certificate: PathBuf, key: PathBuf, error: rustls::Error },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

/// Every certificate in a PEM file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(path, &read(path)?)
}

/// The certificates in `pem`, read from `path`.
fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem { path: path.to_owned(), error })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty { path: path.to_owned(), what: "certificate" });
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { path: path.to_owned(), what: "private key" }
        }
        error => TlsError::Pem { path: path.to_owned(), error },
    })
}

impl ServerTls {
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = certificates(&self.certificate)?;
        let key = private_key(&self.private_key)?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key_error = |error| TlsError::Key {
            certificate: self.certificate.clone(),
            key: self.private_key.clone(),
            error,
        };
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(key_error)?;
        Ok(Arc::new(certified))
    }

    /// When either file last changed (and its size), to notice a rotation.
    fn stamp(&self) -> Option<[(SystemTime, u64); 2]> {
        let stamp =
            |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        Some([stamp(&self.certificate)?, stamp(&self.private_key)?])
    }

    /// A TLS acceptor serving this certificate (HTTP/2 only, as gRPC
    /// needs), read now and again whenever the files change.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let resolver = Reloading::new(self.clone())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The server's certificate, read again once its files change.
#[derive(Debug)]
struct Reloading {
    files: ServerTls,
    state: parking_lot::Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Option<[(SystemTime, u64); 2]>,
    checked: Instant,
}

impl Reloading {
    fn new(files: ServerTls) -> Result<Reloading, TlsError> {
        let stamp = files.stamp();
        let key = files.load()?;
        Ok(Reloading {
            files,
            state: parking_lot::Mutex::new(Loaded { key, stamp, checked: Instant::now() }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock();
        if state.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked = Instant::now();
            let stamp = self.files.stamp();
            if stamp != state.stamp {
                match self.files.load() {
                    Ok(key) => {
                        tracing::info!(
                            "TLS: serving the new certificate {}",
                            self.files.certificate.display()
                        );
                        state.key = key;
                        state.stamp = stamp;
                    }
                    // Maybe half written: tried again at the next check.
                    Err(e) => tracing::warn!("TLS: keeping the current certificate: {e}"),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ClientTls {
    /// tonic's client TLS settings: the CA given, HTTP/2.
    pub fn tonic_config(&self, domain: &str) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        // Checked here, so a wrong file is named when the client starts.
        let pem = read(&self.ca)?;
        parse_certificates(&self.ca, &pem)?;
        let ca = tonic::transport::Certificate::from_pem(pem);
        Ok(tonic::transport::ClientTlsConfig::new().domain_name(domain).ca_certificate(ca))
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections made to `listener`: each handshake runs on its own
/// task (a slow or silent client holds up nobody else); those that fail
/// are dropped, logged at debug level.
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (send, receive) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: let some close first.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY every small response waits for the
            // peer's delayed ACK.
            let _ = stream.set_nodelay(true);
            let (acceptor, send) = (acceptor.clone(), send.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = send.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                }
            });
        }
    });
    // Accepting stops when the stream is dropped.
    let accepting = tokio_util::task::AbortOnDropHandle::new(accepting);
    let mut receive = receive;
    futures::stream::poll_fn(move |context| {
        let _accepting = &accepting;
        receive.poll_recv(context)
    })
}
