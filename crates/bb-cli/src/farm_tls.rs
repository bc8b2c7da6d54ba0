//! `bb farm --tls` (and `--require-token`): a private CA, a server
//! certificate (for localhost, the host name and its addresses), a client
//! certificate and a token for the workers, and a bearer token for
//! clients, kept in the state directory. A restart reuses them, so the
//! flags printed the first time stay valid; deleting the directory makes
//! new ones.

use crate::farm_config::{path, table, text};
use nix::unistd::User;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The identity the workers' certificate names, which the policy grants
/// `worker`.
pub const WORKER_IDENTITY: &str = "bb-farm-worker";
/// The name of the client token, which the policy grants everything a
/// client does, and `admin`.
pub const CLIENT_IDENTITY: &str = "client";

/// Where the farm's TLS material is.
pub struct FarmCredentials {
    pub ca: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub worker_certificate: PathBuf,
    pub worker_key: PathBuf,
    /// The client token (mode 0600).
    pub token_file: PathBuf,
    /// The workers' token (mode 0600, the worker user's), for when there
    /// is no TLS to present their certificate over.
    pub worker_token_file: PathBuf,
    /// The tokens file the scheduler checks tokens against (hashes only).
    pub tokens_file: PathBuf,
}

impl FarmCredentials {
    fn in_directory(directory: &Path) -> Self {
        FarmCredentials {
            ca: directory.join("ca.pem"),
            server_certificate: directory.join("server.pem"),
            server_key: directory.join("server-key.pem"),
            worker_certificate: directory.join("worker.pem"),
            worker_key: directory.join("worker-key.pem"),
            token_file: directory.join("client-token"),
            worker_token_file: directory.join("worker-token"),
            tokens_file: directory.join("tokens.toml"),
        }
    }

    fn all_exist(&self) -> bool {
        [&self.ca, &self.server_certificate, &self.server_key, &self.worker_certificate, &self.worker_key]
            .into_iter()
            .chain([&self.token_file, &self.worker_token_file, &self.tokens_file])
            .all(|path| path.is_file())
    }

    /// The client token.
    pub fn token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.token_file)?.trim().to_string())
    }
}

/// The credentials in `state/tls`, made when missing. The worker's key is
/// given to `worker_user`, the only user besides this one that reads it.
pub fn prepare(
    state: &Path,
    names: &[String],
    worker_user: Option<&User>,
) -> anyhow::Result<FarmCredentials> {
    let directory = state.join("tls");
    std::fs::create_dir_all(&directory)?;
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o755))?;
    let credentials = FarmCredentials::in_directory(&directory);
    if !credentials.all_exist() {
        make(&credentials, names)?;
    }
    if let Some(user) = worker_user {
        for path in [&credentials.worker_key, &credentials.worker_token_file] {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(credentials)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    Ok(crate::token::write_secret(path, contents)?)
}

fn make(credentials: &FarmCredentials, names: &[String]) -> anyhow::Result<()> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "bb farm CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(&credentials.ca, ca.pem())?;

    let mut server = CertificateParams::new(Vec::<String>::new())?;
    server.distinguished_name.push(DnType::CommonName, "bb farm");
    for name in names {
        server.subject_alt_names.push(match name.parse::<std::net::IpAddr>() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        });
    }
    let key = KeyPair::generate()?;
    std::fs::write(&credentials.server_certificate, server.signed_by(&key, &ca)?.pem())?;
    write_private(&credentials.server_key, &key.serialize_pem())?;

    let mut worker = CertificateParams::new(Vec::<String>::new())?;
    worker.distinguished_name.push(DnType::CommonName, WORKER_IDENTITY);
    let key = KeyPair::generate()?;
    std::fs::write(&credentials.worker_certificate, worker.signed_by(&key, &ca)?.pem())?;
    write_private(&credentials.worker_key, &key.serialize_pem())?;

    let token = crate::token::random_token()?;
    write_private(&credentials.token_file, &format!("{token}\n"))?;
    let worker_token = crate::token::random_token()?;
    write_private(&credentials.worker_token_file, &format!("{worker_token}\n"))?;
    let tokens = toml::Table::from_iter([
        (CLIENT_IDENTITY.to_string(), bb_util::auth::tokens::hash(&token).into()),
        (WORKER_IDENTITY.to_string(), bb_util::auth::tokens::hash(&worker_token).into()),
    ]);
    std::fs::write(&credentials.tokens_file, toml::to_string(&tokens)?)?;
    Ok(())
}

/// The names the server certificate is for: localhost, the host name, the
/// loopback addresses, every address of the host's interfaces, and the
/// address listened on.
pub fn server_names(hostname: &str, listen: std::net::IpAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), hostname.to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let address = interface.address.as_ref();
            if let Some(v4) = address.and_then(|a| a.as_sockaddr_in()) {
                names.push(std::net::IpAddr::V4(v4.ip()).to_string());
            }
            if let Some(v6) = address.and_then(|a| a.as_sockaddr_in6()) {
                names.push(std::net::IpAddr::V6(v6.ip()).to_string());
            }
        }
    }
    if !listen.is_unspecified() {
        names.push(listen.to_string());
    }
    names.sort();
    names.dedup();
    names
}

fn list(values: &[&str]) -> toml::Value {
    toml::Value::Array(values.iter().map(text).collect())
}

/// Credentials required on the scheduler's listeners: clients present the
/// client token, workers their certificate (with `tls`, over which the
/// worker API takes nothing else) or else their token.
pub fn secure_scheduler(config: &mut toml::Table, credentials: &FarmCredentials, tls: bool) {
    let rule = |identity: &str, permissions: &[&str]| {
        table([("identities", list(&[identity])), ("permissions", list(permissions))])
    };
    let client = ["execute", "read", "write-cas", "write-action-cache", "admin"];
    let worker_method = if tls { "certificate" } else { "token" };
    let mut authentication = vec![
        ("tokens_file", path(&credentials.tokens_file)),
        ("listeners", table([("worker", list(&[worker_method]))])),
        (
            "policy",
            toml::Value::Array(vec![rule(CLIENT_IDENTITY, &client), rule(WORKER_IDENTITY, &["worker"])]),
        ),
    ];
    if tls {
        authentication.push(("client_ca", path(&credentials.ca)));
        let files = [
            ("certificate", path(&credentials.server_certificate)),
            ("private_key", path(&credentials.server_key)),
        ];
        config.insert("tls".into(), table(files));
    }
    config.insert("authentication".into(), table(authentication));
}

/// The worker presents its token, or with `tls` its certificate.
pub fn secure_worker(config: &mut toml::Table, credentials: &FarmCredentials, tls: bool, ports: [u16; 2]) {
    if !tls {
        config.insert("token_file".into(), path(&credentials.worker_token_file));
        return;
    }
    let [scheduler_port, storage_port] = ports;
    config.insert("scheduler".into(), text(format!("grpcs://127.0.0.1:{scheduler_port}")));
    config.insert("storage".into(), text(format!("grpcs://127.0.0.1:{storage_port}")));
    let files = [
        ("ca", path(&credentials.ca)),
        ("certificate", path(&credentials.worker_certificate)),
        ("private_key", path(&credentials.worker_key)),
    ];
    config.insert("tls".into(), table(files));
}
