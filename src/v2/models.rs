//! APIv2 models (being written).

use crate::error::{Rejection, RejectionKind};
use crate::notification::Notification;
use crate::v2::V2Key;

/// An APIv2 payment result (支付结果通知, XML).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct V2Payment {}

/// An APIv2 refund result (退款结果通知, XML, `req_info` decrypted).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct V2Refund {}

pub(crate) fn open(key: &V2Key, body: &[u8]) -> Result<Notification, Rejection> {
    let _ = (key, body);
    Err(Rejection::new(RejectionKind::MalformedEnvelope, "not written yet"))
}
