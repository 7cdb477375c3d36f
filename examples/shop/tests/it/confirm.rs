//! The shop's `--confirm-with-query` end to end: the shop as users run it, confirming with
//! `wechatpay-sim serve` (in-process, real HTTP) before it writes anything. A payment and a
//! refund WeChat Pay confirms are recorded; a payment WeChat Pay knows with another amount,
//! or does not know at all, is declined (acknowledged, nothing written); an API nobody
//! answers is a retry (500), nothing written. SQLite is enough: confirming happens before
//! the database is touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use example_support::harness::{Http, Running, TempDir, now, start};
use http::StatusCode;
use serde_json::{Value, json};
use wechatpay_sim::keys::{Keys, Mode, file};
use wechatpay_sim::serve::{CertificatesAnswer, Log, ServeMode, Server, app};

const APPID: &str = "wx8888888888888888";

/// One key set per test process (RSA key generation is the slow part), copied into a
/// fresh directory for each shop.
fn keys(dir: &TempDir) -> Keys {
    static MADE: OnceLock<Keys> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let scratch =
            std::env::temp_dir().join(format!("tower-wechatpay-shop-keys-{}", std::process::id()));
        let keys = Keys::generate(&scratch).unwrap();
        let _ = std::fs::remove_dir_all(&scratch);
        keys
    });
    let mut keys = made.clone();
    keys.dir = dir.path().join("keys");
    keys.write().unwrap();
    keys
}

/// `wechatpay-sim serve` in-process on a free port, answering in public-key mode.
async fn wechat_pay(keys: &Keys) -> SocketAddr {
    let server = Server::new(
        keys.clone(),
        ServeMode::PublicKey,
        CertificatesAnswer::NotFound,
        Log::silent(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app(Arc::clone(&server)))
            .await
            .unwrap();
    });
    addr
}

/// A loopback address nobody listens on: a port the system handed out, then closed.
fn nobody_listening() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Shop {
    running: Running,
    http: Http,
    keys: Keys,
    _dir: TempDir,
}

impl Shop {
    /// The shop on SQLite, confirming with the merchant API at `api`, with `keys`' merchant.
    fn start(dir: TempDir, keys: Keys, api: SocketAddr) -> Self {
        let path = |name: &str| keys.dir.join(name).display().to_string();
        let db = format!("sqlite:{}", dir.path().join("shop.db").display());
        let args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--db".into(),
            db,
            "--apiv3-key-file".into(),
            path(file::APIV3_KEY),
            "--public-key".into(),
            format!("{}={}", keys.public_key_id, path(file::PUBLIC_KEY)),
            "--certificate".into(),
            path(file::PLATFORM_CERT),
            "--mchid".into(),
            keys.mchid.clone(),
            "--appid".into(),
            APPID.into(),
            "--confirm-with-query".into(),
            "--merchant-key".into(),
            path(file::MERCHANT_KEY),
            "--merchant-serial".into(),
            keys.merchant_serial.clone(),
            "--api-base".into(),
            format!("http://{api}"),
        ];
        let running = start("shop", &args);
        Self {
            http: Http::new(&running.addr),
            running,
            keys,
            _dir: dir,
        }
    }

    async fn create(&self, out_trade_no: &str, total: i64) {
        let (status, _) = self
            .http
            .post_json(
                "/orders",
                &json!({"out_trade_no": out_trade_no, "total": total}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    async fn order(&self, out_trade_no: &str) -> Value {
        let (status, order) = self.http.get_json(&format!("/orders/{out_trade_no}")).await;
        assert_eq!(status, StatusCode::OK);
        order
    }

    /// Delivers `resource` as WeChat Pay would: encrypted and signed with the simulator's
    /// WeChat Pay public key, so the shop's layer verifies it as genuine. The status and,
    /// for a failure, the FAIL body's message.
    async fn notify(&self, event_type: &str, resource: &Value) -> (StatusCode, String) {
        let signed = self
            .keys
            .signer(Mode::PublicKey)
            .unwrap()
            .notification(event_type, resource)
            .timestamp(now())
            .build()
            .unwrap();
        let mut request = http::Request::post("/wechatpay/notify");
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let (status, body) = self
            .http
            .send(request.body(signed.body.into()).unwrap())
            .await;
        if status.is_success() {
            return (status, String::new());
        }
        let fail: Value = serde_json::from_slice(&body).unwrap();
        (
            status,
            fail["message"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// The simulator's control endpoints (unauthenticated, as `wechatpay-sim serve` has them).
async fn sim(api: SocketAddr, path: &str, body: &Value) -> Value {
    let (status, answer) = Http::new(&api.to_string()).post_json(path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// Pays `out_trade_no` at the simulator: WeChat Pay now knows the order, and its answer
/// is the order query's, i.e. what a payment notification carries.
async fn pay_at_wechat_pay(api: SocketAddr, out_trade_no: &str, amount: i64) -> Value {
    sim(
        api,
        "/sim/pay",
        &json!({"out_trade_no": out_trade_no, "amount": amount, "appid": APPID}),
    )
    .await
}

/// The refund notification's resource for a refund query answer from the simulator.
fn refund_notification(merchant: &str, queried: &Value) -> Value {
    let mut resource = json!({ "mchid": merchant });
    for field in [
        "out_trade_no",
        "transaction_id",
        "out_refund_no",
        "refund_id",
        "success_time",
        "user_received_account",
    ] {
        resource[field] = queried[field].clone();
    }
    resource["refund_status"] = queried["status"].clone();
    let amount = &queried["amount"];
    resource["amount"] = json!({
        "total": amount["total"], "refund": amount["refund"],
        "payer_total": amount["payer_total"], "payer_refund": amount["payer_refund"],
    });
    resource
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_and_a_refund_wechat_pay_confirms_are_recorded() {
    let dir = TempDir::new("shop-confirm");
    let keys = keys(&dir);
    let api = wechat_pay(&keys).await;
    let shop = Shop::start(dir, keys, api);

    shop.create("CQ1", 990).await;
    let payment = pay_at_wechat_pay(api, "CQ1", 990).await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    let order = shop.order("CQ1").await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["transaction_id"], payment["transaction_id"]);
    assert_eq!(order["payments_applied"], 1);

    let refund = sim(
        api,
        "/sim/refund",
        &json!({"out_trade_no": "CQ1", "out_refund_no": "RQ1", "amount": 300}),
    )
    .await;
    let resource = refund_notification(&shop.keys.mchid, &refund);
    assert_eq!(
        shop.notify("REFUND.SUCCESS", &resource).await,
        (StatusCode::NO_CONTENT, String::new())
    );
    let order = shop.order("CQ1").await;
    assert_eq!(order["status"], "PARTIALLY_REFUNDED");
    assert_eq!(order["refunded"], 300);
    assert_eq!(order["refunds_applied"], 1);
    // The order was refunded at WeChat Pay (trade_state REFUND): a late copy of the payment
    // notification is still confirmed, and still applied once.
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(shop.order("CQ1").await["payments_applied"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_wechat_pay_knows_with_another_amount_is_declined_and_not_recorded() {
    let dir = TempDir::new("shop-confirm");
    let keys = keys(&dir);
    let api = wechat_pay(&keys).await;
    let shop = Shop::start(dir, keys, api);

    // The shop's order is for 1 fen and the notification says 1 fen was paid: on its own
    // the shop would mark it paid. WeChat Pay knows this payment as 990 fen.
    shop.create("CQ2", 1).await;
    let mut payment = pay_at_wechat_pay(api, "CQ2", 990).await;
    payment["amount"]["total"] = 1.into();
    payment["amount"]["payer_total"] = 1.into();
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment).await,
        (StatusCode::NO_CONTENT, String::new()),
        "a mismatch is acknowledged"
    );
    let line = shop.running.wait_log(&[
        "wechat pay does not confirm the notification",
        "amount.total",
    ]);
    assert!(
        line.contains("amount.total is 1 in the notification, 990 in wechat pay's answer"),
        "{line}"
    );
    shop.running.wait_log(&[
        "declined for a business reason",
        "not confirmed by wechat pay",
    ]);
    let order = shop.order("CQ2").await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments_applied"], 0);
    assert_eq!(order["transaction_id"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_wechat_pay_does_not_know_is_declined_and_not_recorded() {
    let dir = TempDir::new("shop-confirm");
    let keys = keys(&dir);
    let api = wechat_pay(&keys).await;
    let shop = Shop::start(dir, keys, api);

    shop.create("CQ3", 990).await;
    // A payment notification WeChat Pay never made: signed with its key, unknown to it.
    let mut payment = pay_at_wechat_pay(api, "CQ3-REAL", 990).await;
    payment["out_trade_no"] = "CQ3".into();
    payment["transaction_id"] = "4200000000000000000000000003".into();
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment).await.0,
        StatusCode::NO_CONTENT
    );
    shop.running
        .wait_log(&["wechat pay does not know this order", "404 ORDER_NOT_EXIST"]);
    let order = shop.order("CQ3").await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments_applied"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_makes_wechat_pay_retry_and_nothing_is_recorded() {
    let dir = TempDir::new("shop-confirm");
    let keys = keys(&dir);
    // The notification is genuine and WeChat Pay knows the payment, but the shop's queries
    // go to a port nobody listens on.
    let api = wechat_pay(&keys).await;
    let shop = Shop::start(dir, keys, nobody_listening());

    shop.create("CQ4", 990).await;
    let payment = pay_at_wechat_pay(api, "CQ4", 990).await;
    let (status, message) = shop.notify("TRANSACTION.SUCCESS", &payment).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(message, "handler failed");
    shop.running.wait_log(&[
        "the handler failed",
        "could not confirm the notification with wechat pay",
        "unreachable",
    ]);
    let order = shop.order("CQ4").await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments_applied"], 0);
}
