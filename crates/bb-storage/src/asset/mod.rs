//! The Remote Asset API: a client names content by URI and qualifiers, and
//! gets back its digest in the CAS. Answers come from records of earlier
//! fetches and pushes, kept in the Action Cache's store; otherwise the
//! content is fetched from its origin over HTTP(S), checked against the
//! request's checksum, and stored. Only origins the operator lists are
//! fetched from, so the farm is never an open proxy. FetchDirectory takes a
//! tar archive (gzip or not) from the origin and unpacks it into the CAS.

mod archive;
mod origin;
mod qualifiers;
mod records;
mod service;

pub use origin::{AllowedOrigin, Origins};
pub use qualifiers::{Qualifiers, Sri};
pub use records::AssetRecords;
pub use service::{FetchService, PushService, services};

use bb_util::config::{ByteSize, HumanDuration};
use serde::Deserialize;

/// `[storage.remote_asset]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAssetConfig {
    /// Origins content may be fetched from, each `scheme://host` or
    /// `scheme://host:port` (`https://github.com`,
    /// `http://127.0.0.1:8000`); a host of `*.example.org` matches every
    /// subdomain of example.org. Redirects are followed only to listed
    /// origins. Empty (the default): nothing is fetched, and only pushed
    /// assets are served.
    #[serde(default)]
    pub allowed_origins: Vec<AllowedOrigin>,
    /// How long a fetch from an origin may take when the request sets no
    /// timeout.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    /// The longest timeout a request may ask for; longer ones are cut to it.
    #[serde(default = "default_max_fetch_timeout")]
    pub max_fetch_timeout: HumanDuration,
    /// How long a fetched asset is served from its record before the
    /// origin is asked again; also the lifetime of a push with no
    /// `expire_at`.
    #[serde(default = "default_cache_lifetime")]
    pub cache_lifetime: HumanDuration,
    /// Largest asset fetched; a bigger one fails with RESOURCE_EXHAUSTED
    /// and nothing is stored.
    #[serde(default = "default_max_asset_size")]
    pub max_asset_size: ByteSize,
}

fn default_fetch_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_max_fetch_timeout() -> HumanDuration {
    HumanDuration::from_secs(600)
}

fn default_cache_lifetime() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}

fn default_max_asset_size() -> ByteSize {
    ByteSize(1 << 30)
}
