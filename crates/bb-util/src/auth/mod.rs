//! Who is calling, and what they may do.
//!
//! Each listener has an [`Authenticator`]: it turns a request's
//! credentials (a client certificate, a bearer token, a JWT) into a
//! [`Principal`], which the gRPC interceptor stores in the request's
//! extensions. Every RPC then asks [`require`] for the permission it
//! needs on its instance name, against the policy. With no credential
//! method configured, authentication is off: everyone is the `anonymous`
//! principal, allowed everything, which is accepted only on loopback and
//! UNIX-socket listeners unless the operator says the network is closed.

pub mod certificate;
pub mod jwt;
pub mod policy;
pub mod tokens;

use crate::grpc::ListenAddress;
use certificate::{CertificateVerdict, ClientCertificates};
use jwt::{JwtConfig, JwtVerifier};
use policy::{Policy, Rule};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokens::Tokens;
use tonic::Status;

/// What a principal may be allowed to do on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Execute,
    Read,
    WriteCas,
    WriteActionCache,
    Worker,
    Admin,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::Execute => "execute",
            Permission::Read => "read",
            Permission::WriteCas => "write-cas",
            Permission::WriteActionCache => "write-action-cache",
            Permission::Worker => "worker",
            Permission::Admin => "admin",
        })
    }
}

/// A way to present credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// A client certificate signed by `client_ca` (mutual TLS).
    Certificate,
    /// `authorization: Bearer <token>` with a token of `tokens_file`.
    Token,
    /// `authorization: Bearer <JWT>` verified with `[authentication.jwt]`.
    Jwt,
}

/// `[authentication]`: the credentials a program accepts and what each
/// identity may do. Without `client_ca`, `tokens_file` and `jwt`,
/// authentication is off.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// CA certificates (PEM) client certificates must chain to. TLS
    /// listeners then ask clients for one; a client may still present a
    /// token instead.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Static bearer tokens: a TOML file of `name = "<hex SHA-256 of the
    /// token>"` (`bb token new NAME` makes one). Read again when it changes.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// JWTs as bearer tokens.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Which methods each listener accepts, by listener name (`client`,
    /// `worker`, `http` on the scheduler; `grpc`, `http` on bb-storage).
    /// A listener not named accepts every configured method.
    #[serde(default)]
    pub listeners: BTreeMap<String, Vec<Method>>,
    /// With authentication off, serve non-loopback addresses anyway, to
    /// anyone who reaches them. Only for networks nobody else is on.
    #[serde(default)]
    pub anonymous_on_network: bool,
    /// Let anyone view the HTTP pages (status page, metrics) without
    /// credentials; drain and undrain still need `admin`, and the pages of
    /// stored contents (actions, files, blobs) `read` on their instance.
    #[serde(default)]
    pub public_pages: bool,
    /// Who may do what (see [`Rule`]). With authentication on, an identity
    /// no rule names may do nothing.
    #[serde(default)]
    pub policy: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    ClientCa(#[from] certificate::ClientCaError),
    #[error(transparent)]
    Tokens(#[from] tokens::TokensError),
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
    #[error("[authentication] listeners.{listener}: {method:?} is not configured")]
    MethodNotConfigured { listener: String, method: Method },
    #[error("[authentication] listeners.{0}: no listener of that name")]
    UnknownListener(String),
    #[error(
        "the {listener} listener on {address} would serve anyone without credentials: configure \
         [authentication] (client_ca, tokens_file or jwt), listen on loopback, or set \
         authentication.anonymous_on_network = true for a closed network"
    )]
    Exposed { listener: String, address: String },
}

/// The verifiers of a program, shared by its listeners.
#[derive(Clone)]
pub struct Authentication {
    config: AuthenticationConfig,
    certificates: Option<Arc<ClientCertificates>>,
    tokens: Option<Arc<Tokens>>,
    jwt: Option<Arc<JwtVerifier>>,
    policy: Arc<Policy>,
}

impl Authentication {
    /// Reads every file the configuration names; `listeners` are the
    /// program's listener names, which `listeners` keys must be among.
    pub fn new(config: &AuthenticationConfig, listeners: &[&str]) -> Result<Self, AuthError> {
        let authentication = Authentication {
            config: config.clone(),
            certificates: config.client_ca.as_deref().map(ClientCertificates::new).transpose()?.map(Arc::new),
            tokens: config.tokens_file.as_deref().map(Tokens::open).transpose()?.map(Arc::new),
            jwt: config.jwt.as_ref().map(JwtVerifier::new).transpose()?.map(Arc::new),
            policy: Arc::new(Policy::new(config.policy.clone())),
        };
        for (listener, methods) in &config.listeners {
            if !listeners.contains(&listener.as_str()) {
                return Err(AuthError::UnknownListener(listener.clone()));
            }
            if let Some(method) = methods.iter().find(|m| !authentication.configured().contains(m)) {
                return Err(AuthError::MethodNotConfigured { listener: listener.clone(), method: *method });
            }
        }
        Ok(authentication)
    }

    /// Authentication off, as on a loopback-only farm.
    pub fn off() -> Self {
        Authentication::new(&AuthenticationConfig::default(), &[]).expect("nothing to read")
    }

    fn configured(&self) -> Vec<Method> {
        let mut methods = Vec::new();
        if self.certificates.is_some() {
            methods.push(Method::Certificate);
        }
        if self.tokens.is_some() {
            methods.push(Method::Token);
        }
        if self.jwt.is_some() {
            methods.push(Method::Jwt);
        }
        methods
    }

    /// The client certificate verifier for TLS listeners, when mutual TLS
    /// is configured.
    pub fn client_certificates(&self) -> Option<Arc<ClientCertificates>> {
        self.certificates.clone()
    }

    /// The authenticator of the listener `name` on `addresses`; refused
    /// when it would serve a network without authentication.
    pub fn listener(&self, name: &str, addresses: &[ListenAddress]) -> Result<Authenticator, AuthError> {
        let methods = self.config.listeners.get(name).cloned().unwrap_or_else(|| self.configured());
        let exposed = addresses.iter().find(|address| !is_local(address));
        if let Some(address) = exposed.filter(|_| methods.is_empty() && !self.config.anonymous_on_network) {
            return Err(AuthError::Exposed { listener: name.into(), address: address.to_string() });
        }
        Ok(Authenticator { methods, verifiers: self.clone() })
    }
}

/// Whether only this host can reach `address`.
fn is_local(address: &ListenAddress) -> bool {
    match address {
        ListenAddress::Tcp(socket) => socket.ip().is_loopback(),
        ListenAddress::Unix(_) => true,
    }
}

/// Turns one listener's requests into principals.
#[derive(Clone)]
pub struct Authenticator {
    methods: Vec<Method>,
    verifiers: Authentication,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("methods", &self.methods).finish()
    }
}

fn unauthenticated(reason: impl std::fmt::Display) -> Status {
    Status::unauthenticated(format!("not authenticated: {reason}"))
}

impl Authenticator {
    /// The client certificate verifier, when this listener accepts
    /// client certificates.
    pub fn client_certificates(&self) -> Option<Arc<ClientCertificates>> {
        self.verifiers.certificates.clone().filter(|_| self.methods.contains(&Method::Certificate))
    }

    /// Whether anyone may view this listener's HTTP pages.
    pub fn pages_are_public(&self) -> bool {
        self.verifiers.config.public_pages
    }

    /// Who sent a request with this `authorization` header value over a
    /// connection whose client certificate got `certificate`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        certificate: &CertificateVerdict,
    ) -> Result<Principal, Status> {
        if self.methods.is_empty() {
            return Ok(Principal::anonymous());
        }
        let takes_bearer = self.methods.iter().any(|method| *method != Method::Certificate);
        let name = match (authorization, certificate) {
            (Some(header), _) if takes_bearer => self.bearer(header)?,
            // A client with a token and a certificate, on a listener that
            // takes certificates only, is known by the certificate.
            (_, Some(verdict)) if self.methods.contains(&Method::Certificate) => {
                verdict.clone().map_err(unauthenticated)?
            }
            _ => return Err(unauthenticated(format!("present credentials ({})", self.accepted()))),
        };
        Ok(Principal { name, grants: Grants::Policy(self.verifiers.policy.clone()) })
    }

    fn accepted(&self) -> String {
        let names: Vec<&str> = self
            .methods
            .iter()
            .map(|method| match method {
                Method::Certificate => "a client certificate",
                Method::Token => "a bearer token",
                Method::Jwt => "a JWT bearer token",
            })
            .collect();
        names.join(" or ")
    }

    fn bearer(&self, header: &str) -> Result<Arc<str>, Status> {
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("the authorization header is not \"Bearer <token>\""))?;
        let jwt = self.verifiers.jwt.as_ref().filter(|_| self.methods.contains(&Method::Jwt));
        let tokens = self.verifiers.tokens.as_ref().filter(|_| self.methods.contains(&Method::Token));
        if let Some(jwt) = jwt.filter(|_| token.matches('.').count() == 2) {
            return jwt.identify(token).map_err(unauthenticated);
        }
        match tokens {
            Some(tokens) => {
                tokens.identify(token).ok_or_else(|| unauthenticated("the bearer token is not known"))
            }
            None => Err(unauthenticated(format!("this listener takes {}", self.accepted()))),
        }
    }

    /// Authenticates a gRPC request and stores its principal in its
    /// extensions, for [`require`].
    pub fn intercept(&self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let authorization = match request.metadata().get("authorization") {
            Some(value) => {
                Some(value.to_str().map_err(|_| unauthenticated("the authorization header is not text"))?)
            }
            None => None,
        };
        let certificate =
            request.extensions().get::<crate::tls::TlsPeer>().and_then(|peer| peer.certificate.clone());
        let principal = self.authenticate(authorization, &certificate)?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// Who a request comes from, and what they may do.
#[derive(Clone, Debug)]
pub struct Principal {
    name: Arc<str>,
    grants: Grants,
}

#[derive(Clone, Debug)]
enum Grants {
    /// Authentication is off.
    Everything,
    /// Public pages: viewing the queue only.
    Viewing,
    Policy(Arc<Policy>),
}

impl Principal {
    /// Everyone, where authentication is off (made once: every request
    /// of such a listener gets it).
    pub fn anonymous() -> Self {
        static ANONYMOUS: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| Principal {
            name: Arc::from("anonymous"),
            grants: Grants::Everything,
        });
        ANONYMOUS.clone()
    }

    /// Whoever views public pages without credentials.
    pub fn viewer() -> Self {
        Principal { name: Arc::from("public"), grants: Grants::Viewing }
    }

    /// The identity's name (never a secret): a certificate's name, a
    /// token's name, a JWT's identity claim.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn may(&self, instance: &str, permission: Permission) -> bool {
        match &self.grants {
            Grants::Everything => true,
            // The pages of the queue, never an instance's stored contents.
            Grants::Viewing => false,
            Grants::Policy(policy) => policy.allows(&self.name, instance, permission),
        }
    }

    /// Whether the principal holds `permission` on any instance.
    pub fn may_somewhere(&self, permission: Permission) -> bool {
        match &self.grants {
            Grants::Everything => true,
            Grants::Viewing => permission == Permission::Read,
            Grants::Policy(policy) => policy.allows_anywhere(&self.name, permission),
        }
    }

    /// PERMISSION_DENIED naming what is missing, unless allowed.
    pub fn require(&self, instance: &str, permission: Permission) -> Result<(), Status> {
        self.require_any(instance, &[permission])
    }

    /// PERMISSION_DENIED unless one of `permissions` is held on `instance`.
    pub fn require_any(&self, instance: &str, permissions: &[Permission]) -> Result<(), Status> {
        if permissions.iter().any(|permission| self.may(instance, *permission)) {
            return Ok(());
        }
        let names: Vec<String> = permissions.iter().map(Permission::to_string).collect();
        Err(Status::permission_denied(format!(
            "{} lacks the {} permission on instance {instance:?}",
            self.name,
            names.join(" or ")
        )))
    }

    /// Whether the principal was authenticated (rather than let in by a
    /// listener without authentication).
    pub fn is_authenticated(&self) -> bool {
        !matches!(self.grants, Grants::Everything)
    }
}

/// The principal the interceptor stored in `request`.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::internal("this service is served without authentication: refused"))
}

/// PERMISSION_DENIED unless `request`'s principal holds `permission` on
/// `instance`.
pub fn require<T>(request: &tonic::Request<T>, instance: &str, permission: Permission) -> Result<(), Status> {
    principal(request)?.require(instance, permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(texts: &[&str]) -> Vec<ListenAddress> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn without_authentication_only_loopback_is_served() {
        let off = Authentication::off();
        assert!(off.listener("client", &addresses(&["127.0.0.1:1", "[::1]:1", "unix:/x"])).is_ok());
        let error = off.listener("client", &addresses(&["0.0.0.0:1"])).unwrap_err().to_string();
        assert!(error.contains("0.0.0.0:1") && error.contains("anonymous_on_network"), "{error}");
        let closed = AuthenticationConfig { anonymous_on_network: true, ..Default::default() };
        let closed = Authentication::new(&closed, &[]).unwrap();
        assert!(closed.listener("client", &addresses(&["0.0.0.0:1"])).is_ok());
        let principal = closed.listener("client", &[]).unwrap().authenticate(None, &None).unwrap();
        assert!(!principal.is_authenticated() && principal.may("any", Permission::Admin));
    }

    #[test]
    fn listeners_take_only_configured_methods_and_known_names() {
        let mut config = AuthenticationConfig::default();
        config.listeners.insert("worker".into(), vec![Method::Certificate]);
        let error = Authentication::new(&config, &["worker"]).err().unwrap().to_string();
        assert!(error.contains("Certificate") && error.contains("not configured"), "{error}");
        let error = Authentication::new(&config, &["client"]).err().unwrap().to_string();
        assert!(error.contains("no listener of that name"), "{error}");
    }

    #[test]
    fn a_listener_without_a_method_refuses_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, format!("ci = \"{}\"\n", tokens::hash("t0ken"))).unwrap();
        let mut config = AuthenticationConfig { tokens_file: Some(tokens), ..Default::default() };
        config.policy.push(Rule {
            identities: vec!["ci".into()],
            instance_prefix: String::new(),
            permissions: vec![Permission::Read],
        });
        let authentication = Authentication::new(&config, &["client"]).unwrap();
        let client = authentication.listener("client", &addresses(&["0.0.0.0:1"])).unwrap();
        let ci = client.authenticate(Some("Bearer t0ken"), &None).unwrap();
        assert_eq!(ci.name(), "ci");
        assert!(ci.may("x", Permission::Read) && !ci.may("x", Permission::Execute));
        let status = client.authenticate(Some("Basic abc"), &None).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = client.authenticate(None, &Some(Ok("someone".into()))).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "certificates are not a method here");
    }

    #[test]
    fn a_certificate_only_listener_ignores_tokens_beside_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let (ca_file, tokens) = (dir.path().join("ca.pem"), dir.path().join("tokens.toml"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&tokens, format!("ci = \"{}\"\n", tokens::hash("t0ken"))).unwrap();
        let mut config = AuthenticationConfig {
            tokens_file: Some(tokens),
            client_ca: Some(ca_file),
            ..Default::default()
        };
        config.listeners.insert("worker".into(), vec![Method::Certificate]);
        let authentication = Authentication::new(&config, &["worker"]).unwrap();
        let worker = authentication.listener("worker", &[]).unwrap();
        let both = worker.authenticate(Some("Bearer t0ken"), &Some(Ok("w1".into()))).unwrap();
        assert_eq!(both.name(), "w1");
        let status = worker.authenticate(Some("Bearer t0ken"), &None).unwrap_err();
        assert!(status.message().contains("a client certificate"), "{status:?}");
    }
}
