//! The shared state of a layer and the steps a request goes through, with their logs.
//!
//! Nothing here knows about tower: [`Pipeline::check_headers`] runs before the body is read,
//! [`Pipeline::open`] after, and [`Pipeline::answer`] turns the handler's result into the
//! reply WeChat Pay requires.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Response};

use crate::backend::ResourceCipher;
use crate::body::BufferedBody;
use crate::decrypt::{decrypt_resource, parse_envelope};
use crate::dedupe::Dedupe;
use crate::error::{Rejection, RejectionKind};
use crate::event::EventKind;
use crate::key_ring::KeyRing;
use crate::notification::{Fields, Notification};
use crate::outcome::{BusinessRejection, Retry};
use crate::reply::{self, SuccessReply};
use crate::verify::{CheckedHeaders, HeaderProblem, check_headers, verify_signature};

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
    pub(crate) handler_deadline: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) dedupe: Option<Dedupe>,
    pub(crate) clock: Clock,
    pub(crate) success: SuccessReply,
    pub(crate) probes: Arc<AtomicU64>,
}

impl Pipeline {
    /// The checks that need no body. Logs each refusal at the level it deserves.
    pub(crate) fn check_headers(&self, headers: &HeaderMap) -> Result<CheckedHeaders, Rejection> {
        self.inspect_headers(headers)
            .map_err(|problem| self.refuse(problem, headers))
    }

    /// The checks that need no body, without a word in the log: the caller may still try
    /// a key refresh before refusing.
    pub(crate) fn inspect_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<CheckedHeaders, HeaderProblem> {
        check_headers(headers, &self.keys, (self.clock)(), self.tolerance_secs)
    }

    /// The answer to headers that failed their checks, logged.
    pub(crate) fn refuse(&self, problem: HeaderProblem, headers: &HeaderMap) -> Rejection {
        match problem {
            HeaderProblem::Probe => {
                let seen = self.probes.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(
                    probes_seen = seen,
                    "refused a WeChat Pay signature probe (WECHATPAY/SIGNTEST/); \
                         WeChat Pay resends it correctly signed"
                );
                Rejection::new(
                    RejectionKind::SignatureProbe,
                    "signature verification failed",
                )
            }
            HeaderProblem::UnknownSerial { serial, hint } => {
                tracing::error!(
                    serial = %serial,
                    "refused a notification signed with an unknown Wechatpay-Serial: {hint}"
                );
                Rejection::new(RejectionKind::UnknownSerial, "unknown wechatpay-serial")
            }
            HeaderProblem::Rejected(rejection) => {
                if rejection.kind() == RejectionKind::TimestampOutOfWindow {
                    tracing::warn!(
                        now = (self.clock)(),
                        tolerance_secs = self.tolerance_secs,
                        timestamp = ?headers.get(crate::verify::TIMESTAMP),
                        "refused a notification outside the timestamp window \
                         (replayed, or a clock is off)"
                    );
                } else if rejection.kind() == RejectionKind::MissingHeader
                    && looks_like_xml(headers)
                {
                    tracing::warn!(
                        reason = %rejection,
                        "refused an APIv2 (XML) notification: this endpoint speaks APIv3 \
                         only (refunds started by hand in the merchant platform are still \
                         notified in v2 XML; receive those on a separate endpoint)"
                    );
                } else {
                    tracing::warn!(reason = %rejection, "refused a notification request");
                }
                rejection
            }
        }
    }

    /// Everything after the body is in: size, signature, envelope, decryption, model.
    pub(crate) fn open(
        &self,
        checked: &CheckedHeaders,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Notification, Rejection> {
        let serial: &str = &checked.key.serial;
        if body.len() > self.max_body_size {
            tracing::warn!(
                len = body.len(),
                "refused a notification body over the limit"
            );
            return Err(Rejection::new(
                RejectionKind::BodyTooLarge,
                "body too large",
            ));
        }
        if let Err(rejection) = verify_signature(checked, headers, body) {
            tracing::warn!(
                serial,
                "refused a notification whose signature does not verify \
                 (forged, altered in transit, or the key for this serial is wrong)"
            );
            return Err(rejection);
        }
        // From here on the request is genuine: every failure is ours to fix and must
        // make WeChat Pay retry (500), never be acknowledged.
        let envelope = parse_envelope(body).inspect_err(|_| {
            tracing::error!(
                serial,
                "a correctly signed notification has an envelope we cannot parse; \
                 answering 500 so WeChat Pay retries"
            );
        })?;
        let event_type = envelope.event_type.as_deref().unwrap_or_default();
        let plaintext =
            decrypt_resource(&self.cipher, &envelope.resource).inspect_err(|rejection| {
                match rejection.kind() {
                    RejectionKind::UnsupportedAlgorithm => tracing::error!(
                        id = %envelope.id,
                        event_type,
                        algorithm = %envelope.resource.algorithm,
                        "a correctly signed notification uses an unsupported resource algorithm; \
                         answering 500 so WeChat Pay retries"
                    ),
                    RejectionKind::MalformedResource => tracing::error!(
                        id = %envelope.id,
                        event_type,
                        "a correctly signed notification decrypted to bytes that are not UTF-8; \
                         answering 500 so WeChat Pay retries"
                    ),
                    _ => tracing::error!(
                        id = %envelope.id,
                        event_type,
                        "could not decrypt a correctly signed notification: the APIv3 key is most \
                         likely wrong (or was reset in the merchant platform); answering 500 so \
                         WeChat Pay retries"
                    ),
                }
            })?;
        let original_type = envelope.resource.original_type.as_deref();
        let kind = EventKind::of(original_type, event_type);
        let event = kind.parse(&plaintext).map_err(|error| {
            // serde's message can quote the payload: log only where and how it failed.
            tracing::error!(
                id = %envelope.id,
                event_type,
                model = kind.model_name(),
                category = ?error.classify(),
                line = error.line(),
                column = error.column(),
                "a correctly signed notification decrypted to a resource that does not match \
                 its model (schema drift?); answering 500 so WeChat Pay retries"
            );
            Rejection::new(RejectionKind::MalformedResource, "malformed resource")
        })?;
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
            Arc::clone(&checked.key.serial),
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
                    "the handler failed with an error; answering 500 so WeChat Pay retries"
                );
                return reply::failure(Rejection::new(
                    RejectionKind::HandlerError,
                    "handler error",
                ));
            }
        };
        let status = response.status();
        let extensions = response.into_parts().0.extensions;
        let mut answer = if status.is_success() {
            match extensions.get::<BusinessRejection>() {
                Some(rejection) => tracing::warn!(
                    id,
                    event_type,
                    reason = %rejection,
                    "acknowledged a notification the handler rejected for a business reason \
                     (not applied; WeChat Pay will not resend it)"
                ),
                None => {
                    tracing::debug!(id, event_type, %status, "the handler acknowledged the notification")
                }
            }
            reply::success(self.success)
        } else if status.is_client_error() || status.is_server_error() {
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
            reply::failure(Rejection::handler_failed(status))
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

/// APIv2 notifications are XML; they carry no `Wechatpay-*` headers.
fn looks_like_xml(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("xml"))
}
