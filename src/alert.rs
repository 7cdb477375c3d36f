//! Alerts: conditions that need a human, delivered to your closure, rate-limited, each
//! with what to do.
//!
//! Metrics and logs say what happened; an alert says that someone must act before money
//! is lost (WeChat Pay stops resending a notification 24 h 4 min after its first attempt).
//! Install a closure with [`WechatPayLayer::on_alert`](crate::WechatPayLayer::on_alert):
//! it gets a typed [`Alert`] whose [`Display`](std::fmt::Display) is one line (summary and
//! action) and whose `serde` form is the JSON a chat-bot webhook wants.
//!
//! | kind | raised when | what to do |
//! |---|---|---|
//! | `undecryptable` | a genuine (signature verified) notification does not decrypt, or uses an unsupported algorithm | check the APIv3 key (merchant platform, API安全): wrong, or reset |
//! | `unparsable` | a genuine notification's envelope or resource is not what its model expects (schema drift) | compare with WeChat Pay's docs, update the crate or the handler |
//! | `unknown_serial_after_refresh` | a key refresh ran and the serial is still unknown (forged serials cause this too) | check the configured public key / certificates and the refresher's source |
//! | `refresher_failing` | the key refresher failed, panicked or was abandoned as stuck; or the client's periodic certificate refresh failed | check its network access and merchant API credentials |
//! | `dedupe_unreachable` | the dedupe store did not answer a claim | check the store (Redis): notifications get 500 meanwhile |
//! | `queue_unreachable` | (raised by a queue) an enqueue failed | check the queue's engine |
//! | `keeps_failing` | one event was answered with a failure N times (default 3) or for longer than a set time (default 1 h) | read the handler's logs; WeChat Pay gives up at `wechat_gives_up_unix` |
//! | `dead_lettered` | (raised by a queue worker) a job exhausted its attempts | fix the cause, requeue the job |
//!
//! **Never on traffic a stranger can send.** Bad signatures, probes, stale timestamps,
//! missing headers, oversized or slow bodies stay metrics and (rate-limited) logs: an
//! alert that anyone can fire gets ignored. Every kind but `unknown_serial_after_refresh`
//! is raised only after a notification's signature verified (or from the server's own
//! machinery); that one has a single rate-limit slot, so a flood of forged serials gives
//! at most one alert per interval.
//!
//! **Rate limit.** At most one delivery per kind and [key](Alert::key) per interval
//! ([`Alerts::DEFAULT_INTERVAL`], 10 min): a `keeps_failing` alert per event, one
//! `dedupe_unreachable` for an outage. The limiter remembers at most 1024 keys; beyond
//! that, alerts of a kind share one slot.
//!
//! **Alerts never carry secrets**: no key, signature, plaintext resource or payer id;
//! ids, event types and error messages of our own machinery only.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_wechatpay::WechatPayLayer;
//! use tower_wechatpay::alert::{Alert, AlertKind};
//! # use tower_wechatpay::test_util::{TestSigner, sample_payment, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM};
//! # use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let raised = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&raised);
//! // This layer has another APIv3 key than the one WeChat Pay encrypts with.
//! let layer = WechatPayLayer::new("0123456789abcdef0123456789abcdef")?
//!     .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)?
//!     .on_alert(move |alert: &Alert| {
//!         // In production: log it, post `serde_json::to_string(alert)` to a chat webhook.
//!         eprintln!("ALERT {alert}");
//!         sink.lock().unwrap().push(alert.kind());
//!     });
//! # let service = tower::ServiceBuilder::new().layer(layer).service_fn(|_req| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(tower_wechatpay::BufferedBody::empty()))
//! # });
//! # let signed = TestSigner::public_key_mode().notification("TRANSACTION.SUCCESS", &sample_payment()).build()?;
//! # let response = service.oneshot(signed.into_request()).await?;
//! # assert_eq!(response.status(), 500);
//! // …a genuine notification arrives: it cannot be decrypted, WeChat Pay gets 500.
//! assert_eq!(*raised.lock().unwrap(), [AlertKind::Undecryptable]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::time::Instant;

/// WeChat Pay resends a failed notification for 24 h 4 min after its first attempt.
pub const WECHAT_RETRIES_FOR: Duration = Duration::from_secs(24 * 3600 + 4 * 60);

/// A condition that needs a human. `serde` serializes it as one JSON object:
/// `{"kind": "keeps_failing", …its fields…, "action": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alert {
    /// A genuine (signature verified) notification could not be decrypted: the APIv3 key
    /// is wrong or was reset, or the resource uses an algorithm we do not support.
    Undecryptable {
        /// The notification's event type, e.g. `TRANSACTION.SUCCESS`.
        event_type: String,
        /// Why, as [`RejectionKind::as_str`](crate::RejectionKind::as_str):
        /// `decryption_failed` or `unsupported_algorithm`.
        reason: &'static str,
    },
    /// A genuine notification whose envelope or resource does not match what its model
    /// expects (schema drift). A resource that does not match its model still reaches
    /// handlers that read the raw JSON; typed extractors answer 500.
    Unparsable {
        /// The notification's event type (empty if the envelope did not parse).
        event_type: String,
        /// Which model and how it failed; never the payload.
        detail: String,
    },
    /// A key refresh ran and the notification's `Wechatpay-Serial` is still unknown.
    ///
    /// Anyone can send a serial, so forged ones cause this too (only a stranger who got
    /// every other header check right, and only as often as the refresher's minimum
    /// interval allows); all serials share one rate-limit slot.
    UnknownSerialAfterRefresh {
        /// The serial, reduced to `[A-Za-z0-9_-]` and at most 64 characters.
        serial: String,
    },
    /// The key refresher failed, panicked or was abandoned as stuck; or the merchant API
    /// client's periodic certificate refresh failed.
    RefresherFailing {
        /// What went wrong.
        error: String,
    },
    /// The dedupe store did not answer a claim: notifications are answered 500 (or run
    /// unguarded, if so configured) until it is back.
    DedupeUnreachable {
        /// The store's error.
        error: String,
    },
    /// A queue could not store a notification (raised by a queue, not by the layer).
    QueueUnreachable {
        /// The queue's error.
        error: String,
    },
    /// One event keeps being answered with a failure, so WeChat Pay keeps resending it.
    KeepsFailing {
        /// The event key (the dedupe guard's [`default_key`](crate::dedupe::default_key)).
        key: String,
        /// The notification's event type.
        event_type: String,
        /// Failed answers so far, on this instance.
        failures: u32,
        /// When the first failure was answered, Unix seconds.
        first_failure_unix: i64,
        /// The last failure, as [`RejectionKind::as_str`](crate::RejectionKind::as_str).
        last_reason: &'static str,
        /// When WeChat Pay stops resending: 24 h 4 min after the first failure.
        wechat_gives_up_unix: i64,
    },
    /// A queued job exhausted its attempts (raised by a queue worker).
    DeadLettered {
        /// The event key.
        key: String,
        /// The notification's event type.
        event_type: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
}

/// The kind of an [`Alert`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// [`Alert::Undecryptable`].
    Undecryptable,
    /// [`Alert::Unparsable`].
    Unparsable,
    /// [`Alert::UnknownSerialAfterRefresh`].
    UnknownSerialAfterRefresh,
    /// [`Alert::RefresherFailing`].
    RefresherFailing,
    /// [`Alert::DedupeUnreachable`].
    DedupeUnreachable,
    /// [`Alert::QueueUnreachable`].
    QueueUnreachable,
    /// [`Alert::KeepsFailing`].
    KeepsFailing,
    /// [`Alert::DeadLettered`].
    DeadLettered,
}

impl AlertKind {
    /// The kind in snake case, e.g. `dedupe_unreachable` (the JSON's `kind`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Undecryptable => "undecryptable",
            Self::Unparsable => "unparsable",
            Self::UnknownSerialAfterRefresh => "unknown_serial_after_refresh",
            Self::RefresherFailing => "refresher_failing",
            Self::DedupeUnreachable => "dedupe_unreachable",
            Self::QueueUnreachable => "queue_unreachable",
            Self::KeepsFailing => "keeps_failing",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Alert {
    /// Its kind.
    pub fn kind(&self) -> AlertKind {
        match self {
            Self::Undecryptable { .. } => AlertKind::Undecryptable,
            Self::Unparsable { .. } => AlertKind::Unparsable,
            Self::UnknownSerialAfterRefresh { .. } => AlertKind::UnknownSerialAfterRefresh,
            Self::RefresherFailing { .. } => AlertKind::RefresherFailing,
            Self::DedupeUnreachable { .. } => AlertKind::DedupeUnreachable,
            Self::QueueUnreachable { .. } => AlertKind::QueueUnreachable,
            Self::KeepsFailing { .. } => AlertKind::KeepsFailing,
            Self::DeadLettered { .. } => AlertKind::DeadLettered,
        }
    }

    /// The rate-limit key within its kind: the event key for `KeepsFailing` and
    /// `DeadLettered` (one alert per event per interval), `None` for the others (one per
    /// kind per interval).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::KeepsFailing { key, .. } | Self::DeadLettered { key, .. } => Some(key),
            _ => None,
        }
    }

    /// What a human should do about it.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Undecryptable { .. } => {
                "check the APIv3 key in the merchant platform (API安全 → APIv3密钥): the \
                 configured one is wrong or was reset; WeChat Pay retries for 24 h, so \
                 notifications get through once it is fixed"
            }
            Self::Unparsable { .. } => {
                "WeChat Pay changed what it sends (schema drift): compare with its current docs \
                 and update tower-wechatpay or the handler; WeChat Pay retries for 24 h"
            }
            Self::UnknownSerialAfterRefresh { .. } => {
                "check that the WeChat Pay public key (PUB_KEY_ID_…) or platform certificate \
                 in the merchant platform is configured and that the key refresher's source \
                 has it; a serial you do not recognise may be forged traffic"
            }
            Self::RefresherFailing { .. } => {
                "check the key refresher: its network access to the merchant API and the \
                 merchant API credentials; until it works a rotated key is not picked up"
            }
            Self::DedupeUnreachable { .. } => {
                "check the dedupe store (Redis): notifications are answered 500 meanwhile \
                 and WeChat Pay retries them for 24 h"
            }
            Self::QueueUnreachable { .. } => {
                "check the queue's engine: notifications are answered 500 meanwhile and \
                 WeChat Pay retries them for 24 h"
            }
            Self::KeepsFailing { .. } => {
                "read the handler's logs for this event and fix the cause before WeChat Pay \
                 gives up (wechat_gives_up_unix); after that, reconcile it with an order or \
                 refund query"
            }
            Self::DeadLettered { .. } => {
                "inspect the dead-lettered job, fix the cause and requeue it"
            }
        }
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undecryptable { event_type, reason } => write!(
                f,
                "a genuine {event_type} notification cannot be decrypted ({reason})"
            ),
            Self::Unparsable { event_type, detail } => write!(
                f,
                "a genuine {event_type} notification cannot be parsed: {detail}"
            ),
            Self::UnknownSerialAfterRefresh { serial } => write!(
                f,
                "Wechatpay-Serial {serial} is still unknown after a key refresh"
            ),
            Self::RefresherFailing { error } => write!(f, "the key refresher is failing: {error}"),
            Self::DedupeUnreachable { error } => {
                write!(f, "the dedupe store is unreachable: {error}")
            }
            Self::QueueUnreachable { error } => write!(f, "the queue is unreachable: {error}"),
            Self::KeepsFailing {
                key,
                event_type,
                failures,
                last_reason,
                wechat_gives_up_unix,
                ..
            } => write!(
                f,
                "{event_type} {key} failed {failures} times (last: {last_reason}); WeChat Pay \
                 gives up at {}",
                crate::key_ring::utc(*wechat_gives_up_unix)
            ),
            Self::DeadLettered {
                key,
                event_type,
                attempts,
                error,
            } => write!(
                f,
                "{event_type} {key} was dead-lettered after {attempts} attempts: {error}"
            ),
        }?;
        write!(f, ". Action: {}", self.action())
    }
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind().as_str())?;
        match self {
            Self::Undecryptable { event_type, reason } => {
                map.serialize_entry("event_type", event_type)?;
                map.serialize_entry("reason", reason)?;
            }
            Self::Unparsable { event_type, detail } => {
                map.serialize_entry("event_type", event_type)?;
                map.serialize_entry("detail", detail)?;
            }
            Self::UnknownSerialAfterRefresh { serial } => {
                map.serialize_entry("serial", serial)?;
            }
            Self::RefresherFailing { error }
            | Self::DedupeUnreachable { error }
            | Self::QueueUnreachable { error } => map.serialize_entry("error", error)?,
            Self::KeepsFailing {
                key,
                event_type,
                failures,
                first_failure_unix,
                last_reason,
                wechat_gives_up_unix,
            } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("event_type", event_type)?;
                map.serialize_entry("failures", failures)?;
                map.serialize_entry("first_failure_unix", first_failure_unix)?;
                map.serialize_entry("last_reason", last_reason)?;
                map.serialize_entry("wechat_gives_up_unix", wechat_gives_up_unix)?;
            }
            Self::DeadLettered {
                key,
                event_type,
                attempts,
                error,
            } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("event_type", event_type)?;
                map.serialize_entry("attempts", attempts)?;
                map.serialize_entry("error", error)?;
            }
        }
        map.serialize_entry("action", self.action())?;
        map.end()
    }
}

type Sink = dyn Fn(&Alert) + Send + Sync;

/// When each (kind, key) was last delivered.
type Slots = HashMap<(AlertKind, Option<String>), Instant>;

/// Where alerts go: your closure, behind a rate limiter. Cheap to clone; clones share the
/// closure and the limiter, so one sink can serve a layer and a queue worker
/// ([`WechatPayLayer::alert_sink`](crate::WechatPayLayer::alert_sink)).
#[derive(Clone)]
#[must_use]
pub struct Alerts {
    sink: Option<Arc<Sink>>,
    interval: Duration,
    limiter: Arc<Mutex<Slots>>,
}

impl Alerts {
    /// The default least time between two deliveries of one kind and key.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10 * 60);
    /// How many (kind, key) slots the limiter remembers; beyond them a kind shares one.
    const MAX_KEYS: usize = 1024;

    /// Delivers alerts to `on_alert`, at most one per kind and key per
    /// [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL). The closure runs on the task that
    /// raised the alert, inside the answer's time: keep it quick (spawn slow work, such
    /// as an HTTP POST). A panic in it is caught and logged.
    pub fn new(on_alert: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        Self {
            sink: Some(Arc::new(on_alert)),
            interval: Self::DEFAULT_INTERVAL,
            limiter: Arc::default(),
        }
    }

    /// Drops every alert (the layer's default).
    pub fn none() -> Self {
        Self {
            sink: None,
            interval: Self::DEFAULT_INTERVAL,
            limiter: Arc::default(),
        }
    }

    /// The least time between two deliveries of one kind and key (default
    /// [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL)). Changes this copy only.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Delivers `alert` unless one of its kind and key was delivered within the interval.
    /// Returns whether it was delivered. Never panics: a panicking closure is logged.
    pub fn raise(&self, alert: Alert) -> bool {
        let Some(sink) = &self.sink else {
            return false;
        };
        if !self.admit(alert.kind(), alert.key()) {
            return false;
        }
        if catch_unwind(AssertUnwindSafe(|| sink(&alert))).is_err() {
            tracing::error!(
                kind = alert.kind().as_str(),
                "the alert closure panicked; the alert is lost (the answer is not affected)"
            );
        }
        true
    }

    /// The interval this copy uses.
    pub(crate) fn interval_setting(&self) -> Duration {
        self.interval
    }

    /// Whether the closure gets anything at all.
    pub(crate) fn delivers(&self) -> bool {
        self.sink.is_some()
    }

    fn admit(&self, kind: AlertKind, key: Option<&str>) -> bool {
        let now = Instant::now();
        let interval = self.interval;
        let mut slots = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = |at: &Instant| now.saturating_duration_since(*at) < interval;
        let mut slot = (kind, key.map(str::to_owned));
        if !slots.contains_key(&slot) && slots.len() >= Self::MAX_KEYS {
            slots.retain(|_, at| recent(at));
            if slots.len() >= Self::MAX_KEYS {
                // Full of live keys: this kind shares one slot until some expire.
                slot.1 = None;
            }
        }
        match slots.get(&slot) {
            Some(at) if recent(at) => false,
            _ => {
                slots.insert(slot, now);
                true
            }
        }
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("delivers", &self.delivers())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The failed answers per event key on one layer instance, for [`Alert::KeepsFailing`].
/// Bounded: past [`FailureCounts::MAX_KEYS`] events the oldest is forgotten.
pub(crate) struct FailureCounts {
    events: Mutex<HashMap<String, Failures>>,
    pub(crate) after_failures: u32,
    pub(crate) after: Duration,
}

struct Failures {
    count: u32,
    first_unix: i64,
}

impl FailureCounts {
    pub(crate) const DEFAULT_FAILURES: u32 = 3;
    pub(crate) const DEFAULT_FOR_LONGER_THAN: Duration = Duration::from_secs(3600);
    const MAX_KEYS: usize = 1024;

    pub(crate) fn new(after_failures: u32, after: Duration) -> Self {
        Self {
            events: Mutex::default(),
            after_failures,
            after,
        }
    }

    /// A verified notification of `key` was answered: a success forgets the key, a
    /// failure counts; returns the alert to raise, if the event now qualifies.
    pub(crate) fn answered(
        &self,
        key: impl FnOnce() -> String,
        event_type: &str,
        failure: Option<&'static str>,
        now_unix: i64,
    ) -> Option<Alert> {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(reason) = failure else {
            if !events.is_empty() {
                events.remove(&key());
            }
            return None;
        };
        let key = key();
        if !events.contains_key(&key) && events.len() >= Self::MAX_KEYS {
            let oldest = events
                .iter()
                .min_by_key(|(_, failures)| failures.first_unix)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                events.remove(&oldest);
            }
        }
        let failures = events.entry(key.clone()).or_insert(Failures {
            count: 0,
            first_unix: now_unix,
        });
        failures.count = failures.count.saturating_add(1);
        let failing_for = now_unix.saturating_sub(failures.first_unix);
        let too_long = u64::try_from(failing_for).is_ok_and(|secs| secs >= self.after.as_secs());
        if failures.count < self.after_failures && !too_long {
            return None;
        }
        let gives_up = i64::try_from(WECHAT_RETRIES_FOR.as_secs()).unwrap_or(i64::MAX);
        Some(Alert::KeepsFailing {
            key,
            event_type: event_type.to_owned(),
            failures: failures.count,
            first_failure_unix: failures.first_unix,
            last_reason: reason,
            wechat_gives_up_unix: failures.first_unix.saturating_add(gives_up),
        })
    }
}

/// A serial from a request header, safe to put in an alert: `[A-Za-z0-9_-]`, at most 64.
pub(crate) fn sanitized_serial(serial: &str) -> String {
    serial
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_reduced_to_a_safe_alphabet_and_length() {
        assert_eq!(
            sanitized_serial("PUB_KEY_ID_01\u{202e}<b>"),
            "PUB_KEY_ID_01b"
        );
        assert_eq!(sanitized_serial(&"A".repeat(500)).len(), 64);
    }

    #[test]
    fn a_failure_count_alerts_at_the_threshold_and_a_success_forgets_it() {
        let counts = FailureCounts::new(3, Duration::from_secs(3600));
        let key = || "k".to_owned();
        assert!(
            counts
                .answered(key, "T", Some("handler_retry"), 100)
                .is_none()
        );
        assert!(
            counts
                .answered(key, "T", Some("handler_retry"), 101)
                .is_none()
        );
        let Some(Alert::KeepsFailing { failures, .. }) =
            counts.answered(key, "T", Some("handler_retry"), 102)
        else {
            panic!("expected KeepsFailing");
        };
        assert_eq!(failures, 3);
        assert!(counts.answered(key, "T", None, 103).is_none());
        assert!(
            counts
                .answered(key, "T", Some("handler_retry"), 104)
                .is_none()
        );
    }

    #[test]
    fn the_failure_map_stays_bounded() {
        let counts = FailureCounts::new(3, Duration::from_secs(3600));
        for n in 0..(FailureCounts::MAX_KEYS + 10) {
            counts.answered(|| format!("k{n}"), "T", Some("handler_retry"), 100);
        }
        let events = counts.events.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(events.len(), FailureCounts::MAX_KEYS);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_stays_bounded_and_still_delivers_per_kind_when_full() {
        let alerts = Alerts::new(|_| {});
        let failing = |n: usize| Alert::DeadLettered {
            key: format!("k{n}"),
            event_type: "T".into(),
            attempts: 1,
            error: "e".into(),
        };
        for n in 0..Alerts::MAX_KEYS {
            assert!(alerts.raise(failing(n)));
        }
        // Full of live keys: a new key shares its kind's slot (delivered once).
        assert!(alerts.raise(failing(5000)));
        assert!(!alerts.raise(failing(5001)));
        assert!(
            alerts
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
                <= Alerts::MAX_KEYS + 1
        );
    }
}
