//! The HTTP side of a program: status pages and `/metrics`, over HTTPS
//! when its gRPC listeners have TLS, with the same credentials.
//!
//! One rule for every page: reading (GET, HEAD) needs the `read`
//! permission on some instance, unless the pages are public; anything
//! else (drain, undrain) needs `admin`, and is refused when a browser sends
//! it from another site's page. A browser may present a token as the
//! password of HTTP basic authentication (it asks when answered 401).

use crate::auth::{Authenticator, Permission, Principal};
use crate::grpc::Guard;
use crate::tls::TlsPeer;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderValue, Method, StatusCode, header};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// A TCP listener, with TLS or without.
pub struct HttpListener {
    local: std::net::SocketAddr,
    accept: Accept,
}

enum Accept {
    Plain(TcpListener),
    Tls(std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<crate::tls::Accepted>> + Send>>),
}

impl axum::serve::Listener for HttpListener {
    type Io = Either<TcpStream, crate::tls::Accepted>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, TlsPeer) {
        use futures::StreamExt;
        loop {
            match &mut self.accept {
                Accept::Plain(listener) => match TcpListener::accept(listener).await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        return (Either::Left(stream), TlsPeer::default());
                    }
                    Err(e) => {
                        tracing::warn!("accepting an HTTP connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Accept::Tls(incoming) => match incoming.next().await {
                    Some(Ok(accepted)) => {
                        let peer = accepted.peer().clone();
                        return (Either::Right(accepted), peer);
                    }
                    Some(Err(e)) => tracing::warn!("accepting an HTTPS connection: {e}"),
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<TlsPeer> {
        Ok(TlsPeer::default())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>> for TlsPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Serves `router` on `listener` until `shutdown` fires, every request
/// authenticated and authorized by `guard`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    guard: Guard,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (tls, authenticator) = guard.into_parts();
    let accept = match tls {
        Some(acceptor) => {
            let clients = authenticator.client_certificates();
            Accept::Tls(Box::pin(crate::tls::incoming(listener, acceptor, clients)))
        }
        None => Accept::Plain(listener),
    };
    let listener = HttpListener { local, accept };
    tracing::debug!("HTTP on {}", listener.local);
    let router = router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let authenticator = authenticator.clone();
        async move { guarded(&authenticator, request, next).await }
    }));
    axum::serve(listener, router.into_make_service_with_connect_info::<TlsPeer>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = (status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = HeaderValue::from_static("Basic realm=\"buildbarn\", charset=\"UTF-8\"");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The bearer form of an `authorization` header: basic credentials give
/// their password as the token.
fn bearer(header: &str) -> Option<String> {
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return Some(header.to_string());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(format!("Bearer {password}"))
}

/// Whether a browser sent this from a page of another site.
fn cross_site(request: &Request) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host != host
}

async fn guarded(authenticator: &Authenticator, mut request: Request, next: Next) -> Response {
    let certificate =
        request.extensions().get::<ConnectInfo<TlsPeer>>().and_then(|c| c.0.certificate.clone());
    let header =
        request.headers().get(header::AUTHORIZATION).map(|value| value.to_str().ok().and_then(bearer));
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let principal = match header {
        Some(None) => {
            return refuse(StatusCode::UNAUTHORIZED, "the authorization header does not parse".into());
        }
        Some(Some(header)) => authenticator.authenticate(Some(&header), &certificate),
        None if reading && authenticator.pages_are_public() => Ok(Principal::viewer()),
        None => authenticator.authenticate(None, &certificate),
    };
    let principal = match principal {
        Ok(principal) => principal,
        Err(status) => return refuse(StatusCode::UNAUTHORIZED, status.message().to_string()),
    };
    let needed = if reading { Permission::Read } else { Permission::Admin };
    if !principal.may_somewhere(needed) {
        let message = format!("{} lacks the {needed} permission", principal.name());
        return refuse(StatusCode::FORBIDDEN, message);
    }
    if !reading && cross_site(&request) {
        return refuse(StatusCode::FORBIDDEN, "refused: sent from another site's page".into());
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_carry_the_token_as_their_password() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("me:tok3n");
        assert_eq!(bearer(&format!("Basic {encoded}")).as_deref(), Some("Bearer tok3n"));
        assert_eq!(bearer("Bearer x").as_deref(), Some("Bearer x"));
        assert_eq!(bearer("Basic !!!"), None);
    }
}
