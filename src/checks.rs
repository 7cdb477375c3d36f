//! Business checks users always forget, as opt-in helpers. Each returns a
//! [`Declined`] to acknowledge with [`Handled::declined`](crate::Handled::declined):
//! a notification for another merchant, or with another amount, will not get better when
//! WeChat Pay resends it.
//!
//! ```
//! use tower_wechatpay::{Handled, Retry};
//! use tower_wechatpay::checks::Merchant;
//! use tower_wechatpay::models::Transaction;
//!
//! fn check(merchant: &Merchant, payment: &Transaction, order_total: i64) -> Result<(), Handled> {
//!     merchant.check_payment(payment).map_err(Handled::declined)?;
//!     payment.check_success().map_err(Handled::declined)?;
//!     payment.check_amount(order_total).map_err(Handled::declined)?;
//!     Ok(())
//! }
//! ```

use crate::models::{PartnerTransaction, Refund, Transaction};
use crate::outcome::Declined;

/// Who we are: the merchant (and optionally app) id notifications must be addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
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
    /// A decline naming the field that does not match.
    pub fn check_payment(&self, payment: &Transaction) -> Result<(), Declined> {
        if payment.mchid.as_deref() != Some(self.mchid.as_str()) {
            return Err(Declined::new("mchid does not match this merchant"));
        }
        match &self.appid {
            Some(appid) if payment.appid.as_deref() != Some(appid.as_str()) => {
                Err(Declined::new("appid does not match this merchant"))
            }
            _ => Ok(()),
        }
    }

    /// The refund is a direct merchant's refund, and its `mchid` is ours. A partner's
    /// refund (it has `sp_mchid`) is declined: check those with [`Partner::check_refund`].
    ///
    /// # Errors
    /// A decline naming what does not match.
    pub fn check_refund(&self, refund: &Refund) -> Result<(), Declined> {
        if refund.sp_mchid.is_some() {
            return Err(Declined::new(
                "a partner (sp_mchid) refund reached a direct merchant's check",
            ));
        }
        if refund.mchid.as_deref() != Some(self.mchid.as_str()) {
            return Err(Declined::new("refund mchid does not match this merchant"));
        }
        Ok(())
    }
}

/// A partner (服务商) and the sub-merchant a notification must be for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
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
    /// A decline naming the field that does not match.
    pub fn check_payment(&self, payment: &PartnerTransaction) -> Result<(), Declined> {
        if payment.sp_mchid != self.sp_mchid {
            return Err(Declined::new("sp_mchid does not match this partner"));
        }
        if payment.sub_mchid != self.sub_mchid {
            return Err(Declined::new("sub_mchid does not match this sub-merchant"));
        }
        Ok(())
    }

    /// The refund's `sp_mchid` and `sub_mchid` are this partner's and sub-merchant's.
    ///
    /// # Errors
    /// A decline naming the field that does not match.
    pub fn check_refund(&self, refund: &Refund) -> Result<(), Declined> {
        if refund.sp_mchid.as_deref() != Some(self.sp_mchid.as_str()) {
            return Err(Declined::new("refund sp_mchid does not match this partner"));
        }
        if refund.sub_mchid.as_deref() != Some(self.sub_mchid.as_str()) {
            return Err(Declined::new(
                "refund sub_mchid does not match this sub-merchant",
            ));
        }
        Ok(())
    }
}

fn check_success(trade_state: &str) -> Result<(), Declined> {
    if trade_state == "SUCCESS" {
        Ok(())
    } else {
        Err(Declined::new(format!(
            "trade_state is {trade_state}, not SUCCESS"
        )))
    }
}

fn check_amount(paid_total: i64, order_total: i64) -> Result<(), Declined> {
    if paid_total == order_total {
        Ok(())
    } else {
        Err(Declined::new(format!(
            "amount mismatch: notified total {paid_total} fen, order total {order_total} fen"
        )))
    }
}

impl Transaction {
    /// `trade_state` is `SUCCESS`: the only state in which an order may be marked paid.
    ///
    /// # Errors
    /// A decline naming the state.
    pub fn check_success(&self) -> Result<(), Declined> {
        check_success(&self.trade_state)
    }

    /// The order total in the notification equals the order's total, in fen.
    ///
    /// # Errors
    /// A decline with both amounts.
    pub fn check_amount(&self, order_total: i64) -> Result<(), Declined> {
        check_amount(self.amount.total, order_total)
    }
}

impl PartnerTransaction {
    /// `trade_state` is `SUCCESS`.
    ///
    /// # Errors
    /// A decline naming the state.
    pub fn check_success(&self) -> Result<(), Declined> {
        check_success(&self.trade_state)
    }

    /// The order total equals the order's total, in fen.
    ///
    /// # Errors
    /// A decline with both amounts.
    pub fn check_amount(&self, order_total: i64) -> Result<(), Declined> {
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
    fn a_merchant_reports_the_id_it_was_made_with() {
        assert_eq!(Merchant::new("1900012345").mchid(), "1900012345");
        assert_eq!(
            Merchant::new("1900012345").appid("wx1").mchid(),
            "1900012345"
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

    fn refund(mchid: Option<&str>, sp_mchid: Option<&str>, sub_mchid: Option<&str>) -> Refund {
        serde_json::from_value(serde_json::json!({
            "mchid": mchid, "sp_mchid": sp_mchid, "sub_mchid": sub_mchid,
            "out_refund_no": "r", "refund_id": "50000", "refund_status": "SUCCESS",
            "amount": {"total": 10, "refund": 5}
        }))
        .unwrap()
    }

    #[test]
    fn a_direct_merchant_accepts_only_its_own_direct_refunds() {
        let merchant = Merchant::new("1900012345");
        assert!(
            merchant
                .check_refund(&refund(Some("1900012345"), None, None))
                .is_ok()
        );
        let other = merchant.check_refund(&refund(Some("1900000000"), None, None));
        assert!(other.unwrap_err().reason().contains("mchid"));
        assert!(merchant.check_refund(&refund(None, None, None)).is_err());
        // A partner's refund for a sub-merchant that happens to carry our id.
        let partner_refund = refund(None, Some("1900099999"), Some("1900012345"));
        assert!(
            merchant
                .check_refund(&partner_refund)
                .unwrap_err()
                .reason()
                .contains("sp_mchid")
        );
    }

    #[test]
    fn a_partner_accepts_only_refunds_for_itself_and_its_sub_merchant() {
        let partner = Partner::new("sp", "sub");
        assert!(
            partner
                .check_refund(&refund(None, Some("sp"), Some("sub")))
                .is_ok()
        );
        let other_partner = partner.check_refund(&refund(None, Some("sp2"), Some("sub")));
        assert!(other_partner.unwrap_err().reason().contains("sp_mchid"));
        let other_sub = partner.check_refund(&refund(None, Some("sp"), Some("sub2")));
        assert!(other_sub.unwrap_err().reason().contains("sub_mchid"));
        assert!(
            partner
                .check_refund(&refund(Some("sp"), None, Some("sub")))
                .is_err()
        );
    }

    #[test]
    fn partner_checks_success_and_amount() {
        let value = serde_json::json!({
            "sp_mchid": "sp", "sub_mchid": "sub", "out_trade_no": "o", "transaction_id": "t",
            "trade_state": "NOTPAY", "amount": {"total": 100}
        });
        let payment: PartnerTransaction = serde_json::from_value(value).unwrap();
        assert!(
            payment
                .check_success()
                .unwrap_err()
                .reason()
                .contains("NOTPAY")
        );
        assert!(payment.check_amount(100).is_ok());
        assert!(
            payment
                .check_amount(99)
                .unwrap_err()
                .reason()
                .contains("99")
        );
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
        let mut other_partner = value.clone();
        other_partner["sp_mchid"] = "other".into();
        let other_partner: PartnerTransaction = serde_json::from_value(other_partner).unwrap();
        assert!(
            partner
                .check_payment(&other_partner)
                .unwrap_err()
                .reason()
                .contains("sp_mchid")
        );
        value["sub_mchid"] = "other".into();
        let other: PartnerTransaction = serde_json::from_value(value).unwrap();
        assert!(
            partner
                .check_payment(&other)
                .unwrap_err()
                .reason()
                .contains("sub_mchid")
        );
    }
}
