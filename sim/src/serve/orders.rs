//! Orders and refunds in memory: made by `POST /sim/pay` and `POST /sim/refund`, answered
//! by the order and refund queries, notified on WeChat Pay's schedule.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::api::Reply;
use super::{ServeMode, Server};
use crate::deliver::{ANSWER_LIMIT, Plan, Schedule, deliver};
use crate::keys::{Mode, random_alphanumeric, random_digits};
use crate::notify::Notification;
use crate::resource::rfc3339_beijing_now;
use crate::transport::HttpTransport;

/// Everything paid and refunded so far.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// By `out_trade_no`.
    orders: HashMap<String, Order>,
    /// `transaction_id` → `out_trade_no`.
    by_transaction: HashMap<String, String>,
    /// By `out_refund_no`.
    refunds: HashMap<String, Refund>,
}

#[derive(Debug)]
struct Order {
    /// What the order query answers (and, as paid, what the notification carried).
    query: Value,
    sub_mchid: Option<String>,
    total: i64,
    refunded: i64,
}

#[derive(Debug)]
struct Refund {
    query: Value,
    sub_mchid: Option<String>,
}

type Params = Query<HashMap<String, String>>;

fn param_error(message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn order_not_exist() -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
}

/// The required query parameter `name`, equal to this merchant's id when `mine`.
fn required<'a>(
    server: &Server,
    params: &'a HashMap<String, String>,
    name: &str,
    mine: bool,
) -> Result<&'a str, Reply> {
    match params.get(name).map(String::as_str) {
        None | Some("") => Err(param_error(&format!("缺少参数 {name}"))),
        Some(value) if mine && value != server.keys.mchid => Err(param_error(&format!(
            "{name} {value} 与请求签名的商户号 {} 不一致",
            server.keys.mchid
        ))),
        Some(value) => Ok(value),
    }
}

fn lookup_order(
    server: &Server,
    transaction_id: Option<&str>,
    out_trade_no: Option<&str>,
    sub_mchid: Option<&str>,
) -> Reply {
    let book = server.book.lock().unwrap_or_else(PoisonError::into_inner);
    let key = match (transaction_id, out_trade_no) {
        (Some(id), _) => book.by_transaction.get(id).map(String::as_str),
        (None, Some(no)) => Some(no),
        (None, None) => None,
    };
    match key.and_then(|key| book.orders.get(key)) {
        Some(order) if order.sub_mchid.as_deref() == sub_mchid => Reply::ok(order.query.clone()),
        _ => order_not_exist(),
    }
}

/// `GET /v3/pay/transactions/id/{transaction_id}?mchid=`.
pub(super) async fn direct_by_id(
    State(server): State<Arc<Server>>,
    Path(transaction_id): Path<String>,
    Query(params): Params,
) -> Reply {
    match required(&server, &params, "mchid", true) {
        Ok(_) => lookup_order(&server, Some(&transaction_id), None, None),
        Err(reply) => reply,
    }
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=`.
pub(super) async fn direct_by_out_trade_no(
    State(server): State<Arc<Server>>,
    Path(out_trade_no): Path<String>,
    Query(params): Params,
) -> Reply {
    match required(&server, &params, "mchid", true) {
        Ok(_) => lookup_order(&server, None, Some(&out_trade_no), None),
        Err(reply) => reply,
    }
}

/// `GET /v3/pay/partner/transactions/id/{transaction_id}?sp_mchid=&sub_mchid=`.
pub(super) async fn partner_by_id(
    State(server): State<Arc<Server>>,
    Path(transaction_id): Path<String>,
    Query(params): Params,
) -> Reply {
    let sub_mchid = required(&server, &params, "sp_mchid", true)
        .and_then(|_| required(&server, &params, "sub_mchid", false));
    match sub_mchid {
        Ok(sub_mchid) => lookup_order(&server, Some(&transaction_id), None, Some(sub_mchid)),
        Err(reply) => reply,
    }
}

/// `GET /v3/pay/partner/transactions/out-trade-no/{out_trade_no}?sp_mchid=&sub_mchid=`.
pub(super) async fn partner_by_out_trade_no(
    State(server): State<Arc<Server>>,
    Path(out_trade_no): Path<String>,
    Query(params): Params,
) -> Reply {
    let sub_mchid = required(&server, &params, "sp_mchid", true)
        .and_then(|_| required(&server, &params, "sub_mchid", false));
    match sub_mchid {
        Ok(sub_mchid) => lookup_order(&server, None, Some(&out_trade_no), Some(sub_mchid)),
        Err(reply) => reply,
    }
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}[?sub_mchid=]`.
pub(super) async fn refund_query(
    State(server): State<Arc<Server>>,
    Path(out_refund_no): Path<String>,
    Query(params): Params,
) -> Reply {
    let sub_mchid = params
        .get("sub_mchid")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let book = server.book.lock().unwrap_or_else(PoisonError::into_inner);
    match book.refunds.get(&out_refund_no) {
        Some(refund) if refund.sub_mchid.as_deref() == sub_mchid => Reply::ok(refund.query.clone()),
        _ => Reply::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    }
}

/// A `/sim/…` request body, read field by field so every refusal says what is wrong.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8], example: &str) -> Result<Self, Reply> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => Ok(Self(fields)),
            _ => Err(param_error(&format!(
                "the body must be a JSON object such as {example}"
            ))),
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, Reply> {
        self.text_up_to(name, 128)
    }

    fn text_up_to(&self, name: &str, max: usize) -> Result<Option<String>, Reply> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => {
                Err(param_error(&format!("{name} must not be empty")))
            }
            Some(Value::String(text)) if text.chars().any(char::is_control) => Err(param_error(
                &format!("{name} must not hold control characters"),
            )),
            Some(Value::String(text)) if text.chars().count() > max => Err(param_error(&format!(
                "{name} is longer than {max} characters"
            ))),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(param_error(&format!("{name} must be a string"))),
        }
    }

    fn required_text(&self, name: &str) -> Result<String, Reply> {
        self.text(name)?
            .ok_or_else(|| param_error(&format!("{name} is required")))
    }

    /// A positive amount in fen: a JSON integer (or `{"total": integer}`).
    fn amount(&self, name: &str) -> Result<i64, Reply> {
        let value = match self.0.get(name) {
            Some(Value::Object(amount)) => amount.get("total"),
            other => other,
        };
        match value.and_then(Value::as_i64) {
            Some(fen) if fen > 0 => Ok(fen),
            _ => Err(param_error(&format!(
                "{name} is required: a positive integer number of fen (分), e.g. 100 for 1 yuan"
            ))),
        }
    }

    fn schedule(&self) -> Result<Schedule, Reply> {
        match self.text("schedule")?.as_deref() {
            None | Some("wechat") => Ok(Schedule::Wechat),
            Some("fast") => Ok(Schedule::Fast),
            Some("once") => Ok(Schedule::Once),
            Some(other) => Err(param_error(&format!(
                "schedule {other}: expected wechat, fast or once"
            ))),
        }
    }

    fn notify_mode(&self, server: &Server) -> Result<Mode, Reply> {
        match self.text("notify_mode")?.as_deref() {
            Some("public-key") => Ok(Mode::PublicKey),
            Some("certificate") => Ok(Mode::Certificate),
            None => Ok(match server.mode {
                ServeMode::PublicKey => Mode::PublicKey,
                ServeMode::Certificate | ServeMode::Both => Mode::Certificate,
            }),
            Some(other) => Err(param_error(&format!(
                "notify_mode {other}: expected public-key or certificate"
            ))),
        }
    }

    /// The notification to deliver, when `notify_url` is given.
    fn delivery(&self, server: &Server) -> Result<Option<Delivery>, Reply> {
        let Some(url) = self.text_up_to("notify_url", 2048)? else {
            return Ok(None);
        };
        let transport = HttpTransport::new(&url)
            .map_err(|error| param_error(&error.0.replacen("--to ", "notify_url ", 1)))?;
        Ok(Some(Delivery {
            url,
            transport,
            schedule: self.schedule()?,
            mode: self.notify_mode(server)?,
        }))
    }
}

struct Delivery {
    url: String,
    transport: HttpTransport,
    schedule: Schedule,
    mode: Mode,
}

impl Delivery {
    /// Encrypts and signs `resource` now (with the current platform certificate in
    /// certificate mode) and delivers it in the background, logging every attempt.
    fn start(
        self,
        server: &Server,
        event_type: &str,
        resource: &Value,
        label: String,
    ) -> Result<(), Reply> {
        let mut keys = server.keys.clone();
        if let Some(current) = server.current_platform() {
            keys.platform = current.certificate.clone();
        }
        let notification = Notification::new(&keys, self.mode, event_type, resource)
            .map_err(|error| Reply::system_error(&error))?;
        let plan = Plan {
            gaps: self.schedule.gaps(),
            copies: 1,
            timeout: ANSWER_LIMIT,
        };
        let log = server.log.clone();
        log.line(format!(
            "{label}: delivering {event_type} to {} ({} schedule)",
            self.url,
            match self.schedule {
                Schedule::Wechat => "wechat",
                Schedule::Fast => "fast",
                Schedule::Once => "once",
            }
        ));
        tokio::spawn(async move {
            let outcome = deliver(&self.transport, &notification, &plan, |progress| {
                log.line(format!("{label}: {}", progress.line()));
            })
            .await;
            match outcome {
                Ok(outcome) => log.line(format!("{label}: {}", outcome.line())),
                Err(error) => log.line(format!("{label}: {error}")),
            }
        });
        Ok(())
    }
}

/// A fresh number of `len` digits after `prefix` not yet in `taken`.
fn fresh(prefix: &str, len: usize, taken: impl Fn(&str) -> bool) -> String {
    loop {
        let candidate = format!("{prefix}{}", random_digits(len));
        if !taken(&candidate) {
            return candidate;
        }
    }
}

/// `POST /sim/pay`: `{out_trade_no, amount, notify_url?, sub_mchid?, …}` → a paid order.
pub(super) async fn sim_pay(State(server): State<Arc<Server>>, body: Bytes) -> Reply {
    match pay(&server, &body) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn pay(server: &Server, body: &[u8]) -> Result<Reply, Reply> {
    let fields = Fields::parse(body, r#"{"out_trade_no":"ORDER20250101","amount":100}"#)?;
    let out_trade_no = fields.required_text("out_trade_no")?;
    let total = fields.amount("amount")?;
    let sub_mchid = fields.text("sub_mchid")?;
    let appid = fields
        .text("appid")?
        .unwrap_or_else(|| "wxd678efh567hg6787".to_owned());
    let trade_type = fields
        .text("trade_type")?
        .unwrap_or_else(|| "JSAPI".to_owned());
    let bank_type = fields
        .text("bank_type")?
        .unwrap_or_else(|| "OTHERS".to_owned());
    let attach = fields.text("attach")?.unwrap_or_default();
    let openid = fields
        .text("openid")?
        .unwrap_or_else(|| format!("oSim{}", random_alphanumeric(24)));
    let event_type = fields
        .text("event")?
        .unwrap_or_else(|| "TRANSACTION.SUCCESS".to_owned());
    let delivery = fields.delivery(server)?;

    let mut book = server.book.lock().unwrap_or_else(PoisonError::into_inner);
    if book.orders.contains_key(&out_trade_no) {
        return Err(Reply::error(
            StatusCode::CONFLICT,
            "OUT_TRADE_NO_USED",
            &format!("out_trade_no {out_trade_no} already exists"),
        )
        .unsigned());
    }
    let transaction_id = fresh("4200002", 21, |id| book.by_transaction.contains_key(id));
    let amount = json!({
        "total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"
    });
    let head = match &sub_mchid {
        None => json!({ "appid": appid, "mchid": server.keys.mchid }),
        Some(sub_mchid) => json!({
            "sp_appid": appid,
            "sp_mchid": server.keys.mchid,
            "sub_appid": fields.text("sub_appid")?.unwrap_or_else(|| "wxd678efh567hg6999".to_owned()),
            "sub_mchid": sub_mchid,
        }),
    };
    let payer = match &sub_mchid {
        None => json!({ "openid": openid }),
        Some(_) => json!({ "sp_openid": openid, "sub_openid": openid }),
    };
    let mut query = head;
    for (name, value) in [
        ("out_trade_no", json!(out_trade_no)),
        ("transaction_id", json!(transaction_id)),
        ("trade_type", json!(trade_type)),
        ("trade_state", json!("SUCCESS")),
        ("trade_state_desc", json!("支付成功")),
        ("bank_type", json!(bank_type)),
        ("attach", json!(attach)),
        ("success_time", json!(rfc3339_beijing_now())),
        ("payer", payer),
        ("amount", amount),
    ] {
        query[name] = value;
    }
    if let Some(delivery) = delivery {
        delivery.start(
            server,
            &event_type,
            &query,
            format!("notify {out_trade_no}"),
        )?;
    }
    book.by_transaction
        .insert(transaction_id.clone(), out_trade_no.clone());
    book.orders.insert(
        out_trade_no.clone(),
        Order {
            query: query.clone(),
            sub_mchid,
            total,
            refunded: 0,
        },
    );
    server.log.line(format!(
        "paid: out_trade_no {out_trade_no}, transaction_id {transaction_id}, {total} fen"
    ));
    Ok(Reply::ok(query).unsigned())
}

/// `POST /sim/refund`: `{out_trade_no, out_refund_no, amount, notify_url?}` → a refund.
pub(super) async fn sim_refund(State(server): State<Arc<Server>>, body: Bytes) -> Reply {
    match refund(&server, &body) {
        Ok(reply) | Err(reply) => reply,
    }
}

fn refund(server: &Server, body: &[u8]) -> Result<Reply, Reply> {
    let fields = Fields::parse(
        body,
        r#"{"out_trade_no":"ORDER20250101","out_refund_no":"REFUND20250101","amount":100}"#,
    )?;
    let out_trade_no = fields.required_text("out_trade_no")?;
    let out_refund_no = fields.required_text("out_refund_no")?;
    let amount = fields.amount("amount")?;
    let event_type = fields
        .text("event")?
        .unwrap_or_else(|| "REFUND.SUCCESS".to_owned());
    let delivery = fields.delivery(server)?;

    let mut book = server.book.lock().unwrap_or_else(PoisonError::into_inner);
    if book.refunds.contains_key(&out_refund_no) {
        return Err(Reply::error(
            StatusCode::CONFLICT,
            "OUT_REFUND_NO_USED",
            &format!("out_refund_no {out_refund_no} already exists"),
        )
        .unsigned());
    }
    let refund_id = fresh("50300", 24, |id| {
        book.refunds
            .values()
            .any(|refund| refund.query["refund_id"] == id)
    });
    let Some(order) = book.orders.get_mut(&out_trade_no) else {
        return Err(Reply::error(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_EXIST",
            &format!("no order {out_trade_no}: create it with POST /sim/pay first"),
        )
        .unsigned());
    };
    let left = order.total - order.refunded;
    if amount > left {
        return Err(param_error(&format!(
            "amount {amount} is more than the {left} fen left to refund on {out_trade_no}"
        ))
        .unsigned());
    }
    let transaction_id = order.query["transaction_id"].clone();
    let total = order.total;
    let now = rfc3339_beijing_now();
    let query = json!({
        "refund_id": refund_id,
        "out_refund_no": out_refund_no,
        "transaction_id": transaction_id,
        "out_trade_no": out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "success_time": now,
        "create_time": now,
        "status": "SUCCESS",
        "funds_account": "AVAILABLE",
        "amount": {
            "total": total,
            "refund": amount,
            "from": [],
            "payer_total": total,
            "payer_refund": amount,
            "settlement_refund": amount,
            "settlement_total": total,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0
        },
        "promotion_detail": []
    });
    let sub_mchid = order.sub_mchid.clone();
    let mut notified = match &sub_mchid {
        None => json!({ "mchid": server.keys.mchid }),
        Some(sub_mchid) => json!({ "sp_mchid": server.keys.mchid, "sub_mchid": sub_mchid }),
    };
    for (name, value) in [
        ("out_trade_no", json!(out_trade_no)),
        ("transaction_id", transaction_id),
        ("out_refund_no", json!(out_refund_no)),
        ("refund_id", json!(refund_id)),
        ("refund_status", json!("SUCCESS")),
        ("success_time", json!(now)),
        ("user_received_account", json!("支付用户零钱")),
        (
            "amount",
            json!({ "total": total, "refund": amount, "payer_total": total, "payer_refund": amount }),
        ),
    ] {
        notified[name] = value;
    }
    if let Some(delivery) = delivery {
        delivery.start(
            server,
            &event_type,
            &notified,
            format!("notify {out_refund_no}"),
        )?;
    }
    order.refunded += amount;
    order.query["trade_state"] = json!("REFUND");
    order.query["trade_state_desc"] = json!("订单发生过退款，退款详情请查询退款单");
    book.refunds.insert(
        out_refund_no.clone(),
        Refund {
            query: query.clone(),
            sub_mchid,
        },
    );
    server.log.line(format!(
        "refunded: out_refund_no {out_refund_no} of {out_trade_no}, {amount} fen"
    ));
    Ok(Reply::ok(query).unsigned())
}
