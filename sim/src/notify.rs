//! One notification as WeChat Pay delivers it: the envelope (its `id` and encrypted
//! resource) is made once; every attempt gets a fresh timestamp, nonce and signature.

use bytes::Bytes;
use serde_json::Value;
use tower_wechatpay::test_util::{SignedNotification, TestSigner};

use crate::error::{SimError, context};
use crate::keys::{Keys, Mode, random_alphanumeric};
use crate::resource::rfc3339_beijing_now;

/// A notification ready to be delivered any number of times.
#[derive(Debug)]
pub struct Notification {
    signer: TestSigner,
    body: Bytes,
    event_type: String,
}

impl Notification {
    /// Encrypts `resource` under the keys' APIv3 key into a fresh envelope of `event_type`,
    /// to be signed as `mode` signs.
    pub fn new(
        keys: &Keys,
        mode: Mode,
        event_type: &str,
        resource: &Value,
    ) -> Result<Self, SimError> {
        let signer = keys.signer(mode)?;
        let body = envelope(&signer, event_type, resource)?;
        Ok(Self {
            signer,
            body,
            event_type: event_type.to_owned(),
        })
    }

    /// The exact body every attempt carries.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The signer (for checks that need to sign something else as the same key).
    pub fn signer(&self) -> &TestSigner {
        &self.signer
    }

    /// One attempt: the body signed now with a fresh nonce.
    pub fn attempt(&self) -> Result<SignedNotification, SimError> {
        self.attempt_at(unix_now())
    }

    /// One attempt with `Wechatpay-Timestamp` set to `timestamp`.
    pub fn attempt_at(&self, timestamp: i64) -> Result<SignedNotification, SimError> {
        sign(&self.signer, self.body.clone(), timestamp)
    }
}

/// `body` signed by `signer` at `timestamp` with a fresh nonce.
pub fn sign(
    signer: &TestSigner,
    body: Bytes,
    timestamp: i64,
) -> Result<SignedNotification, SimError> {
    signer
        .sign_body_with_nonce(body, timestamp, &random_alphanumeric(32))
        .map_err(context("signing"))
}

/// A fresh envelope around `resource`, encrypted by `signer`'s APIv3 key.
pub fn envelope(
    signer: &TestSigner,
    event_type: &str,
    resource: &Value,
) -> Result<Bytes, SimError> {
    let summary = match event_type {
        "TRANSACTION.SUCCESS" => "支付成功",
        "REFUND.SUCCESS" => "退款成功",
        "REFUND.ABNORMAL" => "退款异常",
        "REFUND.CLOSED" => "退款关闭",
        _ => "通知",
    };
    let built = signer
        .notification(event_type, resource)
        .id(&uuid_like())
        .create_time(&rfc3339_beijing_now())
        .summary(summary)
        .resource_nonce(&random_alphanumeric(12))
        .build()
        .map_err(context("encrypting the resource"))?;
    Ok(built.body)
}

/// A fresh envelope id shaped as WeChat Pay's (a UUID).
fn uuid_like() -> String {
    let hex = crate::keys::random_serial().to_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
