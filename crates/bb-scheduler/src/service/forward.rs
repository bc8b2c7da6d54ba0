//! With remote storage, the scheduler's client port still serves the CAS,
//! the Action Cache and ByteStream, by forwarding those calls unchanged to
//! the storage endpoint: one endpoint is all a client needs to be told, as
//! with Buildbarn's frontend. Calls are passed on as HTTP/2 streams, never
//! decoded, so streaming reads and writes cost no copies here.
//!
//! Since calls are not decoded, their instance names are not known here:
//! with authentication on, bb-storage authorizes each call itself, with
//! the caller's own bearer token passed on over a channel that presents
//! none of the scheduler's credentials (no token, no client certificate).
//! A caller known only by its client certificate cannot be vouched for
//! this way and is refused.

use bb_util::grpc::Channel;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

/// Forwards every call of one service to `channel`.
#[derive(Clone)]
pub struct Forward<N> {
    channel: Channel,
    name: std::marker::PhantomData<N>,
}

impl<N> Forward<N> {
    /// Forwards over `channel`, which must present no credentials of its own.
    pub fn new(channel: &Channel) -> Self {
        Forward { channel: channel.clone(), name: std::marker::PhantomData }
    }
}

impl<N: NamedService + Clone + Send + 'static> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Err(status) = passable(&request) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let mut channel = self.channel.clone();
        Box::pin(async move {
            let forwarded = async {
                futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(request).await
            };
            Ok(forwarded.await.unwrap_or_else(|e| {
                tonic::Status::unavailable(format!("{}: the storage behind this scheduler: {e}", N::NAME))
                    .into_http()
            }))
        })
    }
}

/// Whether bb-storage can judge the caller of `request` itself.
fn passable(request: &http::Request<Body>) -> Result<(), tonic::Status> {
    let principal = request
        .extensions()
        .get::<bb_util::auth::Principal>()
        .ok_or_else(|| tonic::Status::internal("served without authentication: refused"))?;
    if principal.is_authenticated() && !request.headers().contains_key(http::header::AUTHORIZATION) {
        return Err(tonic::Status::unauthenticated(
            "not authenticated: the storage behind this scheduler takes bearer tokens; \
             a client certificate alone is not passed on",
        ));
    }
    Ok(())
}

impl<N: NamedService> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

/// The service names forwarded.
macro_rules! forwarded {
    ($($type:ident = $name:literal),* $(,)?) => {
        $(
            #[derive(Clone)]
            pub struct $type;
            impl NamedService for $type {
                const NAME: &'static str = $name;
            }
        )*
    };
}

forwarded! {
    Cas = "build.bazel.remote.execution.v2.ContentAddressableStorage",
    ActionCache = "build.bazel.remote.execution.v2.ActionCache",
    ByteStream = "google.bytestream.ByteStream",
    AssetFetch = "build.bazel.remote.asset.v1.Fetch",
    AssetPush = "build.bazel.remote.asset.v1.Push",
}

/// Routes for the storage services, forwarded to `channel` (one without
/// the scheduler's credentials). The Remote Asset services are UNIMPLEMENTED
/// there unless that bb-storage configures them.
pub fn storage_routes(channel: &Channel) -> tonic::service::Routes {
    tonic::service::Routes::default()
        .add_service(Forward::<Cas>::new(channel))
        .add_service(Forward::<ActionCache>::new(channel))
        .add_service(Forward::<ByteStream>::new(channel))
        .add_service(Forward::<AssetFetch>::new(channel))
        .add_service(Forward::<AssetPush>::new(channel))
}
