//! Header checks and signature verification: plain functions over headers and bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

use crate::backend::signed_message_parts;
use crate::error::{Rejection, RejectionKind};
use crate::key_ring::{KeyRing, KeyValidity, PlatformKey};

// Header names, pre-parsed (`http` matches names case-insensitively; a `&str` name would be
// parsed again on every lookup).
pub(crate) const TIMESTAMP: HeaderName = HeaderName::from_static("wechatpay-timestamp");
pub(crate) const NONCE: HeaderName = HeaderName::from_static("wechatpay-nonce");
pub(crate) const SIGNATURE: HeaderName = HeaderName::from_static("wechatpay-signature");
pub(crate) const SERIAL: HeaderName = HeaderName::from_static("wechatpay-serial");
pub(crate) const SIGNATURE_TYPE: HeaderName = HeaderName::from_static("wechatpay-signature-type");

/// The only signature type this crate verifies; a missing or empty header means this one
/// (as WeChat Pay's Go and Java SDKs read it).
pub(crate) const RSA_SIGNATURE_TYPE: &[u8] = b"WECHATPAY2-SHA256-RSA2048";
/// WeChat Pay's deliberate bad-signature probe (签名探测) starts with this.
pub(crate) const PROBE_PREFIX: &[u8] = b"WECHATPAY/SIGNTEST/";

/// Everything verification needs, read from the headers before the body: the key, the
/// decoded signature, and the exact timestamp and nonce bytes of the signed message.
pub(crate) struct CheckedHeaders {
    pub(crate) key: Arc<PlatformKey>,
    pub(crate) signature: Vec<u8>,
    // `HeaderValue` clones share their bytes: no copy.
    pub(crate) timestamp: HeaderValue,
    pub(crate) nonce: HeaderValue,
}

/// Why the headers were refused, with what the log needs beyond the [`Rejection`].
pub(crate) enum HeaderProblem {
    /// `Content-Length` over the limit.
    TooLarge,
    /// A required header is absent.
    Missing(&'static str),
    /// A header is present but malformed, or names an unsupported signature type.
    Invalid(Rejection),
    /// The timestamp is outside the window.
    Stale { timestamp: i64 },
    /// A `WECHATPAY/SIGNTEST/` probe; `known_serial`: it names a key we have, so it is
    /// most likely WeChat Pay's own probe rather than a stranger's imitation.
    Probe { known_serial: bool },
    /// No key has this serial (every other check passed).
    UnknownSerial { serial: String, hint: &'static str },
    /// The platform certificate for this serial is outside its validity, by our clock.
    KeyNotValid {
        serial: String,
        validity: KeyValidity,
    },
}

/// Reads and checks the declared length and every `Wechatpay-*` header: signature type,
/// presence, timestamp window (`|now - timestamp| <= tolerance`), probe, signature
/// encoding and key lookup, in that order (cheapest and least revealing first).
pub(crate) fn check_headers(
    headers: &HeaderMap,
    keys: &KeyRing,
    now: i64,
    tolerance_secs: u64,
    max_body_size: usize,
) -> Result<CheckedHeaders, HeaderProblem> {
    if declared_length(headers).is_some_and(|len| len > max_body_size as u64) {
        return Err(HeaderProblem::TooLarge);
    }
    if headers
        .get(SIGNATURE_TYPE)
        .is_some_and(|kind| !kind.is_empty() && kind.as_bytes() != RSA_SIGNATURE_TYPE)
    {
        return Err(invalid(
            RejectionKind::UnsupportedSignatureType,
            "unsupported wechatpay-signature-type",
        ));
    }
    let timestamp = required(headers, TIMESTAMP, "missing wechatpay-timestamp header")?;
    let nonce = required(headers, NONCE, "missing wechatpay-nonce header")?;
    let signature = required(headers, SIGNATURE, "missing wechatpay-signature header")?;
    let serial = required(headers, SERIAL, "missing wechatpay-serial header")?;

    let Some(signed_at) = parse_timestamp(timestamp.as_bytes()) else {
        return Err(invalid(
            RejectionKind::InvalidHeader,
            "invalid wechatpay-timestamp header",
        ));
    };
    if !within_window(now, signed_at, tolerance_secs) {
        return Err(HeaderProblem::Stale {
            timestamp: signed_at,
        });
    }
    let Ok(serial) = serial.to_str() else {
        return Err(invalid(
            RejectionKind::InvalidHeader,
            "invalid wechatpay-serial header",
        ));
    };
    if signature.as_bytes().starts_with(PROBE_PREFIX) {
        // Never a reason to refresh keys.
        return Err(HeaderProblem::Probe {
            known_serial: keys.contains(serial),
        });
    }
    let Ok(signature) = STANDARD.decode(signature.as_bytes()) else {
        return Err(invalid(
            RejectionKind::InvalidSignature,
            "signature verification failed",
        ));
    };
    let Some(key) = keys.get(serial) else {
        return Err(HeaderProblem::UnknownSerial {
            serial: serial.to_owned(),
            hint: keys.unknown_serial_hint(serial),
        });
    };
    if let Some(validity) = key.validity_problem(now) {
        return Err(HeaderProblem::KeyNotValid {
            serial: serial.to_owned(),
            validity,
        });
    }
    Ok(CheckedHeaders {
        key,
        signature,
        timestamp: timestamp.clone(),
        nonce: nonce.clone(),
    })
}

/// Verifies the signature over `timestamp\nnonce\nbody\n`, built from the exact header
/// bytes [`check_headers`] accepted and the exact body bytes received.
pub(crate) fn verify_signature(checked: &CheckedHeaders, body: &[u8]) -> Result<(), Rejection> {
    let message =
        signed_message_parts(checked.timestamp.as_bytes(), checked.nonce.as_bytes(), body);
    checked
        .key
        .verifying_key
        .verify(&message, &checked.signature)
        .map_err(|_| {
            Rejection::new(
                RejectionKind::InvalidSignature,
                "signature verification failed",
            )
        })
}

/// Whether a body is not the compact JSON WeChat Pay sends: whitespace between tokens, or a
/// trailing newline. A refused body like that was most likely rewritten on the way.
pub(crate) fn looks_rewritten(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte.is_ascii_whitespace() {
            return true;
        }
    }
    false
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

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn required<'h>(
    headers: &'h HeaderMap,
    name: HeaderName,
    message: &'static str,
) -> Result<&'h HeaderValue, HeaderProblem> {
    headers.get(name).ok_or(HeaderProblem::Missing(message))
}

fn invalid(kind: RejectionKind, message: &'static str) -> HeaderProblem {
    HeaderProblem::Invalid(Rejection::new(kind, message))
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

    #[test]
    fn compact_json_is_not_rewritten_and_whitespace_between_tokens_is() {
        assert!(!looks_rewritten(br#"{"id":"a b","resource":{"x":"\" {"}}"#));
        assert!(looks_rewritten(br#"{"id": "a"}"#));
        assert!(looks_rewritten(b"{\"id\":\"a\"}\n"));
        assert!(looks_rewritten(b"{\n\"id\":\"a\"}"));
        assert!(!looks_rewritten(br#"{"id":"a\\"}"#));
        assert!(looks_rewritten(br#"{"id":"a\\" }"#));
    }
}
