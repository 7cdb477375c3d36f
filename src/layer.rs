//! [`WechatPayLayer`]: configuration, and the layer that wraps a service in [`WechatPay`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use tower::Layer;
use zeroize::Zeroize;

use crate::alert::{Alert, Alerts, FailureCounts};
use crate::backend::ResourceCipher;
use crate::dedupe::Dedupe;
use crate::error::{ConfigError, Rejection};
use crate::key_ring::KeyRing;
use crate::notification::Notification;
use crate::pipeline::{Pipeline, system_clock};
use crate::reply::SuccessReply;
use crate::service::WechatPay;

/// WeChat Pay waits 5 s for an answer; a longer deadline would answer a closed connection.
const WECHATPAY_WAITS: Duration = Duration::from_secs(5);

/// A [`tower::Layer`] that verifies, decrypts and answers WeChat Pay APIv3 notifications.
///
/// Requests reach the inner service only after their signature, timestamp and resource
/// were checked; the inner service finds a [`Notification`] in the request extensions.
/// Its answer is then rewritten into exactly what WeChat Pay requires. See
/// [the crate docs](crate) for the full path of a request and the table of answers.
///
/// ```
/// use std::time::Duration;
/// use tower_wechatpay::{SuccessReply, WechatPayLayer};
/// # use tower_wechatpay::test_util::{TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TEST_CERTIFICATE_PEM};
///
/// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
/// let layer = WechatPayLayer::new(TEST_APIV3_KEY)?
///     .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?
///     .add_certificate(TEST_CERTIFICATE_PEM)?
///     .timestamp_tolerance(Duration::from_secs(300))?
///     .answer_deadline(Duration::from_secs(4))?
///     .max_body_size(64 * 1024)
///     .success_reply(SuccessReply::NoContent);
/// assert_eq!(layer.keys().len(), 2);
/// # Ok(()) }
/// ```
///
/// Clones share the key ring, the probe counter, the log rate limits, the alert sink with
/// its rate limits and the failure counts behind [`Alert::KeepsFailing`]; a builder method
/// called on one clone changes that clone only.
#[derive(Clone)]
#[must_use]
pub struct WechatPayLayer {
    pipeline: Arc<Pipeline>,
}

impl WechatPayLayer {
    /// The default timestamp window: WeChat Pay's documented five minutes.
    pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);
    /// The default body limit. Real notifications are 1–2 KiB.
    pub const DEFAULT_MAX_BODY_SIZE: usize = 64 * 1024;
    /// The default body timeout: a body must arrive within 3 s (WeChat Pay itself gives up
    /// after 5 s), so a slow or stalled client cannot hold a task and its buffers.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default answer deadline, from a request's arrival to its answer: under WeChat
    /// Pay's 5 s, so a slow step gets a clear "retry" instead of a timeout in an unknown state.
    pub const DEFAULT_ANSWER_DEADLINE: Duration = Duration::from_secs(4);

    /// A layer that decrypts with this APIv3 key (the 32-character key set in the merchant
    /// platform; its bytes are the AES-256 key) and has no verification keys yet.
    ///
    /// Surrounding ASCII whitespace is trimmed first, so a key read from a file with its
    /// trailing newline works:
    ///
    /// ```
    /// use tower_wechatpay::WechatPayLayer;
    /// # use tower_wechatpay::test_util::TEST_APIV3_KEY;
    ///
    /// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
    /// let from_file = format!("{TEST_APIV3_KEY}\n"); // e.g. std::fs::read("apiv3_key.txt")?
    /// let layer = WechatPayLayer::new(from_file)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::ApiV3KeyLength`] unless the trimmed key is exactly 32 bytes.
    pub fn new(api_v3_key: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        // A sub-slice of the caller's bytes: trimming copies nothing that would need wiping.
        let given = api_v3_key.as_ref().trim_ascii();
        let mut key: [u8; 32] = given
            .try_into()
            .map_err(|_| ConfigError::ApiV3KeyLength { len: given.len() })?;
        let cipher = ResourceCipher::new(&key);
        key.zeroize();
        let cipher = cipher.map_err(|_| ConfigError::ApiV3KeyLength { len: given.len() })?;
        Ok(Self {
            pipeline: Arc::new(Pipeline {
                keys: KeyRing::new(),
                cipher: Arc::new(cipher),
                tolerance_secs: Self::DEFAULT_TIMESTAMP_TOLERANCE.as_secs(),
                max_body_size: Self::DEFAULT_MAX_BODY_SIZE,
                deadline: Self::DEFAULT_ANSWER_DEADLINE,
                body_timeout: Self::DEFAULT_BODY_TIMEOUT,
                dedupe: None,
                clock: system_clock(),
                success: SuccessReply::default(),
                probes: Arc::new(AtomicU64::new(0)),
                noise: Arc::default(),
                drift: Arc::default(),
                alerts: Alerts::none(),
                failures: Arc::new(FailureCounts::new(
                    FailureCounts::DEFAULT_FAILURES,
                    FailureCounts::DEFAULT_FOR_LONGER_THAN,
                )),
                #[cfg(feature = "v2")]
                v2: None,
                #[cfg(feature = "v2")]
                v2_hint: Arc::default(),
            }),
        })
    }

    /// Adds a WeChat Pay public key; see [`KeyRing::add_public_key`].
    ///
    /// # Errors
    /// As [`KeyRing::add_public_key`].
    pub fn add_public_key(self, id: &str, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        self.pipeline.keys.add_public_key(id, pem)?;
        Ok(self)
    }

    /// Adds a platform certificate; see [`KeyRing::add_certificate`].
    ///
    /// # Errors
    /// As [`KeyRing::add_certificate`].
    pub fn add_certificate(self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        self.pipeline.keys.add_certificate(pem)?;
        Ok(self)
    }

    /// Adds every platform certificate in a PEM file; see [`KeyRing::add_certificates`].
    ///
    /// # Errors
    /// As [`KeyRing::add_certificates`].
    pub fn add_certificates(self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        self.pipeline.keys.add_certificates(pem)?;
        Ok(self)
    }

    /// Uses this key ring. Keys added to the layer before, and a refresher installed
    /// before, move into it (so the order of builder calls does not matter). Keep a clone
    /// of `keys` to add or remove keys while the server runs.
    pub fn key_ring(self, keys: KeyRing) -> Self {
        self.with(|pipeline| {
            keys.absorb(&pipeline.keys);
            if pipeline.alerts.delivers() {
                keys.set_alerts(pipeline.alerts.clone());
            }
            pipeline.keys = keys;
        })
    }

    /// Installs a [`KeyRefresher`](crate::refresh::KeyRefresher) on the key ring: run (bounded)
    /// when a notification names a serial the ring does not know. It belongs to the ring,
    /// before or after [`key_ring`](Self::key_ring).
    pub fn key_refresher(self, refresher: crate::refresh::KeyRefresher) -> Self {
        self.pipeline.keys.set_refresher(refresher);
        self
    }

    /// The key ring; changes to it apply to every service this layer made.
    pub fn keys(&self) -> &KeyRing {
        &self.pipeline.keys
    }

    /// How far `Wechatpay-Timestamp` may be from now, in either direction (default 300 s).
    /// Whole seconds; a request exactly at the edge is accepted.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] for less than a second or a fraction of a second
    /// (timestamps are whole seconds).
    pub fn timestamp_tolerance(self, tolerance: Duration) -> Result<Self, ConfigError> {
        if tolerance < Duration::from_secs(1) || tolerance.subsec_nanos() != 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "timestamp tolerance",
                reason: "whole seconds, at least 1 (WeChat Pay timestamps are whole seconds)"
                    .into(),
            });
        }
        Ok(self.with(|pipeline| pipeline.tolerance_secs = tolerance.as_secs()))
    }

    /// The largest body accepted, in bytes (default 64 KiB); larger bodies get 413.
    pub fn max_body_size(self, limit: usize) -> Self {
        self.with(|pipeline| pipeline.max_body_size = limit)
    }

    /// The answer deadline (default 4 s, under WeChat Pay's 5 s): from a request's arrival
    /// to its answer, covering every step (key refresh wait, body, dedupe claim, waiting
    /// for the inner service, the handler, the done marker); each step gets what is left.
    /// A handler still running at the deadline is dropped (cancelled) and WeChat Pay gets
    /// 500, so it retries; a done-marker write still running is finished in the
    /// background and the acknowledgement goes out on time. Needs a tokio runtime with
    /// the timer enabled, as axum and hyper-util servers have.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] for zero or more than 5 s, or if a dedupe lease set
    /// before no longer outlasts it.
    pub fn answer_deadline(self, deadline: Duration) -> Result<Self, ConfigError> {
        if deadline.is_zero() || deadline > WECHATPAY_WAITS {
            return Err(ConfigError::InvalidSetting {
                setting: "answer deadline",
                reason: "more than zero and at most 5 s (WeChat Pay waits 5 s for an answer)"
                    .into(),
            });
        }
        if let Some(dedupe) = &self.pipeline.dedupe {
            dedupe.validate(deadline)?;
        }
        Ok(self.with(|pipeline| pipeline.deadline = deadline))
    }

    /// How long the whole body may take to arrive (default 3 s, and never past the answer
    /// deadline); past it the request gets 408 with a FAIL body and its buffers are freed.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] for zero.
    pub fn body_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::InvalidSetting {
                setting: "body timeout",
                reason: "more than zero".into(),
            });
        }
        Ok(self.with(|pipeline| pipeline.body_timeout = timeout))
    }

    /// Turns on the dedupe guard (off by default): the handler runs at most once at a
    /// time per notification, and not again after it succeeded, across every instance that
    /// shares the store. Takes a store (`InMemoryStore`, `RedisStore`, yours) or a
    /// configured [`Dedupe`], whose docs say what the guard promises.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] if the lease does not outlast the answer deadline
    /// plus the store timeout (a claim could expire under a running handler), or a
    /// duration is out of range (see [`Dedupe::MAX_LEASE`], [`Dedupe::MAX_KEEP_DONE`]).
    pub fn dedupe(self, dedupe: impl Into<Dedupe>) -> Result<Self, ConfigError> {
        let dedupe = dedupe.into();
        dedupe.validate(self.pipeline.deadline)?;
        Ok(self.with(|pipeline| pipeline.dedupe = Some(dedupe)))
    }

    /// How a notification the handler accepted is acknowledged (default 204).
    pub fn success_reply(self, reply: SuccessReply) -> Self {
        self.with(|pipeline| pipeline.success = reply)
    }

    /// Accepts APIv2 (XML) notifications on the same route, with the 32-character APIv2
    /// key (merchant platform, API安全 → API密钥; surrounding whitespace trimmed). Feature
    /// `v2`.
    ///
    /// WeChat Pay still sends v2 XML to v3 integrations: a refund made by hand in the
    /// merchant platform arrives as v2 XML on the notify URL configured there. A body that
    /// starts with `<xml` (after optional whitespace, whatever its `Content-Type`) and
    /// carries no `Wechatpay-*` headers takes the v2 path:
    ///
    /// - a payment's `sign` (MD5 or HMAC-SHA256, chosen by `sign_type`, else by length) is
    ///   verified before anything reaches the handler; a missing one is refused;
    /// - a refund's `req_info` is decrypted (AES-256-ECB under the MD5 of the key): that is
    ///   its authentication, so anything that does not decrypt and parse is refused;
    /// - the handler gets a [`Notification`](crate::Notification) whose
    ///   [`version`](crate::Notification::version) is 2 and whose event is
    ///   [`Event::V2Payment`](crate::Event::V2Payment) or
    ///   [`Event::V2Refund`](crate::Event::V2Refund); its envelope fields are synthesized
    ///   (`id` `v2:` + `nonce_str`, `event_type` `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`,
    ///   `REFUND.CLOSED`, `REFUND.ABNORMAL`, serial `APIv2`) and
    ///   [`resource_json`](crate::Notification::resource_json) holds every field;
    /// - answers are in v2's language: an acknowledgement is 200 with the XML
    ///   `<return_code>SUCCESS</return_code>` body (the only answer that stops v2
    ///   retries), a failure a 5xx (413 for an oversized body) with `return_code` FAIL.
    ///
    /// Without a v2 key, XML notifications are refused (WeChat Pay keeps resending them)
    /// and the log says once what to configure.
    ///
    /// ```
    /// use tower_wechatpay::WechatPayLayer;
    /// # use tower_wechatpay::test_util::TEST_APIV3_KEY;
    /// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
    /// let layer = WechatPayLayer::new(TEST_APIV3_KEY)?
    ///     .v2_key("0123456789abcdefghijABCDEFGHIJ01")?; // std::fs::read("apiv2_key.txt")?
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] unless the trimmed key is 32 printable ASCII bytes.
    #[cfg(feature = "v2")]
    pub fn v2_key(self, key: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let key = crate::v2::V2Key::new(key.as_ref().trim_ascii())?;
        Ok(self.with(|pipeline| pipeline.v2 = Some(key)))
    }

    /// A layer for a merchant that holds only the APIv2 key (no APIv3 key, no WeChat Pay
    /// public key or platform certificate): XML notifications as [`v2_key`](Self::v2_key)
    /// describes; every v3 request is refused (no key can verify it). Feature `v2`.
    ///
    /// # Errors
    /// As [`v2_key`](Self::v2_key).
    #[cfg(feature = "v2")]
    pub fn v2_only(key: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        // No v3 notification can pass verification with an empty key ring, so the APIv3
        // cipher is never reached; it only fills the slot.
        Self::new([0x5a; 32])?.v2_key(key)
    }

    /// Calls `on_alert` for conditions that need a human (a wrong APIv3 key, schema drift,
    /// a failing key refresher or dedupe store, a notification that keeps failing…), at
    /// most once per kind and key per [`alert_interval`](Self::alert_interval). Never for
    /// traffic a stranger can send. See [`alert`](crate::alert) for the kinds and what to
    /// do about each. The closure runs on the request's task: keep it quick.
    ///
    /// ```
    /// use tower_wechatpay::WechatPayLayer;
    /// # use tower_wechatpay::test_util::TEST_APIV3_KEY;
    /// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
    /// let layer = WechatPayLayer::new(TEST_APIV3_KEY)?.on_alert(|alert| {
    ///     tracing::error!(alert = %alert, kind = alert.kind().as_str(), "wechat pay alert");
    /// });
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn on_alert(self, on_alert: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.with(|pipeline| {
            let alerts = Alerts::new(on_alert).interval(pipeline.alerts.interval_setting());
            pipeline.set_alerts(alerts);
        })
    }

    /// Uses this alert sink, with its own rate limit and interval: share one between the
    /// layer and a queue worker.
    pub fn alerts(self, alerts: Alerts) -> Self {
        self.with(|pipeline| pipeline.set_alerts(alerts))
    }

    /// The least time between two alerts of one kind and key (default
    /// [`Alerts::DEFAULT_INTERVAL`], 10 min).
    pub fn alert_interval(self, interval: Duration) -> Self {
        self.with(|pipeline| {
            let alerts = pipeline.alerts.clone().interval(interval);
            pipeline.set_alerts(alerts);
        })
    }

    /// When a notification that keeps failing raises [`Alert::KeepsFailing`]: after
    /// `failures` failed answers for its event (default 3), or once its first failure is
    /// older than `for_longer_than` (default 1 h), whichever comes first. Failures are
    /// counted per layer instance (in memory, across the services it made): with several
    /// instances behind a load balancer each counts what it answered.
    pub fn alert_when_failing(self, failures: u32, for_longer_than: Duration) -> Self {
        self.with(|pipeline| {
            pipeline.failures = Arc::new(FailureCounts::new(failures.max(1), for_longer_than));
        })
    }

    /// The layer's alert sink (its closure and rate limiter), to hand to a queue worker.
    pub fn alert_sink(&self) -> Alerts {
        self.pipeline.alerts.clone()
    }

    /// The clock, as Unix seconds. Tests set a fixed one; the default is the system clock.
    pub fn clock(self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.with(|pipeline| pipeline.clock = Arc::new(now))
    }

    /// The shared pipeline, for a queue worker that opens jobs with this layer's keys.
    #[cfg(feature = "queue")]
    pub(crate) fn shared_pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.pipeline)
    }

    /// How many `WECHATPAY/SIGNTEST/` signature probes this layer (and every service it
    /// made) has refused.
    pub fn probes_seen(&self) -> u64 {
        self.pipeline.probes.load(Ordering::Relaxed)
    }

    /// Verifies and decrypts one notification without tower: the same checks as the
    /// service, over the exact body bytes. Useful for other frameworks and for tests.
    ///
    /// # Errors
    /// The [`Rejection`] the service would answer with.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Notification, Rejection> {
        let checked = self
            .pipeline
            .check_headers(headers)
            .map_err(|problem| self.pipeline.refuse(problem, headers))?;
        self.pipeline.open(&checked, body)
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    // Builder steps run before the layer is shared; if it was cloned already, the change
    // applies to this copy only (the key ring and probe counter stay shared).
    fn with(mut self, change: impl FnOnce(&mut Pipeline)) -> Self {
        match Arc::get_mut(&mut self.pipeline) {
            Some(pipeline) => change(pipeline),
            None => {
                let mut pipeline = self.pipeline.as_ref().clone();
                change(&mut pipeline);
                self.pipeline = Arc::new(pipeline);
            }
        }
        self
    }
}

impl<S> Layer<S> for WechatPayLayer {
    type Service = WechatPay<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WechatPay::new(inner, Arc::clone(&self.pipeline))
    }
}

impl fmt::Debug for WechatPayLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatPayLayer")
            .field("api_v3_key", &format_args!("<redacted>"))
            .field("keys", &self.pipeline.keys)
            .field("tolerance_secs", &self.pipeline.tolerance_secs)
            .field("max_body_size", &self.pipeline.max_body_size)
            .field("answer_deadline", &self.pipeline.deadline)
            .field("body_timeout", &self.pipeline.body_timeout)
            .field("dedupe", &self.pipeline.dedupe)
            .field("alerts", &self.pipeline.alerts)
            .field("success", &self.pipeline.success)
            .finish()
    }
}
