//! Confirming a notification with WeChat Pay (状态验证): [`Client::confirm`].

use std::borrow::Cow;
use std::fmt;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use tower::{BoxError, Service};

use crate::client::error::ClientError;
use crate::client::query::{OrderQuery, RefundQuery};
use crate::client::{Answer, Client};
use crate::models::{CombineTransaction, Event, PartnerTransaction, Refund, SubOrder, Transaction};
use crate::notification::Notification;
use crate::outcome::{Declined, Handled, Retry};

/// What WeChat Pay's answer says about a notification: from [`Client::confirm`], which
/// explains each case.
#[derive(Debug)]
#[non_exhaustive]
pub enum Confirmation {
    /// WeChat Pay's verified answer agrees with the notification on every compared field.
    Confirmed,
    /// WeChat Pay disagrees, or does not know the order: a business decline (acknowledge
    /// it, do not apply it). Already logged at warn.
    Mismatch(Mismatch),
    /// No verified answer to compare with (unreachable, timeout, 5xx, 429, an answer that
    /// did not verify, a refusal of our request such as `SIGN_ERROR`): retry later.
    Unavailable(ClientError),
    /// The notification holds nothing a query can confirm ([`Event::Other`], or a resource
    /// that did not match the crate's models, [`Event::Unparsed`]): why.
    Unsupported(&'static str),
}

impl Confirmation {
    /// Whether WeChat Pay confirmed the notification.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Self::Confirmed)
    }

    /// The handler outcome: `Ok(None)` when confirmed (go on and apply it),
    /// `Ok(Some(declined))` for a mismatch (answer `Handled::Declined(declined)`), `Err(Retry)`
    /// when WeChat Pay could not be asked or the notification cannot be confirmed.
    ///
    /// # Errors
    /// A [`Retry`] for [`Confirmation::Unavailable`] and [`Confirmation::Unsupported`].
    pub fn into_outcome(self) -> Result<Option<Declined>, Retry> {
        match self {
            Self::Confirmed => Ok(None),
            Self::Mismatch(mismatch) => Ok(Some(Declined::from(mismatch))),
            Self::Unavailable(error) => Err(Retry::new(NotConfirmed(error))),
            Self::Unsupported(reason) => Err(Retry::new(format!(
                "cannot confirm this notification with wechat pay: {reason}"
            ))),
        }
    }

    /// `Ok(())` when confirmed; otherwise the handler's answer: an acknowledged decline for a
    /// mismatch, a retry for everything else. So a handler confirms in one line:
    /// `if let Err(answer) = client.confirm(&notification).await.require() { return answer; }`.
    ///
    /// # Errors
    /// The answer to return instead of applying the notification.
    pub fn require(self) -> Result<(), Result<Handled, Retry>> {
        match self.into_outcome() {
            Ok(None) => Ok(()),
            Ok(Some(declined)) => Err(Ok(Handled::Declined(declined))),
            Err(retry) => Err(Err(retry)),
        }
    }
}

/// Why confirming failed for lack of an answer: the retry's cause. Its text holds the
/// client error's (which already names its own causes), so it has no `source`: the retry's
/// log line says everything once.
#[derive(Debug)]
struct NotConfirmed(ClientError);

impl fmt::Display for NotConfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not confirm the notification with wechat pay: {}",
            self.0
        )
    }
}

impl std::error::Error for NotConfirmed {}

/// A field where the notification and WeChat Pay's answer disagree (or WeChat Pay does not
/// know the order). Holds no payer data, so it can be logged and shown as is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch {
    /// The field, as a path into the resource: `amount.total`, `trade_state`,
    /// `sub_orders[1].transaction_id`; for an unknown order, the number that was queried.
    pub field: Cow<'static, str>,
    /// What the notification says.
    pub notified: String,
    /// What WeChat Pay answered (`nothing` when the answer lacks the field); for an unknown
    /// order, its status and code, e.g. `404 ORDER_NOT_EXIST`.
    pub answered: String,
    /// The answer's `Request-ID`, for WeChat Pay support.
    pub request_id: Option<String>,
    kind: MismatchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MismatchKind {
    Differs,
    Unknown,
    Unqueryable,
}

impl Mismatch {
    fn new(
        field: impl Into<Cow<'static, str>>,
        notified: impl fmt::Display,
        answered: impl fmt::Display,
        request_id: Option<&str>,
        kind: MismatchKind,
    ) -> Self {
        Self {
            field: field.into(),
            notified: notified.to_string(),
            answered: answered.to_string(),
            request_id: request_id.map(str::to_owned),
            kind,
        }
    }

    /// Whether WeChat Pay does not know the order or refund at all (404 `ORDER_NOT_EXIST`
    /// or `RESOURCE_NOT_EXISTS`), rather than disagreeing on a field.
    pub fn is_unknown(&self) -> bool {
        self.kind == MismatchKind::Unknown
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            field,
            notified,
            answered,
            ..
        } = self;
        match self.kind {
            MismatchKind::Differs => write!(
                f,
                "not confirmed by wechat pay: {field} is {notified} in the notification, \
                 {answered} in wechat pay's answer"
            )?,
            MismatchKind::Unknown => write!(
                f,
                "not confirmed by wechat pay: wechat pay does not know this order \
                 ({field} {notified}: {answered})"
            )?,
            MismatchKind::Unqueryable => write!(
                f,
                "not confirmed by wechat pay: the notification's {field} {notified:?} \
                 cannot be queried ({answered})"
            )?,
        }
        match &self.request_id {
            Some(id) => write!(f, " (Request-ID {id})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Mismatch {}

impl From<Mismatch> for Declined {
    fn from(mismatch: Mismatch) -> Self {
        Declined::new(mismatch.to_string())
    }
}

/// What `absent` looks like in a [`Mismatch`].
const NOTHING: &str = "nothing";

/// Compares field by field; keeps the first mismatch.
struct Compare<'a> {
    request_id: Option<&'a str>,
    found: Option<Mismatch>,
}

impl<'a> Compare<'a> {
    fn new(answer: &'a Answer) -> Self {
        Self {
            request_id: answer.request_id.as_deref(),
            found: None,
        }
    }

    fn differs(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        notified: impl fmt::Display,
        answered: impl fmt::Display,
    ) {
        if self.found.is_none() {
            self.found = Some(Mismatch::new(
                field,
                notified,
                answered,
                self.request_id,
                MismatchKind::Differs,
            ));
        }
    }

    /// The same value on both sides.
    fn same<T: PartialEq + fmt::Display + ?Sized>(
        &mut self,
        field: &'static str,
        notified: &T,
        answered: &T,
    ) {
        if notified != answered {
            self.differs(field, notified, answered);
        }
    }

    /// If the notification states it, the answer states the same.
    fn stated<T: PartialEq + fmt::Display>(
        &mut self,
        field: impl FnOnce() -> Cow<'static, str>,
        notified: Option<&T>,
        answered: Option<&T>,
    ) {
        if let Some(notified) = notified {
            match answered {
                Some(answered) if answered == notified => {}
                Some(answered) => self.differs(field(), notified, answered),
                None => self.differs(field(), notified, NOTHING),
            }
        }
    }

    /// A trade state: `SUCCESS` is confirmed by `SUCCESS` or `REFUND`, others by themselves.
    fn trade_state(
        &mut self,
        field: impl FnOnce() -> Cow<'static, str>,
        notified: &str,
        answered: &str,
    ) {
        let confirmed = if notified == "SUCCESS" {
            matches!(answered, "SUCCESS" | "REFUND")
        } else {
            notified == answered
        };
        if !confirmed {
            self.differs(field(), notified, answered);
        }
    }

    fn finish(self) -> Confirmation {
        match self.found {
            Some(mismatch) => Confirmation::Mismatch(mismatch),
            None => Confirmation::Confirmed,
        }
    }
}

fn name(field: &'static str) -> impl FnOnce() -> Cow<'static, str> {
    move || Cow::Borrowed(field)
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
    /// Asks WeChat Pay about the payment or refund `notification` reports and compares its
    /// verified answer with it, field by field.
    ///
    /// | notification | query | compared |
    /// | --- | --- | --- |
    /// | payment | order by `transaction_id` | `transaction_id`, `out_trade_no`, `mchid`, `appid`, `trade_state`, `amount.total`, `amount.payer_total` |
    /// | partner payment | partner order by `transaction_id` and the notification's `sub_mchid` | as above with `sp_mchid`, `sub_mchid`, `sp_appid`, `sub_appid` |
    /// | combine payment | combine order by `combine_out_trade_no` | `combine_out_trade_no`, `combine_mchid`, `combine_appid`, the set of sub-orders and, for each, `transaction_id`, `mchid`, `trade_state`, `amount.total_amount`, `amount.payer_amount` |
    /// | refund | refund by `out_refund_no` (with `sub_mchid` for partners) | `refund_id`, `out_refund_no`, `out_trade_no`, `transaction_id`, `refund_status` (the answer's `status`), `amount.refund`, `amount.total` |
    ///
    /// Every field the notification states must be in the answer with the same value; a field
    /// the notification leaves out is not compared. A `trade_state` of `SUCCESS` is confirmed
    /// by `SUCCESS` or `REFUND` (paid, then refunded); any other state only by itself. Payer
    /// data (`openid`s) is never compared nor logged.
    ///
    /// The outcome is a [`Confirmation`]:
    ///
    /// - [`Confirmed`](Confirmation::Confirmed): WeChat Pay's verified answer agrees.
    /// - [`Mismatch`](Confirmation::Mismatch): it disagrees on a field, or WeChat Pay does not
    ///   know the order or refund (404 `ORDER_NOT_EXIST` / `RESOURCE_NOT_EXISTS`), or the
    ///   notification's number cannot even be asked about (empty, `.`, `..`). A business
    ///   decline: acknowledge it without applying it. Logged at warn, once per call, with
    ///   the notification's id, the field, both values and the `Request-ID` (never payer data).
    /// - [`Unavailable`](Confirmation::Unavailable): no verified answer to compare with, so
    ///   WeChat Pay must resend later: the API unreachable or slow (the client's timeout), a 5xx
    ///   or 429, an answer that did not verify or did not parse, a refund WeChat Pay still
    ///   reports `PROCESSING`, and **any other refusal** (400 `PARAM_ERROR`, 401 `SIGN_ERROR`,
    ///   403 `NO_AUTH`, …). A refusal is about *our* request, usually our configuration (wrong
    ///   merchant key, serial or merchant id), not about the notification: acknowledging the
    ///   notification away would lose a genuine payment, while a retry keeps it until the
    ///   configuration is fixed. The layer logs that retry at error, with the cause.
    /// - [`Unsupported`](Confirmation::Unsupported): nothing a query can confirm, i.e.
    ///   [`Event::Other`] or [`Event::Unparsed`]. Confirm only what you apply; route other
    ///   events before calling [`Client::confirm`]. Turned into an outcome it is a retry (for
    ///   an unparsed payment that is what the typed extractors answer too).
    ///
    /// In a handler, [`Confirmation::require`] makes it one line:
    ///
    /// ```
    /// use tower_wechatpay::client::Client;
    /// use tower_wechatpay::{Handled, Notification, Retry};
    ///
    /// async fn on_payment(client: &Client, notification: &Notification) -> Result<Handled, Retry> {
    ///     // A mismatch: acknowledged and declined; WeChat Pay unreachable: a retry.
    ///     if let Err(answer) = client.confirm(notification).await.require() {
    ///         return answer;
    ///     }
    ///     // … WeChat Pay agrees: apply it.
    ///     Ok(Handled::Done)
    /// }
    /// ```
    ///
    /// One order or refund query per call (never repeated on a mismatch), within the
    /// client's timeout: confirming costs a round trip to WeChat Pay and counts against its
    /// rate limits (order queries 600/s, refund queries 300/s per merchant), on every
    /// delivery of the notification. Give the client a timeout well under the 5 s WeChat Pay
    /// waits for the answer and under the layer's 4 s answer deadline, e.g. 2 s with
    /// [`ClientBuilder::timeout`](crate::client::ClientBuilder::timeout).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use tower_wechatpay::client::{Client, Confirmation};
    /// # use tower_wechatpay::test_util::{TestSigner, sample_payment};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let signer = TestSigner::public_key_mode();
    /// # let layer = signer.layer()?;
    /// # let signed = signer.notification("TRANSACTION.SUCCESS", &sample_payment()).build()?;
    /// # let notification = layer.verify(&signed.headers, &signed.body)?;
    /// # let mut answer = sample_payment();
    /// # answer["amount"]["total"] = 1.into(); // WeChat Pay knows another amount
    /// # let signed_answer = signer.sign_body(answer.to_string(), 1_700_000_000)?;
    /// # let wechat_pay = tower::service_fn(move |_request: http::Request<Full<Bytes>>| {
    /// #     let signed = signed_answer.clone();
    /// #     let mut response = http::Response::new(Full::new(signed.body));
    /// #     *response.headers_mut() = signed.headers;
    /// #     async move { Ok::<_, Infallible>(response) }
    /// # });
    /// # let key = include_str!("../test_util/keys/stranger.key.pem");
    /// let client = Client::builder("1900012345", "3775B6A45ACD588826D15E583A95F5DD0A1A9C5A", key, layer.keys().clone())?
    ///     .timeout(std::time::Duration::from_secs(2))?
    /// #   .clock(|| 1_700_000_000)
    ///     .build_with_service(wechat_pay); // `.build()` for the real API
    /// match client.confirm(&notification).await {
    ///     Confirmation::Confirmed => { /* apply it */ }
    ///     Confirmation::Mismatch(mismatch) => {
    ///         assert_eq!(mismatch.field, "amount.total");
    ///         assert_eq!((mismatch.notified.as_str(), mismatch.answered.as_str()), ("990", "1"));
    ///     }
    ///     other => return Err(format!("retry later: {other:?}").into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn confirm(&self, notification: &Notification) -> Confirmation {
        let confirmation = match notification.event() {
            Event::Payment(payment) => self.confirm_payment(payment).await,
            Event::PartnerPayment(payment) => self.confirm_partner_payment(payment).await,
            Event::CombinePayment(payment) => self.confirm_combine_payment(payment).await,
            Event::Refund(refund) => self.confirm_refund(refund).await,
            Event::Unparsed(_) => Confirmation::Unsupported(
                "its resource did not match the crate's models, so it has no number to query",
            ),
            _ => Confirmation::Unsupported("it is neither a payment nor a refund"),
        };
        if let Confirmation::Mismatch(mismatch) = &confirmation {
            tracing::warn!(
                notification = notification.id(),
                event_type = notification.event_type(),
                field = %mismatch.field,
                notified = %mismatch.notified,
                answered = %mismatch.answered,
                request_id = mismatch.request_id.as_deref().unwrap_or(""),
                "wechat pay does not confirm the notification: {mismatch}"
            );
        }
        confirmation
    }

    async fn confirm_payment(&self, payment: &Transaction) -> Confirmation {
        let query = OrderQuery::TransactionId(payment.transaction_id.clone());
        let (answer, queried) = match self
            .confirmation_answer::<Transaction, _>(
                self.query_order(&query),
                &[("transaction_id", &payment.transaction_id)],
            )
            .await
        {
            Ok(found) => found,
            Err(confirmation) => return confirmation,
        };
        let mut compare = Compare::new(&answer);
        compare.same(
            "transaction_id",
            &payment.transaction_id,
            &queried.transaction_id,
        );
        compare.same("out_trade_no", &payment.out_trade_no, &queried.out_trade_no);
        compare.stated(
            name("mchid"),
            payment.mchid.as_ref(),
            queried.mchid.as_ref(),
        );
        compare.stated(
            name("appid"),
            payment.appid.as_ref(),
            queried.appid.as_ref(),
        );
        compare.trade_state(
            name("trade_state"),
            &payment.trade_state,
            &queried.trade_state,
        );
        compare.same("amount.total", &payment.amount.total, &queried.amount.total);
        compare.stated(
            name("amount.payer_total"),
            payment.amount.payer_total.as_ref(),
            queried.amount.payer_total.as_ref(),
        );
        compare.finish()
    }

    async fn confirm_partner_payment(&self, payment: &PartnerTransaction) -> Confirmation {
        let query = OrderQuery::PartnerTransactionId {
            sub_mchid: payment.sub_mchid.clone(),
            transaction_id: payment.transaction_id.clone(),
        };
        let (answer, queried) = match self
            .confirmation_answer::<PartnerTransaction, _>(
                self.query_order(&query),
                &[
                    ("transaction_id", &payment.transaction_id),
                    ("sub_mchid", &payment.sub_mchid),
                ],
            )
            .await
        {
            Ok(found) => found,
            Err(confirmation) => return confirmation,
        };
        let mut compare = Compare::new(&answer);
        compare.same(
            "transaction_id",
            &payment.transaction_id,
            &queried.transaction_id,
        );
        compare.same("out_trade_no", &payment.out_trade_no, &queried.out_trade_no);
        compare.same("sp_mchid", &payment.sp_mchid, &queried.sp_mchid);
        compare.same("sub_mchid", &payment.sub_mchid, &queried.sub_mchid);
        compare.stated(
            name("sp_appid"),
            payment.sp_appid.as_ref(),
            queried.sp_appid.as_ref(),
        );
        compare.stated(
            name("sub_appid"),
            payment.sub_appid.as_ref(),
            queried.sub_appid.as_ref(),
        );
        compare.trade_state(
            name("trade_state"),
            &payment.trade_state,
            &queried.trade_state,
        );
        compare.same("amount.total", &payment.amount.total, &queried.amount.total);
        compare.stated(
            name("amount.payer_total"),
            payment.amount.payer_total.as_ref(),
            queried.amount.payer_total.as_ref(),
        );
        compare.finish()
    }

    async fn confirm_combine_payment(&self, payment: &CombineTransaction) -> Confirmation {
        let query = OrderQuery::Combine(payment.combine_out_trade_no.clone());
        let (answer, queried) = match self
            .confirmation_answer::<CombineTransaction, _>(
                self.query_order(&query),
                &[("combine_out_trade_no", &payment.combine_out_trade_no)],
            )
            .await
        {
            Ok(found) => found,
            Err(confirmation) => return confirmation,
        };
        let mut compare = Compare::new(&answer);
        compare.same(
            "combine_out_trade_no",
            &payment.combine_out_trade_no,
            &queried.combine_out_trade_no,
        );
        compare.stated(
            name("combine_mchid"),
            payment.combine_mchid.as_ref(),
            queried.combine_mchid.as_ref(),
        );
        compare.stated(
            name("combine_appid"),
            payment.combine_appid.as_ref(),
            queried.combine_appid.as_ref(),
        );
        if payment.sub_orders.len() != queried.sub_orders.len() {
            compare.differs(
                "sub_orders",
                format_args!("{} sub-orders", payment.sub_orders.len()),
                format_args!("{} sub-orders", queried.sub_orders.len()),
            );
        }
        for (index, notified) in payment.sub_orders.iter().enumerate() {
            let field = |name: &str| -> Cow<'static, str> {
                Cow::Owned(format!("sub_orders[{index}].{name}"))
            };
            let Some(answered) = queried
                .sub_orders
                .iter()
                .find(|sub| sub.out_trade_no == notified.out_trade_no)
            else {
                compare.differs(field("out_trade_no"), &notified.out_trade_no, NOTHING);
                continue;
            };
            compare_sub_order(&mut compare, notified, answered, field);
        }
        compare.finish()
    }

    async fn confirm_refund(&self, refund: &Refund) -> Confirmation {
        let query = match &refund.sub_mchid {
            Some(sub_mchid) => RefundQuery::partner(sub_mchid, &refund.out_refund_no),
            None => RefundQuery::new(&refund.out_refund_no),
        };
        let sub_mchid = refund.sub_mchid.as_deref().unwrap_or_default();
        let (answer, queried) = match self
            .confirmation_answer::<Refund, _>(
                self.query_refund_answer(&query),
                &[
                    ("out_refund_no", &refund.out_refund_no),
                    ("sub_mchid", sub_mchid),
                ],
            )
            .await
        {
            Ok(found) => found,
            Err(confirmation) => return confirmation,
        };
        // A refund WeChat Pay still reports as processing has not settled on its side yet
        // (the notification ran ahead of the query): ask again later rather than decline.
        if queried.refund_status == "PROCESSING" && refund.refund_status != "PROCESSING" {
            return Confirmation::Unavailable(ClientError::UnexpectedAnswer {
                reason: format!(
                    "the notification says refund {} is {}, wechat pay still answers PROCESSING",
                    refund.refund_id, refund.refund_status
                ),
                request_id: answer.request_id.clone(),
            });
        }
        let mut compare = Compare::new(&answer);
        compare.same("refund_id", &refund.refund_id, &queried.refund_id);
        compare.same(
            "out_refund_no",
            &refund.out_refund_no,
            &queried.out_refund_no,
        );
        compare.stated(
            name("out_trade_no"),
            refund.out_trade_no.as_ref(),
            queried.out_trade_no.as_ref(),
        );
        compare.stated(
            name("transaction_id"),
            refund.transaction_id.as_ref(),
            queried.transaction_id.as_ref(),
        );
        compare.same(
            "refund_status",
            &refund.refund_status,
            &queried.refund_status,
        );
        compare.same(
            "amount.refund",
            &refund.amount.refund,
            &queried.amount.refund,
        );
        compare.same("amount.total", &refund.amount.total, &queried.amount.total);
        compare.finish()
    }

    /// The verified answer of a query and its model; or the confirmation a failure means.
    /// `identity` names what was queried, first the number WeChat Pay may not know.
    async fn confirmation_answer<T, F>(
        &self,
        query: F,
        identity: &[(&'static str, &str)],
    ) -> Result<(Answer, T), Confirmation>
    where
        T: DeserializeOwned,
        F: Future<Output = Result<Answer, ClientError>>,
    {
        let error = match query.await {
            Ok(answer) => {
                return match answer.json::<T>() {
                    Ok(model) => Ok((answer, model)),
                    Err(error) => Err(Confirmation::Unavailable(error)),
                };
            }
            Err(error) => error,
        };
        let (field, number) = identity.first().copied().unwrap_or(("number", ""));
        Err(match error {
            ClientError::Api(api)
                if api.status == StatusCode::NOT_FOUND
                    && matches!(api.code.as_str(), "ORDER_NOT_EXIST" | "RESOURCE_NOT_EXISTS") =>
            {
                Confirmation::Mismatch(Mismatch::new(
                    field,
                    number,
                    format_args!("{} {}", api.status.as_u16(), api.code),
                    api.request_id.as_deref(),
                    MismatchKind::Unknown,
                ))
            }
            // A number of the notification's that no query can carry: WeChat Pay never
            // issues one, so there is nothing it could confirm.
            ClientError::InvalidArgument { name, reason }
                if identity.iter().any(|(field, _)| *field == name) =>
            {
                let value = identity
                    .iter()
                    .find(|(field, _)| *field == name)
                    .map_or("", |(_, value)| *value);
                Confirmation::Mismatch(Mismatch::new(
                    name,
                    value,
                    format_args!("a number {reason}; not asked"),
                    None,
                    MismatchKind::Unqueryable,
                ))
            }
            other => Confirmation::Unavailable(other),
        })
    }
}

fn compare_sub_order(
    compare: &mut Compare<'_>,
    notified: &SubOrder,
    answered: &SubOrder,
    field: impl Fn(&str) -> Cow<'static, str>,
) {
    compare.stated(
        || field("transaction_id"),
        notified.transaction_id.as_ref(),
        answered.transaction_id.as_ref(),
    );
    compare.stated(
        || field("mchid"),
        notified.mchid.as_ref(),
        answered.mchid.as_ref(),
    );
    if let Some(state) = &notified.trade_state {
        compare.trade_state(
            || field("trade_state"),
            state,
            answered.trade_state.as_deref().unwrap_or(NOTHING),
        );
    }
    if let Some(amount) = &notified.amount {
        let queried = answered.amount.as_ref();
        compare.stated(
            || field("amount.total_amount"),
            Some(&amount.total_amount),
            queried.map(|a| &a.total_amount),
        );
        compare.stated(
            || field("amount.payer_amount"),
            amount.payer_amount.as_ref(),
            queried.and_then(|a| a.payer_amount.as_ref()),
        );
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::KeyRing;
    use crate::test_util::{
        TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner, sample_combine_payment,
        sample_partner_payment, sample_payment, sample_refund,
    };

    const NOW: i64 = 1_764_300_000;
    const MCHID: &str = "1900012345";
    const MERCHANT_KEY: &str = include_str!("../test_util/keys/stranger.key.pem");

    /// What the fake WeChat Pay answers to a request target.
    enum Reply {
        /// 200, signed with the test public key.
        Signed(Value),
        /// An error answer (unsigned, as WeChat Pay's are).
        Error(u16, &'static str),
        /// 200 with a signature over another body.
        BadSignature(Value),
        /// The connection fails.
        Unreachable,
        /// Never answers.
        Hang,
    }

    type Answers = Arc<dyn Fn(&str) -> Reply + Send + Sync>;
    type Scripted = fn(&str) -> Reply;

    /// A WeChat Pay that answers with `answers` and remembers the targets asked.
    #[derive(Clone)]
    struct Fake {
        answers: Answers,
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl Service<Request<Full<Bytes>>> for Fake {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future =
            Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send + 'static>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
            let target = request
                .uri()
                .path_and_query()
                .map(|pq| pq.as_str().to_owned())
                .unwrap_or_default();
            let reply = (self.answers)(&target);
            self.asked.lock().unwrap().push(target);
            Box::pin(async move {
                let signed = |body: &Value, signed_body: &Value| {
                    let signer = TestSigner::public_key_mode();
                    let signed = signer
                        .sign_body_with_nonce(signed_body.to_string(), NOW, "NONCE0123456789")
                        .unwrap();
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    *response.headers_mut() = signed.headers;
                    response
                        .headers_mut()
                        .insert("request-id", "08F1-REQ".parse().unwrap());
                    response
                };
                match reply {
                    Reply::Signed(body) => Ok(signed(&body, &body)),
                    Reply::BadSignature(body) => Ok(signed(&body, &json!({"other": 1}))),
                    Reply::Error(status, code) => {
                        let body = json!({"code": code, "message": "refused"}).to_string();
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok(response)
                    }
                    Reply::Unreachable => Err(BoxError::from("connection refused")),
                    Reply::Hang => std::future::pending().await,
                }
            })
        }
    }

    fn fake_client(
        answers: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> (Client<Fake>, Fake) {
        let ring = KeyRing::new();
        ring.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
            .unwrap();
        let fake = Fake {
            answers: Arc::new(answers),
            asked: Arc::default(),
        };
        let client = Client::builder(
            MCHID,
            "3775B6A45ACD588826D15E583A95F5DD0A1A9C5A",
            MERCHANT_KEY,
            ring,
        )
        .unwrap()
        .clock(|| NOW)
        .retries(0)
        .unwrap()
        .timeout(Duration::from_secs(2))
        .unwrap()
        .build_with_service(fake.clone());
        (client, fake)
    }

    /// A client whose WeChat Pay answers every query with `answer`, signed.
    fn answering(answer: Value) -> (Client<Fake>, Fake) {
        fake_client(move |_| Reply::Signed(answer.clone()))
    }

    fn notification(event_type: &str, resource: &Value) -> Notification {
        let signer = TestSigner::public_key_mode();
        let signed = signer.notification(event_type, resource).build().unwrap();
        signer
            .layer()
            .unwrap()
            .verify(&signed.headers, &signed.body)
            .unwrap()
    }

    fn payment() -> Notification {
        notification("TRANSACTION.SUCCESS", &sample_payment())
    }

    fn expect_mismatch(confirmation: Confirmation) -> Mismatch {
        match confirmation {
            Confirmation::Mismatch(mismatch) => mismatch,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    fn expect_unavailable(confirmation: Confirmation) -> ClientError {
        match confirmation {
            Confirmation::Unavailable(error) => error,
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    /// `value` with `path` (dot-separated) set to `to`, or removed when `to` is null.
    fn with(value: &Value, path: &str, to: Value) -> Value {
        let mut value = value.clone();
        let mut at = &mut value;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let key: Result<usize, _> = part.parse();
            if parts.peek().is_none() {
                match (key, to.is_null()) {
                    (Ok(index), _) => at[index] = to,
                    (Err(_), true) => {
                        at.as_object_mut().unwrap().remove(part);
                    }
                    (Err(_), false) => at[part] = to,
                }
                break;
            }
            at = match key {
                Ok(index) => &mut at[index],
                Err(_) => &mut at[part],
            };
        }
        value
    }

    #[tokio::test]
    async fn a_payment_is_confirmed_by_the_same_order_queried_by_transaction_id() {
        let (client, fake) = answering(sample_payment());
        let confirmation = client.confirm(&payment()).await;
        assert!(confirmation.is_confirmed(), "{confirmation:?}");
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["/v3/pay/transactions/id/4200830166131860913909960308?mchid=1900012345"]
        );
    }

    #[tokio::test]
    async fn a_refunded_order_still_confirms_its_payment() {
        let answer = with(&sample_payment(), "trade_state", json!("REFUND"));
        let (client, _) = answering(answer);
        assert!(client.confirm(&payment()).await.is_confirmed());
    }

    #[tokio::test]
    async fn each_payment_field_that_differs_is_a_mismatch_naming_it() {
        let cases = [
            ("transaction_id", json!("4200000000000000000000000000")),
            ("out_trade_no", json!("2025112811200060189999")),
            ("mchid", json!("1900099999")),
            ("appid", json!("wx0000000000000000")),
            ("trade_state", json!("NOTPAY")),
            ("amount.total", json!(1)),
            ("amount.payer_total", json!(980)),
        ];
        for (field, answered) in cases {
            let (client, _) = answering(with(&sample_payment(), field, answered.clone()));
            let mismatch = expect_mismatch(client.confirm(&payment()).await);
            assert_eq!(mismatch.field, field);
            let notified = sample_payment()
                .pointer(&format!("/{}", field.replace('.', "/")))
                .cloned()
                .unwrap();
            let text = |value: &Value| match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert_eq!(mismatch.notified, text(&notified), "{field}");
            assert_eq!(mismatch.answered, text(&answered), "{field}");
            assert_eq!(mismatch.request_id.as_deref(), Some("08F1-REQ"));
            assert!(!mismatch.is_unknown());
            let shown = mismatch.to_string();
            assert!(
                shown.contains(field) && shown.contains("08F1-REQ"),
                "{shown}"
            );
            assert!(!shown.contains("SECRET"), "payer data in {shown}");
        }
    }

    #[tokio::test]
    async fn a_field_the_notification_states_and_the_answer_lacks_is_a_mismatch() {
        let answer = with(&sample_payment(), "amount.payer_total", Value::Null);
        let (client, _) = answering(answer);
        let mismatch = expect_mismatch(client.confirm(&payment()).await);
        assert_eq!(mismatch.field, "amount.payer_total");
        assert_eq!(mismatch.answered, "nothing");
        // The other way round, nothing is claimed, so nothing is compared.
        let notified = with(&sample_payment(), "appid", Value::Null);
        let (client, _) = answering(sample_payment());
        let confirmation = client
            .confirm(&notification("TRANSACTION.SUCCESS", &notified))
            .await;
        assert!(confirmation.is_confirmed(), "{confirmation:?}");
    }

    #[tokio::test]
    async fn only_success_is_confirmed_by_refund_and_other_states_by_themselves() {
        let closed = with(&sample_payment(), "trade_state", json!("CLOSED"));
        let (client, _) = answering(closed.clone());
        assert!(
            client
                .confirm(&notification("TRANSACTION.SUCCESS", &closed))
                .await
                .is_confirmed()
        );
        let (client, _) = answering(with(&sample_payment(), "trade_state", json!("REFUND")));
        let mismatch = expect_mismatch(
            client
                .confirm(&notification("TRANSACTION.SUCCESS", &closed))
                .await,
        );
        assert_eq!(
            (mismatch.field.as_ref(), mismatch.notified.as_str()),
            ("trade_state", "CLOSED")
        );
    }

    #[tokio::test]
    async fn a_partner_payment_is_queried_for_its_sub_merchant_and_compared() {
        let sample = sample_partner_payment();
        let (client, fake) = answering(sample.clone());
        let notified = notification("TRANSACTION.SUCCESS", &sample);
        assert!(client.confirm(&notified).await.is_confirmed());
        assert_eq!(
            *fake.asked.lock().unwrap(),
            [
                "/v3/pay/partner/transactions/id/1217752501201407033233368018\
              ?sp_mchid=1900012345&sub_mchid=1900000109"
            ]
        );
        for (field, answered) in [
            ("sp_mchid", json!("1900099999")),
            ("sub_mchid", json!("1900000110")),
            ("sp_appid", json!("wx0000000000000000")),
            ("sub_appid", json!("wx0000000000000001")),
            ("trade_state", json!("CLOSED")),
            ("amount.total", json!(99)),
            ("out_trade_no", json!("other")),
        ] {
            let (client, _) = answering(with(&sample, field, answered));
            assert_eq!(
                expect_mismatch(client.confirm(&notified).await).field,
                field
            );
        }
    }

    #[tokio::test]
    async fn a_combine_payment_is_queried_by_its_number_and_every_sub_order_compared() {
        let sample = sample_combine_payment();
        let notified = notification("TRANSACTION.SUCCESS", &sample);
        let (client, fake) = answering(sample.clone());
        assert!(client.confirm(&notified).await.is_confirmed());
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["/v3/combine-transactions/out-trade-no/20150806125346"]
        );
        // The answer lists the sub-orders in another order: matched by out_trade_no.
        let mut swapped = sample.clone();
        swapped["sub_orders"].as_array_mut().unwrap().swap(0, 1);
        let (client, _) = answering(swapped);
        assert!(client.confirm(&notified).await.is_confirmed());

        for (path, answered, field) in [
            (
                "sub_orders.1.amount.total_amount",
                json!(2000),
                "sub_orders[1].amount.total_amount",
            ),
            (
                "sub_orders.1.amount.payer_amount",
                json!(2),
                "sub_orders[1].amount.payer_amount",
            ),
            (
                "sub_orders.0.transaction_id",
                json!("1009660380201506130728800000"),
                "sub_orders[0].transaction_id",
            ),
            (
                "sub_orders.0.mchid",
                json!("1900099999"),
                "sub_orders[0].mchid",
            ),
            (
                "sub_orders.0.trade_state",
                json!("NOTPAY"),
                "sub_orders[0].trade_state",
            ),
            (
                "sub_orders.1.out_trade_no",
                json!("20150806129999"),
                "sub_orders[1].out_trade_no",
            ),
            ("combine_mchid", json!("1900099999"), "combine_mchid"),
            (
                "combine_appid",
                json!("wx0000000000000000"),
                "combine_appid",
            ),
        ] {
            let (client, _) = answering(with(&sample, path, answered));
            assert_eq!(
                expect_mismatch(client.confirm(&notified).await).field,
                field
            );
        }
        let mut fewer = sample.clone();
        fewer["sub_orders"].as_array_mut().unwrap().pop();
        let (client, _) = answering(fewer);
        let mismatch = expect_mismatch(client.confirm(&notified).await);
        assert_eq!(
            (
                mismatch.field.as_ref(),
                mismatch.notified.as_str(),
                mismatch.answered.as_str()
            ),
            ("sub_orders", "2 sub-orders", "1 sub-orders")
        );
    }

    /// The refund query's answer for [`sample_refund`]: `status`, no merchant ids.
    fn refund_answer() -> Value {
        let mut answer = sample_refund();
        let object = answer.as_object_mut().unwrap();
        object.remove("mchid");
        let status = object.remove("refund_status").unwrap();
        object.insert("status".into(), status);
        object.insert("channel".into(), json!("ORIGINAL"));
        answer
    }

    #[tokio::test]
    async fn a_refund_is_confirmed_by_the_refund_query_and_each_field_compared() {
        let notified = notification("REFUND.SUCCESS", &sample_refund());
        let (client, fake) = answering(refund_answer());
        assert!(client.confirm(&notified).await.is_confirmed());
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["/v3/refund/domestic/refunds/R2025112811200060181590"]
        );
        for (path, answered, field) in [
            ("status", json!("CLOSED"), "refund_status"),
            ("status", json!("ABNORMAL"), "refund_status"),
            (
                "refund_id",
                json!("50000000000000000000000000000"),
                "refund_id",
            ),
            ("out_refund_no", json!("R-other"), "out_refund_no"),
            ("out_trade_no", json!("other"), "out_trade_no"),
            (
                "transaction_id",
                json!("4200000000000000000000000000"),
                "transaction_id",
            ),
            ("amount.refund", json!(1), "amount.refund"),
            ("amount.total", json!(9900), "amount.total"),
        ] {
            let (client, _) = answering(with(&refund_answer(), path, answered));
            assert_eq!(
                expect_mismatch(client.confirm(&notified).await).field,
                field
            );
        }
    }

    #[tokio::test]
    async fn a_partner_refund_is_queried_for_its_sub_merchant() {
        let mut resource = sample_refund();
        resource["sp_mchid"] = json!(MCHID);
        resource["sub_mchid"] = json!("1900000109");
        resource.as_object_mut().unwrap().remove("mchid");
        let (client, fake) = answering(refund_answer());
        let confirmation = client
            .confirm(&notification("REFUND.SUCCESS", &resource))
            .await;
        assert!(confirmation.is_confirmed(), "{confirmation:?}");
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["/v3/refund/domestic/refunds/R2025112811200060181590?sub_mchid=1900000109"]
        );
    }

    #[tokio::test]
    async fn a_refund_wechat_pay_still_reports_processing_is_asked_again_later() {
        let (client, _) = answering(with(&refund_answer(), "status", json!("PROCESSING")));
        let error = expect_unavailable(
            client
                .confirm(&notification("REFUND.SUCCESS", &sample_refund()))
                .await,
        );
        assert!(error.to_string().contains("PROCESSING"), "{error}");
    }

    #[tokio::test]
    async fn an_order_or_refund_wechat_pay_does_not_know_is_a_mismatch() {
        let (client, _) = fake_client(|_| Reply::Error(404, "ORDER_NOT_EXIST"));
        let mismatch = expect_mismatch(client.confirm(&payment()).await);
        assert!(mismatch.is_unknown());
        assert_eq!(mismatch.field, "transaction_id");
        assert_eq!(mismatch.notified, "4200830166131860913909960308");
        assert_eq!(mismatch.answered, "404 ORDER_NOT_EXIST");
        assert!(
            mismatch
                .to_string()
                .contains("wechat pay does not know this order"),
            "{mismatch}"
        );

        let (client, _) = fake_client(|_| Reply::Error(404, "RESOURCE_NOT_EXISTS"));
        let mismatch = expect_mismatch(
            client
                .confirm(&notification("REFUND.SUCCESS", &sample_refund()))
                .await,
        );
        assert!(mismatch.is_unknown());
        assert_eq!(mismatch.field, "out_refund_no");
    }

    #[tokio::test]
    async fn a_refusal_of_our_request_is_unavailable_never_a_decline() {
        for (status, code) in [
            (400, "PARAM_ERROR"),
            (400, "INVALID_REQUEST"),
            (401, "SIGN_ERROR"),
            (403, "NO_AUTH"),
            (404, "MCH_NOT_EXISTS"),
        ] {
            let (client, _) = fake_client(move |_| Reply::Error(status, code));
            let error = expect_unavailable(client.confirm(&payment()).await);
            assert_eq!(error.api().map(|api| api.code.as_str()), Some(code));
        }
    }

    #[tokio::test]
    async fn no_verified_answer_is_unavailable() {
        let cases: [(Scripted, &str); 5] = [
            (|_| Reply::Unreachable, "unreachable"),
            (|_| Reply::Error(500, "SYSTEM_ERROR"), "SYSTEM_ERROR"),
            (
                |_| Reply::Error(429, "FREQUENCY_LIMITED"),
                "FREQUENCY_LIMITED",
            ),
            (|_| Reply::BadSignature(sample_payment()), "did not verify"),
            (
                |_| Reply::Signed(json!({"trade_state": "SUCCESS"})),
                "unexpected answer",
            ),
        ];
        for (answers, expected) in cases {
            let (client, _) = fake_client(answers);
            let error = expect_unavailable(client.confirm(&payment()).await);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_does_not_come_within_the_timeout_is_unavailable() {
        let (client, _) = fake_client(|_| Reply::Hang);
        let error = expect_unavailable(client.confirm(&payment()).await);
        assert!(matches!(error, ClientError::Timeout(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_number_no_query_can_carry_is_a_mismatch_and_wechat_pay_is_not_asked() {
        let resource = with(&sample_payment(), "transaction_id", json!(".."));
        let (client, fake) = answering(sample_payment());
        let mismatch = expect_mismatch(
            client
                .confirm(&notification("TRANSACTION.SUCCESS", &resource))
                .await,
        );
        assert_eq!(
            (mismatch.field.as_ref(), mismatch.notified.as_str()),
            ("transaction_id", "..")
        );
        assert!(fake.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_without_a_number_to_query_are_unsupported_and_retried() {
        let (client, fake) = answering(sample_payment());
        let other = notification("MARKETING.COUPON", &json!({"stock_id": "1"}));
        let unparsed = notification(
            "TRANSACTION.SUCCESS",
            &with(&sample_payment(), "amount.total", json!("990")),
        );
        for notified in [other, unparsed] {
            let confirmation = client.confirm(&notified).await;
            assert!(
                matches!(confirmation, Confirmation::Unsupported(_)),
                "{confirmation:?}"
            );
            let retry = confirmation.into_outcome().unwrap_err();
            assert!(retry.to_string().contains("cannot confirm"), "{retry}");
        }
        assert!(fake.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn require_confirms_declines_a_mismatch_and_retries_the_rest() {
        let (client, _) = answering(sample_payment());
        assert!(client.confirm(&payment()).await.require().is_ok());

        let (client, _) = answering(with(&sample_payment(), "amount.total", json!(1)));
        match client.confirm(&payment()).await.require() {
            Err(Ok(Handled::Declined(declined))) => {
                assert!(
                    declined.reason().contains("amount.total is 990"),
                    "{declined}"
                );
            }
            other => panic!("{other:?}"),
        }

        let (client, _) = fake_client(|_| Reply::Unreachable);
        match client.confirm(&payment()).await.require() {
            Err(Err(retry)) => {
                let text = retry.to_string();
                assert!(
                    text.starts_with("could not confirm the notification with wechat pay: ")
                        && text.contains("connection refused"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_mismatch_is_logged_once_at_warn_without_payer_data() {
        // With one scoped subscriber alive, tracing takes it for the only one and caches a
        // callsite first hit on another test's thread as disabled everywhere; a second
        // dispatcher, alive for good, keeps the interest per thread.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = Arc::clone(&captured);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&writer)))
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let (client, _) = answering(with(&sample_payment(), "amount.total", json!(1)));
        let notified = payment();
        let _ = client.confirm(&notified).await;
        let log = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("does not confirm"))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        let line = lines[0];
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(notified.id()), "{line}");
        assert!(line.contains("amount.total"), "{line}");
        assert!(!log.contains("SECRET"), "payer data logged: {log}");
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
