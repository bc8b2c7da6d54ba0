//! TLS for the farm's gRPC listeners and clients (rustls, no OpenSSL).
//!
//! A server's certificate and key are PEM files read again whenever they
//! change (checked at most once a second, on a handshake), so a rotated
//! certificate is served without a restart; a file that does not parse
//! keeps the last good one in use and says so. Clients trust the CA files
//! they are given (the farm's own CA), never the system's roots implicitly.

use crate::auth::certificate::{CertificateVerdict, ClientCertificates};
use crate::watched::Watched;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

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
    /// A client certificate (PEM) to present, for mutual TLS; with
    /// `private_key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: no PEM {what} in it")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: {error}")]
    Pem { path: PathBuf, error: rustls::pki_types::pem::Error },
    #[error("{path}: {error}")]
    Certificate { path: PathBuf, error: rustls::Error },
    #[error("{path}: a client certificate needs both certificate and private_key")]
    Unpaired { path: PathBuf },
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
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let chain = certificates(&self.certificate)?;
        let key = private_key(&self.private_key)?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key_error = |error| TlsError::Key {
            certificate: self.certificate.clone(),
            key: self.private_key.clone(),
            error,
        };
        CertifiedKey::from_der(chain, key, &provider).map_err(key_error)
    }

    /// A TLS acceptor serving this certificate (HTTP/2 and HTTP/1.1), read
    /// now and again whenever the files change. With `clients`, clients
    /// are asked for a certificate (see [`ClientCertificates`]).
    pub fn acceptor(&self, clients: Option<&Arc<ClientCertificates>>) -> Result<TlsAcceptor, TlsError> {
        let files = self.clone();
        let paths = vec![self.certificate.clone(), self.private_key.clone()];
        let resolver = Reloading(Watched::new("TLS certificate", paths, move || files.load())?);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default TLS versions");
        let builder = match clients {
            Some(clients) => builder.with_client_cert_verifier(clients.handshake_verifier()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The server's certificate, read again once its files change.
#[derive(Debug)]
struct Reloading(Watched<CertifiedKey>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ClientTls {
    /// The client certificate and its key, when both are set; set alone,
    /// either is an error.
    fn client_identity(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        match (&self.certificate, &self.private_key) {
            (None, None) => Ok(None),
            (Some(certificate), Some(key)) => Ok(Some((certificate, key))),
            (Some(path), None) | (None, Some(path)) => Err(TlsError::Unpaired { path: path.clone() }),
        }
    }

    /// tonic's client TLS settings: the CA given, HTTP/2.
    pub fn tonic_config(&self, domain: &str) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        // Checked here, so a wrong file is named when the client starts.
        let pem = read(&self.ca)?;
        parse_certificates(&self.ca, &pem)?;
        let ca = tonic::transport::Certificate::from_pem(pem);
        let config = tonic::transport::ClientTlsConfig::new().domain_name(domain).ca_certificate(ca);
        match self.client_identity()? {
            None => Ok(config),
            Some((certificate, key)) => {
                let pem = read(certificate)?;
                parse_certificates(certificate, &pem)?;
                private_key(key)?;
                Ok(config.identity(tonic::transport::Identity::from_pem(pem, read(key)?)))
            }
        }
    }

    /// A rustls client configuration trusting the CA given and presenting
    /// the client certificate if one is set (for HTTPS clients).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(&self.ca)? {
            roots.add(certificate).map_err(|error| TlsError::Certificate { path: self.ca.clone(), error })?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default TLS versions")
            .with_root_certificates(roots);
        match self.client_identity()? {
            None => Ok(builder.with_no_client_auth()),
            Some((certificate, key)) => {
                builder.with_client_auth_cert(certificates(certificate)?, private_key(key)?).map_err(
                    |error| TlsError::Key { certificate: certificate.to_owned(), key: key.to_owned(), error },
                )
            }
        }
    }
}

/// What a TLS connection tells each request on it (in its extensions).
#[derive(Clone, Debug, Default)]
pub struct TlsPeer {
    /// The client certificate's verdict, when clients are asked for one.
    pub certificate: CertificateVerdict,
}

/// A connection through its TLS handshake, with what it says about the
/// peer.
pub struct Accepted {
    stream: TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Accepted {
    pub fn peer(&self) -> &TlsPeer {
        &self.peer
    }
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl tokio::io::AsyncRead for Accepted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for Accepted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(context, data)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections made to `listener`: each handshake runs on its own
/// task (a slow or silent client holds up nobody else); those that fail
/// are dropped, logged at debug level. With `clients`, each connection's
/// client certificate is judged once, after its handshake.
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    clients: Option<Arc<ClientCertificates>>,
) -> impl futures::Stream<Item = std::io::Result<Accepted>> {
    let (send, receive) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
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
            let (acceptor, send, clients) = (acceptor.clone(), send.clone(), clients.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let certificate =
                            clients.and_then(|c| c.verdict(stream.get_ref().1.peer_certificates()));
                        let peer = TlsPeer { certificate };
                        let _ = send.send(Ok(Accepted { stream, peer })).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {remote} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {remote} timed out"),
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
