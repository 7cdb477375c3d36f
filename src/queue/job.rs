//! [`QueuedNotification`]: what the queue stores for one verified notification, and how the
//! worker turns it back into a [`Notification`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Rejection, RejectionKind};
use crate::notification::Notification;
use crate::pipeline::Pipeline;

/// One verified notification as the queue stores it: the exact body WeChat Pay sent, still
/// encrypted as it arrived (the payer's data is not at rest in plain text), and the few
/// fields the worker, the dead letter list and the logs need.
///
/// The signature was verified before the job was stored; the worker decrypts the resource
/// again with the layer's APIv3 key (or opens the APIv2 body with the v2 key).
#[derive(Clone, Serialize, Deserialize)]
pub struct QueuedNotification {
    /// 3 (JSON) or 2 (APIv2 XML).
    pub version: u8,
    /// The event key: the dedupe guard's key ([`default_key`](crate::dedupe::default_key)),
    /// else the envelope id. The queue stores one job per key.
    pub key: String,
    /// The envelope `id`.
    pub id: String,
    /// The event type, e.g. `TRANSACTION.SUCCESS`.
    pub event_type: String,
    /// The `Wechatpay-Serial` the body was signed with (empty for APIv2).
    pub serial: String,
    /// The body exactly as received.
    pub body: String,
    /// When the layer accepted it, in Unix seconds.
    pub received_unix: i64,
}

impl std::fmt::Debug for QueuedNotification {
    // The body is left out: it is ciphertext for v3, but an APIv2 payment carries the
    // payer's openid in clear.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedNotification")
            .field("version", &self.version)
            .field("key", &self.key)
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("received_unix", &self.received_unix)
            .finish_non_exhaustive()
    }
}

impl QueuedNotification {
    /// The job for a verified notification and the body it arrived with.
    pub(crate) fn new(
        notification: &Notification,
        body: &[u8],
        received_unix: i64,
    ) -> Result<Self, Rejection> {
        let body = std::str::from_utf8(body)
            .map_err(|_| Rejection::new(RejectionKind::MalformedEnvelope, "body is not utf-8"))?;
        Ok(Self {
            version: notification.version(),
            key: event_key(notification),
            id: notification.id().to_owned(),
            event_type: notification.event_type().to_owned(),
            serial: notification.serial().to_owned(),
            body: body.to_owned(),
            received_unix,
        })
    }

    /// The notification again, as the layer built it: decrypted (v3) or verified and
    /// opened (v2) with the layer's keys.
    pub(crate) fn reopen(&self, pipeline: &Pipeline) -> Result<Notification, Rejection> {
        match self.version {
            #[cfg(feature = "v2")]
            2 => match &pipeline.v2 {
                Some(key) => crate::v2::open(key, self.body.as_bytes()),
                None => Err(Rejection::new(
                    RejectionKind::Misconfigured,
                    "no apiv2 key configured",
                )),
            },
            3 => pipeline.open_genuine(&Arc::from(self.serial.as_str()), self.body.as_bytes()),
            _ => Err(Rejection::new(
                RejectionKind::Misconfigured,
                "a queued notification of a version this build cannot open",
            )),
        }
    }
}

/// The key a notification is stored (and guarded) under.
pub(crate) fn event_key(notification: &Notification) -> String {
    crate::dedupe::default_key(notification)
        .unwrap_or_else(|| format!("{}:{}", notification.event_type(), notification.id()))
}
