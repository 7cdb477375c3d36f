//! Order and refund queries (查询订单, 查询单笔退款), typed with the crate's models.
//!
//! Paths follow `MERCHANT-API.md` §4–5: direct orders under `/v3/pay/transactions/…`
//! (`?mchid=`), partner orders under `/v3/pay/partner/transactions/…`
//! (`?sp_mchid=&sub_mchid=`), combine orders under `/v3/combine-transactions/…`, refunds
//! under `/v3/refund/domestic/refunds/…` (`?sub_mchid=` for partners). Path parameters
//! are escaped, so an order number can never reach another endpoint.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::{BoxError, Service};

use crate::client::error::ClientError;
use crate::client::sign::path_param;
use crate::client::{Answer, Client};
use crate::models::{CombineTransaction, PartnerTransaction, Refund, Transaction};

/// Which order to query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderQuery {
    /// A direct order by WeChat Pay's `transaction_id` (paid orders only).
    TransactionId(String),
    /// A direct order by your `out_trade_no` (also before payment).
    OutTradeNo(String),
    /// A sub-merchant's order by `transaction_id` (partners, 服务商).
    PartnerTransactionId {
        /// The sub-merchant id.
        sub_mchid: String,
        /// WeChat Pay's transaction id.
        transaction_id: String,
    },
    /// A sub-merchant's order by `out_trade_no`.
    PartnerOutTradeNo {
        /// The sub-merchant id.
        sub_mchid: String,
        /// The order number.
        out_trade_no: String,
    },
    /// A combine order (合单) by `combine_out_trade_no`.
    Combine(String),
}

impl OrderQuery {
    /// The request target for merchant `mchid` (the partner's, for partner queries).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an empty, `.` or `..` number.
    pub fn target(&self, mchid: &str) -> Result<String, ClientError> {
        Ok(match self {
            Self::TransactionId(id) => format!(
                "/v3/pay/transactions/id/{}?mchid={mchid}",
                path_param("transaction_id", id)?
            ),
            Self::OutTradeNo(no) => format!(
                "/v3/pay/transactions/out-trade-no/{}?mchid={mchid}",
                path_param("out_trade_no", no)?
            ),
            Self::PartnerTransactionId {
                sub_mchid,
                transaction_id,
            } => format!(
                "/v3/pay/partner/transactions/id/{}?sp_mchid={mchid}&sub_mchid={}",
                path_param("transaction_id", transaction_id)?,
                path_param("sub_mchid", sub_mchid)?
            ),
            Self::PartnerOutTradeNo {
                sub_mchid,
                out_trade_no,
            } => format!(
                "/v3/pay/partner/transactions/out-trade-no/{}?sp_mchid={mchid}&sub_mchid={}",
                path_param("out_trade_no", out_trade_no)?,
                path_param("sub_mchid", sub_mchid)?
            ),
            Self::Combine(no) => format!(
                "/v3/combine-transactions/out-trade-no/{}",
                path_param("combine_out_trade_no", no)?
            ),
        })
    }
}

/// Which refund to query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefundQuery {
    /// Your refund number.
    pub out_refund_no: String,
    /// The sub-merchant, for partners.
    pub sub_mchid: Option<String>,
}

impl RefundQuery {
    /// A direct merchant's refund.
    pub fn new(out_refund_no: &str) -> Self {
        Self {
            out_refund_no: out_refund_no.to_owned(),
            sub_mchid: None,
        }
    }

    /// A sub-merchant's refund (partners).
    pub fn partner(sub_mchid: &str, out_refund_no: &str) -> Self {
        Self {
            out_refund_no: out_refund_no.to_owned(),
            sub_mchid: Some(sub_mchid.to_owned()),
        }
    }

    /// The request target.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an empty, `.` or `..` number.
    pub fn target(&self) -> Result<String, ClientError> {
        let mut target = format!(
            "/v3/refund/domestic/refunds/{}",
            path_param("out_refund_no", &self.out_refund_no)?
        );
        if let Some(sub_mchid) = &self.sub_mchid {
            target.push_str("?sub_mchid=");
            target.push_str(&path_param("sub_mchid", sub_mchid)?);
        }
        Ok(target)
    }
}

/// An order as queried: the model, or an order that has no payment yet (`NOTPAY`,
/// `CLOSED`, `USERPAYING`, …), whose answer lacks the payment's fields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum QueriedOrder<T> {
    /// The order, with its payment (`trade_state` `SUCCESS`, or `REFUND` after a refund).
    Paid(T),
    /// An order without a payment.
    Unpaid {
        /// The order number.
        out_trade_no: String,
        /// `NOTPAY`, `CLOSED`, `USERPAYING`, `REVOKED`, `PAYERROR`.
        trade_state: String,
        /// WeChat Pay's description of it.
        trade_state_desc: Option<String>,
    },
}

impl<S, B> Client<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Queries an order and returns WeChat Pay's verified answer as it came.
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown order is [`ClientError::Api`] `ORDER_NOT_EXIST`.
    pub async fn query_order(&self, query: &OrderQuery) -> Result<Answer, ClientError> {
        self.get(&query.target(self.mchid())?).await
    }

    /// Queries a refund and returns WeChat Pay's verified answer as it came.
    ///
    /// # Errors
    /// See [`ClientError`]; an unknown refund is [`ClientError::Api`] `RESOURCE_NOT_EXISTS`.
    pub async fn query_refund_answer(&self, query: &RefundQuery) -> Result<Answer, ClientError> {
        self.get(&query.target()?).await
    }

    /// A direct order by `transaction_id`.
    ///
    /// # Errors
    /// See [`Client::query_order`].
    pub async fn query_order_by_transaction_id(
        &self,
        transaction_id: &str,
    ) -> Result<Transaction, ClientError> {
        self.query_order(&OrderQuery::TransactionId(transaction_id.to_owned()))
            .await?
            .json()
    }

    /// A direct order by `out_trade_no`, paid or not.
    ///
    /// # Errors
    /// See [`Client::query_order`].
    pub async fn query_order_by_out_trade_no(
        &self,
        out_trade_no: &str,
    ) -> Result<QueriedOrder<Transaction>, ClientError> {
        let answer = self
            .query_order(&OrderQuery::OutTradeNo(out_trade_no.to_owned()))
            .await?;
        queried(&answer)
    }

    /// A sub-merchant's order by `transaction_id` (partners).
    ///
    /// # Errors
    /// See [`Client::query_order`].
    pub async fn query_partner_order_by_transaction_id(
        &self,
        sub_mchid: &str,
        transaction_id: &str,
    ) -> Result<PartnerTransaction, ClientError> {
        self.query_order(&OrderQuery::PartnerTransactionId {
            sub_mchid: sub_mchid.to_owned(),
            transaction_id: transaction_id.to_owned(),
        })
        .await?
        .json()
    }

    /// A sub-merchant's order by `out_trade_no`, paid or not (partners).
    ///
    /// # Errors
    /// See [`Client::query_order`].
    pub async fn query_partner_order_by_out_trade_no(
        &self,
        sub_mchid: &str,
        out_trade_no: &str,
    ) -> Result<QueriedOrder<PartnerTransaction>, ClientError> {
        let answer = self
            .query_order(&OrderQuery::PartnerOutTradeNo {
                sub_mchid: sub_mchid.to_owned(),
                out_trade_no: out_trade_no.to_owned(),
            })
            .await?;
        queried(&answer)
    }

    /// A combine order by `combine_out_trade_no`.
    ///
    /// # Errors
    /// See [`Client::query_order`].
    pub async fn query_combine_order(
        &self,
        combine_out_trade_no: &str,
    ) -> Result<CombineTransaction, ClientError> {
        self.query_order(&OrderQuery::Combine(combine_out_trade_no.to_owned()))
            .await?
            .json()
    }

    /// A refund by `out_refund_no` (`RefundQuery::partner` for a sub-merchant's). The
    /// answer's `status` is read into [`Refund::refund_status`].
    ///
    /// # Errors
    /// See [`Client::query_refund_answer`].
    pub async fn query_refund(&self, query: &RefundQuery) -> Result<Refund, ClientError> {
        self.query_refund_answer(query).await?.json()
    }
}

/// The model if the answer has a payment's fields, else what an unpaid order has.
fn queried<T: DeserializeOwned>(answer: &Answer) -> Result<QueriedOrder<T>, ClientError> {
    let value: Value = answer.json()?;
    let trade_state = value
        .get("trade_state")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if matches!(trade_state.as_str(), "SUCCESS" | "REFUND") {
        return serde_json::from_value(value)
            .map(QueriedOrder::Paid)
            .map_err(|error| ClientError::UnexpectedAnswer {
                reason: error.to_string(),
                request_id: answer.request_id.clone(),
            });
    }
    if trade_state.is_empty() {
        return Err(ClientError::UnexpectedAnswer {
            reason: "the order has no trade_state".into(),
            request_id: answer.request_id.clone(),
        });
    }
    Ok(QueriedOrder::Unpaid {
        out_trade_no: value
            .get("out_trade_no")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        trade_state,
        trade_state_desc: value
            .get("trade_state_desc")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_documented_paths_and_escape_numbers() {
        let mchid = "1900000109";
        let target = |q: OrderQuery| q.target(mchid).unwrap();
        assert_eq!(
            target(OrderQuery::TransactionId("4200".into())),
            "/v3/pay/transactions/id/4200?mchid=1900000109"
        );
        assert_eq!(
            target(OrderQuery::OutTradeNo("A/B?c".into())),
            "/v3/pay/transactions/out-trade-no/A%2FB%3Fc?mchid=1900000109"
        );
        assert_eq!(
            target(OrderQuery::PartnerOutTradeNo {
                sub_mchid: "1900000110".into(),
                out_trade_no: "X1".into()
            }),
            "/v3/pay/partner/transactions/out-trade-no/X1?sp_mchid=1900000109&sub_mchid=1900000110"
        );
        assert_eq!(
            target(OrderQuery::Combine("C1".into())),
            "/v3/combine-transactions/out-trade-no/C1"
        );
        assert_eq!(
            RefundQuery::partner("1900000110", "R 1").target().unwrap(),
            "/v3/refund/domestic/refunds/R%201?sub_mchid=1900000110"
        );
        assert!(OrderQuery::OutTradeNo("..".into()).target(mchid).is_err());
    }
}
