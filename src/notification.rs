//! [`Notification`]: a verified, decrypted notification, as handed to the inner service.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::event::{CombineTransaction, Event, PartnerTransaction, Refund, Transaction};

/// A notification whose signature was verified and whose resource was decrypted.
///
/// The layer puts one into the request extensions before calling the inner service; take
/// it with `req.extensions().get::<Notification>()` or axum's `Extension<Notification>`.
/// Cloning is cheap (one `Arc`). `Debug` shows the envelope, never the decrypted resource.
///
/// ```
/// # use tower_wechatpay::test_util::{TestSigner, sample_payment};
/// # use tower_wechatpay::{Event, Notification};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let signer = TestSigner::public_key_mode();
/// # let layer = signer.layer()?;
/// # let signed = signer.notification("TRANSACTION.SUCCESS", &sample_payment()).build()?;
/// let notification: Notification = layer.verify(&signed.headers, &signed.body)?;
/// assert_eq!(notification.event_type(), "TRANSACTION.SUCCESS");
/// if let Event::Payment(payment) = notification.event() {
///     assert!(payment.is_success());
///     assert_eq!(payment.amount.total, 990);
/// }
/// // Or your own type:
/// #[derive(serde::Deserialize)]
/// struct Mine { out_trade_no: String }
/// let mine: Mine = notification.decode()?;
/// assert!(!mine.out_trade_no.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notification {
    inner: Arc<Fields>,
}

/// Everything a notification holds.
pub(crate) struct Fields {
    pub(crate) id: String,
    pub(crate) create_time: Option<String>,
    pub(crate) event_type: String,
    pub(crate) resource_type: Option<String>,
    pub(crate) summary: Option<String>,
    pub(crate) original_type: Option<String>,
    pub(crate) associated_data: Option<String>,
    pub(crate) serial: String,
    pub(crate) resource_json: String,
    pub(crate) event: Event,
}

impl Notification {
    pub(crate) fn new(fields: Fields) -> Self {
        Self {
            inner: Arc::new(fields),
        }
    }

    /// The envelope `id`, unique per notification.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The envelope `create_time`, as sent (RFC 3339 in practice).
    pub fn create_time(&self) -> Option<&str> {
        self.inner.create_time.as_deref()
    }

    /// The envelope `event_type`, e.g. `TRANSACTION.SUCCESS` or `REFUND.SUCCESS`.
    pub fn event_type(&self) -> &str {
        &self.inner.event_type
    }

    /// The envelope `resource_type`, `encrypt-resource` in practice.
    pub fn resource_type(&self) -> Option<&str> {
        self.inner.resource_type.as_deref()
    }

    /// The envelope `summary`, e.g. `支付成功`.
    pub fn summary(&self) -> Option<&str> {
        self.inner.summary.as_deref()
    }

    /// `resource.original_type`, e.g. `transaction` or `refund`.
    pub fn original_type(&self) -> Option<&str> {
        self.inner.original_type.as_deref()
    }

    /// `resource.associated_data`, e.g. `transaction`.
    pub fn associated_data(&self) -> Option<&str> {
        self.inner.associated_data.as_deref()
    }

    /// The `Wechatpay-Serial` of the key that verified it.
    pub fn serial(&self) -> &str {
        &self.inner.serial
    }

    /// The decrypted resource, exactly as WeChat Pay encrypted it (JSON text).
    pub fn resource_json(&self) -> &str {
        &self.inner.resource_json
    }

    /// The decrypted resource as a [`serde_json::Value`].
    ///
    /// # Errors
    /// Never in practice: the layer only hands on resources that are valid JSON.
    pub fn resource_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.inner.resource_json)
    }

    /// Decodes the resource into your own type.
    ///
    /// # Errors
    /// If the resource does not match `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.inner.resource_json)
    }

    /// The typed resource.
    pub fn event(&self) -> &Event {
        &self.inner.event
    }

    /// The direct payment, if this is one.
    pub fn payment(&self) -> Option<&Transaction> {
        match &self.inner.event {
            Event::Payment(payment) => Some(payment),
            _ => None,
        }
    }

    /// The partner payment, if this is one.
    pub fn partner_payment(&self) -> Option<&PartnerTransaction> {
        match &self.inner.event {
            Event::PartnerPayment(payment) => Some(payment),
            _ => None,
        }
    }

    /// The combine payment, if this is one.
    pub fn combine_payment(&self) -> Option<&CombineTransaction> {
        match &self.inner.event {
            Event::CombinePayment(payment) => Some(payment),
            _ => None,
        }
    }

    /// The refund, if this is one.
    pub fn refund(&self) -> Option<&Refund> {
        match &self.inner.event {
            Event::Refund(refund) => Some(refund),
            _ => None,
        }
    }
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner.event {
            Event::Payment(_) => "Payment",
            Event::PartnerPayment(_) => "PartnerPayment",
            Event::CombinePayment(_) => "CombinePayment",
            Event::Refund(_) => "Refund",
            Event::Other => "Other",
        };
        f.debug_struct("Notification")
            .field("id", &self.inner.id)
            .field("create_time", &self.inner.create_time)
            .field("event_type", &self.inner.event_type)
            .field("original_type", &self.inner.original_type)
            .field("serial", &self.inner.serial)
            .field("event", &format_args!("{kind}"))
            .field("resource", &format_args!("<redacted>"))
            .finish()
    }
}
