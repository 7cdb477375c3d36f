//! APIv2 models, [`V2Payment`] and [`V2Refund`], and the path from a body to a
//! [`Notification`]: parse, verify (payment) or decrypt (refund), then build.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::{Rejection, RejectionKind};
use crate::models::{Event, ModelError};
use crate::notification::{Fields, Notification};
use crate::v2::V2Key;
use crate::v2::crypto::{self, SignProblem};
use crate::v2::xml::{self, XmlError};

/// An APIv2 payment result (支付结果通知, XML), its `sign` verified.
///
/// The fields that matter are typed; every field the body carried (non-empty values) is
/// in [`fields`](Self::fields). Amounts are integers in fen (分). `Debug` redacts the
/// `openid`. Check `appid`/`mch_id` and the amount against your own order.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct V2Payment {
    /// `SUCCESS` or `FAIL`: the communication flag, not the payment result.
    pub return_code: String,
    /// `SUCCESS` or `FAIL`: the payment result.
    pub result_code: String,
    /// The app id the order was made for (the partner's, for a partner).
    pub appid: String,
    /// The merchant id (the partner's, for a partner); check it against your own.
    pub mch_id: String,
    /// The sub-merchant's app id (partner mode).
    pub sub_appid: Option<String>,
    /// The sub-merchant id (partner mode).
    pub sub_mch_id: Option<String>,
    /// Your order number.
    pub out_trade_no: String,
    /// WeChat Pay's transaction id.
    pub transaction_id: String,
    /// The order amount, in fen.
    pub total_fee: i64,
    /// The amount settled (after coupons that are not cash), in fen.
    pub settlement_total_fee: Option<i64>,
    /// What the payer paid in cash, in fen.
    pub cash_fee: Option<i64>,
    /// Coupons, in fen.
    pub coupon_fee: Option<i64>,
    /// The currency, `CNY` in practice.
    pub fee_type: Option<String>,
    /// `JSAPI`, `NATIVE`, `APP`, `MICROPAY`, `MWEB`, …
    pub trade_type: Option<String>,
    /// Paying bank, e.g. `CMC` or `OTHERS`.
    pub bank_type: Option<String>,
    /// The `attach` given when the order was made.
    pub attach: Option<String>,
    /// Payment time, `yyyyMMddHHmmss` (China time).
    pub time_end: Option<String>,
    /// The payer (personal data: redacted in `Debug`).
    pub openid: Option<String>,
    /// `MD5` or `HMAC-SHA256`, when WeChat Pay sent it.
    pub sign_type: Option<String>,
    /// The notification's nonce.
    pub nonce_str: Option<String>,
    /// The error code when `result_code` is `FAIL`.
    pub err_code: Option<String>,
    /// The error description when `result_code` is `FAIL`.
    pub err_code_des: Option<String>,
    fields: BTreeMap<String, String>,
}

impl V2Payment {
    /// Whether the payment succeeded: `return_code` and `result_code` are both `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.return_code == "SUCCESS" && self.result_code == "SUCCESS"
    }

    /// Every field of the body with a non-empty value, `sign` and `sign_type` included.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    fn from_fields(fields: BTreeMap<String, String>) -> Result<Self, ModelError> {
        let error = || ModelError::v2("v2 transaction");
        let get = |name: &str| fields.get(name).cloned();
        let fee = |name: &str| optional_fee(&fields, name).ok_or_else(error);
        Ok(Self {
            return_code: get("return_code").ok_or_else(error)?,
            result_code: get("result_code").ok_or_else(error)?,
            appid: get("appid").ok_or_else(error)?,
            mch_id: get("mch_id").ok_or_else(error)?,
            sub_appid: get("sub_appid"),
            sub_mch_id: get("sub_mch_id"),
            out_trade_no: get("out_trade_no").ok_or_else(error)?,
            transaction_id: get("transaction_id").ok_or_else(error)?,
            total_fee: fee("total_fee")?.ok_or_else(error)?,
            settlement_total_fee: fee("settlement_total_fee")?,
            cash_fee: fee("cash_fee")?,
            coupon_fee: fee("coupon_fee")?,
            fee_type: get("fee_type"),
            trade_type: get("trade_type"),
            bank_type: get("bank_type"),
            attach: get("attach"),
            time_end: get("time_end"),
            openid: get("openid"),
            sign_type: get("sign_type"),
            nonce_str: get("nonce_str"),
            err_code: get("err_code"),
            err_code_des: get("err_code_des"),
            fields,
        })
    }
}

impl fmt::Debug for V2Payment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Payment")
            .field("return_code", &self.return_code)
            .field("result_code", &self.result_code)
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .field("sub_appid", &self.sub_appid)
            .field("sub_mch_id", &self.sub_mch_id)
            .field("out_trade_no", &self.out_trade_no)
            .field("transaction_id", &self.transaction_id)
            .field("total_fee", &self.total_fee)
            .field("settlement_total_fee", &self.settlement_total_fee)
            .field("cash_fee", &self.cash_fee)
            .field("coupon_fee", &self.coupon_fee)
            .field("fee_type", &self.fee_type)
            .field("trade_type", &self.trade_type)
            .field("bank_type", &self.bank_type)
            .field("attach", &self.attach)
            .field("time_end", &self.time_end)
            .field(
                "openid",
                &format_args!("{}", redacted(self.openid.as_ref())),
            )
            .field("sign_type", &self.sign_type)
            .field("err_code", &self.err_code)
            .finish_non_exhaustive()
    }
}

/// An APIv2 refund result (退款结果通知, XML), its `req_info` decrypted.
///
/// Holds the outer fields (`appid`, `mch_id`, …) and the decrypted ones. ECB encryption
/// has no MAC: the result is authentic as far as only WeChat Pay knows the key; confirm
/// against your own refund record (or the refund query) before acting on it. `Debug`
/// redacts `refund_recv_accout` (it can name the payer's bank card).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct V2Refund {
    /// The outer `return_code` (`SUCCESS`).
    pub return_code: String,
    /// The app id (the partner's, for a partner).
    pub appid: String,
    /// The merchant id (the partner's, for a partner); check it against your own.
    pub mch_id: String,
    /// The sub-merchant's app id (partner mode).
    pub sub_appid: Option<String>,
    /// The sub-merchant id (partner mode).
    pub sub_mch_id: Option<String>,
    /// The notification's nonce.
    pub nonce_str: Option<String>,
    /// WeChat Pay's transaction id of the refunded payment.
    pub transaction_id: String,
    /// Your order number.
    pub out_trade_no: String,
    /// WeChat Pay's refund id.
    pub refund_id: String,
    /// Your refund number.
    pub out_refund_no: String,
    /// The order amount, in fen.
    pub total_fee: i64,
    /// The order amount settled, in fen.
    pub settlement_total_fee: Option<i64>,
    /// The amount asked to be refunded, in fen.
    pub refund_fee: i64,
    /// The amount refunded (coupons left out), in fen.
    pub settlement_refund_fee: Option<i64>,
    /// The cash refunded, in fen.
    pub cash_refund_fee: Option<i64>,
    /// `SUCCESS`, `CHANGE` (abnormal: the money could not reach the payer) or
    /// `REFUNDCLOSE` (closed).
    pub refund_status: String,
    /// When the refund succeeded, `yyyy-MM-dd HH:mm:ss` (China time).
    pub success_time: Option<String>,
    /// Where the money went, e.g. `支付用户零钱` (spelled `accout` by WeChat Pay; redacted
    /// in `Debug`).
    pub refund_recv_accout: Option<String>,
    /// `REFUND_SOURCE_RECHARGE_FUNDS` or `REFUND_SOURCE_UNSETTLED_FUNDS`.
    pub refund_account: Option<String>,
    /// `API` or `VENDOR_PLATFORM` (made by hand in the merchant platform).
    pub refund_request_source: Option<String>,
    fields: BTreeMap<String, String>,
}

impl V2Refund {
    /// Whether the refund reached the payer: `refund_status` is `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.refund_status == "SUCCESS"
    }

    /// Every field with a non-empty value: the outer ones (`req_info` included) and the
    /// decrypted ones, the decrypted winning where a name is in both.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    fn from_fields(fields: BTreeMap<String, String>) -> Result<Self, ModelError> {
        let error = || ModelError::v2("v2 refund");
        let get = |name: &str| fields.get(name).cloned();
        let fee = |name: &str| optional_fee(&fields, name).ok_or_else(error);
        Ok(Self {
            return_code: get("return_code").ok_or_else(error)?,
            appid: get("appid").ok_or_else(error)?,
            mch_id: get("mch_id").ok_or_else(error)?,
            sub_appid: get("sub_appid"),
            sub_mch_id: get("sub_mch_id"),
            nonce_str: get("nonce_str"),
            transaction_id: get("transaction_id").ok_or_else(error)?,
            out_trade_no: get("out_trade_no").ok_or_else(error)?,
            refund_id: get("refund_id").ok_or_else(error)?,
            out_refund_no: get("out_refund_no").ok_or_else(error)?,
            total_fee: fee("total_fee")?.ok_or_else(error)?,
            settlement_total_fee: fee("settlement_total_fee")?,
            refund_fee: fee("refund_fee")?.ok_or_else(error)?,
            settlement_refund_fee: fee("settlement_refund_fee")?,
            cash_refund_fee: fee("cash_refund_fee")?,
            refund_status: get("refund_status").ok_or_else(error)?,
            success_time: get("success_time"),
            refund_recv_accout: get("refund_recv_accout"),
            refund_account: get("refund_account"),
            refund_request_source: get("refund_request_source"),
            fields,
        })
    }
}

impl fmt::Debug for V2Refund {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Refund")
            .field("return_code", &self.return_code)
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .field("sub_appid", &self.sub_appid)
            .field("sub_mch_id", &self.sub_mch_id)
            .field("transaction_id", &self.transaction_id)
            .field("out_trade_no", &self.out_trade_no)
            .field("refund_id", &self.refund_id)
            .field("out_refund_no", &self.out_refund_no)
            .field("total_fee", &self.total_fee)
            .field("settlement_total_fee", &self.settlement_total_fee)
            .field("refund_fee", &self.refund_fee)
            .field("settlement_refund_fee", &self.settlement_refund_fee)
            .field("cash_refund_fee", &self.cash_refund_fee)
            .field("refund_status", &self.refund_status)
            .field("success_time", &self.success_time)
            .field(
                "refund_recv_accout",
                &format_args!("{}", redacted(self.refund_recv_accout.as_ref())),
            )
            .field("refund_account", &self.refund_account)
            .field("refund_request_source", &self.refund_request_source)
            .finish_non_exhaustive()
    }
}

fn redacted(value: Option<&String>) -> &'static str {
    match value {
        Some(_) => "<redacted>",
        None => "None",
    }
}

/// `Some(None)` when absent, `Some(Some(n))` for an integer, `None` when not an integer.
fn optional_fee(fields: &BTreeMap<String, String>, name: &str) -> Option<Option<i64>> {
    match fields.get(name) {
        None => Some(None),
        Some(value) => value.parse().ok().map(Some),
    }
}

/// The serial a v2 notification reports: it was verified with the APIv2 key, not a
/// certificate.
pub(crate) const V2_SERIAL: &str = "APIv2";

/// Parses, verifies (payment) or decrypts (refund), and builds the [`Notification`].
pub(crate) fn open(key: &V2Key, body: &[u8]) -> Result<Notification, Rejection> {
    let outer = xml::parse(body, "xml").map_err(malformed_envelope)?;
    let req_info = outer
        .iter()
        .find(|(name, _)| name == "req_info")
        .map(|(_, value)| value.clone());
    match req_info {
        Some(req_info) => open_refund(key, body, outer, &req_info),
        None => open_payment(key, body, outer),
    }
}

fn open_payment(
    key: &V2Key,
    body: &[u8],
    fields: Vec<(String, String)>,
) -> Result<Notification, Rejection> {
    // Nothing is built before the sign verifies.
    crypto::verify_sign(&fields, &key.key).map_err(|problem| match problem {
        SignProblem::UnsupportedType => Rejection::new(
            RejectionKind::UnsupportedSignatureType,
            "v2 sign_type is neither MD5 nor HMAC-SHA256",
        ),
        SignProblem::Missing => {
            Rejection::new(RejectionKind::InvalidSignature, "v2 payment has no sign")
        }
        SignProblem::Length | SignProblem::Mismatch => {
            Rejection::new(RejectionKind::InvalidSignature, "v2 sign does not verify")
        }
    })?;
    let fields = non_empty(fields);
    let id = notification_id(&fields, body);
    let result_code = fields.get("result_code").map(String::as_str).unwrap_or("");
    let event_type = format!("TRANSACTION.{result_code}");
    let create_time = fields.get("time_end").cloned();
    let resource_json = to_json(&fields)?;
    let event = match V2Payment::from_fields(fields) {
        Ok(payment) => Event::V2Payment(payment),
        Err(error) => Event::Unparsed(error),
    };
    Ok(build(
        &id,
        create_time.as_deref(),
        &event_type,
        "transaction",
        resource_json,
        event,
    ))
}

fn open_refund(
    key: &V2Key,
    body: &[u8],
    outer: Vec<(String, String)>,
    req_info: &str,
) -> Result<Notification, Rejection> {
    let plaintext = crypto::decrypt_req_info(req_info, &key.refund_key).map_err(|_| {
        Rejection::new(
            RejectionKind::DecryptionFailed,
            "v2 req_info does not decrypt (wrong or reset apiv2 key?)",
        )
    })?;
    // ECB has no MAC: well-formed XML is the only sign the key was right.
    let inner = xml::parse(&plaintext, "root").map_err(|error| {
        Rejection::new(
            RejectionKind::MalformedResource,
            match error {
                XmlError::NotUtf8 | XmlError::Syntax | XmlError::WrongRoot => {
                    "v2 req_info does not decrypt to xml (wrong or reset apiv2 key?)"
                }
                other => other.message(),
            },
        )
    })?;
    let mut fields = non_empty(outer);
    fields.extend(non_empty(inner));
    let id = notification_id(&fields, body);
    let status = fields
        .get("refund_status")
        .map(String::as_str)
        .unwrap_or("");
    let event_type = refund_event_type(status);
    let create_time = fields.get("success_time").cloned();
    let resource_json = to_json(&fields)?;
    let event = match V2Refund::from_fields(fields) {
        Ok(refund) => Event::V2Refund(refund),
        Err(error) => Event::Unparsed(error),
    };
    Ok(build(
        &id,
        create_time.as_deref(),
        &event_type,
        "refund",
        resource_json,
        event,
    ))
}

/// The v3 event type of a v2 refund status.
fn refund_event_type(status: &str) -> String {
    match status {
        "SUCCESS" => "REFUND.SUCCESS".to_owned(),
        "REFUNDCLOSE" => "REFUND.CLOSED".to_owned(),
        "CHANGE" => "REFUND.ABNORMAL".to_owned(),
        other => format!("REFUND.{other}"),
    }
}

fn malformed_envelope(error: XmlError) -> Rejection {
    Rejection::new(RejectionKind::MalformedEnvelope, error.message())
}

/// The fields with a non-empty value, by name (names are unique: the reader refuses
/// duplicates).
fn non_empty(fields: Vec<(String, String)>) -> BTreeMap<String, String> {
    fields
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// `v2:` + `nonce_str`, or `v2:md5:` + the MD5 of the body when there is no nonce.
fn notification_id(fields: &BTreeMap<String, String>, body: &[u8]) -> String {
    match fields.get("nonce_str") {
        Some(nonce) => format!("v2:{nonce}"),
        None => {
            use md5::{Digest, Md5};
            let digest = Md5::digest(body);
            let mut id = String::from("v2:md5:");
            for byte in digest.iter() {
                id.push_str(&format!("{byte:02x}"));
            }
            id
        }
    }
}

/// The fields as a JSON object of strings, keys sorted.
fn to_json(fields: &BTreeMap<String, String>) -> Result<String, Rejection> {
    serde_json::to_string(fields).map_err(|_| {
        Rejection::new(
            RejectionKind::MalformedResource,
            "v2 fields cannot be written as json",
        )
    })
}

fn build(
    id: &str,
    create_time: Option<&str>,
    event_type: &str,
    original_type: &str,
    resource_json: String,
    event: Event,
) -> Notification {
    Notification::new(
        Fields::new(
            [
                Some(id),
                create_time,
                Some(event_type),
                Some("xml"),
                None,
                Some(original_type),
                None,
            ],
            Arc::from(V2_SERIAL),
            resource_json,
            event,
        )
        .v2(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_KEY: &[u8] = b"fake-v2-key-for-docs-only-000000";

    const EXAMPLE_A: &str = "<xml><appid>wx0000000000000000</appid>
<bank_type>OTHERS</bank_type>
<cash_fee>1</cash_fee>
<fee_type>CNY</fee_type>
<is_subscribe>N</is_subscribe>
<mch_id>1230000109</mch_id>
<nonce_str>1700000000000</nonce_str>
<openid>oFAKEopenid000000000000000000</openid>
<out_trade_no>TEST-ORDER-0001</out_trade_no>
<result_code>SUCCESS</result_code>
<return_code>SUCCESS</return_code>
<sign>EA909D99B53EA6D672CDFE37460D2585</sign>
<time_end>20250101120000</time_end>
<total_fee>1</total_fee>
<trade_type>JSAPI</trade_type>
<transaction_id>4200000000000000000000000001</transaction_id>
</xml>";

    const EXAMPLE_B: &str = "<xml><appid><![CDATA[wx0000000000000000]]></appid>
<bank_type><![CDATA[OTHERS]]></bank_type>
<cash_fee><![CDATA[1]]></cash_fee>
<fee_type><![CDATA[CNY]]></fee_type>
<is_subscribe><![CDATA[N]]></is_subscribe>
<mch_id><![CDATA[1230000109]]></mch_id>
<nonce_str><![CDATA[1700000000001]]></nonce_str>
<openid><![CDATA[oFAKEopenid000000000000000000]]></openid>
<out_trade_no><![CDATA[TEST-ORDER-0002]]></out_trade_no>
<result_code><![CDATA[SUCCESS]]></result_code>
<return_code><![CDATA[SUCCESS]]></return_code>
<sign><![CDATA[A262CCB0417810788435B13C2FB14EDE6D908AE1A3FE52AE32FE0026E7E43BC3]]></sign>
<time_end><![CDATA[20250101120000]]></time_end>
<total_fee>1</total_fee>
<trade_type><![CDATA[JSAPI]]></trade_type>
<transaction_id><![CDATA[4200000000000000000000000002]]></transaction_id>
</xml>";

    const EXAMPLE_C: &str = "<xml><return_code>SUCCESS</return_code><appid><![CDATA[wx0000000000000000]]></appid><mch_id><![CDATA[1230000109]]></mch_id><nonce_str><![CDATA[deadbeefdeadbeefdeadbeefdeadbeef]]></nonce_str><req_info><![CDATA[ogcJ1Nl2IGx3WUnI759KfqbVV15ouJq7I/9vNsxNixLAbpW1PJBBPzJgGdnNU0XqzBQ3ejImMu/lW29x/wkCaY+QHPMAX3blAoyn6DFsAGh6oCyxg9Rz9BwUltxhtq2Ks+/tuUn4oNMBFdBGsP615ZUaQi3725LF7sBDhKu/T2+c+EOB7fqWgUtyvWw/MQThW5mRNvdlsg7qrtIjwXE0lpNESwLQ/IJzuAw8XfrVNFdq+icEwjmIBgPH58OaFYtuX0+7xcRACZvF2pN/Qk8in+gfMYk5szayKMrjxECqX0m/YGMAa8CORAdnADLiJzXNoqBZGaNY99TmA06w65q6qwlZ+Q6ZWhUM90n3NCHaiooWiiDTosoD8uCgEsEbUwkMHuRbkoT/0kMHEY+asTPgJO/ytk9satA12+vuyltN0xFmmsliCQzhQHqJ14J9V4e+7pP/Z84In3Xp2urS/RuEKI/RG2JCc/OGYtIbz8xXX3GE9rCMUJMHaBKmjJr1vBUtEATo1RzGryDvpei0ofHPpeHA1QhSrfhhAsSydFSkj1twbwJE4FFX0Oh+bd0V5nuRDxwONFgBAccKAc0VhVoBzJQlUdyO1JcGvLGkMx+rZEMC3jyRUEep1HGgnU2OBAs+ZlJNNkG5u8rphSuT99xC3aqNLu+y/8m4Z0RssiXncGkLmQW+LSSUtsvS9tPNp10Xgc7Dl7Gmn3r0nVdEZOnr3Fb7IG7xJermNrD/UfhvG0O1hJZ2ZNGvRiwsBK9g278PUqN0wn/BASbOsQCn7Plg17h3naIoozYGkR/r4Cqc7W/v42OfrJnhbBurozsgscO67yOJIbZu4DzZ8mpmm6ahj+lvh5wXyE2wzIvTFGyDktsMpcUX42yTJNZIsZ+Av3C5NGzgajS2NljVLXUzoIj1DHYJ9LwoBOab/lBb8b3OnBzSZXCrJ/3rJ2zRrfwRzEBwZQoz6zOQJlT2DuQMGgrvIvpEO30UsDesT62VlvrfT+atrWw+JQRc8E2TRfJjNt5jgbLhEF2SCDzD7xT2NvwJT+/ytk9satA12+vuyltN0xG2nwPigupliPGsXt7ZkESBJfnYGLvUWG2+BHkKiVdWnYCHSKWsay9XsOQ6JRr7n5A=]]></req_info></xml>";

    fn key() -> V2Key {
        V2Key::new(DOC_KEY).unwrap()
    }

    fn refused(body: &str) -> RejectionKind {
        open(&key(), body.as_bytes()).unwrap_err().kind()
    }

    #[test]
    fn example_a_becomes_a_v2_payment() {
        let notification = open(&key(), EXAMPLE_A.as_bytes()).unwrap();
        assert_eq!(notification.version(), 2);
        assert_eq!(notification.id(), "v2:1700000000000");
        assert_eq!(notification.event_type(), "TRANSACTION.SUCCESS");
        assert_eq!(notification.create_time(), Some("20250101120000"));
        assert_eq!(notification.resource_type(), Some("xml"));
        assert_eq!(notification.original_type(), Some("transaction"));
        assert_eq!(notification.summary(), None);
        assert_eq!(notification.associated_data(), None);
        assert_eq!(notification.serial(), "APIv2");
        let Event::V2Payment(payment) = notification.event() else {
            panic!("not a v2 payment: {:?}", notification.event());
        };
        assert!(payment.is_success());
        assert_eq!(payment.total_fee, 1);
        assert_eq!(payment.cash_fee, Some(1));
        assert_eq!(payment.out_trade_no, "TEST-ORDER-0001");
        assert_eq!(payment.sign_type, None);
        assert_eq!(
            payment.fields().get("sign").map(String::as_str),
            Some("EA909D99B53EA6D672CDFE37460D2585")
        );
        let json: serde_json::Value = serde_json::from_str(notification.resource_json()).unwrap();
        assert_eq!(json["transaction_id"], "4200000000000000000000000001");
        assert_eq!(json["total_fee"], "1");
    }

    #[test]
    fn example_b_becomes_a_v2_payment() {
        let notification = open(&key(), EXAMPLE_B.as_bytes()).unwrap();
        let Event::V2Payment(payment) = notification.event() else {
            panic!("not a v2 payment");
        };
        assert_eq!(payment.out_trade_no, "TEST-ORDER-0002");
    }

    #[test]
    fn example_c_becomes_a_v2_refund_with_outer_and_decrypted_fields() {
        let notification = open(&key(), EXAMPLE_C.as_bytes()).unwrap();
        assert_eq!(notification.version(), 2);
        assert_eq!(notification.id(), "v2:deadbeefdeadbeefdeadbeefdeadbeef");
        assert_eq!(notification.event_type(), "REFUND.SUCCESS");
        assert_eq!(notification.create_time(), Some("2025-01-01 12:30:00"));
        assert_eq!(notification.original_type(), Some("refund"));
        let Event::V2Refund(refund) = notification.event() else {
            panic!("not a v2 refund: {:?}", notification.event());
        };
        assert!(refund.is_success());
        assert_eq!(refund.mch_id, "1230000109");
        assert_eq!(refund.refund_fee, 1);
        assert_eq!(refund.refund_id, "50000000000000000000000000001");
        assert_eq!(
            refund.refund_request_source.as_deref(),
            Some("VENDOR_PLATFORM")
        );
        assert!(refund.fields().contains_key("req_info"));
        assert_eq!(
            refund
                .fields()
                .get("refund_recv_accout")
                .map(String::as_str),
            Some("支付用户零钱")
        );
    }

    #[test]
    fn debug_redacts_the_openid_and_the_receiving_account() {
        let notification = open(&key(), EXAMPLE_A.as_bytes()).unwrap();
        let debug = format!("{:?}", notification.event());
        assert!(!debug.contains("oFAKEopenid"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let notification = open(&key(), EXAMPLE_C.as_bytes()).unwrap();
        let debug = format!("{:?}", notification.event());
        assert!(!debug.contains("零钱"), "{debug}");
    }

    #[test]
    fn a_forged_payment_is_refused() {
        let forged = EXAMPLE_A.replace("<total_fee>1<", "<total_fee>100<");
        assert_eq!(refused(&forged), RejectionKind::InvalidSignature);
    }

    #[test]
    fn a_payment_without_sign_is_refused_whatever_return_code_says() {
        let unsigned = EXAMPLE_A.replace("<sign>EA909D99B53EA6D672CDFE37460D2585</sign>\n", "");
        assert_eq!(refused(&unsigned), RejectionKind::InvalidSignature);
        let failed = unsigned.replace("<return_code>SUCCESS<", "<return_code>FAIL<");
        assert_eq!(refused(&failed), RejectionKind::InvalidSignature);
        assert_eq!(refused("<xml></xml>"), RejectionKind::InvalidSignature);
    }

    #[test]
    fn an_unknown_sign_type_is_refused() {
        let body = EXAMPLE_A.replace("</xml>", "<sign_type>SHA1</sign_type></xml>");
        assert_eq!(refused(&body), RejectionKind::UnsupportedSignatureType);
    }

    #[test]
    fn a_duplicated_field_is_refused_before_the_sign() {
        let body = EXAMPLE_A.replace("</xml>", "<total_fee>100</total_fee></xml>");
        assert_eq!(refused(&body), RejectionKind::MalformedEnvelope);
    }

    #[test]
    fn malformed_xml_is_refused() {
        assert_eq!(refused("<xml><a>1</a>"), RejectionKind::MalformedEnvelope);
        assert_eq!(
            refused(
                "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><a>&x;</a></xml>"
            ),
            RejectionKind::MalformedEnvelope
        );
    }

    #[test]
    fn a_refund_under_another_key_is_refused() {
        let other = V2Key::new(b"another-v2-key-0000000000000000x").unwrap();
        let kind = open(&other, EXAMPLE_C.as_bytes()).unwrap_err().kind();
        assert!(
            matches!(
                kind,
                RejectionKind::DecryptionFailed | RejectionKind::MalformedResource
            ),
            "{kind:?}"
        );
    }

    #[test]
    fn an_empty_req_info_is_refused() {
        let body = "<xml><return_code>SUCCESS</return_code><req_info></req_info></xml>";
        assert_eq!(refused(body), RejectionKind::DecryptionFailed);
    }

    #[test]
    fn a_non_integer_fee_reaches_the_handler_as_unparsed() {
        let mut fields: Vec<(String, String)> = xml::parse(EXAMPLE_A.as_bytes(), "xml")
            .unwrap()
            .into_iter()
            .filter(|(name, _)| name != "sign")
            .collect();
        for (name, value) in &mut fields {
            if name == "total_fee" {
                *value = "1.00".into();
            }
        }
        let sign = crypto::compute_sign(&fields, DOC_KEY, crypto::SignType::Md5);
        let mut body = String::from("<xml>");
        for (name, value) in &fields {
            body.push_str(&format!("<{name}>{value}</{name}>"));
        }
        body.push_str(&format!("<sign>{sign}</sign></xml>"));
        let notification = open(&key(), body.as_bytes()).unwrap();
        assert!(matches!(notification.event(), Event::Unparsed(_)));
        assert_eq!(notification.event_type(), "TRANSACTION.SUCCESS");
    }

    #[test]
    fn without_a_nonce_the_id_is_a_hash_of_the_body() {
        let fields = vec![
            ("return_code".to_owned(), "SUCCESS".to_owned()),
            ("result_code".to_owned(), "SUCCESS".to_owned()),
        ];
        let sign = crypto::compute_sign(&fields, DOC_KEY, crypto::SignType::Md5);
        let body = format!(
            "<xml><return_code>SUCCESS</return_code><result_code>SUCCESS</result_code>\
             <sign>{sign}</sign></xml>"
        );
        let notification = open(&key(), body.as_bytes()).unwrap();
        assert!(notification.id().starts_with("v2:md5:"));
        assert_eq!(notification.id().len(), "v2:md5:".len() + 32);
        assert!(matches!(notification.event(), Event::Unparsed(_)));
    }

    #[test]
    fn refund_statuses_map_to_v3_event_types() {
        assert_eq!(refund_event_type("SUCCESS"), "REFUND.SUCCESS");
        assert_eq!(refund_event_type("REFUNDCLOSE"), "REFUND.CLOSED");
        assert_eq!(refund_event_type("CHANGE"), "REFUND.ABNORMAL");
        assert_eq!(refund_event_type("PROCESSING"), "REFUND.PROCESSING");
    }
}
