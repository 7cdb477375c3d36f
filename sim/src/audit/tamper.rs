//! The requests the audit sends: each starts as a fresh genuine notification (its own
//! envelope id, so a receiver's dedupe never hides a result) and is then tampered with.

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use rcgen::{KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use serde_json::{Map, Value};
use tower_wechatpay::test_util::{SignedNotification, TestSigner};

use crate::error::{SimError, context};
use crate::keys::{Keys, Mode, random_alphanumeric, random_serial};
use crate::notify::{self, Notification, unix_now};
use crate::resource::{self, rfc3339_beijing_now};

/// The event every audit notification carries.
pub(super) const EVENT: &str = "TRANSACTION.SUCCESS";

/// Ten minutes, twice WeChat Pay's five-minute window.
const SKEW_SECS: i64 = 600;

/// What the audit signs with: the keys under test, and a key nobody configured.
pub(super) struct Material<'a> {
    keys: &'a Keys,
    mode: Mode,
    /// A freshly generated RSA key (PKCS#8 PEM), never written anywhere: the forger's.
    stranger_pem: String,
}

impl std::fmt::Debug for Material<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("keys", &self.keys)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<'a> Material<'a> {
    /// Generates the stranger key (RSA 2048).
    pub(super) fn new(keys: &'a Keys, mode: Mode) -> Result<Self, SimError> {
        let stranger = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .map_err(context("generating the forger's RSA key"))?;
        Ok(Self {
            keys,
            mode,
            stranger_pem: stranger.serialize_pem(),
        })
    }

    /// A fresh genuine payment notification (new envelope id, new order).
    pub(super) fn fresh(&self) -> Result<Notification, SimError> {
        Notification::new(self.keys, self.mode, EVENT, &resource::payment(self.keys))
    }

    /// The stranger key claiming `serial`.
    fn stranger(&self, serial: &str) -> Result<TestSigner, SimError> {
        TestSigner::new(&self.stranger_pem, serial, &self.keys.api_v3_key)
            .map_err(context("the forger's key"))
    }

    /// Signed by the stranger key under the real serial.
    pub(super) fn forged(&self) -> Result<SignedNotification, SimError> {
        let notification = self.fresh()?;
        let forger = self.stranger(notification.signer().serial())?;
        notify::sign(&forger, notification.body().clone(), unix_now())
    }

    /// Signed by the stranger key under a serial the key directory does not hold.
    pub(super) fn unknown_serial(&self) -> Result<SignedNotification, SimError> {
        let notification = self.fresh()?;
        let held = [
            self.keys.platform.serial.as_str(),
            self.keys.public_key_id.as_str(),
        ];
        let serial = std::iter::repeat_with(random_serial)
            .find(|serial| !held.iter().any(|h| h.eq_ignore_ascii_case(serial)))
            .unwrap_or_default();
        let forger = self.stranger(&serial)?;
        notify::sign(&forger, notification.body().clone(), unix_now())
    }

    /// Genuine, then one byte inside a JSON string of the body changed (still valid JSON).
    pub(super) fn one_byte_changed(&self) -> Result<SignedNotification, SimError> {
        let signed = self.fresh()?.attempt()?;
        let changed = change_one_byte(&signed.body)?;
        Ok(signed.with_body(changed))
    }

    /// Genuine, then the body parsed and written again: sorted keys, pretty-printed.
    pub(super) fn reserialised(&self) -> Result<SignedNotification, SimError> {
        let signed = self.fresh()?.attempt()?;
        let other = reserialise(&signed.body)?;
        Ok(signed.with_body(other))
    }

    /// Genuine, signed with `Wechatpay-Timestamp` ten minutes in the past.
    pub(super) fn stale(&self) -> Result<SignedNotification, SimError> {
        self.fresh()?.attempt_at(unix_now() - SKEW_SECS)
    }

    /// Genuine, signed with `Wechatpay-Timestamp` ten minutes in the future.
    pub(super) fn ahead(&self) -> Result<SignedNotification, SimError> {
        self.fresh()?.attempt_at(unix_now() + SKEW_SECS)
    }

    /// WeChat Pay's signature probe: a `WECHATPAY/SIGNTEST/…` signature on a real body.
    pub(super) fn probe(&self) -> Result<SignedNotification, SimError> {
        Ok(self.fresh()?.attempt()?.into_probe())
    }

    /// Genuine, without the header `name`.
    pub(super) fn without(&self, name: &str) -> Result<SignedNotification, SimError> {
        Ok(self.fresh()?.attempt()?.without_header(name))
    }

    /// Genuinely signed, but the resource is encrypted with another APIv3 key.
    pub(super) fn other_api_v3_key(&self) -> Result<SignedNotification, SimError> {
        let signer = self.keys.signer(self.mode)?;
        let other_key = std::iter::repeat_with(|| random_alphanumeric(32))
            .find(|key| *key != self.keys.api_v3_key)
            .unwrap_or_default();
        let built = signer
            .notification(EVENT, &resource::payment(self.keys))
            .encrypted_with(other_key.as_bytes())
            .id(&envelope_id())
            .create_time(&rfc3339_beijing_now())
            .summary("支付成功")
            .resource_nonce(&random_alphanumeric(12))
            .build()
            .map_err(context("encrypting with another APIv3 key"))?;
        notify::sign(&signer, built.body, unix_now())
    }
}

/// `signed` as the `POST` WeChat Pay sends.
pub(super) fn post(signed: SignedNotification) -> Request<Bytes> {
    let mut request = Request::new(signed.body);
    *request.method_mut() = Method::POST;
    *request.headers_mut() = signed.headers;
    request.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("Mozilla/4.0 (wechatpay-sim audit)"),
    );
    request
}

/// A fresh envelope id shaped as WeChat Pay's (a UUID).
fn envelope_id() -> String {
    let hex = random_serial().to_lowercase();
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// Changes one ASCII letter or digit inside the envelope's `id` string: the JSON stays
/// valid and the resource still decrypts, so only a signature check can tell.
pub fn change_one_byte(body: &[u8]) -> Result<Bytes, SimError> {
    const FIELD: &[u8] = br#""id":""#;
    let position = body
        .windows(FIELD.len())
        .position(|window| window == FIELD)
        .map(|start| start + FIELD.len())
        .filter(|&at| body.get(at).is_some_and(u8::is_ascii_alphanumeric))
        .ok_or_else(|| SimError::new("the notification body has no \"id\" to change"))?;
    let mut changed = body.to_vec();
    if let Some(byte) = changed.get_mut(position) {
        *byte = if *byte == b'a' { b'b' } else { b'a' };
    }
    serde_json::from_slice::<Value>(&changed).map_err(context("changing one byte of the body"))?;
    Ok(Bytes::from(changed))
}

/// The same JSON written differently: keys sorted at every level, pretty-printed.
pub fn reserialise(body: &[u8]) -> Result<Bytes, SimError> {
    let value: Value = serde_json::from_slice(body).map_err(context("parsing the body"))?;
    let text =
        serde_json::to_vec_pretty(&sorted(value)).map_err(context("re-serialising the body"))?;
    Ok(Bytes::from(text))
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut entries: Vec<(String, Value)> = fields.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        br#"{"id":"7f8fcdb2-573a","create_time":"2025","resource":{"nonce":"x","algorithm":"A"}}"#;

    #[test]
    fn one_byte_changed_is_one_byte_in_the_id_and_still_json() {
        let changed = change_one_byte(BODY).unwrap();
        assert_eq!(changed.len(), BODY.len());
        let differing = changed.iter().zip(BODY).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        let before: Value = serde_json::from_slice(BODY).unwrap();
        let after: Value = serde_json::from_slice(&changed).unwrap();
        assert_ne!(before["id"], after["id"]);
        assert_eq!(before["resource"], after["resource"]);
    }

    #[test]
    fn reserialised_is_the_same_json_in_other_bytes() {
        let other = reserialise(BODY).unwrap();
        assert_ne!(&other[..], BODY);
        let text = std::str::from_utf8(&other).unwrap();
        assert!(text.contains('\n'), "{text}");
        assert!(
            text.find("\"create_time\"").unwrap() < text.find("\"id\"").unwrap(),
            "{text}"
        );
        let before: Value = serde_json::from_slice(BODY).unwrap();
        let after: Value = serde_json::from_slice(&other).unwrap();
        assert_eq!(before, after);
    }
}
