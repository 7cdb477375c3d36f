//! Properties over arbitrary inputs: any single-bit change to a signed request is refused;
//! the signed message is built byte-exactly for any body; the timestamp window is symmetric
//! and overflow-safe for any clock, timestamp and tolerance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use support::NOW;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, bench, sample_payment};
use tower_wechatpay::{RejectionKind, WechatPayLayer};

fn layer() -> WechatPayLayer {
    support::test_layer()
}

/// One genuine notification, signed once (signing is the slow part under the pure-Rust
/// backend in a debug build).
fn genuine() -> SignedNotification {
    static SIGNED: std::sync::OnceLock<SignedNotification> = std::sync::OnceLock::new();
    SIGNED
        .get_or_init(|| {
            TestSigner::public_key_mode()
                .notification("TRANSACTION.SUCCESS", &sample_payment())
                .timestamp(NOW)
                .build()
                .unwrap()
        })
        .clone()
}

/// The parts of a request a bit can be flipped in: the body, or one `Wechatpay-*` header.
const PARTS: [&str; 6] = [
    "body",
    "wechatpay-timestamp",
    "wechatpay-nonce",
    "wechatpay-signature",
    "wechatpay-serial",
    "wechatpay-signature-type",
];

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    let bit = bit % (flipped.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    flipped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_bit_flip_in_a_signed_request_is_refused(part in 0..PARTS.len(), bit in any::<usize>()) {
        let signed = genuine();
        let layer = layer();
        prop_assert!(layer.verify(&signed.headers, &signed.body).is_ok());
        let (headers, body) = if PARTS[part] == "body" {
            (signed.headers.clone(), flip(&signed.body, bit))
        } else {
            let name = HeaderName::from_static(PARTS[part]);
            let value = flip(signed.headers[&name].as_bytes(), bit);
            // A byte no HTTP stack would carry cannot arrive at all.
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut headers: HeaderMap = signed.headers.clone();
            headers.insert(name, value);
            (headers, signed.body.to_vec())
        };
        prop_assert!(layer.verify(&headers, &body).is_err(), "a flip in {} was accepted", PARTS[part]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_signed_message_is_built_byte_exactly_for_any_body(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // Any bytes, including none, newlines, NULs and invalid UTF-8: the signature covers
        // timestamp\nnonce\nbody\n exactly, so it verifies, and one byte more does not.
        let signed = TestSigner::public_key_mode().sign_body(body.clone(), NOW).unwrap();
        let layer = layer();
        prop_assert!(bench::verify(&layer, &signed.headers, &signed.body));
        let mut longer = body.clone();
        longer.push(b'\n');
        prop_assert!(!bench::verify(&layer, &signed.headers, &longer));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_timestamp_window_is_symmetric_and_overflow_safe(
        now in any::<i64>(),
        signed_at in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        // The window is checked before the signature: an invalid signature then tells
        // "inside the window" (InvalidSignature) from "outside" (TimestampOutOfWindow).
        let outside = |now: i64, signed_at: i64| {
            let layer = layer()
                .clock(move || now)
                .timestamp_tolerance(Duration::from_secs(tolerance)).unwrap();
            let headers = genuine()
                .with_header("wechatpay-timestamp", &signed_at.to_string())
                .with_header("wechatpay-signature", "AAAA")
                .headers;
            let kind = layer.verify(&headers, b"{}").unwrap_err().kind();
            prop_assert!(matches!(kind, RejectionKind::TimestampOutOfWindow | RejectionKind::InvalidSignature));
            Ok(kind == RejectionKind::TimestampOutOfWindow)
        };
        let expected = i128::from(now).abs_diff(i128::from(signed_at)) > u128::from(tolerance);
        prop_assert_eq!(outside(now, signed_at)?, expected);
        prop_assert_eq!(outside(signed_at, now)?, expected, "symmetric");
    }
}
