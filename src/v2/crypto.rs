//! APIv2 crypto: the `sign` of payment results (MD5 or HMAC-SHA256 under the APIv2 key)
//! and the `req_info` of refund results (AES-256-ECB under the MD5 of that key).
//! `PROTOCOL-V2.md` §3.2–3.4 and §4.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

use crate::backend::{aes256_ecb_pkcs7_decrypt, hmac_sha256};

/// The AES-256 key for `req_info`: the lower-case hex MD5 of the APIv2 key, as its 32
/// ASCII bytes.
pub(crate) fn refund_key(key: &[u8]) -> [u8; 32] {
    let digest = Md5::digest(key);
    let mut out = [0; 32];
    hex_into(&digest, HEX_LOWER, &mut out);
    out
}

/// The `sign` algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignType {
    /// `MD5`: 32 hex characters.
    Md5,
    /// `HMAC-SHA256`, keyed with the APIv2 key: 64 hex characters.
    HmacSha256,
}

impl SignType {
    /// The value of the `sign_type` field.
    #[cfg(feature = "test-util")]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The length of its upper-case hex `sign`.
    fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::HmacSha256 => 64,
        }
    }
}

/// Why a `sign` was refused. Carries no request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignProblem {
    /// No `sign`, or an empty one.
    Missing,
    /// `sign_type` names an algorithm other than `MD5` and `HMAC-SHA256`.
    UnsupportedType,
    /// The `sign` has the wrong length for its `sign_type`, or (without one) is neither
    /// 32 nor 64 characters.
    Length,
    /// The `sign` does not match.
    Mismatch,
}

/// Verifies the `sign` of a payment result (fail closed: no `sign`, no entry).
///
/// The signed string is every field but `sign` whose value is not empty (`sign_type`
/// included), sorted by name in byte order, as `k=v&k=v…&key=K`. `sign_type`, when present,
/// decides the algorithm and the length the `sign` must have; without it the length
/// decides (32 → MD5, 64 → HMAC-SHA256). The comparison ignores hex case and runs in
/// constant time.
pub(crate) fn verify_sign(fields: &[(String, String)], key: &[u8]) -> Result<(), SignProblem> {
    let received = fields
        .iter()
        .find(|(name, _)| name == "sign")
        .map(|(_, value)| value.as_bytes())
        .filter(|value| !value.is_empty())
        .ok_or(SignProblem::Missing)?;
    let sign_type = fields
        .iter()
        .find(|(name, _)| name == "sign_type")
        .map(|(_, value)| value.as_str());
    let sign_type = match sign_type {
        Some("MD5") => SignType::Md5,
        Some("HMAC-SHA256") => SignType::HmacSha256,
        // An empty `sign_type` is left out of the signed string, so it cannot decide.
        Some("") | None => match received.len() {
            32 => SignType::Md5,
            64 => SignType::HmacSha256,
            _ => return Err(SignProblem::Length),
        },
        Some(_) => return Err(SignProblem::UnsupportedType),
    };
    if received.len() != sign_type.hex_len() {
        return Err(SignProblem::Length);
    }
    let expected = compute_sign(fields, key, sign_type);
    let received = received.to_ascii_uppercase();
    if ct_eq(&received, expected.as_bytes()) {
        Ok(())
    } else {
        Err(SignProblem::Mismatch)
    }
}

/// The upper-case hex `sign` of `fields` (any `sign` among them is left out).
pub(crate) fn compute_sign(fields: &[(String, String)], key: &[u8], sign_type: SignType) -> String {
    let mut signed: Vec<&(String, String)> = fields
        .iter()
        .filter(|(name, value)| name != "sign" && !value.is_empty())
        .collect();
    signed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // The string ends with the key: wipe it when done.
    let mut message = Zeroizing::new(Vec::with_capacity(256));
    for (name, value) in signed {
        if !message.is_empty() {
            message.push(b'&');
        }
        message.extend_from_slice(name.as_bytes());
        message.push(b'=');
        message.extend_from_slice(value.as_bytes());
    }
    message.extend_from_slice(b"&key=");
    message.extend_from_slice(key);
    let mut hex = [0; 64];
    let len = match sign_type {
        SignType::Md5 => {
            let digest = Md5::digest(message.as_slice());
            hex_into(&digest, HEX_UPPER, &mut hex)
        }
        SignType::HmacSha256 => {
            let mac = hmac_sha256(key, &[message.as_slice()]);
            hex_into(&mac, HEX_UPPER, &mut hex)
        }
    };
    hex.get(..len)
        .map(|hex| hex.iter().map(|&b| char::from(b)).collect())
        .unwrap_or_default()
}

/// Why `req_info` did not decrypt. Deliberately without detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecryptError;

/// Decrypts a refund's `req_info`: base64, then AES-256-ECB under `refund_key`, then
/// PKCS#7 unpadding. ECB has no MAC: knowing the key is the only authentication, so the
/// caller must also require well-formed XML.
pub(crate) fn decrypt_req_info(b64: &str, refund_key: &[u8; 32]) -> Result<Vec<u8>, DecryptError> {
    let mut buffer = STANDARD
        .decode(b64.trim_ascii())
        .map_err(|_| DecryptError)?;
    let len = aes256_ecb_pkcs7_decrypt(refund_key, &mut buffer).map_err(|_| DecryptError)?;
    buffer.truncate(len);
    Ok(buffer)
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `bytes` as hex into `out` (as much as fits) and returns the length written.
fn hex_into(bytes: &[u8], digits: &[u8; 16], out: &mut [u8]) -> usize {
    let mut written = 0;
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = digits[usize::from(byte >> 4)];
        pair[1] = digits[usize::from(byte & 0x0f)];
        written += 2;
    }
    written
}

/// Constant-time equality (for equal lengths; lengths are public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_KEY: &[u8] = b"fake-v2-key-for-docs-only-000000";

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn example_a() -> Vec<(String, String)> {
        fields(&[
            ("appid", "wx0000000000000000"),
            ("bank_type", "OTHERS"),
            ("cash_fee", "1"),
            ("fee_type", "CNY"),
            ("is_subscribe", "N"),
            ("mch_id", "1230000109"),
            ("nonce_str", "1700000000000"),
            ("openid", "oFAKEopenid000000000000000000"),
            ("out_trade_no", "TEST-ORDER-0001"),
            ("result_code", "SUCCESS"),
            ("return_code", "SUCCESS"),
            ("sign", "EA909D99B53EA6D672CDFE37460D2585"),
            ("time_end", "20250101120000"),
            ("total_fee", "1"),
            ("trade_type", "JSAPI"),
            ("transaction_id", "4200000000000000000000000001"),
        ])
    }

    fn example_b() -> Vec<(String, String)> {
        let mut b = example_a();
        for (name, value) in &mut b {
            match name.as_str() {
                "nonce_str" => *value = "1700000000001".into(),
                "out_trade_no" => *value = "TEST-ORDER-0002".into(),
                "transaction_id" => *value = "4200000000000000000000000002".into(),
                "sign" => {
                    *value =
                        "A262CCB0417810788435B13C2FB14EDE6D908AE1A3FE52AE32FE0026E7E43BC3".into()
                }
                _ => {}
            }
        }
        b
    }

    fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
        match fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => fields.push((name.to_owned(), value.to_owned())),
        }
    }

    #[test]
    fn the_refund_key_is_the_lower_case_hex_md5_of_the_key() {
        assert_eq!(&refund_key(DOC_KEY), b"b51179355e0beda0682dba9186816345");
    }

    #[test]
    fn example_a_md5_without_sign_type_verifies() {
        assert_eq!(verify_sign(&example_a(), DOC_KEY), Ok(()));
    }

    #[test]
    fn example_b_hmac_sha256_without_sign_type_verifies_by_length() {
        assert_eq!(verify_sign(&example_b(), DOC_KEY), Ok(()));
    }

    #[test]
    fn example_b_with_sign_type_signs_the_sign_type_too() {
        let mut b = example_b();
        set(&mut b, "sign_type", "HMAC-SHA256");
        assert_eq!(verify_sign(&b, DOC_KEY), Err(SignProblem::Mismatch));
        set(
            &mut b,
            "sign",
            "C0A3BBEC4286EFA6773AD04B926CBD4EDE90B872A9583FB5BC0900673D414E0F",
        );
        assert_eq!(verify_sign(&b, DOC_KEY), Ok(()));
    }

    #[test]
    fn a_lower_case_sign_verifies() {
        let mut a = example_a();
        set(&mut a, "sign", "ea909d99b53ea6d672cdfe37460d2585");
        assert_eq!(verify_sign(&a, DOC_KEY), Ok(()));
    }

    #[test]
    fn the_field_order_does_not_matter() {
        let mut a = example_a();
        a.reverse();
        assert_eq!(verify_sign(&a, DOC_KEY), Ok(()));
    }

    #[test]
    fn empty_values_are_not_signed() {
        let mut a = example_a();
        set(&mut a, "device_info", "");
        assert_eq!(verify_sign(&a, DOC_KEY), Ok(()));
    }

    #[test]
    fn a_changed_value_does_not_verify() {
        let mut a = example_a();
        set(&mut a, "total_fee", "100");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Mismatch));
    }

    #[test]
    fn an_added_field_does_not_verify() {
        let mut a = example_a();
        set(&mut a, "attach", "x");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Mismatch));
    }

    #[test]
    fn another_key_does_not_verify() {
        assert_eq!(
            verify_sign(&example_a(), b"another-v2-key-0000000000000000x"),
            Err(SignProblem::Mismatch)
        );
        assert_eq!(
            verify_sign(&example_b(), b"another-v2-key-0000000000000000x"),
            Err(SignProblem::Mismatch)
        );
    }

    #[test]
    fn a_missing_or_empty_sign_is_refused() {
        let mut a = example_a();
        a.retain(|(name, _)| name != "sign");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Missing));
        set(&mut a, "sign", "");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Missing));
    }

    #[test]
    fn an_unknown_sign_type_is_refused() {
        let mut a = example_a();
        set(&mut a, "sign_type", "SHA1");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::UnsupportedType));
        set(&mut a, "sign_type", "md5");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::UnsupportedType));
    }

    #[test]
    fn the_sign_length_must_match_the_sign_type() {
        // An HMAC-SHA256 sign relabelled MD5 (and the reverse) is refused before hashing.
        let mut b = example_b();
        set(&mut b, "sign_type", "MD5");
        assert_eq!(verify_sign(&b, DOC_KEY), Err(SignProblem::Length));
        let mut a = example_a();
        set(&mut a, "sign_type", "HMAC-SHA256");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Length));
    }

    #[test]
    fn a_sign_of_another_length_is_refused() {
        let mut a = example_a();
        set(&mut a, "sign", "EA909D99B53EA6D672CDFE37460D258");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Length));
        set(
            &mut a,
            "sign",
            "EA909D99B53EA6D672CDFE37460D2585EA909D99B53EA6D672CDFE37460D2585EA",
        );
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Length));
    }

    #[test]
    fn a_sign_of_non_hex_characters_is_refused() {
        let mut a = example_a();
        set(&mut a, "sign", "ZZ909D99B53EA6D672CDFE37460D2585");
        assert_eq!(verify_sign(&a, DOC_KEY), Err(SignProblem::Mismatch));
    }

    #[test]
    fn compute_sign_reproduces_the_examples() {
        assert_eq!(
            compute_sign(&example_a(), DOC_KEY, SignType::Md5),
            "EA909D99B53EA6D672CDFE37460D2585"
        );
        assert_eq!(
            compute_sign(&example_b(), DOC_KEY, SignType::HmacSha256),
            "A262CCB0417810788435B13C2FB14EDE6D908AE1A3FE52AE32FE0026E7E43BC3"
        );
    }

    const EXAMPLE_C_REQ_INFO: &str = "ogcJ1Nl2IGx3WUnI759KfqbVV15ouJq7I/9vNsxNixLAbpW1PJBBPzJgGdnNU0XqzBQ3ejImMu/lW29x/wkCaY+QHPMAX3blAoyn6DFsAGh6oCyxg9Rz9BwUltxhtq2Ks+/tuUn4oNMBFdBGsP615ZUaQi3725LF7sBDhKu/T2+c+EOB7fqWgUtyvWw/MQThW5mRNvdlsg7qrtIjwXE0lpNESwLQ/IJzuAw8XfrVNFdq+icEwjmIBgPH58OaFYtuX0+7xcRACZvF2pN/Qk8in+gfMYk5szayKMrjxECqX0m/YGMAa8CORAdnADLiJzXNoqBZGaNY99TmA06w65q6qwlZ+Q6ZWhUM90n3NCHaiooWiiDTosoD8uCgEsEbUwkMHuRbkoT/0kMHEY+asTPgJO/ytk9satA12+vuyltN0xFmmsliCQzhQHqJ14J9V4e+7pP/Z84In3Xp2urS/RuEKI/RG2JCc/OGYtIbz8xXX3GE9rCMUJMHaBKmjJr1vBUtEATo1RzGryDvpei0ofHPpeHA1QhSrfhhAsSydFSkj1twbwJE4FFX0Oh+bd0V5nuRDxwONFgBAccKAc0VhVoBzJQlUdyO1JcGvLGkMx+rZEMC3jyRUEep1HGgnU2OBAs+ZlJNNkG5u8rphSuT99xC3aqNLu+y/8m4Z0RssiXncGkLmQW+LSSUtsvS9tPNp10Xgc7Dl7Gmn3r0nVdEZOnr3Fb7IG7xJermNrD/UfhvG0O1hJZ2ZNGvRiwsBK9g278PUqN0wn/BASbOsQCn7Plg17h3naIoozYGkR/r4Cqc7W/v42OfrJnhbBurozsgscO67yOJIbZu4DzZ8mpmm6ahj+lvh5wXyE2wzIvTFGyDktsMpcUX42yTJNZIsZ+Av3C5NGzgajS2NljVLXUzoIj1DHYJ9LwoBOab/lBb8b3OnBzSZXCrJ/3rJ2zRrfwRzEBwZQoz6zOQJlT2DuQMGgrvIvpEO30UsDesT62VlvrfT+atrWw+JQRc8E2TRfJjNt5jgbLhEF2SCDzD7xT2NvwJT+/ytk9satA12+vuyltN0xG2nwPigupliPGsXt7ZkESBJfnYGLvUWG2+BHkKiVdWnYCHSKWsay9XsOQ6JRr7n5A=";

    #[test]
    fn example_c_req_info_decrypts_to_the_listed_root() {
        let plaintext = decrypt_req_info(EXAMPLE_C_REQ_INFO, &refund_key(DOC_KEY)).unwrap();
        let root = crate::v2::xml::parse(&plaintext, "root").unwrap();
        let expected = fields(&[
            ("cash_refund_fee", "1"),
            ("out_refund_no", "TEST-REFUND-0001"),
            ("out_trade_no", "TEST-ORDER-0001"),
            ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS"),
            ("refund_fee", "1"),
            ("refund_id", "50000000000000000000000000001"),
            ("refund_recv_accout", "支付用户零钱"),
            ("refund_request_source", "VENDOR_PLATFORM"),
            ("refund_status", "SUCCESS"),
            ("settlement_refund_fee", "1"),
            ("settlement_total_fee", "1"),
            ("success_time", "2025-01-01 12:30:00"),
            ("total_fee", "1"),
            ("transaction_id", "4200000000000000000000000001"),
        ]);
        assert_eq!(root, expected);
    }

    #[test]
    fn req_info_under_another_key_does_not_decrypt_to_xml() {
        let other = refund_key(b"another-v2-key-0000000000000000x");
        // Unpadding fails, or (rarely) yields bytes that are not the XML root.
        if let Ok(plaintext) = decrypt_req_info(EXAMPLE_C_REQ_INFO, &other) {
            assert!(crate::v2::xml::parse(&plaintext, "root").is_err());
        }
    }

    #[test]
    fn malformed_req_info_is_refused() {
        let key = refund_key(DOC_KEY);
        assert_eq!(decrypt_req_info("", &key), Err(DecryptError));
        assert_eq!(decrypt_req_info("not base64!", &key), Err(DecryptError));
        // Valid base64, not a multiple of the block size.
        assert_eq!(decrypt_req_info("AAAA", &key), Err(DecryptError));
        // A truncated ciphertext: one block short.
        let truncated = &EXAMPLE_C_REQ_INFO[..EXAMPLE_C_REQ_INFO.len() - 24];
        if let Ok(plaintext) = decrypt_req_info(truncated, &key) {
            assert!(crate::v2::xml::parse(&plaintext, "root").is_err());
        }
    }

    #[test]
    fn a_flipped_ciphertext_block_breaks_the_xml() {
        let key = refund_key(DOC_KEY);
        let mut raw = STANDARD.decode(EXAMPLE_C_REQ_INFO).unwrap();
        raw[0] ^= 1;
        let tampered = STANDARD.encode(&raw);
        if let Ok(plaintext) = decrypt_req_info(&tampered, &key) {
            assert!(crate::v2::xml::parse(&plaintext, "root").is_err());
        }
    }

    #[test]
    fn ct_eq_compares_whole_slices() {
        assert!(ct_eq(b"ABC", b"ABC"));
        assert!(!ct_eq(b"ABC", b"ABD"));
        assert!(!ct_eq(b"ABC", b"AB"));
    }
}
