//! The default HTTP transport: hyper over rustls, HTTP/1.1, a connection pool.
//!
//! TLS crypto follows the crate's backend: rustls's aws-lc-rs provider under `aws-lc-rs`
//! (the default), its ring provider under `rustcrypto` alone (rustls has no production
//! pure-Rust provider). Server certificates are checked against the Mozilla root store
//! (`webpki-roots`), so no system certificate store or OpenSSL is needed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::ConfigError;

/// The default transport: a hyper client over rustls. Any tower service with the same
/// request and response types can stand in (see [`ClientBuilder::build_with_service`]).
///
/// [`ClientBuilder::build_with_service`]: crate::client::ClientBuilder::build_with_service
pub type HttpsTransport = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long pooled connections stay open: WeChat Pay closes idle ones after 8 s, so 7 s
/// avoids sending on a connection the server is closing.
const POOL_IDLE: Duration = Duration::from_secs(7);

/// The name of the TLS crypto provider this build uses.
pub const TLS_PROVIDER: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "ring"
};

/// The default transport, connecting within `connect_timeout`. Plain `http://` is
/// allowed too (a local simulator); WeChat Pay itself is only reached over HTTPS.
///
/// # Errors
/// [`ConfigError::InvalidSetting`] if the TLS configuration cannot be built.
pub fn https_transport(connect_timeout: Duration) -> Result<HttpsTransport, ConfigError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ConfigError::InvalidSetting {
            setting: "tls",
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector))
}

#[cfg(feature = "aws-lc-rs")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(not(feature = "aws-lc-rs"))]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
