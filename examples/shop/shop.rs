//! A small but real shop backend: orders in SQL (SQLite file or in-memory, or PostgreSQL by
//! URL), paid and refunded by WeChat Pay notifications, exactly once.
//!
//! ```text
//! cargo run --release -p tower-wechatpay-shop --example shop -- --listen 127.0.0.1:PORT --db sqlite:PATH \
//!     --apiv3-key-file FILE [--public-key PUB_KEY_ID_…=FILE.pem]… [--certificate FILE.pem]… \
//!     [--mchid 1900012345] [--appid wx8888888888888888] \
//!     [--confirm-with-query --merchant-key apiclient_key.pem --merchant-serial HEX [--api-base URL]] \
//!     [--metrics-listen ADDR] [--dedupe-redis redis://HOST:PORT/] [--alert-webhook URL] \
//!     [--queue URL [--queue-heartbeat SECS] [--max-attempts N]] [--work-delay-ms MS]
//!
//! POST /orders            {"out_trade_no":"…","total":990}  -> 201 with the order JSON
//! GET  /orders/{out_trade_no}                                 -> 200 order JSON, 404 if none
//! POST /wechatpay/notify  the layer + handler
//! GET  /metrics           on --metrics-listen only: Prometheus text format
//! ```
//!
//! With `--metrics-listen ADDR` the layer's metrics (feature `metrics`, see
//! `tower_wechatpay::metrics`) are served by `metrics-exporter-prometheus` on a separate
//! address, so the scrape endpoint is not on the public notification port.
//!
//! Every alert (`tower_wechatpay::alert`: a wrong APIv3 key, schema drift, a failing key
//! refresher or dedupe store, a notification that keeps failing) is logged at error; with
//! `--alert-webhook URL` it is also POSTed there as JSON (`{"kind": …, "action": …}`), the
//! usual chat-bot integration. The POST runs on its own task with a 5 s limit: a webhook
//! that is down is logged and never delays or changes an answer. With `--dedupe-redis URL`
//! the layer's dedupe guard keeps its claims in that Redis (several instances share it).
//!
//! The exactly-once pattern, in one database transaction: the payment is applied by a single
//! conditional `UPDATE … WHERE status = 'PENDING' AND total = $amount`, so of any number of
//! sequential or concurrent duplicates (on any number of instances sharing the database)
//! exactly one changes the row; every other copy sees why and is acknowledged. A refund is
//! recorded once per `refund_id` (several partial refunds per order), its row inserted
//! under that primary key first; a refund whose payment is not applied yet is answered
//! with a retry, so it is never lost.
//!
//! With `--queue URL` (`sqlite:PATH`, `postgres://…`, `redis://…`) the route only stores each
//! verified notification durably and acknowledges it once the queue committed it; a worker
//! in the same process applies it (the same code, the same exactly-once transaction), with
//! retries, backoff and a dead letter (`cargo run -p tower-wechatpay-shop --example
//! dead-letters -- --queue URL list|requeue ID`). Run several instances on one PostgreSQL or
//! Redis queue; a killed instance's jobs are taken by the others.
//!
//! With `--confirm-with-query`, every payment and refund is also confirmed with WeChat
//! Pay's order or refund query (`Client::confirm`) before anything is written: an answer
//! that disagrees (another amount, an order WeChat Pay does not know) is an acknowledged
//! decline and nothing is written; no answer within 2 s (the API unreachable, a 5xx, a
//! refusal of our request) is a retry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, post_service};
use axum::{Json, Router};
use clap::Parser;
use example_support::KeyArgs;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tower_wechatpay::alert::Alert;
use tower_wechatpay::checks::Merchant;
use tower_wechatpay::client::{Client, WECHATPAY_API};
use tower_wechatpay::models::{Refund, Transaction};
use tower_wechatpay::queue::Queue;
use tower_wechatpay::{Event, Handled, Notification, Notified, Retry};

/// Lock waits end after one second (SQLite's busy timeout, PostgreSQL's lock timeout): well
/// under WeChat Pay's 5 s, so a locked database becomes a clear retry, not a timeout.
const SQLITE_SETTINGS: &str =
    "PRAGMA busy_timeout = 1000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";
const POSTGRES_SETTINGS: &str = "SET lock_timeout = '1s'; SET statement_timeout = '3s';";

/// The limit on one confirmation query (retries included): with the database's lock and
/// pool limits it keeps the handler well inside the layer's 4 s answer deadline and WeChat
/// Pay's 5 s.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// The limit on one alert webhook POST (connection included).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Shop {
    db: AnyPool,
    merchant: Option<Merchant>,
    /// With `--confirm-with-query`: asks WeChat Pay before applying anything.
    confirm: Option<Client>,
    /// `--work-delay-ms`: how long the simulated slow business work takes.
    work_delay: Duration,
}

#[derive(Serialize)]
struct Order {
    out_trade_no: String,
    total: i64,
    status: String,
    transaction_id: Option<String>,
    payments_applied: i64,
    refunded: i64,
    refunds_applied: i64,
}

impl Order {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            out_trade_no: row.try_get("out_trade_no")?,
            total: row.try_get("total")?,
            status: row.try_get("status")?,
            transaction_id: row.try_get("transaction_id")?,
            payments_applied: row.try_get("payments_applied")?,
            refunded: row.try_get("refunded")?,
            refunds_applied: row.try_get("refunds_applied")?,
        })
    }
}

#[derive(Deserialize)]
struct NewOrder {
    out_trade_no: String,
    total: i64,
}

const SCHEMA: [&str; 3] = [
    // status: PENDING, PAID, PARTIALLY_REFUNDED, REFUNDED, or FLAGGED (amount mismatch).
    "CREATE TABLE IF NOT EXISTS orders (
        out_trade_no TEXT PRIMARY KEY,
        total BIGINT NOT NULL,
        status TEXT NOT NULL,
        transaction_id TEXT,
        payments_applied BIGINT NOT NULL DEFAULT 0,
        refunded BIGINT NOT NULL DEFAULT 0,
        refunds_applied BIGINT NOT NULL DEFAULT 0
    )",
    // One row per applied payment: the audit trail, and a second guard (primary key).
    "CREATE TABLE IF NOT EXISTS payments (
        transaction_id TEXT PRIMARY KEY,
        out_trade_no TEXT NOT NULL,
        total BIGINT NOT NULL,
        notification_id TEXT NOT NULL
    )",
    // One row per recorded refund, keyed by WeChat Pay's refund_id: an order may have
    // several partial refunds, each recorded once.
    "CREATE TABLE IF NOT EXISTS refunds (
        refund_id TEXT PRIMARY KEY,
        out_trade_no TEXT NOT NULL,
        out_refund_no TEXT NOT NULL,
        amount BIGINT NOT NULL,
        notification_id TEXT NOT NULL
    )",
];

const SELECT_ORDER: &str = "SELECT out_trade_no, total, status, transaction_id, payments_applied, \
                            refunded, refunds_applied FROM orders WHERE out_trade_no = $1";

async fn create_order(State(shop): State<Shop>, Json(new): Json<NewOrder>) -> impl IntoResponse {
    if new.out_trade_no.is_empty() || new.total <= 0 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_trade_no and a positive total",
        )
            .into_response();
    }
    let inserted = sqlx::query(
        "INSERT INTO orders (out_trade_no, total, status, payments_applied) VALUES ($1, $2, 'PENDING', 0)",
    )
    .bind(&new.out_trade_no)
    .bind(new.total)
    .execute(&shop.db)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            return (StatusCode::CONFLICT, "order exists").into_response();
        }
        Err(error) => return internal(error),
    }
    match find_order(&shop.db, &new.out_trade_no).await {
        Ok(Some(order)) => (StatusCode::CREATED, Json(order)).into_response(),
        Ok(None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(error) => internal(error),
    }
}

async fn get_order(
    State(shop): State<Shop>,
    Path(out_trade_no): Path<String>,
) -> impl IntoResponse {
    match find_order(&shop.db, &out_trade_no).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => internal(error),
    }
}

fn internal(error: sqlx::Error) -> axum::response::Response {
    tracing::error!(%error, "database error");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

async fn find_order(db: &AnyPool, out_trade_no: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(SELECT_ORDER)
        .bind(out_trade_no)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(Order::from_row).transpose()
}

/// The notify handler: every database error is a `?`, i.e. a retry; every business
/// reason to refuse is said explicitly and acknowledged.
async fn notified(
    State(shop): State<Shop>,
    Notified(notification): Notified<Notification>,
) -> Result<Handled, Retry> {
    handle(&shop, notification).await
}

/// What a notification does to the shop, in either mode: called by the route (synchronous)
/// or by the queue worker (`--queue`).
async fn handle(shop: &Shop, notification: Notification) -> Result<Handled, Retry> {
    if !shop.work_delay.is_zero() {
        // `--work-delay-ms`: stands for slow business work (emails, an ERP call).
        tracing::info!(id = notification.id(), "working on a notification");
        tokio::time::sleep(shop.work_delay).await;
    }
    match notification.event() {
        Event::Payment(payment) => apply_payment(shop, &notification, payment).await,
        Event::Refund(refund) => apply_refund(shop, &notification, refund).await,
        _ => Ok(Handled::declined(format!(
            "this shop does not handle {} notifications",
            notification.event_type()
        ))),
    }
}

async fn apply_payment(
    shop: &Shop,
    notification: &Notification,
    payment: &Transaction,
) -> Result<Handled, Retry> {
    if let Some(Err(rejection)) = shop.merchant.as_ref().map(|m| m.check_payment(payment)) {
        return Ok(Handled::declined(rejection));
    }
    if let Err(rejection) = payment.check_success() {
        return Ok(Handled::declined(rejection));
    }
    // WeChat Pay's own answer, before any write: a mismatch is declined, no answer retried.
    if let Some(client) = &shop.confirm
        && let Err(answer) = client.confirm(notification).await.require()
    {
        return answer;
    }

    let mut tx = shop.db.begin().await?;
    // The write comes first, so the transaction holds the write lock from its first
    // statement (SQLite) or the row lock (PostgreSQL) before it reads anything.
    let applied = sqlx::query(
        "UPDATE orders SET status = 'PAID', transaction_id = $1, \
         payments_applied = payments_applied + 1 \
         WHERE out_trade_no = $2 AND status = 'PENDING' AND total = $3",
    )
    .bind(&payment.transaction_id)
    .bind(&payment.out_trade_no)
    .bind(payment.amount.total)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if applied == 1 {
        sqlx::query(
            "INSERT INTO payments (transaction_id, out_trade_no, total, notification_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&payment.transaction_id)
        .bind(&payment.out_trade_no)
        .bind(payment.amount.total)
        .bind(notification.id())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(out_trade_no = %payment.out_trade_no, "order paid");
        return Ok(Handled::Done);
    }

    // Not applied: say why. Each answer below is final, so each is acknowledged.
    let Some(row) = sqlx::query(SELECT_ORDER)
        .bind(&payment.out_trade_no)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(Handled::declined("unknown order"));
    };
    let order = Order::from_row(&row)?;
    let same_payment = order.transaction_id.as_deref() == Some(payment.transaction_id.as_str());
    match order.status.as_str() {
        "PAID" | "PARTIALLY_REFUNDED" | "REFUNDED" if same_payment => Ok(Handled::Done), // a duplicate
        "PENDING" => {
            // Still pending although the state matched: the amount does not.
            sqlx::query(
                "UPDATE orders SET status = 'FLAGGED' WHERE out_trade_no = $1 AND status = 'PENDING'",
            )
            .bind(&order.out_trade_no)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Handled::declined(format!(
                "amount mismatch: paid {} fen for an order of {} fen; order flagged",
                payment.amount.total, order.total
            )))
        }
        status => Ok(Handled::declined(format!(
            "order is {status}; payment {} not applied",
            payment.transaction_id
        ))),
    }
}

/// A refund is recorded once per `refund_id` (an order may have several partial refunds),
/// by inserting it under its primary key first: of any number of copies exactly one
/// inserts, and only that one adds its amount to the order. A refund whose payment is not
/// applied yet (the notifications crossed) is a retry, never an acknowledgement.
async fn apply_refund(
    shop: &Shop,
    notification: &Notification,
    refund: &Refund,
) -> Result<Handled, Retry> {
    if let Some(Err(rejection)) = shop.merchant.as_ref().map(|m| m.check_refund(refund)) {
        return Ok(Handled::declined(rejection));
    }
    if !refund.is_success() {
        return Ok(Handled::declined(format!(
            "refund {} ended {}",
            refund.refund_id, refund.refund_status
        )));
    }
    let Some(out_trade_no) = refund.out_trade_no.as_deref() else {
        return Ok(Handled::declined("refund without out_trade_no"));
    };
    let amount = refund.amount.refund;
    if amount <= 0 {
        return Ok(Handled::declined(format!("refund of {amount} fen")));
    }
    if let Some(client) = &shop.confirm
        && let Err(answer) = client.confirm(notification).await.require()
    {
        return answer;
    }

    let mut tx = shop.db.begin().await?;
    // The write comes first, as for payments: the primary key on refund_id decides which
    // copy applies the refund; a concurrent copy waits for it, then inserts nothing.
    let inserted = sqlx::query(
        "INSERT INTO refunds (refund_id, out_trade_no, out_refund_no, amount, notification_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (refund_id) DO NOTHING",
    )
    .bind(&refund.refund_id)
    .bind(out_trade_no)
    .bind(&refund.out_refund_no)
    .bind(amount)
    .bind(notification.id())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Handled::Done); // a duplicate: this refund_id is already recorded
    }
    let applied = sqlx::query(
        "UPDATE orders SET refunded = refunded + $1, refunds_applied = refunds_applied + 1, \
         status = CASE WHEN refunded + $2 = total THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END \
         WHERE out_trade_no = $3 AND status IN ('PAID', 'PARTIALLY_REFUNDED') \
         AND total = $4 AND refunded + $5 <= total",
    )
    .bind(amount)
    .bind(amount)
    .bind(out_trade_no)
    .bind(refund.amount.total)
    .bind(amount)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if applied == 1 {
        tx.commit().await?;
        tracing::info!(out_trade_no, refund_id = %refund.refund_id, amount, "refund recorded");
        return Ok(Handled::Done);
    }

    // Not applied: undo the insert and say why.
    let order = sqlx::query(SELECT_ORDER)
        .bind(out_trade_no)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(Order::from_row)
        .transpose()?;
    tx.rollback().await?;
    match order {
        None => Ok(Handled::declined("refund for an unknown order")),
        // The payment notification has not been applied yet (it may arrive after the
        // refund's, or have failed so far): retry, so the refund is never lost.
        Some(order) if order.status == "PENDING" => Err(Retry::new(format!(
            "refund {} for order {out_trade_no} before its payment was applied; retry later",
            refund.refund_id
        ))),
        Some(order) if order.total != refund.amount.total => Ok(Handled::declined(format!(
            "refund says the order total is {} fen; the order is {} fen",
            refund.amount.total, order.total
        ))),
        Some(order) if matches!(order.status.as_str(), "PAID" | "PARTIALLY_REFUNDED") => {
            Ok(Handled::declined(format!(
                "refund of {amount} fen would exceed the order: {} of {} fen already refunded",
                order.refunded, order.total
            )))
        }
        Some(order) => Ok(Handled::declined(format!(
            "refund for an order that is {}",
            order.status
        ))),
    }
}

async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let is_sqlite = url.starts_with("sqlite:");
    // sqlx opens SQLite files read-write but does not create them unless asked.
    let url = if is_sqlite && !url.contains('?') && !url.contains(":memory:") {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = AnyPoolOptions::new()
        // An in-memory SQLite database lives in one connection.
        .max_connections(if in_memory { 1 } else { 8 })
        // Waiting for a connection must also end well before WeChat Pay gives up.
        .acquire_timeout(Duration::from_secs(2))
        .after_connect(|conn, _| {
            Box::pin(async move {
                let settings = if conn.backend_name() == "SQLite" {
                    SQLITE_SETTINGS
                } else {
                    POSTGRES_SETTINGS
                };
                conn.execute(settings).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    for statement in SCHEMA {
        pool.execute(statement).await?;
    }
    Ok(pool)
}

/// A small shop backend: orders in SQL, paid and refunded by WeChat Pay notifications.
#[derive(Parser, Debug)]
#[command(name = "shop", args_override_self = true)]
struct Cli {
    /// The address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The database: `sqlite:PATH`, `sqlite::memory:` or `postgres://…`.
    #[arg(long, value_name = "URL")]
    db: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// Your merchant id: notifications for another merchant are refused (acknowledged).
    /// With --confirm-with-query, also the merchant the queries are signed for.
    #[arg(long, value_name = "ID")]
    mchid: Option<String>,
    /// Your app id (with --mchid): payments for another app are refused (acknowledged).
    #[arg(long, value_name = "ID", requires = "mchid")]
    appid: Option<String>,
    /// Confirm every payment and refund with WeChat Pay's order or refund query before
    /// applying it: a disagreeing answer is declined (acknowledged, nothing written), no
    /// answer within 2 s is a retry. Needs --mchid, --merchant-key and --merchant-serial.
    #[arg(long, requires_all = ["mchid", "merchant_key", "merchant_serial"])]
    confirm_with_query: bool,
    /// The merchant API private key the queries are signed with (apiclient_key.pem).
    #[arg(long, value_name = "FILE.pem", requires = "confirm_with_query")]
    merchant_key: Option<PathBuf>,
    /// The serial of the merchant API certificate (hex).
    #[arg(long, value_name = "HEX", requires = "confirm_with_query")]
    merchant_serial: Option<String>,
    /// The merchant API's base URL (default: WeChat Pay's), e.g. a local `wechatpay-sim serve`.
    #[arg(long, value_name = "URL", requires = "confirm_with_query")]
    api_base: Option<String>,
    /// Serve the layer's metrics in Prometheus' text format on `GET /metrics` at this
    /// address (keep it private: e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Queue mode: store each verified notification durably (`sqlite:PATH`,
    /// `postgres://…`, `redis://…`), acknowledge it once stored, and apply it in a worker
    /// in this process, with retries and a dead letter (see the `dead-letters` example).
    #[arg(long, value_name = "URL")]
    queue: Option<String>,
    /// How often this instance's worker tells the queue it is alive; a worker silent for 3
    /// heartbeats (killed, crashed) has its jobs given to another.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "queue",
          value_parser = clap::value_parser!(u64).range(1..=300))]
    queue_heartbeat: u64,
    /// Attempts per queued job before it is a dead letter.
    #[arg(long, value_name = "N", default_value_t = 8, requires = "queue",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Simulated slow business work: every notification takes this long to apply.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    work_delay_ms: u64,
    /// Keep the dedupe guard's claims in this Redis (`redis://HOST:PORT/`), shared by every
    /// instance: a copy being handled elsewhere gets 500, one already handled is
    /// acknowledged without running the handler. Redis down: 500, and an alert.
    #[arg(long, value_name = "URL")]
    dedupe_redis: Option<String>,
    /// POST every alert to this URL as JSON (`http://` or `https://`), e.g. a chat bot's
    /// webhook. Alerts are always logged at error.
    #[arg(long, value_name = "URL")]
    alert_webhook: Option<String>,
}

impl Cli {
    /// The client that confirms notifications, with `--confirm-with-query`; it verifies
    /// WeChat Pay's answers with the layer's key ring.
    fn confirm_client(&self, keys: &tower_wechatpay::KeyRing) -> Result<Option<Client>, String> {
        if !self.confirm_with_query {
            return Ok(None);
        }
        let (Some(mchid), Some(key_file), Some(serial)) =
            (&self.mchid, &self.merchant_key, &self.merchant_serial)
        else {
            return Err(
                "--confirm-with-query needs --mchid, --merchant-key and --merchant-serial".into(),
            );
        };
        let key = std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
        let client = Client::builder(mchid, serial, key, keys.clone())
            .map_err(|e| format!("--merchant-key/--merchant-serial/--mchid: {e}"))?
            .base_url(self.api_base.as_deref().unwrap_or(WECHATPAY_API))
            .map_err(|e| format!("--api-base: {e}"))?
            .timeout(CONFIRM_TIMEOUT)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Some(client))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    example_support::init_logs();
    let layer = match cli.keys.layer() {
        Ok(layer) => layer,
        Err(message) => return example_support::usage_error::<Cli>(message),
    };
    let on_alert = match alert_sink(cli.alert_webhook.as_deref()) {
        Ok(on_alert) => on_alert,
        Err(message) => return example_support::usage_error::<Cli>(message),
    };
    let layer = layer.on_alert(on_alert);
    // In queue mode the same store also guards the worker (its keys prefixed `queue:`).
    let mut worker_guard = None;
    let layer = match &cli.dedupe_redis {
        None => layer,
        Some(url) => {
            let store = match tower_wechatpay::dedupe::RedisStore::connect(url).await {
                Ok(store) => store,
                Err(error) => {
                    eprintln!("shop: --dedupe-redis {url}: {error}");
                    return ExitCode::FAILURE;
                }
            };
            worker_guard = Some(tower_wechatpay::dedupe::Dedupe::new(store.clone()));
            match layer.dedupe(store) {
                Ok(layer) => layer,
                Err(message) => return example_support::usage_error::<Cli>(message),
            }
        }
    };
    let confirm = match cli.confirm_client(layer.keys()) {
        Ok(confirm) => confirm,
        Err(message) => return example_support::usage_error::<Cli>(message),
    };
    let merchant = cli.mchid.map(|mchid| match cli.appid {
        Some(appid) => Merchant::new(mchid).appid(appid),
        None => Merchant::new(mchid),
    });
    let db_url = cli.db;
    let db = match connect(&db_url).await {
        Ok(db) => db,
        Err(error) => {
            eprintln!("shop: cannot open the database {db_url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = cli.metrics_listen
        && let Err(message) = serve_metrics(addr).await
    {
        eprintln!("shop: --metrics-listen {addr}: {message}");
        return ExitCode::FAILURE;
    }
    let shop = Shop {
        db,
        merchant,
        confirm,
        work_delay: Duration::from_millis(cli.work_delay_ms),
    };
    let notify = match &cli.queue {
        None => post(notified).route_layer(layer),
        Some(url) => {
            let heartbeat = Duration::from_secs(cli.queue_heartbeat);
            let queue = match Queue::connect_with(url, Queue::DEFAULT_NAME, heartbeat).await {
                Ok(queue) => queue
                    .max_attempts(cli.max_attempts)
                    .alerts(layer.alert_sink()),
                Err(error) => {
                    eprintln!("shop: cannot open the queue {url}: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let worker_shop = shop.clone();
            let mut worker = queue.worker(&layer, move |notification| {
                let shop = worker_shop.clone();
                async move { handle(&shop, notification).await }
            });
            if let Some(guard) = worker_guard {
                worker = worker.dedupe(guard);
            }
            tokio::spawn(async move {
                if let Err(error) = worker.run().await {
                    tracing::error!(%error, "the queue worker stopped");
                }
            });
            tokio::spawn(report_depth(queue.clone()));
            eprintln!("queue mode: notifications are stored in {url}, then applied by the worker");
            post_service(queue.enqueuer()).route_layer(layer)
        }
    };
    let app = Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{out_trade_no}", get(get_order))
        .route("/wechatpay/notify", notify)
        .with_state(shop);
    example_support::serve("shop", cli.listen, app).await
}

/// Reads the queue's depth every 10 s: the `wechatpay_queue_depth` gauge on `/metrics`.
async fn report_depth(queue: Queue) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        if let Err(error) = queue.depth().await {
            tracing::warn!(%error, "could not read the queue depth");
        }
    }
}

/// What the shop does with an alert: log it at error and, with `--alert-webhook`, POST its
/// JSON there on a task of its own (bounded by [`WEBHOOK_TIMEOUT`]), so the answer that
/// raised it never waits for the webhook.
fn alert_sink(webhook: Option<&str>) -> Result<impl Fn(&Alert) + Send + Sync + 'static, String> {
    let webhook = match webhook {
        None => None,
        Some(url) => {
            let uri: axum::http::Uri = url
                .parse()
                .map_err(|error| format!("--alert-webhook {url}: {error}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(format!("--alert-webhook {url}: an http:// or https:// URL"));
            }
            let transport = tower_wechatpay::client::https_transport(WEBHOOK_TIMEOUT)
                .map_err(|error| format!("--alert-webhook: {error}"))?;
            Some((uri, transport))
        }
    };
    Ok(move |alert: &Alert| {
        tracing::error!(
            alert = %alert,
            kind = alert.kind().as_str(),
            "wechat pay alert: a human is needed"
        );
        let Some((uri, transport)) = &webhook else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let body = match serde_json::to_vec(alert) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "could not serialize an alert");
                return;
            }
        };
        let request = axum::http::Request::post(uri.clone())
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(axum::body::Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, "could not build the alert webhook request");
                return;
            }
        };
        let transport = transport.clone();
        let kind = alert.kind().as_str();
        runtime.spawn(async move {
            match tokio::time::timeout(WEBHOOK_TIMEOUT, transport.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    tracing::info!(kind, "posted the alert to the webhook");
                }
                Ok(Ok(response)) => tracing::error!(
                    kind,
                    status = %response.status(),
                    "the alert webhook refused the alert"
                ),
                Ok(Err(error)) => {
                    tracing::error!(kind, %error, "could not post the alert to the webhook");
                }
                Err(_) => tracing::error!(
                    kind,
                    "the alert webhook did not answer within 5 s; alert not delivered"
                ),
            }
        });
    })
}

/// Installs the Prometheus recorder and serves `GET /metrics` on `addr`, in the background.
async fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Real histograms (buckets) for the durations, in seconds: WeChat Pay waits 5 s.
    const BUCKETS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), BUCKETS)
        .map_err(|error| error.to_string())?
        .install_recorder()
        .map_err(|error| error.to_string())?;
    tower_wechatpay::metrics::describe();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| error.to_string())?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    eprintln!("metrics on http://{bound}/metrics");
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
