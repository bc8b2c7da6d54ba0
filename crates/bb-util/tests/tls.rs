//! TLS on a real listener: a client trusting the server's CA gets through;
//! plaintext and a client trusting another CA do not; a certificate
//! replaced on disk is served without a restart. Mutual TLS: a client
//! certificate from the client CA names its holder; one from another CA,
//! or none, gets UNAUTHENTICATED.

use bb_proto::reapi;
use bb_proto::reapi::capabilities_server::{Capabilities, CapabilitiesServer};
use bb_util::auth::{Authentication, AuthenticationConfig};
use bb_util::tls::{ClientTls, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Answer;

#[tonic::async_trait]
impl Capabilities for Answer {
    async fn get_capabilities(
        &self,
        _request: tonic::Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<tonic::Response<reapi::ServerCapabilities>, tonic::Status> {
        Ok(tonic::Response::new(reapi::ServerCapabilities::default()))
    }
}

/// A CA, written to `dir/NAME.pem`; returns it to sign with.
fn ca(dir: &Path, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), ca.pem()).unwrap();
    ca
}

/// A certificate for `names` signed by `ca`, written where `tls` says.
fn certificate(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str], tls: &ServerTls) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, ca).unwrap();
    std::fs::write(&tls.private_key, key.serialize_pem()).unwrap();
    std::fs::write(&tls.certificate, certificate.pem()).unwrap();
}

fn server_certificate(ca: &CertifiedIssuer<'static, KeyPair>, tls: &ServerTls) {
    certificate(ca, &["localhost", "127.0.0.1"], tls);
}

async fn capabilities(target: &str, ca: Option<&Path>) -> Result<(), String> {
    capabilities_as(target, ca, None).await
}

/// Capabilities through `target`, trusting `ca`, presenting `client`.
async fn capabilities_as(target: &str, ca: Option<&Path>, client: Option<&ServerTls>) -> Result<(), String> {
    let tls = ca.map(|ca| ClientTls {
        ca: ca.to_owned(),
        certificate: client.map(|c| c.certificate.clone()),
        private_key: client.map(|c| c.private_key.clone()),
    });
    let channel = bb_util::grpc::channel_with(target, tls.as_ref(), None).map_err(|e| e.to_string())?;
    let mut client = reapi::capabilities_client::CapabilitiesClient::new(channel);
    let request = reapi::GetCapabilitiesRequest::default();
    tokio::time::timeout(Duration::from_secs(10), client.get_capabilities(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map(|_| ())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

#[tokio::test]
async fn tls_listeners_admit_only_clients_trusting_their_ca_and_reload_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, second_ca) = (ca(dir.path(), "first-ca"), ca(dir.path(), "second-ca"));
    let tls = ServerTls {
        certificate: dir.path().join("server.pem"),
        private_key: dir.path().join("server-key.pem"),
    };
    server_certificate(&first_ca, &tls);

    let listeners = bb_util::grpc::bind_all(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
    let address = listeners[0].local_address().unwrap().to_string();
    let routes = tonic::service::Routes::new(CapabilitiesServer::new(Answer));
    let shutdown = CancellationToken::new();
    let guard =
        bb_util::grpc::Guard::new(Some(&tls), Authentication::off().listener("t", &[]).unwrap()).unwrap();
    let serving = tokio::spawn(bb_util::grpc::serve_guarded(routes, listeners, guard, shutdown.clone()));

    let port = address.rsplit(':').next().unwrap();
    let secure = format!("grpcs://localhost:{port}");
    let (first, second) = (dir.path().join("first-ca.pem"), dir.path().join("second-ca.pem"));
    assert_eq!(capabilities(&secure, Some(&first)).await, Ok(()), "a client trusting the server's CA");
    assert!(capabilities(&format!("grpc://{address}"), None).await.is_err(), "plaintext to a TLS port");
    assert!(capabilities(&secure, Some(&second)).await.is_err(), "a client trusting another CA");

    // Rotated on disk: new connections get the new certificate.
    server_certificate(&second_ca, &tls);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(capabilities(&secure, Some(&second)).await, Ok(()), "the new certificate is served");
    assert!(capabilities(&secure, Some(&first)).await.is_err(), "the old one is not");
    // A broken file keeps the last good certificate in service.
    std::fs::write(&tls.certificate, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(capabilities(&secure, Some(&second)).await, Ok(()), "kept through a bad file");

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_certificates_from_the_client_ca_only_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, other_ca) =
        (ca(dir.path(), "server-ca"), ca(dir.path(), "client-ca"), ca(dir.path(), "other-ca"));
    let files = |name: &str| ServerTls {
        certificate: dir.path().join(format!("{name}.pem")),
        private_key: dir.path().join(format!("{name}-key.pem")),
    };
    let tls = files("server");
    server_certificate(&server_ca, &tls);
    let (worker, stranger) = (files("worker"), files("stranger"));
    certificate(&client_ca, &["worker1.farm"], &worker);
    certificate(&other_ca, &["worker1.farm"], &stranger);

    let config =
        AuthenticationConfig { client_ca: Some(dir.path().join("client-ca.pem")), ..Default::default() };
    let authentication = Authentication::new(&config, &["t"]).unwrap();
    let listeners = bb_util::grpc::bind_all(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
    let port = listeners[0].local_address().unwrap().to_string().rsplit(':').next().unwrap().to_string();
    let guard = bb_util::grpc::Guard::new(Some(&tls), authentication.listener("t", &[]).unwrap()).unwrap();
    let routes = tonic::service::Routes::new(CapabilitiesServer::new(Answer));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(bb_util::grpc::serve_guarded(routes, listeners, guard, shutdown.clone()));

    let secure = format!("grpcs://localhost:{port}");
    let trusted = dir.path().join("server-ca.pem");
    assert_eq!(capabilities_as(&secure, Some(&trusted), Some(&worker)).await, Ok(()));
    let refused = capabilities_as(&secure, Some(&trusted), Some(&stranger)).await.unwrap_err();
    assert!(refused.contains("Unauthenticated") && refused.contains("not accepted"), "{refused}");
    let anonymous = capabilities_as(&secure, Some(&trusted), None).await.unwrap_err();
    assert!(anonymous.contains("Unauthenticated") && anonymous.contains("client certificate"), "{anonymous}");

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}

#[test]
fn unreadable_or_empty_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls { certificate: dir.path().join("none.pem"), private_key: dir.path().join("key.pem") };
    let error = tls.acceptor(None).err().unwrap().to_string();
    assert!(error.contains("none.pem"), "{error}");
    std::fs::write(&tls.certificate, "").unwrap();
    let error = tls.acceptor(None).err().unwrap().to_string();
    assert!(error.contains("no PEM certificate"), "{error}");
}
