//! The shared state of a layer and the steps a request goes through, with their logs.
//!
//! Nothing here knows about tower: [`Pipeline::check_headers`] runs before the body is read,
//! [`Pipeline::open`] after, and [`Pipeline::answer`] turns the handler's result into the
//! reply WeChat Pay requires. src/future.rs drives them.

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, Response};

use crate::alert::{Alert, Alerts, FailureCounts, sanitized_serial};
use crate::backend::ResourceCipher;
use crate::body::BufferedBody;
use crate::decrypt::{decrypt_resource, parse_envelope};
use crate::dedupe::Dedupe;
use crate::error::{Rejection, RejectionKind};
use crate::key_ring::{KeyRing, KeyValidity};
use crate::log::{Noise, NoiseLimiter};
use crate::models::{Event, EventKind, ModelError};
use crate::notification::{Fields, Notification};
use crate::outcome::{Declined, Retry};
use crate::reply::{self, SuccessReply};
use crate::verify::{
    CheckedHeaders, HeaderProblem, check_headers, looks_rewritten, verify_signature,
};

/// Unix seconds now; injectable so tests never sleep.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            })
    })
}

/// Everything a request needs, shared by every clone of the service.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub(crate) keys: KeyRing,
    pub(crate) cipher: Arc<ResourceCipher>,
    pub(crate) tolerance_secs: u64,
    pub(crate) max_body_size: usize,
    /// The whole answer's budget, from the request's arrival.
    pub(crate) deadline: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) dedupe: Option<Dedupe>,
    pub(crate) clock: Clock,
    pub(crate) success: SuccessReply,
    pub(crate) probes: Arc<AtomicU64>,
    pub(crate) noise: Arc<NoiseLimiter>,
    pub(crate) drift: Arc<DriftSeen>,
    /// Where alerts go (none by default).
    pub(crate) alerts: Alerts,
    /// Failed answers per event, for [`Alert::KeepsFailing`].
    pub(crate) failures: Arc<FailureCounts>,
    /// The APIv2 key, for XML notifications on the same route.
    #[cfg(feature = "v2")]
    pub(crate) v2: Option<crate::v2::V2Key>,
    /// Whether the "XML notification but no v2 key" hint was logged.
    #[cfg(feature = "v2")]
    pub(crate) v2_hint: Arc<std::sync::atomic::AtomicBool>,
}

/// The schema-drift causes already logged: each is logged at error once, not per request.
#[derive(Default)]
pub(crate) struct DriftSeen {
    causes: Mutex<HashSet<(String, &'static str, &'static str)>>,
}

impl DriftSeen {
    // Bounded: event types come from genuine notifications only, but stay cautious.
    const MAX_CAUSES: usize = 64;

    fn first_time(&self, event_type: &str, error: &ModelError) -> bool {
        let mut causes = self.causes.lock().unwrap_or_else(PoisonError::into_inner);
        if causes.len() >= Self::MAX_CAUSES {
            return false;
        }
        causes.insert((event_type.to_owned(), error.model(), error.category()))
    }
}

impl Pipeline {
    /// The checks that need no body, without a word in the log: the caller may still try
    /// a key refresh before refusing.
    pub(crate) fn check_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<CheckedHeaders, HeaderProblem> {
        check_headers(
            headers,
            &self.keys,
            (self.clock)(),
            self.tolerance_secs,
            self.max_body_size,
        )
    }

    /// The answer to headers that failed their checks, logged (rate-limited: anyone can
    /// send these).
    pub(crate) fn refuse(&self, problem: HeaderProblem, headers: &HeaderMap) -> Rejection {
        match problem {
            HeaderProblem::TooLarge => {
                if let Some(left_out) = self.noise.allow(Noise::TooLarge) {
                    tracing::warn!(
                        left_out,
                        limit = self.max_body_size,
                        "refused a notification whose content-length is over the limit"
                    );
                }
                Rejection::new(RejectionKind::BodyTooLarge, "body too large")
            }
            HeaderProblem::Missing(message) => {
                if let Some(left_out) = self.noise.allow(Noise::MissingHeader) {
                    if looks_like_xml(headers) {
                        tracing::warn!(left_out, reason = message, "{}", V2_XML);
                    } else {
                        tracing::warn!(
                            left_out,
                            reason = message,
                            "refused a notification request"
                        );
                    }
                }
                Rejection::new(RejectionKind::MissingHeader, message)
            }
            HeaderProblem::Invalid(rejection) => {
                if let Some(left_out) = self.noise.allow(Noise::InvalidHeader) {
                    tracing::warn!(left_out, reason = %rejection, "refused a notification request");
                }
                rejection
            }
            HeaderProblem::Stale { timestamp } => {
                if let Some(left_out) = self.noise.allow(Noise::Stale) {
                    tracing::warn!(
                        left_out,
                        now = (self.clock)(),
                        timestamp,
                        tolerance_secs = self.tolerance_secs,
                        "refused a notification outside the timestamp window (replayed, or \
                         this server's clock is off: check NTP)"
                    );
                }
                Rejection::new(
                    RejectionKind::TimestampOutOfWindow,
                    "timestamp outside the allowed window",
                )
            }
            HeaderProblem::Probe { known_serial } => {
                // Counted only when it names a key we have: a stranger's imitation with a
                // random serial must not inflate the count.
                let seen = if known_serial {
                    crate::metrics::probe();
                    self.probes.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    self.probes.load(Ordering::Relaxed)
                };
                if let Some(left_out) = self.noise.allow(Noise::Probe) {
                    tracing::info!(
                        left_out,
                        probes_seen = seen,
                        known_serial,
                        "refused a WeChat Pay signature probe (WECHATPAY/SIGNTEST/); WeChat \
                         Pay resends it correctly signed"
                    );
                }
                Rejection::new(
                    RejectionKind::SignatureProbe,
                    "signature verification failed",
                )
            }
            HeaderProblem::UnknownSerial { serial, hint } => {
                if let Some(left_out) = self.noise.allow(Noise::UnknownSerial) {
                    tracing::error!(
                        left_out,
                        serial = %serial,
                        "refused a notification signed with an unknown Wechatpay-Serial: {hint}"
                    );
                }
                Rejection::new(RejectionKind::UnknownSerial, "unknown wechatpay-serial")
            }
            HeaderProblem::KeyNotValid { serial, validity } => {
                if let Some(left_out) = self.noise.allow(Noise::KeyNotValid) {
                    let (state, at) = match validity {
                        KeyValidity::Expired { not_after } => ("expired", not_after),
                        KeyValidity::NotYetValid { not_before } => {
                            ("is not valid before", not_before)
                        }
                    };
                    tracing::error!(
                        left_out,
                        serial = %serial,
                        now = (self.clock)(),
                        "refused a notification signed with platform certificate {serial}, \
                         which {state} {}: download the current platform certificate (or move \
                         to WeChat Pay public key mode); if it should be valid, check this \
                         server's clock",
                        crate::key_ring::utc(at)
                    );
                }
                Rejection::new(
                    RejectionKind::CertificateNotValid,
                    "platform certificate not valid",
                )
            }
        }
    }

    /// Uses `alerts`, for requests and for the key ring's refresher.
    pub(crate) fn set_alerts(&mut self, alerts: Alerts) {
        self.keys.set_alerts(alerts.clone());
        self.alerts = alerts;
    }

    /// The answer to headers that still fail after a key refresh finished: a serial the
    /// refresh did not bring is worth an alert (one slot for every serial: a stranger can
    /// send them too).
    pub(crate) fn refuse_after_refresh(
        &self,
        problem: HeaderProblem,
        headers: &HeaderMap,
        refreshed: bool,
    ) -> Rejection {
        if refreshed && let HeaderProblem::UnknownSerial { serial, .. } = &problem {
            self.alerts.raise(Alert::UnknownSerialAfterRefresh {
                serial: sanitized_serial(serial),
            });
        }
        self.refuse(problem, headers)
    }

    /// A verified notification was answered: a failure counts against its event, a
    /// success (or a decline, or a copy already done) forgets it; an event that keeps
    /// failing raises [`Alert::KeepsFailing`]. A copy refused because another one is
    /// running is neither.
    pub(crate) fn count_answer(
        &self,
        response: &Response<BufferedBody>,
        notification: &Notification,
    ) {
        if !self.alerts.delivers() {
            return;
        }
        let failure = if response.status().is_success() {
            None
        } else {
            let kind = response
                .extensions()
                .get::<Rejection>()
                .map(Rejection::kind);
            if kind == Some(RejectionKind::InProgress) {
                return;
            }
            Some(kind.map_or("unknown", RejectionKind::as_str))
        };
        let key = || {
            crate::dedupe::default_key(notification).unwrap_or_else(|| notification.id().to_owned())
        };
        let now = (self.clock)();
        if let Some(alert) = self
            .failures
            .answered(key, notification.event_type(), failure, now)
        {
            self.alerts.raise(alert);
        }
    }

    /// An APIv2 (XML) body: verified (payment) or decrypted (refund) with the v2 key.
    /// Without one it is refused (500, so WeChat Pay keeps it until the key is set), and
    /// the log says once what to configure.
    #[cfg(feature = "v2")]
    pub(crate) fn open_v2(&self, body: &[u8]) -> Result<Notification, Rejection> {
        if body.len() > self.max_body_size {
            return Err(Rejection::new(
                RejectionKind::BodyTooLarge,
                "body too large",
            ));
        }
        let Some(key) = &self.v2 else {
            if !self
                .v2_hint
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!(
                    "an APIv2 (XML) notification arrived but no v2 key is configured: it is \
                     refused and WeChat Pay resends it for about 24 hours. Typically a refund \
                     made by hand in the merchant platform, or a v2-only merchant. Configure \
                     the 32-character APIv2 key (merchant platform, API安全 → API密钥) with \
                     WechatPayLayer::v2_key"
                );
            }
            return Err(Rejection::new(
                RejectionKind::Misconfigured,
                "no apiv2 key configured",
            ));
        };
        crate::v2::open(key, body)
            .inspect(|notification| {
                // Verified (or decrypted) but not what its model expects: schema drift.
                if let Event::Unparsed(error) = notification.event() {
                    self.alerts.raise(Alert::Unparsable {
                        event_type: notification.event_type().to_owned(),
                        detail: error.to_string(),
                    });
                }
            })
            .inspect_err(|rejection| {
                if let Some(left_out) = self.noise.allow(Noise::BadSignature) {
                    tracing::warn!(
                        left_out,
                        reason = rejection.message(),
                        "refused an APIv2 (XML) notification: its sign does not verify or its \
                     req_info does not decrypt with the configured v2 key (forged, or the \
                     APIv2 key is wrong or was reset)"
                    );
                }
            })
    }

    /// Everything after the body is in: size, signature, envelope, decryption, model.
    pub(crate) fn open(
        &self,
        checked: &CheckedHeaders,
        body: &[u8],
    ) -> Result<Notification, Rejection> {
        let serial: &str = &checked.key.serial;
        if body.len() > self.max_body_size {
            if let Some(left_out) = self.noise.allow(Noise::TooLarge) {
                tracing::warn!(
                    left_out,
                    len = body.len(),
                    "refused a notification body over the limit"
                );
            }
            return Err(Rejection::new(
                RejectionKind::BodyTooLarge,
                "body too large",
            ));
        }
        if let Err(rejection) = verify_signature(checked, body) {
            if let Some(left_out) = self.noise.allow(Noise::BadSignature) {
                if looks_rewritten(body) {
                    tracing::warn!(left_out, serial, "{}", REWRITTEN);
                } else {
                    tracing::warn!(
                        left_out,
                        serial,
                        "refused a notification whose signature does not verify (forged, \
                         altered in transit, or the key configured for this serial is wrong)"
                    );
                }
            }
            return Err(rejection);
        }
        self.open_genuine(&checked.key.serial, body)
    }

    /// A body whose signature verified (now, or before it was queued): envelope, decryption,
    /// model. Every failure here is ours to fix and must make WeChat Pay retry (500), never be
    /// acknowledged. Logged every time.
    pub(crate) fn open_genuine(
        &self,
        signed_by: &Arc<str>,
        body: &[u8],
    ) -> Result<Notification, Rejection> {
        let serial: &str = signed_by;
        let envelope = parse_envelope(body).inspect_err(|_| {
            tracing::error!(
                serial,
                "a correctly signed notification has an envelope we cannot parse; \
                 answering 500 so WeChat Pay retries"
            );
            self.alerts.raise(Alert::Unparsable {
                event_type: String::new(),
                detail: "the envelope is not the JSON WeChat Pay documents".into(),
            });
        })?;
        let event_type = envelope.event_type.as_deref().unwrap_or_default();
        let plaintext =
            decrypt_resource(&self.cipher, &envelope.resource).inspect_err(|rejection| {
                log_decrypt_failure(
                    rejection,
                    &envelope.id,
                    event_type,
                    &envelope.resource.algorithm,
                );
                self.alerts.raise(decrypt_alert(rejection, event_type));
            })?;
        let original_type = envelope.resource.original_type.as_deref();
        let kind = EventKind::of(original_type, event_type);
        let event = match kind.parse(&plaintext) {
            Ok(event) => event,
            Err(error) if kind.has_model() && is_json(&plaintext) => {
                // Schema drift: the notification still reaches handlers that read the raw
                // resource; typed extractors answer a retry.
                let error = ModelError::new(kind.model_name(), &error);
                if self.drift.first_time(event_type, &error) {
                    tracing::error!(
                        id = %envelope.id,
                        event_type,
                        %error,
                        "a correctly signed notification does not match its model (schema \
                         drift?): handed on as Event::Unparsed; handlers that need the model \
                         answer 500 so WeChat Pay retries. Logged once per cause."
                    );
                }
                self.alerts.raise(Alert::Unparsable {
                    event_type: event_type.to_owned(),
                    detail: error.to_string(),
                });
                Event::Unparsed(error)
            }
            Err(error) => {
                // serde's message can quote the payload: log only where and how it failed.
                let error = ModelError::new(kind.model_name(), &error);
                tracing::error!(
                    id = %envelope.id,
                    event_type,
                    %error,
                    "a correctly signed notification decrypted to a resource that is not \
                     JSON; answering 500 so WeChat Pay retries"
                );
                self.alerts.raise(Alert::Unparsable {
                    event_type: event_type.to_owned(),
                    detail: error.to_string(),
                });
                return Err(Rejection::new(
                    RejectionKind::MalformedResource,
                    "malformed resource",
                ));
            }
        };
        tracing::info!(
            id = %envelope.id,
            event_type,
            serial,
            "verified and decrypted a notification"
        );
        Ok(Notification::new(Fields::new(
            [
                Some(envelope.id.as_ref()),
                envelope.create_time.as_deref(),
                Some(event_type),
                envelope.resource_type.as_deref(),
                envelope.summary.as_deref(),
                original_type,
                envelope.resource.associated_data.as_deref(),
            ],
            Arc::clone(signed_by),
            plaintext,
            event,
        )))
    }

    /// Turns the handler's result into exactly what WeChat Pay needs: 2xx becomes the
    /// configured success reply, 4xx/5xx keep their status with a FAIL body, anything else
    /// (an error, 1xx, 3xx) becomes 500 so WeChat Pay retries. The handler's response
    /// extensions are kept for outer layers.
    pub(crate) fn answer<B, E: Display>(
        &self,
        result: Result<Response<B>, E>,
        notification: &Notification,
    ) -> Response<BufferedBody> {
        let id = notification.id();
        let event_type = notification.event_type();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::error!(
                    id,
                    event_type,
                    %error,
                    "the inner service failed with an error; answering 500 so WeChat Pay retries"
                );
                return reply::failure(Rejection::new(
                    RejectionKind::ServiceError,
                    "service error",
                ));
            }
        };
        let status = response.status();
        let extensions = response.into_parts().0.extensions;
        let mut answer = if status.is_success() {
            match extensions.get::<Declined>() {
                Some(declined) => tracing::warn!(
                    id,
                    event_type,
                    reason = %declined,
                    "acknowledged a notification the handler declined for a business reason \
                     (not applied; WeChat Pay will not resend it)"
                ),
                None => {
                    tracing::debug!(id, event_type, %status, "the handler acknowledged the notification")
                }
            }
            reply::success(self.success)
        } else if status.is_client_error() || status.is_server_error() {
            if let Some(rejection) = extensions.get::<Rejection>() {
                // An extractor refused before any handler ran (it logged why).
                tracing::error!(
                    id,
                    event_type,
                    %status,
                    reason = %rejection,
                    "the route refused the notification before its handler ran; WeChat Pay \
                     will resend it"
                );
                reply::failure(rejection.clone())
            } else {
                match extensions.get::<Retry>() {
                    Some(retry) => tracing::error!(
                        id,
                        event_type,
                        %status,
                        error = %retry,
                        "the handler failed; WeChat Pay will resend this notification"
                    ),
                    None => tracing::warn!(
                        id,
                        event_type,
                        %status,
                        "the handler asked for a retry; WeChat Pay will resend this notification"
                    ),
                }
                reply::failure(Rejection::handler_retry(status))
            }
        } else {
            tracing::error!(
                id,
                event_type,
                %status,
                "the handler answered a status that is neither success nor failure; \
                 answering 500 so WeChat Pay retries"
            );
            reply::failure(Rejection::new(
                RejectionKind::UnexpectedHandlerStatus,
                "unexpected handler status",
            ))
        };
        let ours = std::mem::replace(answer.extensions_mut(), extensions);
        answer.extensions_mut().extend(ours);
        answer
    }
}

const V2_XML: &str = "refused an APIv2 (XML) notification: this endpoint speaks APIv3 only \
    (refunds started by hand in the merchant platform are still notified in v2 XML; receive \
    those on a separate endpoint)";

const REWRITTEN: &str = "refused a notification whose signature does not verify, and whose \
    body is not the compact JSON WeChat Pay sends (whitespace between tokens or a trailing \
    newline): it was most likely rewritten on the way (a proxy or JSON middleware \
    re-serialised it); the signature covers the exact bytes, so nothing may touch the body \
    before this layer";

/// A genuine notification that did not decrypt: the key (or the algorithm), or, for bytes
/// that decrypted but are not UTF-8, what came out.
fn decrypt_alert(rejection: &Rejection, event_type: &str) -> Alert {
    match rejection.kind() {
        RejectionKind::MalformedResource => Alert::Unparsable {
            event_type: event_type.to_owned(),
            detail: "the resource decrypted to bytes that are not UTF-8".into(),
        },
        kind => Alert::Undecryptable {
            event_type: event_type.to_owned(),
            reason: kind.as_str(),
        },
    }
}

fn log_decrypt_failure(rejection: &Rejection, id: &str, event_type: &str, algorithm: &str) {
    match rejection.kind() {
        RejectionKind::UnsupportedAlgorithm => tracing::error!(
            id,
            event_type,
            algorithm,
            "a correctly signed notification uses an unsupported resource algorithm; \
             answering 500 so WeChat Pay retries"
        ),
        RejectionKind::MalformedResource => tracing::error!(
            id,
            event_type,
            "a correctly signed notification decrypted to bytes that are not UTF-8; \
             answering 500 so WeChat Pay retries"
        ),
        _ => tracing::error!(
            id,
            event_type,
            "could not decrypt a correctly signed notification: the APIv3 key is most \
             likely wrong (or was reset in the merchant platform); answering 500 so \
             WeChat Pay retries"
        ),
    }
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// APIv2 notifications are XML; they carry no `Wechatpay-*` headers.
fn looks_like_xml(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("xml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `log` logged, at any level, on this thread.
    fn logged(log: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // A second dispatcher, alive for good, keeps callsite interest per thread (see
        // tests/it/support: otherwise another test's thread can cache "disabled").
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).unwrap_or_default()
    }

    fn decrypt_failure_log(kind: RejectionKind) -> String {
        logged(|| {
            log_decrypt_failure(
                &Rejection::new(kind, "x"),
                "envelope-id",
                "TRANSACTION.SUCCESS",
                "AEAD_SM4_GCM",
            );
        })
    }

    #[test]
    fn a_decryption_failure_log_blames_the_actual_cause() {
        let algorithm = decrypt_failure_log(RejectionKind::UnsupportedAlgorithm);
        assert!(
            algorithm.contains("unsupported resource algorithm"),
            "{algorithm}"
        );
        assert!(algorithm.contains("AEAD_SM4_GCM"), "{algorithm}");
        assert!(!algorithm.contains("APIv3 key"), "{algorithm}");

        let not_utf8 = decrypt_failure_log(RejectionKind::MalformedResource);
        assert!(not_utf8.contains("not UTF-8"), "{not_utf8}");
        assert!(!not_utf8.contains("APIv3 key"), "{not_utf8}");

        let wrong_key = decrypt_failure_log(RejectionKind::DecryptionFailed);
        assert!(
            wrong_key.contains("APIv3 key is most likely wrong"),
            "{wrong_key}"
        );
        for log in [&algorithm, &not_utf8, &wrong_key] {
            assert!(log.contains("ERROR"), "{log}");
            assert!(log.contains("envelope-id"), "{log}");
        }
    }
}
