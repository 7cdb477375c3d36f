//! `wechatpay-sim serve`: a local merchant API (商户 API) that answers as WeChat Pay does.
//!
//! It verifies the merchant's `Authorization` signature, signs every accepted answer with
//! the platform certificate or the WeChat Pay public key, serves `GET /v3/certificates`,
//! and answers order and refund queries about orders made through its control endpoints
//! (`POST /sim/pay`, `POST /sim/refund`), delivering their notifications on WeChat Pay's
//! schedule.
//!
//! Routes (see [`app`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v3/certificates` | the platform certificates, encrypted; public-key mode: see [`CertificatesAnswer`] |
//! | `GET /v3/pay/transactions/id/{transaction_id}?mchid=` | a direct order |
//! | `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=` | a direct order |
//! | `GET /v3/pay/partner/transactions/id/{transaction_id}?sp_mchid=&sub_mchid=` | a partner order |
//! | `GET /v3/pay/partner/transactions/out-trade-no/{out_trade_no}?sp_mchid=&sub_mchid=` | a partner order |
//! | `GET /v3/refund/domestic/refunds/{out_refund_no}[?sub_mchid=]` | a refund |
//! | `POST /sim/pay` | creates a paid order (unauthenticated) |
//! | `POST /sim/refund` | refunds it (unauthenticated) |

mod api;
mod log;
mod orders;
mod platform;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tower_wechatpay::test_util::TestSigner;

use crate::cli::ServeArgs;
pub use crate::cli::{CertificatesAnswer, ServeMode};
use crate::error::{SimError, context};
use crate::keys::{Keys, PlatformCertificate};
pub use log::Log;
use platform::Platform;

/// The state of one running merchant API: the keys, the platform certificates (more than
/// one after a rotation) and the orders.
pub struct Server {
    keys: Keys,
    mode: ServeMode,
    certificates_answer: CertificatesAnswer,
    /// The merchant API public key, SPKI DER: requests are verified with it.
    merchant_key: Vec<u8>,
    public_key: Arc<TestSigner>,
    /// Oldest first; the last one is the current one.
    platforms: RwLock<Vec<Arc<Platform>>>,
    book: Mutex<orders::Book>,
    log: Log,
    requests: AtomicU64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("keys", &self.keys)
            .field("mode", &self.mode)
            .field("certificates_answer", &self.certificates_answer)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `keys` signing as `mode`; in public-key mode `/v3/certificates` gives
    /// `certificates_answer`. Progress lines (deliveries, rotations) go to `log`.
    pub fn new(
        keys: Keys,
        mode: ServeMode,
        certificates_answer: CertificatesAnswer,
        log: Log,
    ) -> Result<Arc<Self>, SimError> {
        let merchant_key =
            platform::pem_der(&keys.merchant_public_key_pem, "PUBLIC KEY").map_err(context(
                keys.dir
                    .join(crate::keys::file::MERCHANT_PUBLIC_KEY)
                    .display(),
            ))?;
        let public_key = Arc::new(keys.signer(crate::keys::Mode::PublicKey)?);
        let first = Platform::new(&keys.platform, &keys.api_v3_key)?;
        Ok(Arc::new(Self {
            keys,
            mode,
            certificates_answer,
            merchant_key,
            public_key,
            platforms: RwLock::new(vec![Arc::new(first)]),
            book: Mutex::new(orders::Book::default()),
            log,
            requests: AtomicU64::new(0),
        }))
    }

    /// The keys it serves.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The serials of the platform certificates it holds, oldest first (the last one signs).
    pub fn platform_serials(&self) -> Vec<String> {
        self.platforms()
            .iter()
            .map(|platform| platform.certificate.serial.clone())
            .collect()
    }

    /// Adds `certificate` as the newest platform certificate: certificate-mode answers are
    /// signed with it from now on, and `/v3/certificates` lists it with the older ones.
    pub fn add_platform_certificate(
        &self,
        certificate: &PlatformCertificate,
    ) -> Result<(), SimError> {
        let platform = Arc::new(Platform::new(certificate, &self.keys.api_v3_key)?);
        self.platforms
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(platform);
        Ok(())
    }

    /// Makes a fresh platform certificate, adds it (see
    /// [`add_platform_certificate`](Self::add_platform_certificate)), logs the rotation and
    /// returns the new serial.
    pub async fn rotate(&self) -> Result<String, SimError> {
        let certificate = tokio::task::spawn_blocking(PlatformCertificate::generate)
            .await
            .map_err(context("making a new platform certificate"))??;
        self.add_platform_certificate(&certificate)?;
        self.log.line(format!(
            "rotated: new platform certificate {} (signing with it from now on; /v3/certificates lists both)",
            certificate.serial
        ));
        Ok(certificate.serial)
    }

    fn platforms(&self) -> Vec<Arc<Platform>> {
        self.platforms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current (newest) platform certificate.
    fn current_platform(&self) -> Option<Arc<Platform>> {
        self.platforms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }

    fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }
}

/// The merchant API as a router: the `/v3/…` routes behind the signature check and the
/// response signer, the `/sim/…` control routes open, a `Request-ID` on every answer.
pub fn app(server: Arc<Server>) -> Router {
    let v3 = Router::new()
        .route("/v3/certificates", get(platform::certificates))
        .route(
            "/v3/pay/transactions/id/{transaction_id}",
            get(orders::direct_by_id),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            get(orders::direct_by_out_trade_no),
        )
        .route(
            "/v3/pay/partner/transactions/id/{transaction_id}",
            get(orders::partner_by_id),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{out_trade_no}",
            get(orders::partner_by_out_trade_no),
        )
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(orders::refund_query),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&server),
            api::merchant_api,
        ));
    Router::new()
        .route("/sim/pay", post(orders::sim_pay))
        .route("/sim/refund", post(orders::sim_refund))
        .merge(v3)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&server),
            api::request_id,
        ))
        .with_state(server)
}

/// Runs `serve`: binds, prints `listening on http://ADDR`, rotates when asked, and serves
/// until killed. Bad keys or a bad or taken address are errors.
pub async fn run(args: &ServeArgs) -> Result<bool, SimError> {
    let keys = Keys::load(&args.keys)?;
    let listener = tokio::net::TcpListener::bind(args.listen.as_str())
        .await
        .map_err(context(format!("--listen {}", args.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(context(format!("--listen {}", args.listen)))?;
    let log = Log::stdout();
    let server = Server::new(keys, args.mode, args.certificates_answer, log.clone())?;
    log.line(format!("listening on http://{addr}"));
    if let Some(secs) = args.rotate_after {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            if let Err(error) = server.rotate().await {
                server.log.line(format!("rotation failed: {error}"));
            }
        });
    }
    axum::serve(listener, app(server))
        .await
        .map_err(context(format!("serving on {addr}")))?;
    Ok(true)
}
