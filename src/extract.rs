//! [`Notified`]: the axum extractor for the verified notification (feature `axum`).

use std::fmt;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::{Rejection, RejectionKind};
use crate::event::{CombineTransaction, Event, PartnerTransaction, Refund, Transaction};
use crate::notification::Notification;
use crate::reply;

/// Extracts the notification the layer verified, typed: `Notified<Transaction>`,
/// `Notified<Refund>`, `Notified<PartnerTransaction>`, `Notified<CombineTransaction>`,
/// `Notified<Event>` or `Notified<Notification>` (everything).
///
/// If the layer is not mounted, or the notification is of another kind than asked for,
/// the extraction fails with 500 and a FAIL body: a misconfiguration must make WeChat Pay
/// retry, never become a silent acknowledgement.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_wechatpay::{Handled, Notified, Retry, Transaction, WechatPayLayer};
///
/// async fn paid(Notified(payment): Notified<Transaction>) -> Result<Handled, Retry> {
///     payment.check_success().map_err(|_| Retry::new("not paid yet"))?;
///     Ok(Handled::Done)
/// }
/// # fn app(layer: WechatPayLayer) -> Router {
/// Router::new().route("/wechatpay/notify", post(paid)).layer(layer)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Notified<T>(pub T);

/// A type [`Notified`] can extract from a [`Notification`].
pub trait FromNotification: Sized {
    /// What this type is, for the error message: `"payment"`, `"refund"`, …
    const KIND: &'static str;

    /// The value, if the notification is of this kind.
    fn from_notification(notification: &Notification) -> Option<Self>;
}

impl FromNotification for Notification {
    const KIND: &'static str = "notification";
    fn from_notification(notification: &Notification) -> Option<Self> {
        Some(notification.clone())
    }
}

impl FromNotification for Event {
    const KIND: &'static str = "event";
    fn from_notification(notification: &Notification) -> Option<Self> {
        Some(notification.event().clone())
    }
}

impl FromNotification for Transaction {
    const KIND: &'static str = "payment";
    fn from_notification(notification: &Notification) -> Option<Self> {
        notification.payment().cloned()
    }
}

impl FromNotification for PartnerTransaction {
    const KIND: &'static str = "partner payment";
    fn from_notification(notification: &Notification) -> Option<Self> {
        notification.partner_payment().cloned()
    }
}

impl FromNotification for CombineTransaction {
    const KIND: &'static str = "combine payment";
    fn from_notification(notification: &Notification) -> Option<Self> {
        notification.combine_payment().cloned()
    }
}

impl FromNotification for Refund {
    const KIND: &'static str = "refund";
    fn from_notification(notification: &Notification) -> Option<Self> {
        notification.refund().cloned()
    }
}

/// Why [`Notified`] could not extract: answered with 500 so WeChat Pay retries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotifiedRejection {
    /// No notification in the request: `WechatPayLayer` is not mounted on this route.
    LayerMissing,
    /// The notification is of another kind than the handler takes.
    WrongKind {
        /// What the handler takes.
        expected: &'static str,
        /// The notification's `event_type`.
        event_type: String,
    },
}

impl fmt::Display for NotifiedRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LayerMissing => f.write_str(
                "no verified notification on this request: WechatPayLayer is not mounted",
            ),
            Self::WrongKind {
                expected,
                event_type,
            } => write!(
                f,
                "this route takes a {expected}, got a {event_type} notification"
            ),
        }
    }
}

impl std::error::Error for NotifiedRejection {}

impl IntoResponse for NotifiedRejection {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::LayerMissing => {
                tracing::error!(
                    "{self}; answering 500 so nothing is acknowledged unverified (mount \
                     WechatPayLayer on the notify route)"
                );
                "wechatpay layer not mounted"
            }
            Self::WrongKind { .. } => {
                tracing::error!("{self}; answering 500 so WeChat Pay retries (check notify_url)");
                "notification of another kind"
            }
        };
        reply::failure(Rejection::new(RejectionKind::Misconfigured, message))
            .map(axum_core::body::Body::new)
    }
}

impl<S, T> FromRequestParts<S> for Notified<T>
where
    S: Send + Sync,
    T: FromNotification,
{
    type Rejection = NotifiedRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let notification = parts
            .extensions
            .get::<Notification>()
            .ok_or(NotifiedRejection::LayerMissing)?;
        T::from_notification(notification)
            .map(Notified)
            .ok_or_else(|| NotifiedRejection::WrongKind {
                expected: T::KIND,
                event_type: notification.event_type().to_owned(),
            })
    }
}
