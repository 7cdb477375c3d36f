//! [`Notified`]: the axum extractor for the verified notification (feature `axum`).

use std::fmt;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::{Rejection, RejectionKind};
use crate::models::{
    CombineTransaction, Event, ModelError, PartnerTransaction, Refund, Transaction,
};
use crate::notification::Notification;
use crate::reply;

/// Extracts the notification the layer verified, typed: `Notified<Transaction>`,
/// `Notified<Refund>`, `Notified<PartnerTransaction>`, `Notified<CombineTransaction>`,
/// `Notified<Event>` or `Notified<Notification>` (everything).
///
/// If the layer is not mounted, or the notification is of another kind than asked for,
/// the extraction fails with 500 and a FAIL body: a misconfiguration must make WeChat Pay
/// retry, never become a silent acknowledgement. **So a route that takes
/// `Notified<Transaction>` answers 500 to every refund sent to the same notify URL, for
/// 24 hours.** When payments and refunds share one URL (common), take `Notified<Event>`
/// and match, as below. A resource that does not match its model (schema drift) fails
/// every typed extraction (`Event` included) with 500, while `Notified<Notification>`
/// still gets it, with the raw JSON.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_wechatpay::{Event, Handled, Notified, Retry, WechatPayLayer};
///
/// async fn notified(Notified(event): Notified<Event>) -> Result<Handled, Retry> {
///     match event {
///         Event::Payment(payment) => { /* record the payment */ }
///         Event::Refund(refund) => { /* record the refund */ }
///         _ => { /* other kinds: acknowledged */ }
///     }
///     Ok(Handled::Done)
/// }
/// # fn app(layer: WechatPayLayer) -> Router {
/// Router::new().route("/wechatpay/notify", post(notified)).route_layer(layer)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Notified<T>(pub T);

/// A type [`Notified`] can extract from a [`Notification`].
pub trait FromNotification: Sized {
    /// What this type is, for the error message: `"payment"`, `"refund"`, …
    const KIND: &'static str;

    /// Whether this type needs the typed model: if so, a resource that did not match it
    /// ([`Event::Unparsed`]) is refused with 500 (WeChat Pay retries) before
    /// [`from_notification`](Self::from_notification) runs.
    const NEEDS_MODEL: bool = true;

    /// The value, if the notification is of this kind.
    fn from_notification(notification: &Notification) -> Option<Self>;
}

impl FromNotification for Notification {
    const KIND: &'static str = "notification";
    const NEEDS_MODEL: bool = false;
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
    /// The resource did not match its model (schema drift) and the handler needs it.
    Unparsed(ModelError),
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
            Self::Unparsed(error) => write!(f, "the handler needs the typed model: {error}"),
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
                tracing::error!(
                    "{self}; answering 500 so WeChat Pay retries (one notify URL for several \
                     kinds? take Notified<Event> and match)"
                );
                "notification of another kind"
            }
            Self::Unparsed(_) => {
                tracing::error!("{self}; answering 500 so WeChat Pay retries");
                return reply::failure(Rejection::new(
                    RejectionKind::MalformedResource,
                    "malformed resource",
                ))
                .map(axum_core::body::Body::new);
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
        if let (true, Event::Unparsed(error)) = (T::NEEDS_MODEL, notification.event()) {
            return Err(NotifiedRejection::Unparsed(error.clone()));
        }
        T::from_notification(notification)
            .map(Notified)
            .ok_or_else(|| NotifiedRejection::WrongKind {
                expected: T::KIND,
                event_type: notification.event_type().to_owned(),
            })
    }
}
