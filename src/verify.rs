//! Header checks and signature verification: plain functions over headers and bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

use crate::backend::signed_message_parts;
use crate::error::{Rejection, RejectionKind};
use crate::key_ring::{KeyRing, PlatformKey};

// Header names, pre-parsed (`http` matches names case-insensitively; a `&str` name would be
// parsed again on every lookup).
pub(crate) const TIMESTAMP: HeaderName = HeaderName::from_static("wechatpay-timestamp");
pub(crate) const NONCE: HeaderName = HeaderName::from_static("wechatpay-nonce");
pub(crate) const SIGNATURE: HeaderName = HeaderName::from_static("wechatpay-signature");
pub(crate) const SERIAL: HeaderName = HeaderName::from_static("wechatpay-serial");
pub(crate) const SIGNATURE_TYPE: HeaderName = HeaderName::from_static("wechatpay-signature-type");

/// The only signature type this crate verifies; a missing header means this one.
pub(crate) const RSA_SIGNATURE_TYPE: &[u8] = b"WECHATPAY2-SHA256-RSA2048";
/// WeChat Pay's deliberate bad-signature probe (签名探测) starts with this.
pub(crate) const PROBE_PREFIX: &[u8] = b"WECHATPAY/SIGNTEST/";

/// What the headers say, checked before the body is read. The timestamp and nonce stay in
/// the header map, which travels with the request.
pub(crate) struct CheckedHeaders {
    pub(crate) signature: Vec<u8>,
    pub(crate) key: Arc<PlatformKey>,
}

/// Why the headers were refused, with what the log needs beyond the [`Rejection`].
pub(crate) enum HeaderProblem {
    Rejected(Rejection),
    Probe,
    UnknownSerial { serial: String, hint: &'static str },
}

/// Reads and checks every `Wechatpay-*` header: presence, signature type, timestamp window
/// (`|now - timestamp| <= tolerance`), probe, signature encoding and key lookup.
pub(crate) fn check_headers(
    headers: &HeaderMap,
    keys: &KeyRing,
    now: i64,
    tolerance_secs: u64,
) -> Result<CheckedHeaders, HeaderProblem> {
    if headers
        .get(SIGNATURE_TYPE)
        .is_some_and(|kind| kind.as_bytes() != RSA_SIGNATURE_TYPE)
    {
        return Err(reject(
            RejectionKind::UnsupportedSignatureType,
            "unsupported wechatpay-signature-type",
        ));
    }
    let timestamp = required(headers, TIMESTAMP, "missing wechatpay-timestamp header")?;
    required(headers, NONCE, "missing wechatpay-nonce header")?;
    let signature = required(headers, SIGNATURE, "missing wechatpay-signature header")?;
    let serial = required(headers, SERIAL, "missing wechatpay-serial header")?;

    let Some(signed_at) = parse_timestamp(timestamp.as_bytes()) else {
        return Err(reject(
            RejectionKind::InvalidHeader,
            "invalid wechatpay-timestamp header",
        ));
    };
    if !within_window(now, signed_at, tolerance_secs) {
        return Err(reject(
            RejectionKind::TimestampOutOfWindow,
            "timestamp outside the allowed window",
        ));
    }
    if signature.as_bytes().starts_with(PROBE_PREFIX) {
        return Err(HeaderProblem::Probe);
    }
    let Ok(signature) = STANDARD.decode(signature.as_bytes()) else {
        return Err(reject(
            RejectionKind::InvalidSignature,
            "signature verification failed",
        ));
    };
    let Ok(serial) = serial.to_str() else {
        return Err(reject(
            RejectionKind::InvalidHeader,
            "invalid wechatpay-serial header",
        ));
    };
    let Some(key) = keys.get(serial) else {
        return Err(HeaderProblem::UnknownSerial {
            serial: serial.to_owned(),
            hint: keys.unknown_serial_hint(serial),
        });
    };
    Ok(CheckedHeaders { signature, key })
}

/// Verifies the signature over `timestamp\nnonce\nbody\n`, built from the exact bytes of
/// the headers that [`check_headers`] accepted.
pub(crate) fn verify_signature(
    checked: &CheckedHeaders,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let invalid = || {
        Rejection::new(
            RejectionKind::InvalidSignature,
            "signature verification failed",
        )
    };
    let (Some(timestamp), Some(nonce)) = (headers.get(TIMESTAMP), headers.get(NONCE)) else {
        return Err(invalid());
    };
    let message = signed_message_parts(timestamp.as_bytes(), nonce.as_bytes(), body);
    checked
        .key
        .verifying_key
        .verify(&message, &checked.signature)
        .map_err(|_| invalid())
}

/// Unix seconds: ASCII digits only (an optional leading `-` is tolerated for arithmetic, and
/// then falls outside any sane window). `None` for anything else, including overflow.
pub(crate) fn parse_timestamp(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `|now - signed_at| <= tolerance`, without overflow for any inputs.
pub(crate) fn within_window(now: i64, signed_at: i64, tolerance_secs: u64) -> bool {
    now.abs_diff(signed_at) <= tolerance_secs
}

fn required<'h>(
    headers: &'h HeaderMap,
    name: HeaderName,
    message: &'static str,
) -> Result<&'h HeaderValue, HeaderProblem> {
    headers
        .get(name)
        .ok_or_else(|| reject(RejectionKind::MissingHeader, message))
}

fn reject(kind: RejectionKind, message: &'static str) -> HeaderProblem {
    HeaderProblem::Rejected(Rejection::new(kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_plain_decimal_seconds() {
        assert_eq!(parse_timestamp(b"1764300000"), Some(1_764_300_000));
        assert_eq!(parse_timestamp(b"-5"), Some(-5));
        assert_eq!(parse_timestamp(b"+5"), None);
        assert_eq!(parse_timestamp(b" 5"), None);
        assert_eq!(parse_timestamp(b""), None);
        assert_eq!(parse_timestamp(b"-"), None);
        assert_eq!(parse_timestamp(b"1e9"), None);
        assert_eq!(parse_timestamp(b"99999999999999999999"), None);
    }

    #[test]
    fn window_is_symmetric_inclusive_and_overflow_safe() {
        assert!(within_window(1000, 700, 300));
        assert!(within_window(1000, 1300, 300));
        assert!(!within_window(1000, 699, 300));
        assert!(!within_window(1000, 1301, 300));
        assert!(!within_window(i64::MAX, i64::MIN, 300));
        assert!(!within_window(i64::MIN, i64::MAX, u64::MAX - 1));
        assert!(within_window(i64::MIN, i64::MAX, u64::MAX));
    }
}
