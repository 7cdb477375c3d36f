//! Typed models of the decrypted resources: payments, partner payments, combine payments
//! and refunds, with [`Event::Other`] for everything else.
//!
//! The models are lenient on purpose: unknown fields are ignored and anything WeChat Pay
//! does not always send is an `Option`, so a new field never breaks a receiver. Amounts are
//! integers in fen (分). Payer identifiers are redacted in `Debug`.

use std::fmt;

use serde::Deserialize;

#[cfg(feature = "v2")]
pub use crate::v2::models::{V2Payment, V2Refund};

/// The decrypted resource of a notification, typed where this crate has a model.
///
/// Routing by `event_type` alone is unreliable (`TRANSACTION.SUCCESS` carries several
/// schemas), so the variant is chosen by `resource.original_type` and the fields present.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A direct merchant's payment (直连商户): `original_type` `transaction`.
    Payment(Transaction),
    /// A partner's (服务商) payment for a sub-merchant: `sp_mchid` and `sub_mchid`.
    PartnerPayment(PartnerTransaction),
    /// A combine payment (合单支付): `combine_out_trade_no` and `sub_orders`.
    CombinePayment(CombineTransaction),
    /// A refund result (`REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`).
    Refund(Refund),
    /// An APIv2 (XML) payment result, its `sign` verified (feature `v2`).
    #[cfg(feature = "v2")]
    V2Payment(crate::v2::models::V2Payment),
    /// An APIv2 (XML) refund result, its `req_info` decrypted (feature `v2`).
    #[cfg(feature = "v2")]
    V2Refund(crate::v2::models::V2Refund),
    /// Any other resource: read it with [`Notification::resource_json`](crate::Notification::resource_json)
    /// or decode it into your own type with [`Notification::decode`](crate::Notification::decode).
    Other,
    /// A payment or refund whose resource is JSON but does not match this crate's model
    /// (schema drift: a field changed type, a required one went missing). The notification
    /// still reaches handlers that read the raw resource; typed extractors answer a retry.
    Unparsed(ModelError),
}

/// Why a decrypted resource did not match its model: which model, and where, never the
/// data itself (serde's messages can quote payer data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    model: &'static str,
    category: &'static str,
    line: usize,
    column: usize,
}

impl ModelError {
    pub(crate) fn new(model: &'static str, error: &serde_json::Error) -> Self {
        let category = match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        Self {
            model,
            category,
            line: error.line(),
            column: error.column(),
        }
    }

    /// An APIv2 body whose fields do not fit its model (a required field missing, a fee
    /// that is not an integer): no position, the fields are not JSON.
    #[cfg(feature = "v2")]
    pub(crate) fn v2(model: &'static str) -> Self {
        Self {
            model,
            category: "data",
            line: 0,
            column: 0,
        }
    }

    /// The model the resource was read as: `"transaction"` or `"refund"`.
    pub fn model(&self) -> &'static str {
        self.model
    }

    /// How it failed: `"data"` (a field of the wrong type or missing), `"syntax"`, `"eof"`.
    pub fn category(&self) -> &'static str {
        self.category
    }

    /// Where in the resource it failed: line and column (1-based).
    pub fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the resource does not match the {} model ({} error at line {}, column {})",
            self.model, self.category, self.line, self.column
        )
    }
}

impl std::error::Error for ModelError {}

/// `null` where WeChat Pay may send an array or object means "none": read it as the default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Payment success for a direct merchant (支付成功通知, 直连).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// The app id the order was made for.
    pub appid: Option<String>,
    /// The merchant id; check it against your own.
    pub mchid: Option<String>,
    /// Your order number.
    pub out_trade_no: String,
    /// WeChat Pay's transaction id: the payment's identity.
    pub transaction_id: String,
    /// `JSAPI`, `NATIVE`, `APP`, `MICROPAY`, `MWEB`, `FACEPAY`, …
    pub trade_type: Option<String>,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING`, `PAYERROR`, …
    pub trade_state: String,
    /// Human-readable trade state.
    pub trade_state_desc: Option<String>,
    /// Paying bank, e.g. `CMC` or `OTHERS`.
    pub bank_type: Option<String>,
    /// The `attach` given when the order was made.
    pub attach: Option<String>,
    /// RFC 3339 payment time.
    pub success_time: Option<String>,
    /// Who paid.
    #[serde(default, deserialize_with = "null_as_default")]
    pub payer: Payer,
    /// What was paid.
    pub amount: Amount,
    /// Device and store information.
    pub scene_info: Option<SceneInfo>,
    /// Coupons and discounts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub promotion_detail: Vec<serde_json::Value>,
}

/// Payment success for a partner's sub-merchant (支付成功通知, 服务商).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PartnerTransaction {
    /// The partner's app id.
    pub sp_appid: Option<String>,
    /// The partner's merchant id.
    pub sp_mchid: String,
    /// The sub-merchant's app id (absent if none was given at order time).
    pub sub_appid: Option<String>,
    /// The sub-merchant id.
    pub sub_mchid: String,
    /// The order number.
    pub out_trade_no: String,
    /// WeChat Pay's transaction id.
    pub transaction_id: String,
    /// Trade type, as for [`Transaction::trade_type`].
    pub trade_type: Option<String>,
    /// Trade state, as for [`Transaction::trade_state`].
    pub trade_state: String,
    /// Human-readable trade state.
    pub trade_state_desc: Option<String>,
    /// Paying bank.
    pub bank_type: Option<String>,
    /// The `attach` given when the order was made.
    pub attach: Option<String>,
    /// RFC 3339 payment time.
    pub success_time: Option<String>,
    /// Who paid.
    #[serde(default, deserialize_with = "null_as_default")]
    pub payer: PartnerPayer,
    /// What was paid.
    pub amount: Amount,
    /// Device and store information.
    pub scene_info: Option<SceneInfo>,
    /// Coupons and discounts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub promotion_detail: Vec<serde_json::Value>,
}

/// A combine payment (合单支付): one payment for several sub-orders.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CombineTransaction {
    /// The combine order's app id.
    pub combine_appid: Option<String>,
    /// The combine order's merchant id.
    pub combine_mchid: Option<String>,
    /// The combine order number.
    pub combine_out_trade_no: String,
    /// Device information.
    pub scene_info: Option<SceneInfo>,
    /// Who paid.
    #[serde(default, deserialize_with = "null_as_default")]
    pub combine_payer_info: Payer,
    /// The sub-orders, each with its own transaction id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub_orders: Vec<SubOrder>,
}

/// One sub-order of a [`CombineTransaction`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SubOrder {
    /// The sub-order's merchant id.
    pub mchid: Option<String>,
    /// Trade type.
    pub trade_type: Option<String>,
    /// Trade state.
    pub trade_state: Option<String>,
    /// Paying bank.
    pub bank_type: Option<String>,
    /// The `attach` given when the order was made.
    pub attach: Option<String>,
    /// RFC 3339 payment time (may carry milliseconds).
    pub success_time: Option<String>,
    /// WeChat Pay's transaction id for this sub-order.
    pub transaction_id: Option<String>,
    /// The sub-order number.
    pub out_trade_no: String,
    /// What was paid (note `total_amount`, not `total`).
    pub amount: Option<SubOrderAmount>,
    /// Coupons and discounts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub promotion_detail: Vec<serde_json::Value>,
}

/// A refund result (退款结果通知), direct or partner.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Refund {
    /// Direct merchant id.
    pub mchid: Option<String>,
    /// Partner merchant id.
    pub sp_mchid: Option<String>,
    /// Sub-merchant id.
    pub sub_mchid: Option<String>,
    /// The order number.
    pub out_trade_no: Option<String>,
    /// WeChat Pay's transaction id.
    pub transaction_id: Option<String>,
    /// Your refund number.
    pub out_refund_no: String,
    /// WeChat Pay's refund id: the refund's identity.
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL` (or `PROCESSING`). The refund query names this
    /// field `status`; both spellings are read here.
    #[serde(alias = "status")]
    pub refund_status: String,
    /// RFC 3339 refund time, on success only.
    pub success_time: Option<String>,
    /// Where the money went, e.g. `支付用户零钱`.
    pub user_received_account: Option<String>,
    /// Amounts.
    pub amount: RefundAmount,
}

/// The amount of a payment, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Amount {
    /// The order total.
    pub total: i64,
    /// What the payer paid after discounts.
    pub payer_total: Option<i64>,
    /// Currency of `total`, `CNY`.
    pub currency: Option<String>,
    /// Currency the payer paid in.
    pub payer_currency: Option<String>,
}

/// The amount of a combine sub-order, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SubOrderAmount {
    /// The sub-order total.
    pub total_amount: i64,
    /// What the payer paid.
    pub payer_amount: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
    /// Currency the payer paid in.
    pub payer_currency: Option<String>,
}

/// Refund amounts, in fen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RefundAmount {
    /// The original order total.
    pub total: i64,
    /// The refunded amount.
    pub refund: i64,
    /// What the payer paid.
    pub payer_total: Option<i64>,
    /// What goes back to the payer.
    pub payer_refund: Option<i64>,
}

/// Device information.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SceneInfo {
    /// The merchant's device id.
    pub device_id: Option<String>,
}

/// The payer of a direct payment. `Debug` redacts the openid (personal data).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Payer {
    /// The payer's openid under the merchant's app id.
    pub openid: Option<String>,
}

/// The payer of a partner payment. `Debug` redacts the openids (personal data).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PartnerPayer {
    /// The payer's openid under the partner's app id.
    pub sp_openid: Option<String>,
    /// The payer's openid under the sub-merchant's app id.
    pub sub_openid: Option<String>,
}

fn redacted(value: &Option<String>) -> &'static str {
    if value.is_some() {
        "<redacted>"
    } else {
        "None"
    }
}

impl fmt::Debug for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payer")
            .field("openid", &format_args!("{}", redacted(&self.openid)))
            .finish()
    }
}

impl fmt::Debug for PartnerPayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerPayer")
            .field("sp_openid", &format_args!("{}", redacted(&self.sp_openid)))
            .field(
                "sub_openid",
                &format_args!("{}", redacted(&self.sub_openid)),
            )
            .finish()
    }
}

impl Transaction {
    /// Whether `trade_state` is `SUCCESS`: the only state in which an order may be marked paid.
    pub fn is_success(&self) -> bool {
        self.trade_state == "SUCCESS"
    }
}

impl PartnerTransaction {
    /// Whether `trade_state` is `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.trade_state == "SUCCESS"
    }
}

impl Refund {
    /// Whether `refund_status` is `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.refund_status == "SUCCESS"
    }
}

/// Which model a resource needs: transactions (three shapes), refunds, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Transaction,
    Refund,
    Other,
}

impl EventKind {
    /// Which model applies, from `original_type` (or `event_type` when it is missing).
    /// Transactions come in three shapes, told apart by their fields while parsing.
    pub(crate) fn of(original_type: Option<&str>, event_type: &str) -> Self {
        match original_type {
            Some("transaction" | "combine_transaction") => Self::Transaction,
            Some("refund") => Self::Refund,
            Some(_) => Self::Other,
            None if event_type.starts_with("REFUND.") => Self::Refund,
            None if event_type.starts_with("TRANSACTION.") => Self::Transaction,
            None => Self::Other,
        }
    }

    pub(crate) fn parse(self, plaintext: &str) -> Result<Event, serde_json::Error> {
        Ok(match self {
            // One pass for all three transaction shapes.
            Self::Transaction => serde_json::from_str::<AnyTransaction>(plaintext)?.into_event()?,
            Self::Refund => Event::Refund(serde_json::from_str(plaintext)?),
            Self::Other => {
                // Still insist on JSON: a resource that is not JSON is a broken notification.
                serde_json::from_str::<serde::de::IgnoredAny>(plaintext)?;
                Event::Other
            }
        })
    }

    /// Whether a typed model applies (a failure to parse is then schema drift).
    pub(crate) fn has_model(self) -> bool {
        !matches!(self, Self::Other)
    }

    pub(crate) fn model_name(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Refund => "refund",
            Self::Other => "json",
        }
    }
}

/// Every top-level field of the three transaction shapes, so one parse serves them all;
/// [`AnyTransaction::into_event`] then checks the fields the chosen shape requires.
#[derive(Deserialize)]
struct AnyTransaction {
    appid: Option<String>,
    mchid: Option<String>,
    sp_appid: Option<String>,
    sp_mchid: Option<String>,
    sub_appid: Option<String>,
    sub_mchid: Option<String>,
    combine_appid: Option<String>,
    combine_mchid: Option<String>,
    combine_out_trade_no: Option<String>,
    combine_payer_info: Option<Payer>,
    sub_orders: Option<Vec<SubOrder>>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    trade_type: Option<String>,
    trade_state: Option<String>,
    trade_state_desc: Option<String>,
    bank_type: Option<String>,
    attach: Option<String>,
    success_time: Option<String>,
    payer: Option<AnyPayer>,
    amount: Option<Amount>,
    scene_info: Option<SceneInfo>,
    #[serde(default, deserialize_with = "null_as_default")]
    promotion_detail: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct AnyPayer {
    openid: Option<String>,
    sp_openid: Option<String>,
    sub_openid: Option<String>,
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, serde_json::Error> {
    value.ok_or_else(|| <serde_json::Error as serde::de::Error>::missing_field(field))
}

impl AnyTransaction {
    fn into_event(self) -> Result<Event, serde_json::Error> {
        let payer = self.payer.unwrap_or_default();
        if let Some(combine_out_trade_no) = self.combine_out_trade_no {
            return Ok(Event::CombinePayment(CombineTransaction {
                combine_appid: self.combine_appid,
                combine_mchid: self.combine_mchid,
                combine_out_trade_no,
                scene_info: self.scene_info,
                combine_payer_info: self.combine_payer_info.unwrap_or_default(),
                sub_orders: self.sub_orders.unwrap_or_default(),
            }));
        }
        let out_trade_no = required(self.out_trade_no, "out_trade_no")?;
        let transaction_id = required(self.transaction_id, "transaction_id")?;
        let trade_state = required(self.trade_state, "trade_state")?;
        let amount = required(self.amount, "amount")?;
        if let Some(sp_mchid) = self.sp_mchid {
            return Ok(Event::PartnerPayment(PartnerTransaction {
                sp_appid: self.sp_appid,
                sp_mchid,
                sub_appid: self.sub_appid,
                sub_mchid: required(self.sub_mchid, "sub_mchid")?,
                out_trade_no,
                transaction_id,
                trade_type: self.trade_type,
                trade_state,
                trade_state_desc: self.trade_state_desc,
                bank_type: self.bank_type,
                attach: self.attach,
                success_time: self.success_time,
                payer: PartnerPayer {
                    sp_openid: payer.sp_openid,
                    sub_openid: payer.sub_openid,
                },
                amount,
                scene_info: self.scene_info,
                promotion_detail: self.promotion_detail,
            }));
        }
        Ok(Event::Payment(Transaction {
            appid: self.appid,
            mchid: self.mchid,
            out_trade_no,
            transaction_id,
            trade_type: self.trade_type,
            trade_state,
            trade_state_desc: self.trade_state_desc,
            bank_type: self.bank_type,
            attach: self.attach,
            success_time: self.success_time,
            payer: Payer {
                openid: payer.openid,
            },
            amount,
            scene_info: self.scene_info,
            promotion_detail: self.promotion_detail,
        }))
    }
}
