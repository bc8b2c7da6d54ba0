//! gRPC serving and dialing, on TCP and on UNIX sockets.
//!
//! Programs bind their listeners first (so tests can ask for port 0 and learn
//! the real address), then serve a set of tonic `Routes` on all of them until
//! the shutdown token fires.

use crate::auth::Authenticator;
use crate::tls::{ClientTls, ServerTls};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};

/// HTTP/2 flow-control windows. Large windows let one ByteStream transfer
/// fill a fast link instead of waiting for window updates every 64 KiB.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// How long in-flight calls may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Largest HTTP/2 frame either side accepts: 1 MiB blob chunks then travel
/// in a few frames instead of sixty-four 16 KiB ones.
const MAX_FRAME: u32 = 1 << 20;

/// Where a server listens or a client connects: `host:port` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        text.parse().map(ListenAddress::Tcp).map_err(|_| {
            format!("{text:?} is not a listen address (\"0.0.0.0:8980\", \"[::]:8980\" or \"unix:/path\")")
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// A bound socket, ready to serve.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `address`. A stale UNIX socket file left by an earlier run is
    /// replaced.
    pub async fn bind(address: &ListenAddress) -> std::io::Result<Self> {
        match address {
            ListenAddress::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddress::Unix(path) => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
        }
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_address(&self) -> std::io::Result<ListenAddress> {
        match self {
            Listener::Tcp(l) => Ok(ListenAddress::Tcp(l.local_addr()?)),
            Listener::Unix(_, path) => Ok(ListenAddress::Unix(path.clone())),
        }
    }
}

/// Binds every address, failing with the address in the message.
pub async fn bind_all(addresses: &[ListenAddress]) -> anyhow::Result<Vec<Listener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let listener =
            Listener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn server_builder() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// How a group of listeners guards its calls: TLS on its TCP listeners
/// (UNIX sockets stay plain: their file mode is their access control) and
/// who may call.
#[derive(Clone)]
pub struct Guard {
    tls: Option<TlsAcceptor>,
    authenticator: Authenticator,
}

impl Guard {
    /// TLS with `tls` when given; the TLS handshake asks for client
    /// certificates when `authenticator` accepts them.
    pub fn new(tls: Option<&ServerTls>, authenticator: Authenticator) -> Result<Self, crate::tls::TlsError> {
        let clients = authenticator.client_certificates();
        let tls = tls.map(|tls| tls.acceptor(clients.as_ref())).transpose()?;
        Ok(Guard { tls, authenticator })
    }

    /// The guard of listener `name` on `addresses`: TLS with `tls`, its
    /// callers judged by `authentication`.
    pub fn for_listener(
        authentication: &crate::auth::Authentication,
        name: &str,
        addresses: &[ListenAddress],
        tls: Option<&ServerTls>,
    ) -> anyhow::Result<Self> {
        Ok(Guard::new(tls, authentication.listener(name, addresses)?)?)
    }

    pub fn into_parts(self) -> (Option<TlsAcceptor>, Authenticator) {
        (self.tls, self.authenticator)
    }

    /// Plaintext, anyone: for UNIX sockets between a program's own parts.
    pub fn open() -> Self {
        let authenticator =
            crate::auth::Authentication::off().listener("local", &[]).expect("no address to refuse");
        Guard { tls: None, authenticator }
    }
}

/// Serves `routes` on every listener until `shutdown` fires, then lets
/// in-flight calls finish (for at most `SHUTDOWN_GRACE`), with no TLS and
/// no authentication. UNIX socket files are removed on the way out.
pub async fn serve(
    routes: Routes,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_guarded(routes, listeners, Guard::open(), shutdown).await
}

/// [`serve`], guarded: every call authenticated by `guard`, which stores
/// the caller's principal in its extensions for the services to check.
pub async fn serve_guarded(
    routes: Routes,
    listeners: Vec<Listener>,
    guard: Guard,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shutdown_for_deadline = shutdown.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        let guard = guard.clone();
        tasks.spawn(async move {
            let authenticator = guard.authenticator.clone();
            let clients = authenticator.client_certificates();
            let intercept = move |request| authenticator.intercept(request);
            let router =
                server_builder().layer(tonic::service::InterceptorLayer::new(intercept)).add_routes(routes);
            match (listener, guard.tls) {
                (Listener::Tcp(l), Some(acceptor)) => {
                    let incoming = crate::tls::incoming(l, acceptor, clients);
                    router.serve_with_incoming_shutdown(incoming, shutdown.cancelled()).await
                }
                (Listener::Tcp(l), None) => {
                    // Without TCP_NODELAY every small response waits for the
                    // peer's delayed ACK: 40 ms per round trip.
                    let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, shutdown.cancelled()).await
                }
                (Listener::Unix(l, path), _) => {
                    let result = router
                        .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown.cancelled())
                        .await;
                    let _ = std::fs::remove_file(path);
                    result
                }
            }
        });
    }
    let finished = async {
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        anyhow::Ok(())
    };
    // Streams such as Execute may outlive any reasonable wait: after the
    // grace period the server stops regardless.
    let deadline = async {
        shutdown_for_deadline.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = finished => result,
        () = deadline => {
            tracing::warn!("calls still open {}s after shutdown began; closing them", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    }
}

/// A bearer token a client sends on every call (`authorization: Bearer`).
#[derive(Clone)]
pub struct BearerToken(http::HeaderValue);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            anyhow::bail!("the bearer token is empty");
        }
        let mut value = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the bearer token has characters a header cannot carry"))?;
        // Never logged, never kept in the HPACK table.
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }

    /// The `authorization` header value (marked sensitive).
    pub fn header_value(&self) -> http::HeaderValue {
        self.0.clone()
    }

    /// The token in the file at `path` (surrounding whitespace ignored).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
        BearerToken::new(&text).map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))
    }
}

/// A client's connection to a server, sending its bearer token (if any)
/// with every call.
#[derive(Clone, Debug)]
pub struct Channel {
    inner: tonic::transport::Channel,
    token: Option<BearerToken>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <tonic::transport::Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(BearerToken(value)) = &self.token {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
        self.inner.call(request)
    }
}

/// Opens a channel to `target`: `grpc://host:port`, `http://host:port`,
/// `host:port` or `unix:/path`. The connection is made lazily, on first use,
/// so a client can start before its server.
pub fn channel(target: &str) -> anyhow::Result<Channel> {
    channel_with(target, None, None)
}

/// [`channel`], also to `grpcs://host:port` (or `https://`) with `tls`,
/// sending `token` on every call.
pub fn channel_with(
    target: &str,
    tls: Option<&ClientTls>,
    token: Option<&BearerToken>,
) -> anyhow::Result<Channel> {
    let inner = transport_channel(target, tls)?;
    Ok(Channel { inner, token: token.cloned() })
}

fn transport_channel(target: &str, tls: Option<&ClientTls>) -> anyhow::Result<tonic::transport::Channel> {
    if let Some(rest) = target.strip_prefix("grpcs://").or_else(|| target.strip_prefix("https://")) {
        let tls =
            tls.ok_or_else(|| anyhow::anyhow!("endpoint {target:?}: TLS needs a CA certificate to trust"))?;
        let endpoint = Endpoint::from_shared(format!("https://{rest}"))
            .map_err(|e| anyhow::anyhow!("endpoint {target:?} is not valid: {e}"))?;
        let host = endpoint.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_string();
        let endpoint = tune(endpoint).tls_config(tls.tonic_config(&host)?)?;
        return Ok(endpoint.connect_lazy());
    }
    if let Some(path) = target.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // The URI is required by the API but unused: the connector dials the socket.
        let endpoint = tune(Endpoint::from_static("http://localhost"));
        return Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        })));
    }
    let rest = target.strip_prefix("grpc://").or_else(|| target.strip_prefix("http://")).unwrap_or(target);
    if rest.contains("://") {
        anyhow::bail!(
            "endpoint {target:?}: only grpc://, grpcs://, http://, https:// and unix: endpoints are supported"
        );
    }
    let endpoint = Endpoint::from_shared(format!("http://{rest}"))
        .map_err(|e| anyhow::anyhow!("endpoint {target:?} is not valid: {e}"))?;
    Ok(tune(endpoint).connect_lazy())
}

fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!("127.0.0.1:8980".parse(), Ok(ListenAddress::Tcp("127.0.0.1:8980".parse().unwrap())));
        assert_eq!("[::]:1".parse(), Ok(ListenAddress::Tcp("[::]:1".parse().unwrap())));
        assert_eq!("unix:/run/x.sock".parse(), Ok(ListenAddress::Unix("/run/x.sock".into())));
        assert!("unix:".parse::<ListenAddress>().is_err());
        assert!("localhost".parse::<ListenAddress>().is_err());
    }

    #[tokio::test]
    async fn channels_accept_endpoint_forms() {
        assert!(channel("grpc://127.0.0.1:1").is_ok());
        assert!(channel("127.0.0.1:1").is_ok());
        assert!(channel("unix:/nonexistent").is_ok());
        assert!(channel("https://example.com").is_err(), "TLS without a CA");
        assert!(channel("ftp://example.com").is_err());
    }
}
