//! APIv2 (XML) notifications as WeChat Pay still sends them (`send --v2`, `audit --v2`):
//! payment results signed with `sign` (MD5 or HMAC-SHA256 under the APIv2 key) and refund
//! results whose `req_info` is AES-256-ECB encrypted under the MD5 of that key. The bodies
//! are made by the crate's test signer ([`V2TestSigner`]); this module
//! picks realistic fields, edits them, and judges the answers: only a 2xx whose body is
//! XML with `return_code` SUCCESS stops WeChat's v2 retries.
//!
//! Unlike v3, a v2 notification carries no per-attempt signature: every attempt resends
//! the same XML.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use tower_wechatpay::test_util::{SignType as SignerSignType, V2TestSigner};

use crate::deliver::{Acknowledgement, Deliverable};
use crate::error::SimError;
use crate::keys::{Keys, random_alphanumeric, random_digits};

/// A v2 notification's fields by name (sorted, as WeChat writes them).
pub type Fields = BTreeMap<String, String>;

/// How a v2 payment is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignType {
    /// `MD5(stringA&key=K)`, upper-case hex (32 digits): the documented default.
    Md5,
    /// `HMAC-SHA256(K, stringA&key=K)`, upper-case hex (64 digits).
    HmacSha256,
}

impl SignType {
    /// The `sign_type` value WeChat writes.
    pub fn name(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    fn signer(self) -> SignerSignType {
        match self {
            SignType::Md5 => SignerSignType::Md5,
            SignType::HmacSha256 => SignerSignType::HmacSha256,
        }
    }
}

/// Which v2 notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 支付结果通知: signed fields.
    Payment,
    /// 退款结果通知: outer fields and an encrypted `req_info`, no `sign`.
    Refund,
}

/// One v2 notification, ready to be delivered any number of times (the same bytes each
/// time).
#[derive(Debug, Clone)]
pub struct V2Notification {
    body: Bytes,
    kind: Kind,
}

impl V2Notification {
    /// A payment with `fields`, signed under `key` with `sign_type`; `sign_type` is written
    /// (and signed) only when `include_sign_type`.
    pub fn payment(
        key: &str,
        fields: &Fields,
        sign_type: SignType,
        include_sign_type: bool,
    ) -> Result<Self, SimError> {
        Ok(Self {
            body: Bytes::from(payment_xml(key, fields, sign_type, include_sign_type)?),
            kind: Kind::Payment,
        })
    }

    /// A refund: `outer` fields around `inner` encrypted under `key` as `req_info`.
    pub fn refund(key: &str, outer: &Fields, inner: &Fields) -> Result<Self, SimError> {
        Ok(Self {
            body: Bytes::from(refund_xml(key, outer, inner)?),
            kind: Kind::Refund,
        })
    }

    /// Any body, sent as a v2 notification (tampered ones).
    pub fn from_body(body: impl Into<Bytes>, kind: Kind) -> Self {
        Self {
            body: body.into(),
            kind,
        }
    }

    /// The exact body every attempt carries.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Payment or refund.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl Deliverable for V2Notification {
    fn request(&self) -> Result<Request<Bytes>, SimError> {
        Ok(post(self.body.clone()))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::XmlSuccess
    }
}

/// `body` as the `POST` WeChat Pay's v2 sends: `Content-Type: text/xml`, the headers of a
/// captured v2 notification, no `Wechatpay-*` header.
pub fn post(body: Bytes) -> Request<Bytes> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("Mozilla/4.0 (wechatpay-sim)"),
    );
    request
}

/// The payment body WeChat Pay sends for `fields`, signed under `key`.
pub fn payment_xml(
    key: &str,
    fields: &Fields,
    sign_type: SignType,
    include_sign_type: bool,
) -> Result<String, SimError> {
    Ok(V2TestSigner::new(key).payment_xml(fields, sign_type.signer(), include_sign_type))
}

/// The refund body WeChat Pay sends: `outer` plus `req_info`, `inner` encrypted under
/// `key`.
pub fn refund_xml(key: &str, outer: &Fields, inner: &Fields) -> Result<String, SimError> {
    Ok(V2TestSigner::new(key).refund_xml(outer, inner))
}

/// A JSAPI payment of 0.99 yuan for the keys' merchant, paid just now: fresh
/// `out_trade_no`, `transaction_id` and `nonce_str`.
pub fn payment_fields(keys: &Keys) -> Fields {
    let fields = [
        ("appid", "wxd678efh567hg6787".to_owned()),
        ("bank_type", "CMC".to_owned()),
        ("cash_fee", "99".to_owned()),
        ("fee_type", "CNY".to_owned()),
        ("is_subscribe", "N".to_owned()),
        ("mch_id", keys.mchid.clone()),
        ("nonce_str", random_alphanumeric(32)),
        ("openid", format!("oSim{}", random_alphanumeric(24))),
        ("out_trade_no", format!("SIM{}", random_digits(20))),
        ("result_code", "SUCCESS".to_owned()),
        ("return_code", "SUCCESS".to_owned()),
        ("time_end", beijing_now(false)),
        ("total_fee", "99".to_owned()),
        ("trade_type", "JSAPI".to_owned()),
        ("transaction_id", format!("4200002{}", random_digits(21))),
    ];
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// A full refund of a fresh payment: the outer fields (no `req_info` yet) and the
/// decrypted `<root>` ones. `refund_status` follows the event: `REFUND.SUCCESS` →
/// `SUCCESS` (with `success_time`), `REFUND.CLOSED` → `REFUNDCLOSE`, `REFUND.ABNORMAL` →
/// `CHANGE`.
pub fn refund_fields(keys: &Keys, event_type: &str) -> (Fields, Fields) {
    let outer = [
        ("appid", "wxd678efh567hg6787".to_owned()),
        ("mch_id", keys.mchid.clone()),
        ("nonce_str", random_alphanumeric(32)),
        ("return_code", "SUCCESS".to_owned()),
    ];
    let status = match event_type {
        "REFUND.CLOSED" => "REFUNDCLOSE",
        "REFUND.ABNORMAL" => "CHANGE",
        _ => "SUCCESS",
    };
    let mut inner = vec![
        ("cash_refund_fee", "99".to_owned()),
        ("out_refund_no", format!("SIMR{}", random_digits(19))),
        ("out_trade_no", format!("SIM{}", random_digits(20))),
        ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS".to_owned()),
        ("refund_fee", "99".to_owned()),
        ("refund_id", format!("5030{}", random_digits(25))),
        ("refund_recv_accout", "支付用户零钱".to_owned()),
        ("refund_request_source", "VENDOR_PLATFORM".to_owned()),
        ("refund_status", status.to_owned()),
        ("settlement_refund_fee", "99".to_owned()),
        ("settlement_total_fee", "99".to_owned()),
        ("total_fee", "99".to_owned()),
        ("transaction_id", format!("4200002{}", random_digits(21))),
    ];
    if status == "SUCCESS" {
        inner.push(("success_time", beijing_now(true)));
    }
    let owned = |fields: Vec<(&str, String)>| {
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect::<Fields>()
    };
    (owned(outer.to_vec()), owned(inner))
}

/// Applies `FIELD=VALUE` to a flat field set: the value is taken as text; an empty value
/// removes the field (WeChat leaves empty fields out). Setting `total_fee` (payments) or
/// `refund_fee` (refunds) also sets the cash amount that follows it (`cash_fee`,
/// `cash_refund_fee`, `settlement_*`) unless that one is set too.
pub fn set(fields: &mut Fields, assignment: &str, explicit: &[&str]) -> Result<(), SimError> {
    let (name, value) = assignment
        .split_once('=')
        .filter(|(name, _)| !name.is_empty() && !name.contains(['<', '>', '&', ' ']))
        .ok_or_else(|| SimError(format!("--set {assignment}: expected FIELD=VALUE")))?;
    let followers: &[&str] = match name {
        "total_fee" if fields.contains_key("cash_fee") => &["cash_fee"],
        "total_fee" => &["settlement_total_fee"],
        "refund_fee" => &["cash_refund_fee", "settlement_refund_fee"],
        _ => &[],
    };
    let targets: Vec<&str> = std::iter::once(name)
        .chain(
            followers
                .iter()
                .copied()
                .filter(|f| fields.contains_key(*f) && !explicit.contains(f)),
        )
        .collect();
    for field in targets {
        if value.is_empty() {
            fields.remove(field);
        } else {
            fields.insert(field.to_owned(), value.to_owned());
        }
    }
    Ok(())
}

/// The names `--set` assigns, to tell explicit edits from derived ones.
pub fn set_names(assignments: &[String]) -> Vec<&str> {
    assignments
        .iter()
        .filter_map(|assignment| assignment.split_once('=').map(|(name, _)| name))
        .collect()
}

/// Now in Beijing time: `yyyyMMddHHmmss` (`time_end`), or with `dashed`
/// `yyyy-MM-dd HH:mm:ss` (`success_time`).
fn beijing_now(dashed: bool) -> String {
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    let (year, month, day) = (now.year(), u8::from(now.month()), now.day());
    let (hour, minute, second) = (now.hour(), now.minute(), now.second());
    if dashed {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}")
    }
}

/// What a receiver answered a v2 notification, as WeChat's v2 reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No body at all (an empty 204, say).
    Empty,
    /// A JSON body, e.g. the v3 `{"code":"SUCCESS","message":"成功"}` (EasyWeChat's
    /// default, which v2 does not understand).
    Json,
    /// An `<xml>` body and its `return_code`, if it has one.
    Xml(Option<String>),
    /// Anything else.
    Other,
}

impl Reply {
    /// Reads `body`.
    pub fn of(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            return Reply::Empty;
        }
        if text.starts_with(['{', '[']) && serde_json::from_str::<serde_json::Value>(text).is_ok() {
            return Reply::Json;
        }
        if text.starts_with("<xml>") && text.ends_with("</xml>") {
            return Reply::Xml(element_text(text, "return_code"));
        }
        Reply::Other
    }

    /// XML with `return_code` SUCCESS: the only reply that stops v2 retries.
    pub fn is_success(&self) -> bool {
        matches!(self, Reply::Xml(Some(code)) if code == "SUCCESS")
    }

    /// XML with `return_code` FAIL: v2's failure answer.
    pub fn is_fail(&self) -> bool {
        matches!(self, Reply::Xml(Some(code)) if code == "FAIL")
    }

    /// Why this reply is not an acknowledgement, in a few words.
    pub fn not_success_note(&self) -> String {
        match self {
            Reply::Empty => "an empty body, not an XML SUCCESS body".to_owned(),
            Reply::Json => "a JSON reply instead of XML, not an XML SUCCESS body".to_owned(),
            Reply::Xml(Some(code)) if code == "SUCCESS" => "XML SUCCESS".to_owned(),
            Reply::Xml(Some(code)) => {
                format!("XML return_code {code}, not an XML SUCCESS body")
            }
            Reply::Xml(None) => "XML without return_code, not an XML SUCCESS body".to_owned(),
            Reply::Other => "not an XML SUCCESS body".to_owned(),
        }
    }
}

/// The text of the first `<name>…</name>` in `xml` (CDATA unwrapped, trimmed).
pub fn element_text(xml: &str, name: &str) -> Option<String> {
    let (start, end) = element_span(xml, name)?;
    let open = format!("<{name}>");
    let inner = xml.get(start + open.len()..end - name.len() - 3)?.trim();
    let inner = inner
        .strip_prefix("<![CDATA[")
        .and_then(|rest| rest.strip_suffix("]]>"))
        .unwrap_or(inner);
    Some(inner.to_owned())
}

/// `xml` without its first `<name>…</name>` element (and the newline after it).
pub fn without_element(xml: &str, name: &str) -> Option<String> {
    let (start, mut end) = element_span(xml, name)?;
    if xml.get(end..end + 1) == Some("\n") {
        end += 1;
    }
    Some(format!("{}{}", xml.get(..start)?, xml.get(end..)?))
}

/// `xml` with the text of its first `<name>…</name>` replaced by `value`, written as the
/// original was (in CDATA if it was).
pub fn with_element_text(xml: &str, name: &str, value: &str) -> Option<String> {
    let (start, end) = element_span(xml, name)?;
    let inner_start = start + name.len() + 2;
    let inner_end = end - name.len() - 3;
    let cdata = xml.get(inner_start..inner_end)?.starts_with("<![CDATA[");
    let value = if cdata {
        format!("<![CDATA[{value}]]>")
    } else {
        value.to_owned()
    };
    Some(format!(
        "{}{value}{}",
        xml.get(..inner_start)?,
        xml.get(inner_end..)?
    ))
}

/// Where the first `<name>…</name>` starts and ends (after the closing tag).
fn element_span(xml: &str, name: &str) -> Option<(usize, usize)> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)?;
    let end = start + xml.get(start..)?.find(&close)? + close.len();
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_wechats_v2_reads_them() {
        let success =
            b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
        assert!(Reply::of(success).is_success());
        assert!(Reply::of(b"<xml><return_code>SUCCESS</return_code></xml>").is_success());
        let fail = b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[sign mismatch]]></return_msg></xml>";
        assert!(Reply::of(fail).is_fail());
        assert!(!Reply::of(fail).is_success());
        assert_eq!(
            Reply::of(r#"{"code":"SUCCESS","message":"成功"}"#.as_bytes()),
            Reply::Json
        );
        assert_eq!(Reply::of(b""), Reply::Empty);
        assert_eq!(Reply::of(b"SUCCESS"), Reply::Other);
        assert!(
            Reply::Json
                .not_success_note()
                .contains("JSON reply instead of XML")
        );
    }

    #[test]
    fn elements_are_read_removed_and_replaced() {
        let xml = "<xml>\n<sign><![CDATA[ABC]]></sign>\n<total_fee>1</total_fee>\n</xml>";
        assert_eq!(element_text(xml, "sign").as_deref(), Some("ABC"));
        assert_eq!(element_text(xml, "total_fee").as_deref(), Some("1"));
        assert_eq!(
            without_element(xml, "sign").as_deref(),
            Some("<xml>\n<total_fee>1</total_fee>\n</xml>")
        );
        assert_eq!(
            with_element_text(xml, "total_fee", "2").as_deref(),
            Some("<xml>\n<sign><![CDATA[ABC]]></sign>\n<total_fee>2</total_fee>\n</xml>")
        );
        assert_eq!(
            with_element_text(xml, "sign", "X").as_deref(),
            Some("<xml>\n<sign><![CDATA[X]]></sign>\n<total_fee>1</total_fee>\n</xml>")
        );
        assert_eq!(element_text(xml, "nothing"), None);
    }

    #[test]
    fn set_edits_removes_and_carries_the_cash_amount() {
        let mut fields: Fields = [("total_fee", "99"), ("cash_fee", "99")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        set(&mut fields, "total_fee=1", &["total_fee"]).unwrap();
        assert_eq!(fields["total_fee"], "1");
        assert_eq!(fields["cash_fee"], "1");
        set(&mut fields, "cash_fee=", &["cash_fee"]).unwrap();
        assert!(!fields.contains_key("cash_fee"));
        assert!(set(&mut fields, "=1", &[]).is_err());
        assert!(set(&mut fields, "total_fee", &[]).is_err());
    }
}
