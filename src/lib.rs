//! Receive WeChat Pay APIv3 notifications (回调通知) in any tower-based server, correctly.
//!
//! [`WechatPayLayer`] wraps a service (an axum `Router`, a hyper service, any
//! `tower::Service`). For every request it:
//!
//! 1. refuses a `Content-Length` over the limit (413) and missing `Wechatpay-Timestamp`,
//!    `-Nonce`, `-Signature` or `-Serial` headers (400) before reading the body; a
//!    `Wechatpay-Signature-Type` other than `WECHATPAY2-SHA256-RSA2048` is refused (400;
//!    absent or empty means that one);
//! 2. refuses a timestamp more than the tolerance (300 s) from now, either way (401);
//! 3. picks the key named by `Wechatpay-Serial` from its [`KeyRing`] (public keys and
//!    platform certificates at once; an unknown serial may first run a bounded
//!    [`KeyRefresher`](refresh::KeyRefresher); still unknown: 401, logged as an error);
//! 4. reads the body up to the limit (413 beyond it) within the body timeout (408 after
//!    3 s) and verifies RSA-SHA256 over the exact
//!    bytes `timestamp\nnonce\nbody\n` (401 on any failure, including WeChat Pay's
//!    `WECHATPAY/SIGNTEST/` probes, which are counted and logged as probes);
//! 5. decrypts the AES-256-GCM resource with the APIv3 key. A genuine notification we
//!    cannot parse or decrypt is ours to fix, so it gets 500 and WeChat Pay retries;
//! 6. with the [`Dedupe`](dedupe::Dedupe) guard on, claims the event (a copy already handled is
//!    acknowledged, one being handled elsewhere gets 500); then reserves the inner service
//!    (only now: strangers never hold its permits) and calls it with the original body and
//!    a [`Notification`] in the request extensions;
//! 7. answers WeChat Pay from the inner result:
//!
//! | inner result | answer |
//! |---|---|
//! | `Ok`, 2xx | 204, empty (or 200, see [`SuccessReply`]) |
//! | `Ok`, 4xx or 5xx | same status, `{"code":"FAIL","message":"handler failed"}` |
//! | `Ok`, 1xx or 3xx | 500, FAIL body |
//! | `Err(_)` | 500, FAIL body (the error is logged, not sent) |
//! | not ready, or no answer, by the answer deadline | 500, FAIL body |
//!
//! Every failure answer is `application/json` `{"code":"FAIL","message":…}` with a short
//! message that never echoes request data, and carries a [`Rejection`] in its extensions.
//!
//! # Example
//!
//! One notify URL for payments and refunds is common, so the handler takes every kind
//! ([`Notified<Event>`](Notified)) and matches. (A route that takes only
//! `Notified<Transaction>` answers 500 to every refund sent to it, and WeChat Pay retries
//! those for 24 hours.)
//!
//! ```
//! use axum::{Router, routing::post};
//! use http::StatusCode;
//! use tower::ServiceExt;
//! use tower_wechatpay::{Event, Handled, Notified, Retry, WechatPayLayer};
//! use tower_wechatpay::checks::Merchant;
//! # use tower_wechatpay::test_util::{TestSigner, sample_payment, TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM};
//!
//! async fn notified(Notified(event): Notified<Event>) -> Result<Handled, Retry> {
//!     let merchant = Merchant::new("1900012345");
//!     match event {
//!         Event::Payment(payment) => {
//!             // A business failure is acknowledged, explicitly…
//!             if let Err(declined) = merchant.check_payment(&payment) {
//!                 return Ok(Handled::declined(declined));
//!             }
//!             // …while any error propagated with `?` (database down…) makes WeChat Pay
//!             // retry: record_payment(&payment).await?;
//!         }
//!         Event::Refund(refund) => {
//!             if let Err(declined) = merchant.check_refund(&refund) {
//!                 return Ok(Handled::declined(declined));
//!             }
//!             // record_refund(&refund).await?;
//!         }
//!         _ => {} // kinds this shop does not use: acknowledged
//!     }
//!     Ok(Handled::Done)
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = WechatPayLayer::new(TEST_APIV3_KEY)?
//!     .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?;
//! let app = Router::new()
//!     .route("/wechatpay/notify", post(notified))
//!     // `route_layer`: only the routes above; a `GET /health` added below stays open.
//!     .route_layer(layer);
//!
//! # let signed = TestSigner::public_key_mode().notification("TRANSACTION.SUCCESS", &sample_payment()).build()?;
//! let response = app.oneshot(signed.into_request_to("/wechatpay/notify")).await?;
//! assert_eq!(response.status(), StatusCode::NO_CONTENT);
//! # Ok(()) }
//! ```
//!
//! `Handled`, `Retry`, [`Merchant`](checks::Merchant) and the other checks work without axum too; the
//! `axum` feature adds `IntoResponse` for the outcomes and the `Notified` extractor.
//! The whole answer has a deadline ([`WechatPayLayer::answer_deadline`], 4 s from the
//! request's arrival, under WeChat Pay's 5 s) and a panic in a handler is answered 500,
//! so WeChat Pay retries and the server carries on. The layer logs with `tracing`:
//! install a subscriber (e.g. `tracing_subscriber::fmt().init()`) to see why a request
//! was refused. Logs that strangers can trigger are rate-limited (the first, then one
//! line per minute per kind with the count left out).
//!
//! # Layout
//!
//! The root holds what every receiver uses: the layer and its service
//! ([`WechatPayLayer`], [`WechatPay`], [`ResponseFuture`], [`BufferedBody`]), the
//! notification ([`Notification`], [`Event`], and [`Notified`] with the `axum` feature),
//! the handler outcomes ([`Handled`], [`Retry`], [`Declined`]), the keys ([`KeyRing`]) and
//! the errors ([`Rejection`], [`RejectionKind`], [`ConfigError`]). The rest has a module
//! each: [`models`] (the typed resources), [`checks`] (business checks), [`dedupe`] (the
//! guard and its stores), [`refresh`] (the key refresher), [`alert`] (conditions that need a
//! human, delivered to [`WechatPayLayer::on_alert`]), [`extract`] (the extractor's
//! trait and rejection) and, with the `client` feature, `client` (the merchant API client:
//! signed requests, verified answers, platform certificates that refresh themselves, order
//! and refund queries, confirming a notification) and, with `queue` and an engine feature
//! (`queue-sqlite`, `queue-postgres`, `queue-redis`), `queue` (a durable queue for slow
//! work: acknowledged once stored, handled by a worker). With the `v2` feature the layer also
//! takes APIv2 XML notifications on the same route (`WechatPayLayer::v2_key`; models
//! `models::V2Payment`, `models::V2Refund`). Defaults are associated constants, e.g.
//! [`WechatPayLayer::DEFAULT_ANSWER_DEADLINE`], [`dedupe::Dedupe::DEFAULT_LEASE`].
//!
//! # Order
//!
//! Put tracing and metrics layers outside this one (they see the final status and the
//! [`Rejection`]); put nothing that reads or rewrites the body between the server and this
//! layer: the signature covers the exact bytes WeChat Pay sent. This layer enforces its own
//! body limit.
//!
//! # Security
//!
//! - The replay window is the timestamp tolerance (default 300 s, both directions); WeChat
//!   Pay re-signs every retry, so a shorter window costs nothing but clock-skew headroom.
//! - Probes (`WECHATPAY/SIGNTEST/`) are refused like any bad signature and counted
//!   ([`WechatPayLayer::probes_seen`]); WeChat Pay resends them correctly signed.
//! - Keys are parsed once, when added; the APIv3 key is copied into the cipher and the copy
//!   zeroized. `Debug` output never shows a key, the decrypted resource or a payer's openid.
//! - Idempotency stays the handler's job: the same notification arrives more than once.
//!
//! # Crypto backends
//!
//! `aws-lc-rs` (default) or `rustcrypto` (pure Rust: `default-features = false,
//! features = ["rustcrypto"]`). Features are additive: if both end up enabled (another
//! crate in the build, or `--all-features`), aws-lc-rs is used; [`CRYPTO_BACKEND`] says
//! which one a build uses. With neither, the crate does not compile and says why.

pub mod alert;
mod backend;
mod body;
pub mod checks;
#[cfg(feature = "client")]
pub mod client;
mod decrypt;
pub mod dedupe;
mod error;
#[cfg(feature = "axum")]
pub mod extract;
mod future;
mod key_ring;
mod layer;
mod log;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod models;
mod notification;
mod outcome;
mod pem;
mod pipeline;
#[cfg(feature = "queue")]
pub mod queue;
pub mod refresh;
mod reply;
mod service;
#[cfg(feature = "v2")]
mod v2;
mod verify;

#[cfg(feature = "test-util")]
pub mod test_util;

pub use body::BufferedBody;
pub use error::{ConfigError, Rejection, RejectionKind};
#[cfg(feature = "axum")]
pub use extract::Notified;
pub use future::ResponseFuture;
pub use key_ring::KeyRing;
pub use layer::WechatPayLayer;
pub use models::Event;
pub use notification::Notification;
pub use outcome::{Declined, Handled, Retry, into_http_response};
pub use reply::SuccessReply;
pub use service::WechatPay;

/// The crypto backend this build uses: `"aws-lc-rs"` or `"rustcrypto"`.
pub const CRYPTO_BACKEND: &str = backend::BACKEND_NAME;
