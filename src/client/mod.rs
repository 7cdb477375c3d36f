//! The merchant API client (商户 API): signed requests, verified answers, platform
//! certificates that refresh themselves, and the order and refund queries that confirm a
//! notification (状态验证). Behind the `client` feature.
//!
//! Every request is signed with the merchant API key (`apiclient_key.pem`):
//! `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",
//! serial_no="…",signature="…"` over `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`, with
//! the path and query exactly as sent (path parameters escaped). Every 2xx answer is
//! verified with the same [`KeyRing`] the notification layer uses (signature over
//! `timestamp\nnonce\nbody\n`, timestamp within 5 minutes, `WECHATPAY/SIGNTEST/` probes
//! refused) before any field of it is read: an answer that does not verify is an error,
//! never data. Non-2xx answers become [`ApiError`] with WeChat Pay's code, message,
//! detail and `Request-ID`.
//!
//! ```no_run
//! use tower_wechatpay::KeyRing;
//! use tower_wechatpay::client::Client;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyRing::new(); // the layer's ring: `WechatPayLayer::keys()`
//! let client = Client::builder(
//!     "1900000109",                                   // mchid
//!     "3775B6A45ACD588826D15E583A95F5DD0A1A9C5A",     // merchant API certificate serial
//!     std::fs::read("apiclient_key.pem")?,
//!     keys.clone(),
//! )?
//! .api_v3_key(std::fs::read_to_string("apiv3_key.txt")?.trim())?
//! .build()?;
//! let order = client.query_order_by_transaction_id("4200000000000000000000000001").await?;
//! println!("{} is {}", order.out_trade_no, order.trade_state);
//! # Ok(()) }
//! ```
//!
//! **Transport.** The default is hyper over rustls (no OpenSSL): TLS crypto by rustls's
//! aws-lc-rs provider under the `aws-lc-rs` backend, by its ring provider under
//! `rustcrypto` alone ([`TLS_PROVIDER`]); server certificates checked against the Mozilla
//! roots (`webpki-roots`). The client is tower-native: [`ClientBuilder::build_with_service`]
//! takes any `tower::Service<http::Request<Full<Bytes>>>`, so timeouts, retries, tracing or
//! a test double can be layered around it.
//!
//! **Timeouts and retries.** A call has a total time limit ([`Client::DEFAULT_TIMEOUT`],
//! 10 s, retries included) and connections a connect limit
//! ([`Client::DEFAULT_CONNECT_TIMEOUT`], 5 s). GETs (idempotent) are retried
//! [`Client::DEFAULT_RETRIES`] times on connection errors, 5xx answers and answers that do
//! not verify, after 200 ms, 400 ms, … with jitter; a POST is never repeated.

// `ClientError` carries WeChat Pay's whole error answer; a call that returns it has just
// waited on the network, so its size is noise.
#![allow(clippy::result_large_err)]

mod certificates;
mod confirm;
mod error;
mod query;
mod refresher;
mod sign;
mod transport;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};

use crate::backend::{ResourceCipher, SigningKey};
use crate::error::ConfigError;
use crate::key_ring::KeyRing;
use crate::verify::{HeaderProblem, check_headers, verify_signature};

pub use certificates::PlatformCertificate;
pub use confirm::{Confirmation, Mismatch};
pub use error::{ApiError, ClientError, NotVerified};
pub use query::{OrderQuery, QueriedOrder, RefundQuery};
pub use refresher::{CertificateRefresh, PeriodicRefresh};
pub use transport::{HttpsTransport, TLS_PROVIDER, https_transport};

/// WeChat Pay's merchant API host (the nearest access point).
pub const WECHATPAY_API: &str = "https://api.mch.weixin.qq.com";

/// How far an answer's `Wechatpay-Timestamp` may be from now (WeChat Pay's SDKs: 300 s).
const ANSWER_TOLERANCE_SECS: u64 = 300;
/// The largest answer body read; WeChat Pay's answers are a few KB.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A WeChat Pay merchant API client. Cheap to clone (clones share the configuration and
/// the transport's connection pool).
#[derive(Clone)]
pub struct Client<S = HttpsTransport> {
    shared: Arc<Shared>,
    service: S,
}

struct Shared {
    mchid: String,
    serial: String,
    key: SigningKey,
    keys: KeyRing,
    base: String,
    cipher: Option<ResourceCipher>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    clock: Clock,
    wechatpay_serial: Option<HeaderValue>,
    user_agent: HeaderValue,
    /// Downloaded certificates whose validity has not started yet (`refresher`).
    held: std::sync::Mutex<Vec<refresher::Held>>,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("mchid", &self.shared.mchid)
            .field("merchant_serial", &self.shared.serial)
            .field("base_url", &self.shared.base)
            .field("merchant_key", &format_args!("<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Configures a [`Client`]; from [`Client::builder`].
#[must_use]
pub struct ClientBuilder {
    mchid: String,
    serial: String,
    key: SigningKey,
    keys: KeyRing,
    base: String,
    cipher: Option<ResourceCipher>,
    connect_timeout: Duration,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    clock: Clock,
    wechatpay_serial: Option<HeaderValue>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("mchid", &self.mchid)
            .field("merchant_serial", &self.serial)
            .field("base_url", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The total time limit of one call, retries included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The time limit for opening a connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How many times a GET is repeated after a connection error, a 5xx or an answer that
    /// did not verify ("一般重试2~3次", WeChat Pay's guidance).
    pub const DEFAULT_RETRIES: u32 = 2;

    /// Starts a client for merchant `mchid` signing with `merchant_key_pem` (the merchant
    /// API private key, `apiclient_key.pem`: PKCS#8, or PKCS#1 `RSA PRIVATE KEY`) whose
    /// certificate serial is `merchant_serial`, verifying answers with `keys`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidPem`] / [`ConfigError::InvalidPrivateKey`] if the key does
    /// not parse, [`ConfigError::InvalidSetting`] for an empty mchid or serial, or a key
    /// under 2048 bits.
    pub fn builder(
        mchid: &str,
        merchant_serial: &str,
        merchant_key_pem: impl AsRef<[u8]>,
        keys: KeyRing,
    ) -> Result<ClientBuilder, ConfigError> {
        let mchid = mchid.trim();
        let serial = merchant_serial.trim();
        if mchid.is_empty() || !mchid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::InvalidSetting {
                setting: "mchid",
                reason: "the merchant id is digits (商户号), e.g. 1900000109".into(),
            });
        }
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::InvalidSetting {
                setting: "merchant serial",
                reason: "the merchant API certificate serial is hex (证书序列号): \
                         `openssl x509 -in apiclient_cert.pem -noout -serial`"
                    .into(),
            });
        }
        Ok(ClientBuilder {
            mchid: mchid.to_owned(),
            serial: serial.to_ascii_uppercase(),
            key: merchant_key(merchant_key_pem.as_ref())?,
            keys,
            base: WECHATPAY_API.to_owned(),
            cipher: None,
            connect_timeout: Client::DEFAULT_CONNECT_TIMEOUT,
            timeout: Client::DEFAULT_TIMEOUT,
            retries: Client::DEFAULT_RETRIES,
            backoff: Duration::from_millis(200),
            clock: Arc::new(unix_now),
            wechatpay_serial: None,
        })
    }
}

/// The merchant key from its PEM: PKCS#8 or PKCS#1, RSA 2048 bits or more.
fn merchant_key(pem: &[u8]) -> Result<SigningKey, ConfigError> {
    let mut blocks = crate::pem::parse_all(pem)?.into_iter();
    let (Some(block), None) = (blocks.next(), blocks.next()) else {
        return Err(ConfigError::InvalidPem {
            reason: "more than one pem block where one private key was expected",
        });
    };
    let pkcs8 = block.label == "PRIVATE KEY";
    if let Some(bits) = crate::backend::rsa_private_key_bits(&block.der, pkcs8)
        && bits < crate::backend::MIN_RSA_BITS
    {
        return Err(small_key(bits));
    }
    let key = match block.label.as_str() {
        "PRIVATE KEY" => SigningKey::from_pkcs8_der(&block.der),
        "RSA PRIVATE KEY" => SigningKey::from_pkcs1_der(&block.der),
        _ => {
            return Err(ConfigError::UnexpectedPem {
                found: block.label.clone(),
                expected: "merchant api private key (apiclient_key.pem)",
            });
        }
    }
    .map_err(|_| ConfigError::InvalidPrivateKey)?;
    if key.bits() < crate::backend::MIN_RSA_BITS {
        return Err(small_key(key.bits()));
    }
    Ok(key)
}

fn small_key(bits: usize) -> ConfigError {
    ConfigError::InvalidSetting {
        setting: "merchant key",
        reason: format!("the rsa key has {bits} bits; merchant API keys are rsa-2048"),
    }
}

impl ClientBuilder {
    /// The API's base URL (default [`WECHATPAY_API`]); e.g. `https://api2.mch.weixin.qq.com`
    /// (the backup host) or a local `wechatpay-sim serve`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] unless it is an `http(s)://host[:port]` URL.
    pub fn base_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let trimmed = url.trim().trim_end_matches('/');
        let uri: Uri = trimmed.parse().map_err(|_| ConfigError::InvalidSetting {
            setting: "base url",
            reason: format!("{url:?} is not a url"),
        })?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(ConfigError::InvalidSetting {
                setting: "base url",
                reason: format!("{url:?}: expected https://host[:port]"),
            });
        }
        self.base = trimmed.to_owned();
        Ok(self)
    }

    /// The APIv3 key: needed to decrypt downloaded platform certificates.
    ///
    /// # Errors
    /// [`ConfigError::ApiV3KeyLength`] unless it is 32 bytes.
    pub fn api_v3_key(mut self, key: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let key = key.as_ref();
        let bytes: &[u8; 32] = key
            .try_into()
            .map_err(|_| ConfigError::ApiV3KeyLength { len: key.len() })?;
        self.cipher =
            Some(ResourceCipher::new(bytes).map_err(|_| ConfigError::ApiV3KeyLength { len: 32 })?);
        Ok(self)
    }

    /// The total time limit of one call, retries included (default
    /// [`Client::DEFAULT_TIMEOUT`]). In a notification handler keep it well under the
    /// 5 s WeChat Pay waits for the answer.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] if zero or over 5 minutes.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(ConfigError::InvalidSetting {
                setting: "client timeout",
                reason: "must be more than zero and at most 5 minutes".into(),
            });
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The time limit for opening a connection with the default transport (default
    /// [`Client::DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a GET is repeated (default [`Client::DEFAULT_RETRIES`]; at most 5).
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] over 5.
    pub fn retries(mut self, retries: u32) -> Result<Self, ConfigError> {
        if retries > 5 {
            return Err(ConfigError::InvalidSetting {
                setting: "client retries",
                reason: "at most 5: WeChat Pay asks for 2 to 3".into(),
            });
        }
        self.retries = retries;
        Ok(self)
    }

    /// Sends `Wechatpay-Serial: PUB_KEY_ID_…` on every request, which asks WeChat Pay to
    /// sign its answers with that public key (once the merchant has switched to it).
    ///
    /// # Errors
    /// [`ConfigError::PublicKeyIdFormat`] unless it starts with `PUB_KEY_ID_`.
    pub fn wechatpay_serial(mut self, public_key_id: &str) -> Result<Self, ConfigError> {
        if !public_key_id.starts_with(crate::key_ring::PUBLIC_KEY_ID_PREFIX) {
            return Err(ConfigError::PublicKeyIdFormat);
        }
        self.wechatpay_serial =
            Some(HeaderValue::try_from(public_key_id).map_err(|_| ConfigError::PublicKeyIdFormat)?);
        Ok(self)
    }

    /// The clock for request timestamps and the answer window, as Unix seconds (tests).
    pub fn clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now);
        self
    }

    /// A client on the default transport ([`https_transport`]).
    ///
    /// # Errors
    /// If the TLS configuration cannot be built.
    pub fn build(self) -> Result<Client, ConfigError> {
        let transport = https_transport(self.connect_timeout)?;
        Ok(self.build_with_service(transport))
    }

    /// A client sending through `service`: any tower service taking
    /// `http::Request<Full<Bytes>>` (the default transport with layers around it, or a
    /// test double).
    pub fn build_with_service<S>(self, service: S) -> Client<S> {
        let user_agent = HeaderValue::from_static(concat!(
            "tower-wechatpay/",
            env!("CARGO_PKG_VERSION"),
            " (rust)"
        ));
        Client {
            shared: Arc::new(Shared {
                mchid: self.mchid,
                serial: self.serial,
                key: self.key,
                keys: self.keys,
                base: self.base,
                cipher: self.cipher,
                timeout: self.timeout,
                retries: self.retries,
                backoff: self.backoff,
                clock: self.clock,
                wechatpay_serial: self.wechatpay_serial,
                user_agent,
                held: std::sync::Mutex::default(),
            }),
            service,
        }
    }
}

/// A verified answer: its status, headers and exact body, and the key that signed it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Answer {
    /// The status (2xx).
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, exactly as received.
    pub body: Bytes,
    /// The `Wechatpay-Serial` whose key verified it.
    pub serial: String,
    /// The `Request-ID`.
    pub request_id: Option<String>,
}

impl Answer {
    /// The body as `T`.
    ///
    /// # Errors
    /// [`ClientError::UnexpectedAnswer`] if it does not parse as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|error| ClientError::UnexpectedAnswer {
            reason: error.to_string(),
            request_id: self.request_id.clone(),
        })
    }
}

/// An answer before verification.
pub(crate) struct Raw {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) request_id: Option<String>,
}

impl<S, B> Client<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The merchant id requests are signed for.
    pub fn mchid(&self) -> &str {
        &self.shared.mchid
    }

    /// The key ring answers are verified with.
    pub fn keys(&self) -> &KeyRing {
        &self.shared.keys
    }

    /// A signed `GET` of `target` (path and query, e.g.
    /// `/v3/pay/transactions/id/4200…?mchid=1900000109`; escape path parameters), its
    /// answer verified with the key ring.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get(&self, target: &str) -> Result<Answer, ClientError> {
        self.call(&Method::GET, target, Bytes::new(), |raw| async move {
            self.verified(raw, &self.shared.keys, true).await
        })
        .await
    }

    /// A signed `POST` of a JSON body, its answer verified. Never repeated.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post_json(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ClientError> {
        let body = Bytes::from(body.to_string());
        self.call(&Method::POST, target, body, |raw| async move {
            self.verified(raw, &self.shared.keys, true).await
        })
        .await
    }

    /// Sends a signed request and hands each 2xx answer to `accept`; repeats a GET on
    /// retry-worthy failures of either, within the total timeout.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        method: &Method,
        target: &str,
        body: Bytes,
        accept: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Raw) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let limit = self.shared.timeout;
        let deadline = Instant::now() + limit;
        let retries = if method == Method::GET {
            self.shared.retries
        } else {
            0
        };
        let mut attempt = 0;
        loop {
            let once = async {
                let raw = self.send(method, target, body.clone()).await?;
                accept(raw).await
            };
            let result = tokio::time::timeout_at(deadline, once)
                .await
                .unwrap_or(Err(ClientError::Timeout(limit)));
            match result {
                Err(error) if attempt < retries && retry_worthy(&error) => {
                    let pause = backoff(self.shared.backoff, attempt);
                    if Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    tracing::debug!(%error, attempt, "retrying a wechat pay api call");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One signed request; a non-2xx answer becomes [`ClientError::Api`].
    async fn send(&self, method: &Method, target: &str, body: Bytes) -> Result<Raw, ClientError> {
        let shared = &self.shared;
        let uri: Uri = format!("{}{target}", shared.base).parse().map_err(|_| {
            ClientError::InvalidArgument {
                name: "request target",
                reason: "does not make a valid url with the base url",
            }
        })?;
        let signed_target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let authorization = sign::authorization(
            &shared.key,
            &shared.mchid,
            &shared.serial,
            &sign::Signed {
                method: method.as_str(),
                target: signed_target,
                timestamp: (shared.clock)(),
                nonce: &sign::nonce()?,
                body: &body,
            },
        )?;
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::try_from(authorization).map_err(|_| ClientError::Signing)?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, shared.user_agent.clone());
        if !body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(serial) = &shared.wechatpay_serial {
            headers.insert(crate::verify::SERIAL, serial.clone());
        }
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| ClientError::Transport(error.into()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(ClientError::Transport)?
            .to_bytes();
        let request_id = parts
            .headers
            .get("request-id")
            .and_then(|id| id.to_str().ok())
            .map(str::to_owned);
        if !parts.status.is_success() {
            return Err(ClientError::Api(api_error(parts.status, &body, request_id)));
        }
        Ok(Raw {
            status: parts.status,
            headers: parts.headers,
            body,
            request_id,
        })
    }

    /// Verifies `raw` with `keys`: signature over the exact body, timestamp window, no
    /// probe. An unknown serial waits for the ring's refresher once, if `refresh`.
    pub(crate) async fn verified(
        &self,
        raw: Raw,
        keys: &KeyRing,
        refresh: bool,
    ) -> Result<Answer, ClientError> {
        let mut waited = !refresh;
        loop {
            let now = (self.shared.clock)();
            let problem =
                match check_headers(&raw.headers, keys, now, ANSWER_TOLERANCE_SECS, usize::MAX) {
                    Ok(checked) => match verify_signature(&checked, &raw.body) {
                        Ok(()) => {
                            return Ok(Answer {
                                status: raw.status,
                                serial: checked.key.serial.to_string(),
                                headers: raw.headers,
                                body: raw.body,
                                request_id: raw.request_id,
                            });
                        }
                        Err(_) => "the signature does not match the body".to_owned(),
                    },
                    Err(HeaderProblem::UnknownSerial { .. }) if !waited => {
                        waited = true;
                        if let Some(wait) = keys.wait_for_refresh() {
                            wait.await;
                        }
                        continue;
                    }
                    Err(problem) => describe(problem, now),
                };
            return Err(ClientError::NotVerified(NotVerified {
                reason: problem,
                serial: raw
                    .headers
                    .get(crate::verify::SERIAL)
                    .and_then(|serial| serial.to_str().ok())
                    .map(str::to_owned),
                request_id: raw.request_id,
            }));
        }
    }

    pub(crate) fn shared_cipher(&self) -> Option<&ResourceCipher> {
        self.shared.cipher.as_ref()
    }

    #[allow(dead_code)] // for the certificate refresher
    pub(crate) fn now(&self) -> i64 {
        (self.shared.clock)()
    }
}

fn describe(problem: HeaderProblem, now: i64) -> String {
    match problem {
        HeaderProblem::TooLarge => "the answer is too large".to_owned(),
        HeaderProblem::Missing(header) => format!("{header} is missing"),
        HeaderProblem::Invalid(rejection) => rejection.message().to_owned(),
        HeaderProblem::Stale { timestamp } => format!(
            "Wechatpay-Timestamp is {} s from this machine's clock (at most {ANSWER_TOLERANCE_SECS} s)",
            timestamp.saturating_sub(now).unsigned_abs()
        ),
        HeaderProblem::Probe { .. } => "a WECHATPAY/SIGNTEST/ signature probe".to_owned(),
        HeaderProblem::UnknownSerial { hint, .. } => {
            format!("signed by a key the key ring does not hold: {hint}")
        }
        HeaderProblem::KeyNotValid { .. } => {
            "signed by a platform certificate outside its validity".to_owned()
        }
    }
}

/// Whether a failed attempt is worth repeating: the connection, a 5xx, an answer that
/// did not verify. Not a timeout (the time is spent) nor a refusal.
fn retry_worthy(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::NotVerified(_) => true,
        ClientError::Api(api) => api.status.is_server_error(),
        _ => false,
    }
}

/// `base`, doubled per attempt, with up to 50 % jitter so instances do not retry in step.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let pause = base.saturating_mul(2u32.saturating_pow(attempt));
    let mut random = [0u8; 1];
    let jitter = if getrandom::fill(&mut random).is_ok() {
        pause.mul_f64(f64::from(random[0]) / 510.0)
    } else {
        Duration::ZERO
    };
    pause + jitter
}

/// WeChat Pay's `{code, message, detail}`; a body that is not that JSON keeps its status.
fn api_error(status: StatusCode, body: &[u8], request_id: Option<String>) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    let parsed = serde_json::from_slice::<Body>(body).ok();
    let (code, message, detail) = match parsed {
        Some(body) => (body.code, body.message, body.detail),
        None => (String::new(), String::new(), None),
    };
    ApiError {
        status,
        code,
        message,
        detail,
        request_id,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8: &str = include_str!("../test_util/keys/stranger.key.pem");
    const PKCS1: &str = include_str!("../../tests/keys/stranger.pkcs1.key.pem");
    const RSA1024: &str = include_str!("../../tests/keys/rsa1024.key.pem");
    const CERTIFICATE: &str = include_str!("../test_util/keys/certificate_mode.cert.pem");

    fn builder(key: &str) -> Result<ClientBuilder, ConfigError> {
        Client::builder(
            "1900000109",
            "5157F09EFDC096DE15EBE81A47057A72",
            key,
            KeyRing::new(),
        )
    }

    #[test]
    fn the_merchant_key_may_be_pkcs8_or_pkcs1() {
        assert!(builder(PKCS8).is_ok());
        assert!(builder(PKCS1).is_ok());
    }

    #[test]
    fn a_small_key_or_a_certificate_is_refused_as_the_merchant_key() {
        let small = builder(RSA1024).unwrap_err();
        assert!(small.to_string().contains("1024 bits"), "{small}");
        let certificate = builder(CERTIFICATE).unwrap_err();
        assert!(
            matches!(certificate, ConfigError::UnexpectedPem { .. }),
            "{certificate}"
        );
        assert!(matches!(
            builder("not a pem").unwrap_err(),
            ConfigError::InvalidPem { .. }
        ));
    }

    #[test]
    fn the_mchid_serial_and_base_url_are_checked() {
        let refused = |result: Result<ClientBuilder, ConfigError>| {
            matches!(result, Err(ConfigError::InvalidSetting { .. }))
        };
        assert!(refused(Client::builder(
            "19000x",
            "AB",
            PKCS8,
            KeyRing::new()
        )));
        assert!(refused(Client::builder(
            "1900000109",
            "not hex",
            PKCS8,
            KeyRing::new()
        )));
        let ok = builder(PKCS8).unwrap();
        assert!(ok.base_url("ftp://api.mch.weixin.qq.com").is_err());
        let ok = builder(PKCS8).unwrap();
        assert!(ok.base_url("https://api2.mch.weixin.qq.com/").is_ok());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let client = builder(PKCS8)
            .unwrap()
            .build_with_service(tower::service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        let debug = format!("{client:?}");
        assert!(
            debug.contains("<redacted>") && debug.contains("1900000109"),
            "{debug}"
        );
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
