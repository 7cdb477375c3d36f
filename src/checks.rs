//! Business checks users always forget, as opt-in helpers. Each returns a
//! [`BusinessRejection`] to acknowledge with [`Handled::rejected`](crate::Handled::rejected):
//! a notification for another merchant, or with another amount, will not get better when
//! WeChat Pay resends it.
//!
//! ```
//! use tower_wechatpay::{Handled, Merchant, Retry, Transaction};
//!
//! fn check(merchant: &Merchant, payment: &Transaction, order_total: i64) -> Result<(), Handled> {
//!     merchant.check_payment(payment).map_err(Handled::rejected)?;
//!     payment.check_success().map_err(Handled::rejected)?;
//!     payment.check_amount(order_total).map_err(Handled::rejected)?;
//!     Ok(())
//! }
//! ```

use crate::event::{PartnerTransaction, Refund, Transaction};
use crate::outcome::BusinessRejection;

/// Who we are: the merchant (and optionally app) id notifications must be addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    mchid: String,
    appid: Option<String>,
}

impl Merchant {
    /// A direct merchant (直连商户) with this merchant id.
    pub fn new(mchid: impl Into<String>) -> Self {
        Self {
            mchid: mchid.into(),
            appid: None,
        }
    }

    /// Also require this app id.
    pub fn appid(mut self, appid: impl Into<String>) -> Self {
        self.appid = Some(appid.into());
        self
    }

    /// The merchant id.
    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// `mchid` (and `appid`, if configured) of a payment match ours.
    ///
    /// # Errors
    /// A rejection naming the field that does not match.
    pub fn check_payment(&self, payment: &Transaction) -> Result<(), BusinessRejection> {
        if payment.mchid.as_deref() != Some(self.mchid.as_str()) {
            return Err(BusinessRejection::new("mchid does not match this merchant"));
        }
        match &self.appid {
            Some(appid) if payment.appid.as_deref() != Some(appid.as_str()) => {
                Err(BusinessRejection::new("appid does not match this merchant"))
            }
            _ => Ok(()),
        }
    }

    /// The refund's `mchid` (direct) or `sub_mchid` (partner) is ours.
    ///
    /// # Errors
    /// A rejection if neither matches.
    pub fn check_refund(&self, refund: &Refund) -> Result<(), BusinessRejection> {
        let ours = Some(self.mchid.as_str());
        if refund.mchid.as_deref() == ours || refund.sub_mchid.as_deref() == ours {
            Ok(())
        } else {
            Err(BusinessRejection::new("refund is not for this merchant"))
        }
    }
}

/// A partner (服务商) and the sub-merchant a notification must be for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    sp_mchid: String,
    sub_mchid: String,
}

impl Partner {
    /// The partner's merchant id and the sub-merchant's.
    pub fn new(sp_mchid: impl Into<String>, sub_mchid: impl Into<String>) -> Self {
        Self {
            sp_mchid: sp_mchid.into(),
            sub_mchid: sub_mchid.into(),
        }
    }

    /// `sp_mchid` and `sub_mchid` of a partner payment match.
    ///
    /// # Errors
    /// A rejection naming the field that does not match.
    pub fn check_payment(&self, payment: &PartnerTransaction) -> Result<(), BusinessRejection> {
        if payment.sp_mchid != self.sp_mchid {
            return Err(BusinessRejection::new(
                "sp_mchid does not match this partner",
            ));
        }
        if payment.sub_mchid != self.sub_mchid {
            return Err(BusinessRejection::new(
                "sub_mchid does not match this sub-merchant",
            ));
        }
        Ok(())
    }
}

fn check_success(trade_state: &str) -> Result<(), BusinessRejection> {
    if trade_state == "SUCCESS" {
        Ok(())
    } else {
        Err(BusinessRejection::new(format!(
            "trade_state is {trade_state}, not SUCCESS"
        )))
    }
}

fn check_amount(paid_total: i64, order_total: i64) -> Result<(), BusinessRejection> {
    if paid_total == order_total {
        Ok(())
    } else {
        Err(BusinessRejection::new(format!(
            "amount mismatch: notified total {paid_total} fen, order total {order_total} fen"
        )))
    }
}

impl Transaction {
    /// `trade_state` is `SUCCESS`: the only state in which an order may be marked paid.
    ///
    /// # Errors
    /// A rejection naming the state.
    pub fn check_success(&self) -> Result<(), BusinessRejection> {
        check_success(&self.trade_state)
    }

    /// The order total in the notification equals the order's total, in fen.
    ///
    /// # Errors
    /// A rejection with both amounts.
    pub fn check_amount(&self, order_total: i64) -> Result<(), BusinessRejection> {
        check_amount(self.amount.total, order_total)
    }
}

impl PartnerTransaction {
    /// `trade_state` is `SUCCESS`.
    ///
    /// # Errors
    /// A rejection naming the state.
    pub fn check_success(&self) -> Result<(), BusinessRejection> {
        check_success(&self.trade_state)
    }

    /// The order total equals the order's total, in fen.
    ///
    /// # Errors
    /// A rejection with both amounts.
    pub fn check_amount(&self, order_total: i64) -> Result<(), BusinessRejection> {
        check_amount(self.amount.total, order_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(mchid: &str, appid: &str, state: &str, total: i64) -> Transaction {
        serde_json::from_value(serde_json::json!({
            "mchid": mchid, "appid": appid, "out_trade_no": "o", "transaction_id": "t",
            "trade_state": state, "amount": {"total": total}
        }))
        .unwrap()
    }

    #[test]
    fn merchant_and_app_must_match() {
        let merchant = Merchant::new("1900012345").appid("wx1");
        assert!(
            merchant
                .check_payment(&payment("1900012345", "wx1", "SUCCESS", 1))
                .is_ok()
        );
        let other = merchant.check_payment(&payment("1900000000", "wx1", "SUCCESS", 1));
        assert!(other.unwrap_err().reason().contains("mchid"));
        let other_app = merchant.check_payment(&payment("1900012345", "wx2", "SUCCESS", 1));
        assert!(other_app.unwrap_err().reason().contains("appid"));
        assert!(
            Merchant::new("1900012345")
                .check_payment(&payment("1900012345", "anything", "SUCCESS", 1))
                .is_ok()
        );
    }

    #[test]
    fn only_success_counts_as_paid() {
        assert!(payment("m", "a", "SUCCESS", 1).check_success().is_ok());
        for state in ["NOTPAY", "CLOSED", "REFUND", "PAYERROR", "success"] {
            assert!(
                payment("m", "a", state, 1).check_success().is_err(),
                "{state}"
            );
        }
    }

    #[test]
    fn amounts_must_be_equal() {
        assert!(payment("m", "a", "SUCCESS", 990).check_amount(990).is_ok());
        let error = payment("m", "a", "SUCCESS", 1)
            .check_amount(990)
            .unwrap_err();
        assert!(error.reason().contains("990"));
    }

    #[test]
    fn partner_ids_must_match() {
        let partner = Partner::new("sp", "sub");
        let mut value = serde_json::json!({
            "sp_mchid": "sp", "sub_mchid": "sub", "out_trade_no": "o", "transaction_id": "t",
            "trade_state": "SUCCESS", "amount": {"total": 1}
        });
        let ok: PartnerTransaction = serde_json::from_value(value.clone()).unwrap();
        assert!(partner.check_payment(&ok).is_ok());
        value["sub_mchid"] = "other".into();
        let other: PartnerTransaction = serde_json::from_value(value).unwrap();
        assert!(partner.check_payment(&other).is_err());
    }
}
