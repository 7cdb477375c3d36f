//! [`Notification`]: a verified, decrypted notification, as handed to the inner service.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::models::{CombineTransaction, Event, PartnerTransaction, Refund, Transaction};

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

/// The envelope's strings, kept in one buffer (one allocation instead of seven).
#[derive(Clone, Copy)]
pub(crate) enum Field {
    Id,
    CreateTime,
    EventType,
    ResourceType,
    Summary,
    OriginalType,
    AssociatedData,
}

const FIELDS: usize = 7;

/// Everything a notification holds.
pub(crate) struct Fields {
    text: String,
    spans: [Option<(u32, u32)>; FIELDS],
    serial: Arc<str>,
    resource_json: String,
    event: Event,
    version: u8,
}

impl Fields {
    /// `values` in the order of [`Field`].
    pub(crate) fn new(
        values: [Option<&str>; FIELDS],
        serial: Arc<str>,
        resource_json: String,
        event: Event,
    ) -> Self {
        let mut text = String::with_capacity(values.iter().flatten().map(|v| v.len()).sum());
        let mut spans = [None; FIELDS];
        for (span, value) in spans.iter_mut().zip(values) {
            if let Some(value) = value {
                // Envelope strings are tiny (and the body is capped far below 4 GiB).
                let start = u32::try_from(text.len()).unwrap_or(u32::MAX);
                text.push_str(value);
                let end = u32::try_from(text.len()).unwrap_or(u32::MAX);
                *span = Some((start, end));
            }
        }
        Self {
            text,
            spans,
            serial,
            resource_json,
            event,
            version: 3,
        }
    }

    /// Marks an APIv2 (XML) notification.
    #[cfg(feature = "v2")]
    pub(crate) fn v2(mut self) -> Self {
        self.version = 2;
        self
    }

    fn get(&self, field: Field) -> Option<&str> {
        let (start, end) = self.spans[field as usize]?;
        self.text.get(start as usize..end as usize)
    }
}

impl Notification {
    pub(crate) fn new(fields: Fields) -> Self {
        Self {
            inner: Arc::new(fields),
        }
    }

    /// The API version it arrived in: 3 (JSON, RSA-signed) or 2 (XML, `sign` or encrypted
    /// `req_info`; with the `v2` feature). A v2 notification's envelope fields are
    /// synthesized: see `WechatPayLayer::v2_key`.
    pub fn version(&self) -> u8 {
        self.inner.version
    }

    /// The envelope `id`, unique per notification.
    pub fn id(&self) -> &str {
        self.inner.get(Field::Id).unwrap_or_default()
    }

    /// The envelope `create_time`, as sent (RFC 3339 in practice).
    pub fn create_time(&self) -> Option<&str> {
        self.inner.get(Field::CreateTime)
    }

    /// The envelope `event_type`, e.g. `TRANSACTION.SUCCESS` or `REFUND.SUCCESS`.
    pub fn event_type(&self) -> &str {
        self.inner.get(Field::EventType).unwrap_or_default()
    }

    /// The envelope `resource_type`, `encrypt-resource` in practice.
    pub fn resource_type(&self) -> Option<&str> {
        self.inner.get(Field::ResourceType)
    }

    /// The envelope `summary`, e.g. `支付成功`.
    pub fn summary(&self) -> Option<&str> {
        self.inner.get(Field::Summary)
    }

    /// `resource.original_type`, e.g. `transaction` or `refund`.
    pub fn original_type(&self) -> Option<&str> {
        self.inner.get(Field::OriginalType)
    }

    /// `resource.associated_data`, e.g. `transaction`.
    pub fn associated_data(&self) -> Option<&str> {
        self.inner.get(Field::AssociatedData)
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
            Event::Unparsed(_) => "Unparsed",
            #[cfg(feature = "v2")]
            Event::V2Payment(_) => "V2Payment",
            #[cfg(feature = "v2")]
            Event::V2Refund(_) => "V2Refund",
        };
        f.debug_struct("Notification")
            .field("id", &self.id())
            .field("create_time", &self.create_time())
            .field("event_type", &self.event_type())
            .field("original_type", &self.original_type())
            .field("serial", &self.serial())
            .field("event", &format_args!("{kind}"))
            .field("resource", &format_args!("<redacted>"))
            .finish()
    }
}
