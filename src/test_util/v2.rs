//! APIv2 (XML) test notifications: [`V2TestSigner`] signs payment results and encrypts
//! refund results the way WeChat Pay does (feature `v2`).
//!
//! ```
//! use tower_wechatpay::test_util::{SignType, TEST_V2_KEY, V2TestSigner, sample_v2_payment};
//!
//! let signer = V2TestSigner::new(TEST_V2_KEY);
//! let body = signer.payment_xml(sample_v2_payment(), SignType::Md5, false);
//! assert!(body.starts_with("<xml>"));
//! assert!(body.contains("<total_fee>990</total_fee>"));
//! ```
//!
//! The key here is public test material: never configure it in production.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::backend::aes256_ecb_pkcs7_encrypt;
use crate::models::Event;
use crate::v2::V2Key;
use crate::v2::crypto::{self, SignType as CryptoSignType};

/// The test APIv2 key (32 ASCII characters).
pub const TEST_V2_KEY: &str = "tWp7Tst3V2KeyForTowerWechatPay02";

/// The algorithm of a v2 payment's `sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignType {
    /// `MD5` (32 hex characters), WeChat Pay's documented default.
    Md5,
    /// `HMAC-SHA256` keyed with the APIv2 key (64 hex characters).
    HmacSha256,
}

impl SignType {
    fn crypto(self) -> CryptoSignType {
        match self {
            Self::Md5 => CryptoSignType::Md5,
            Self::HmacSha256 => CryptoSignType::HmacSha256,
        }
    }

    /// The value of the `sign_type` field: `MD5` or `HMAC-SHA256`.
    pub fn name(self) -> &'static str {
        self.crypto().name()
    }
}

/// Signs APIv2 payment results and encrypts refund results under one APIv2 key.
pub struct V2TestSigner {
    key: Zeroizing<Vec<u8>>,
    refund_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for V2TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V2TestSigner").finish_non_exhaustive()
    }
}

impl V2TestSigner {
    /// A signer with this APIv2 key. Any bytes are taken, so a signer can also play a
    /// stranger whose key is not the receiver's.
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        let key = key.as_ref();
        Self {
            key: Zeroizing::new(key.to_vec()),
            refund_key: Zeroizing::new(crypto::refund_key(key)),
        }
    }

    /// The upper-case hex `sign` of `fields` (any `sign` among them is left out; empty
    /// values are not signed; a `sign_type` among them is signed like any field).
    pub fn sign<K, V>(
        &self,
        fields: impl IntoIterator<Item = (K, V)>,
        sign_type: SignType,
    ) -> String
    where
        K: Into<String>,
        V: Into<String>,
    {
        let fields: Vec<(String, String)> = collect(fields).into_iter().collect();
        crypto::compute_sign(&fields, &self.key, sign_type.crypto())
    }

    /// A payment result body as WeChat Pay sends it: `<xml>`, the fields sorted by name,
    /// values in CDATA except `total_fee`, and a `sign` computed with `sign_type`. With
    /// `include_sign_type`, a `sign_type` field naming the algorithm is added (and signed);
    /// without it, `fields` go as given (a `sign_type` among them stays, and is signed).
    pub fn payment_xml<K, V>(
        &self,
        fields: impl IntoIterator<Item = (K, V)>,
        sign_type: SignType,
        include_sign_type: bool,
    ) -> String
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut fields = collect(fields);
        fields.remove("sign");
        if include_sign_type {
            fields.insert("sign_type".into(), sign_type.name().into());
        }
        let sign = self.sign(fields.clone(), sign_type);
        fields.insert("sign".into(), sign);
        xml_document("xml", &fields, |name| name == "total_fee")
    }

    /// A refund result body as WeChat Pay sends it: `<xml>` with the `outer` fields (sorted,
    /// CDATA except `return_code`) and `req_info`, the base64 of AES-256-ECB (PKCS#7) over
    /// `<root>` + the `inner` fields in CDATA + `</root>`, keyed with the lower-case hex MD5
    /// of the APIv2 key. A `req_info` among `outer` is replaced.
    pub fn refund_xml<K1, V1, K2, V2>(
        &self,
        outer: impl IntoIterator<Item = (K1, V1)>,
        inner: impl IntoIterator<Item = (K2, V2)>,
    ) -> String
    where
        K1: Into<String>,
        V1: Into<String>,
        K2: Into<String>,
        V2: Into<String>,
    {
        let root = xml_document("root", &collect(inner), |_| false);
        let mut outer = collect(outer);
        outer.insert("req_info".into(), self.encrypt_req_info(root.as_bytes()));
        xml_document("xml", &outer, |name| name == "return_code")
    }

    /// The `req_info` of `plaintext` (any bytes, e.g. a malformed `<root>`). AES-256 with a
    /// 32-byte key does not fail; if a backend ever did, the result is empty.
    pub fn encrypt_req_info(&self, plaintext: &[u8]) -> String {
        aes256_ecb_pkcs7_encrypt(&self.refund_key, plaintext)
            .map(|ciphertext| STANDARD.encode(ciphertext))
            .unwrap_or_default()
    }
}

fn collect<K: Into<String>, V: Into<String>>(
    fields: impl IntoIterator<Item = (K, V)>,
) -> BTreeMap<String, String> {
    fields
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect()
}

/// `<root>` + one child per field, in CDATA unless `plain(name)` (then escaped text).
fn xml_document(
    root: &str,
    fields: &BTreeMap<String, String>,
    plain: impl Fn(&str) -> bool,
) -> String {
    let mut out = format!("<{root}>");
    for (name, value) in fields {
        out.push('<');
        out.push_str(name);
        out.push('>');
        if plain(name) {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    c => out.push(c),
                }
            }
        } else {
            out.push_str("<![CDATA[");
            // `]]>` cannot appear inside CDATA: close, and reopen after `]]`.
            out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
            out.push_str("]]>");
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
    out.push_str(&format!("</{root}>"));
    out
}

/// A v2 payment success for the same order as [`sample_payment`](super::sample_payment)
/// (990 fen), without `sign`.
pub fn sample_v2_payment() -> BTreeMap<String, String> {
    collect([
        ("appid", "wx8888888888888888"),
        ("bank_type", "CMC"),
        ("cash_fee", "990"),
        ("fee_type", "CNY"),
        ("is_subscribe", "N"),
        ("mch_id", "1900012345"),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "oTestOpenid0000000000000SECRET"),
        ("out_trade_no", "2025112811200060181590"),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("time_end", "20251128112000"),
        ("total_fee", "990"),
        ("trade_type", "NATIVE"),
        ("transaction_id", "4200830166131860913909960308"),
    ])
}

/// A v2 refund success for [`sample_v2_payment`]'s order, made by hand in the merchant
/// platform: `(outer, inner)`, the outer fields (no `req_info`) and the fields `req_info`
/// encrypts.
pub fn sample_v2_refund() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let outer = collect([
        ("appid", "wx8888888888888888"),
        ("mch_id", "1900012345"),
        ("nonce_str", "0b9f35f484df17a732e537c37708d1d0"),
        ("return_code", "SUCCESS"),
    ]);
    let inner = collect([
        ("cash_refund_fee", "990"),
        ("out_refund_no", "R2025112811200060181590"),
        ("out_trade_no", "2025112811200060181590"),
        ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS"),
        ("refund_fee", "990"),
        ("refund_id", "50000000382019052709732678859"),
        ("refund_recv_accout", "支付用户零钱"),
        ("refund_request_source", "VENDOR_PLATFORM"),
        ("refund_status", "SUCCESS"),
        ("settlement_refund_fee", "990"),
        ("settlement_total_fee", "990"),
        ("success_time", "2025-11-28 12:00:00"),
        ("total_fee", "990"),
        ("transaction_id", "4200830166131860913909960308"),
    ]);
    (outer, inner)
}

/// What [`open_v2`] found.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedV2 {
    /// `"payment"`, `"refund"`, or `"unparsed"` (accepted, but not its model).
    pub kind: &'static str,
    /// The notification's fields as a JSON object of strings (`resource_json`).
    pub fields: serde_json::Value,
    /// The synthesized envelope: `id`, `event_type`.
    pub id: String,
    /// The synthesized `event_type`, e.g. `TRANSACTION.SUCCESS`.
    pub event_type: String,
}

/// Runs one v2 body through the crate's v2 path (parse, verify or decrypt, build) with
/// `key`, without a layer: for tests until the layer path exists. The error is the
/// refusal's kind and fixed message.
#[doc(hidden)]
pub fn open_v2(key: impl AsRef<[u8]>, body: &[u8]) -> Result<OpenedV2, String> {
    let key = V2Key::new(key.as_ref()).map_err(|error| error.to_string())?;
    let notification = crate::v2::open(&key, body)
        .map_err(|rejection| format!("{:?}: {}", rejection.kind(), rejection.message()))?;
    let kind = match notification.event() {
        Event::V2Payment(_) => "payment",
        Event::V2Refund(_) => "refund",
        _ => "unparsed",
    };
    let fields = notification
        .resource_value()
        .map_err(|_| "the fields are not json".to_owned())?;
    Ok(OpenedV2 {
        kind,
        fields,
        id: notification.id().to_owned(),
        event_type: notification.event_type().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_sample_payment_opens_with_either_algorithm() {
        let signer = V2TestSigner::new(TEST_V2_KEY);
        for sign_type in [SignType::Md5, SignType::HmacSha256] {
            for include in [false, true] {
                let body = signer.payment_xml(sample_v2_payment(), sign_type, include);
                let opened = open_v2(TEST_V2_KEY, body.as_bytes()).unwrap();
                assert_eq!(opened.kind, "payment");
                assert_eq!(opened.event_type, "TRANSACTION.SUCCESS");
                assert_eq!(opened.fields["total_fee"], "990");
                assert_eq!(
                    opened.fields.get("sign_type").is_some(),
                    include,
                    "{sign_type:?}"
                );
            }
        }
    }

    #[test]
    fn a_payment_signed_by_a_stranger_is_refused() {
        let stranger = V2TestSigner::new("another-v2-key-0000000000000000x");
        let body = stranger.payment_xml(sample_v2_payment(), SignType::Md5, true);
        let error = open_v2(TEST_V2_KEY, body.as_bytes()).unwrap_err();
        assert!(error.starts_with("InvalidSignature"), "{error}");
    }

    #[test]
    fn a_sample_refund_opens_with_outer_and_inner_fields() {
        let signer = V2TestSigner::new(TEST_V2_KEY);
        let (outer, inner) = sample_v2_refund();
        let body = signer.refund_xml(outer, inner);
        assert!(body.contains("<return_code>SUCCESS</return_code>"));
        let opened = open_v2(TEST_V2_KEY, body.as_bytes()).unwrap();
        assert_eq!(opened.kind, "refund");
        assert_eq!(opened.event_type, "REFUND.SUCCESS");
        assert_eq!(opened.id, "v2:0b9f35f484df17a732e537c37708d1d0");
        assert_eq!(opened.fields["mch_id"], "1900012345");
        assert_eq!(opened.fields["refund_fee"], "990");
        assert!(opened.fields.get("req_info").is_some());
    }

    #[test]
    fn values_that_need_escaping_survive_the_round_trip() {
        let signer = V2TestSigner::new(TEST_V2_KEY);
        let mut fields = sample_v2_payment();
        fields.insert("attach".into(), "a]]>b <&> c".into());
        let body = signer.payment_xml(fields, SignType::HmacSha256, false);
        let opened = open_v2(TEST_V2_KEY, body.as_bytes()).unwrap();
        assert_eq!(opened.fields["attach"], "a]]>b <&> c");
    }
}
