//! Client certificates (mutual TLS).
//!
//! The handshake asks for a certificate and checks that the client holds
//! its key, but lets the connection open whatever the certificate's
//! issuer: the chain is verified against the client CA just after, once
//! per connection, and the verdict travels with the connection. Every
//! request on it is then answered by the authenticator: UNAUTHENTICATED
//! naming the reason for a certificate from another CA, rather than a
//! handshake failure a client reports only as "transport error".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// What a TLS connection's client certificate says: `None` when it sent
/// none; the identity it names, or why it was refused.
pub type CertificateVerdict = Option<Result<Arc<str>, Arc<str>>>;

/// Verifies client certificates against a CA file.
#[derive(Debug)]
pub struct ClientCertificates {
    ca: PathBuf,
    verifier: Arc<dyn ClientCertVerifier>,
}

#[derive(Debug, thiserror::Error)]
#[error("client CA {path}: {reason}")]
pub struct ClientCaError {
    path: PathBuf,
    reason: String,
}

impl ClientCertificates {
    /// Trusts the CA certificates in the PEM file `ca`.
    pub fn new(ca: &Path) -> Result<Self, ClientCaError> {
        let error = |reason: String| ClientCaError { path: ca.to_owned(), reason };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in crate::tls::certificates(ca).map_err(|e| error(e.to_string()))? {
            roots.add(certificate).map_err(|e| error(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(ClientCertificates { ca: ca.to_owned(), verifier })
    }

    /// The verifier for the handshake: it asks for a certificate and
    /// checks possession of its key, and leaves the chain to [`Self::verdict`].
    pub fn handshake_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Deferred(self.verifier.clone()))
    }

    /// The verdict on the chain a client presented.
    pub fn verdict(&self, chain: Option<&[CertificateDer<'static>]>) -> CertificateVerdict {
        let (leaf, intermediates) = chain?.split_first()?;
        Some(match self.verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => identity_of(leaf).map(Arc::from).map_err(Arc::from),
            Err(e) => {
                Err(format!("client certificate not accepted ({e}; trusted CA: {})", self.ca.display())
                    .into())
            }
        })
    }
}

/// The name a verified certificate gives its holder: the subject's common
/// name, or else its first DNS, URI or e-mail subject alternative name.
pub fn identity_of(certificate: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    if let Some(name) = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Ok(name.to_string());
    }
    let alternatives = parsed.subject_alternative_name().ok().flatten();
    for name in alternatives.iter().flat_map(|extension| &extension.value.general_names) {
        match name {
            GeneralName::DNSName(name) | GeneralName::URI(name) | GeneralName::RFC822Name(name) => {
                return Ok(name.to_string());
            }
            _ => {}
        }
    }
    Err("client certificate names nobody (no common name, no DNS, URI or e-mail alternative name)".into())
}

/// Asks for a certificate and checks the handshake's signature with it;
/// the chain itself is judged after the handshake.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _leaf: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
