//! The shop example, driven over real HTTP with the crate's test signer: exactly-once
//! payments and refunds under duplicates, business rejections acknowledged, a refund that
//! overtakes its payment and a locked database retried.
//!
//! Every scenario runs against SQLite (one test each) and against PostgreSQL (one test
//! that starts a server and runs them all, each on its own database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use example_support::harness::{Http, Running, TempDir, free_port, key_flags, now, start};
use http::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use support::postgres::Postgres;
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};

const MCHID: &str = "1900012345";
const APPID: &str = "wx8888888888888888";

enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

struct Shop {
    running: Running,
    http: Http,
    db: Db,
    _dir: TempDir,
}

impl Shop {
    fn start(db: Option<String>) -> Self {
        Self::start_with(db, &[])
    }

    /// [`Shop::start`] with more flags.
    fn start_with(db: Option<String>, extra: &[String]) -> Self {
        let dir = TempDir::new("shop");
        let db = match db {
            Some(url) => Db::Postgres(url),
            None => Db::Sqlite(dir.path().join("shop.db")),
        };
        let url = match &db {
            Db::Sqlite(path) => format!("sqlite:{}", path.display()),
            Db::Postgres(url) => url.clone(),
        };
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--db",
            &url,
            "--mchid",
            MCHID,
            "--appid",
            APPID,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(key_flags(dir.path()));
        args.extend_from_slice(extra);
        let running = start("shop", &args);
        Self {
            http: Http::new(&running.addr),
            running,
            db,
            _dir: dir,
        }
    }
}

/// Another client of the database holding a lock the shop needs.
enum Locker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Shop {
    /// Locks the order's row (PostgreSQL) or the whole database for writing (SQLite).
    async fn lock(&self, out_trade_no: &str) -> Locker {
        match &self.db {
            Db::Sqlite(path) => {
                let mut connection = sqlx::SqliteConnection::connect_with(
                    &sqlx::sqlite::SqliteConnectOptions::new().filename(path),
                )
                .await
                .unwrap();
                connection.execute("BEGIN IMMEDIATE").await.unwrap();
                Locker::Sqlite(connection)
            }
            Db::Postgres(url) => {
                let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
                connection.execute("BEGIN").await.unwrap();
                sqlx::query("SELECT status FROM orders WHERE out_trade_no = $1 FOR UPDATE")
                    .bind(out_trade_no)
                    .execute(&mut connection)
                    .await
                    .unwrap();
                Locker::Postgres(connection)
            }
        }
    }
}

impl Locker {
    async fn release(self) {
        match self {
            Locker::Sqlite(mut connection) => {
                connection.execute("ROLLBACK").await.unwrap();
            }
            Locker::Postgres(mut connection) => {
                connection.execute("ROLLBACK").await.unwrap();
            }
        }
    }
}

fn payment_for(out_trade_no: &str, total: i64) -> Value {
    let mut resource = sample_payment();
    resource["out_trade_no"] = out_trade_no.into();
    resource["transaction_id"] = format!("4200{out_trade_no}").into();
    resource["amount"]["total"] = total.into();
    resource["amount"]["payer_total"] = total.into();
    resource
}

/// A successful refund of `refund` fen of the order paid by [`payment_for`].
fn refund_for(out_trade_no: &str, total: i64, refund_id: &str, refund: i64) -> Value {
    let mut resource = sample_refund();
    resource["out_trade_no"] = out_trade_no.into();
    resource["transaction_id"] = format!("4200{out_trade_no}").into();
    resource["refund_id"] = refund_id.into();
    resource["out_refund_no"] = format!("R-{refund_id}").into();
    resource["amount"] = json!({"total": total, "refund": refund,
                                "payer_total": total, "payer_refund": refund});
    resource
}

/// A fresh delivery: WeChat Pay signs every copy anew.
fn delivery(event_type: &str, resource: &Value) -> tower_wechatpay::test_util::SignedNotification {
    TestSigner::public_key_mode()
        .notification(event_type, resource)
        .timestamp(now())
        .build()
        .unwrap()
}

impl Shop {
    async fn create(&self, out_trade_no: &str, total: i64) {
        let (status, order) = self
            .http
            .post_json(
                "/orders",
                &json!({"out_trade_no": out_trade_no, "total": total}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(order["status"], "PENDING");
        assert_eq!(order["payments_applied"], 0);
    }

    async fn order(&self, out_trade_no: &str) -> Value {
        let (status, order) = self.http.get_json(&format!("/orders/{out_trade_no}")).await;
        assert_eq!(status, StatusCode::OK, "order {out_trade_no}");
        order
    }

    async fn notify(&self, event_type: &str, resource: &Value) -> StatusCode {
        self.http
            .notify("/wechatpay/notify", delivery(event_type, resource))
            .await
    }

    /// [`Shop::notify`], with the FAIL body's message when it is not a success.
    async fn notify_answer(&self, event_type: &str, resource: &Value) -> (StatusCode, String) {
        let signed = delivery(event_type, resource);
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
        assert_eq!(fail["code"], "FAIL", "{fail}");
        (status, fail["message"].as_str().unwrap().to_owned())
    }

    /// Delivers like WeChat Pay: resend after anything but 2xx, a bounded number of times.
    async fn deliver(&self, event_type: &str, resource: &Value) -> StatusCode {
        for _ in 0..20 {
            let status = self.notify(event_type, resource).await;
            if status.is_success() {
                return status;
            }
            assert_eq!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "only 2xx or a retry"
            );
        }
        panic!("never acknowledged");
    }
}

async fn orders_are_created_and_read(shop: &Shop) {
    shop.create("A1", 990).await;
    let order = shop.order("A1").await;
    assert_eq!(
        order,
        json!({"out_trade_no": "A1", "total": 990, "status": "PENDING",
               "transaction_id": null, "payments_applied": 0,
               "refunded": 0, "refunds_applied": 0})
    );
    let (status, _) = shop.http.get_json("/orders/none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = shop
        .http
        .post_json("/orders", &json!({"out_trade_no": "A1", "total": 1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn a_payment_applies_once_under_sequential_duplicates(shop: &Shop) {
    shop.create("P1", 990).await;
    let payment = payment_for("P1", 990);
    for _ in 0..5 {
        assert_eq!(
            shop.notify("TRANSACTION.SUCCESS", &payment).await,
            StatusCode::NO_CONTENT
        );
    }
    let order = shop.order("P1").await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["transaction_id"], "4200P1");
    assert_eq!(order["payments_applied"], 1);
}

async fn a_payment_applies_once_under_50_concurrent_copies(shop: &Shop) {
    shop.create("C1", 1234).await;
    let payment = payment_for("C1", 1234);
    let copies = (0..50).map(|_| shop.deliver("TRANSACTION.SUCCESS", &payment));
    let statuses = futures_util::future::join_all(copies).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::NO_CONTENT)
    );
    let order = shop.order("C1").await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["payments_applied"], 1);
}

async fn an_amount_mismatch_is_acknowledged_and_flags_the_order_never_paid(shop: &Shop) {
    shop.create("M1", 990).await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("M1", 1))
            .await,
        StatusCode::NO_CONTENT
    );
    let order = shop.order("M1").await;
    assert_eq!(order["status"], "FLAGGED");
    assert_eq!(order["payments_applied"], 0);
    // Not even a later notification with the right amount marks a flagged order paid.
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("M1", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(shop.order("M1").await["status"], "FLAGGED");
}

async fn an_unknown_order_is_acknowledged_and_changes_nothing(shop: &Shop) {
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("NOPE", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = shop.http.get_json("/orders/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn another_merchant_or_an_unpaid_state_is_acknowledged_and_changes_nothing(shop: &Shop) {
    shop.create("X1", 990).await;
    let mut other_merchant = payment_for("X1", 990);
    other_merchant["mchid"] = "1999999999".into();
    let mut other_app = payment_for("X1", 990);
    other_app["appid"] = "wx0000000000000000".into();
    let mut not_paid = payment_for("X1", 990);
    not_paid["trade_state"] = "NOTPAY".into();
    for resource in [other_merchant, other_app, not_paid] {
        assert_eq!(
            shop.notify("TRANSACTION.SUCCESS", &resource).await,
            StatusCode::NO_CONTENT
        );
    }
    let order = shop.order("X1").await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["payments_applied"], 0);
}

async fn a_refund_success_refunds_a_paid_order_once(shop: &Shop) {
    shop.create("R1", 990).await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("R1", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    let refund = refund_for("R1", 990, "5000R1", 990);
    for _ in 0..3 {
        assert_eq!(
            shop.notify("REFUND.SUCCESS", &refund).await,
            StatusCode::NO_CONTENT
        );
    }
    let order = shop.order("R1").await;
    assert_eq!(order["status"], "REFUNDED");
    assert_eq!(order["refunded"], 990);
    assert_eq!(order["refunds_applied"], 1);
    assert_eq!(order["payments_applied"], 1);
}

async fn a_refund_before_its_payment_is_retried_until_the_payment_is_applied(shop: &Shop) {
    shop.create("B1", 990).await;
    let refund = refund_for("B1", 990, "5000B1", 990);
    // The notifications crossed: the refund is not acknowledged (WeChat Pay resends it)
    // and nothing is recorded, however often it comes.
    for _ in 0..2 {
        assert_eq!(
            shop.notify("REFUND.SUCCESS", &refund).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let order = shop.order("B1").await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["refunds_applied"], 0);

    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("B1", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        shop.notify("REFUND.SUCCESS", &refund).await,
        StatusCode::NO_CONTENT
    );
    let order = shop.order("B1").await;
    assert_eq!(order["status"], "REFUNDED");
    assert_eq!(order["refunded"], 990);
    assert_eq!(order["refunds_applied"], 1);
}

async fn partial_refunds_of_one_order_are_each_recorded_once(shop: &Shop) {
    shop.create("S1", 1000).await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("S1", 1000))
            .await,
        StatusCode::NO_CONTENT
    );
    let first = refund_for("S1", 1000, "5000S1-1", 300);
    for _ in 0..3 {
        assert_eq!(
            shop.notify("REFUND.SUCCESS", &first).await,
            StatusCode::NO_CONTENT
        );
    }
    let order = shop.order("S1").await;
    assert_eq!(order["status"], "PARTIALLY_REFUNDED");
    assert_eq!(order["refunded"], 300);
    assert_eq!(order["refunds_applied"], 1);

    // A second partial refund (another refund_id) of the same order is recorded too.
    let second = refund_for("S1", 1000, "5000S1-2", 200);
    assert_eq!(
        shop.notify("REFUND.SUCCESS", &second).await,
        StatusCode::NO_CONTENT
    );
    let order = shop.order("S1").await;
    assert_eq!(order["status"], "PARTIALLY_REFUNDED");
    assert_eq!(order["refunded"], 500);
    assert_eq!(order["refunds_applied"], 2);

    // The rest, as 20 concurrent copies mixed with copies of the first two: once each.
    let last = refund_for("S1", 1000, "5000S1-3", 500);
    let copies = (0..20).map(|i| {
        let refund = [&last, &first, &second][i % 3];
        shop.deliver("REFUND.SUCCESS", refund)
    });
    let statuses = futures_util::future::join_all(copies).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::NO_CONTENT));
    let order = shop.order("S1").await;
    assert_eq!(order["status"], "REFUNDED");
    assert_eq!(order["refunded"], 1000);
    assert_eq!(order["refunds_applied"], 3);

    // More than was paid is acknowledged as a business refusal and changes nothing.
    assert_eq!(
        shop.notify("REFUND.SUCCESS", &refund_for("S1", 1000, "5000S1-4", 1))
            .await,
        StatusCode::NO_CONTENT
    );
    let order = shop.order("S1").await;
    assert_eq!(order["refunded"], 1000);
    assert_eq!(order["refunds_applied"], 3);
}

async fn a_refund_for_an_unknown_order_is_acknowledged(shop: &Shop) {
    assert_eq!(
        shop.notify("REFUND.SUCCESS", &refund_for("NONE", 990, "5000NONE", 990))
            .await,
        StatusCode::NO_CONTENT
    );
}

async fn a_locked_database_makes_wechat_retry_and_the_retry_succeeds(shop: &Shop) {
    shop.create("L1", 990).await;

    // Another client of the database holds the lock the payment needs.
    let locker = shop.lock("L1").await;

    let (status, message) = shop
        .notify_answer("TRANSACTION.SUCCESS", &payment_for("L1", 990))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // Answered while the lock is still held, within WeChat Pay's 5 s, by the handler itself:
    // its lock wait ended (the shop's lock timeout) and it asked for a retry, "handler
    // failed". Had it waited on, the layer's answer deadline (4 s, under WeChat Pay's 5 s)
    // would have cut it off: "handler timed out". Neither depends on how fast this machine is.
    assert_eq!(
        message, "handler failed",
        "the handler gave up the lock wait itself"
    );
    // And what it gave up on was the lock, as the shop's log says.
    let lock_error = match &shop.db {
        Db::Sqlite(_) => "database is locked",
        Db::Postgres(_) => "lock timeout",
    };
    shop.running.wait_log(&["the handler failed", lock_error]);
    assert_eq!(shop.order("L1").await["status"], "PENDING");

    locker.release().await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("L1", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    let order = shop.order("L1").await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["payments_applied"], 1);
}

async fn forged_notifications_never_touch_the_orders(shop: &Shop) {
    shop.create("F1", 990).await;
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &payment_for("F1", 990))
        .timestamp(now())
        .build()
        .unwrap();
    assert_eq!(
        shop.http.notify("/wechatpay/notify", forged).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(shop.order("F1").await["status"], "PENDING");
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Shop::start(None)).await;
                }
            )*
        }

        #[tokio::test]
        async fn every_scenario_on_postgresql() {
            let postgres = Postgres::start();
            $(
                let shop = Shop::start(Some(postgres.database(stringify!($name)).await));
                $name(&shop).await;
            )*
        }
    };
}

scenarios!(
    orders_are_created_and_read,
    a_payment_applies_once_under_sequential_duplicates,
    a_payment_applies_once_under_50_concurrent_copies,
    an_amount_mismatch_is_acknowledged_and_flags_the_order_never_paid,
    an_unknown_order_is_acknowledged_and_changes_nothing,
    another_merchant_or_an_unpaid_state_is_acknowledged_and_changes_nothing,
    a_refund_success_refunds_a_paid_order_once,
    a_refund_before_its_payment_is_retried_until_the_payment_is_applied,
    partial_refunds_of_one_order_are_each_recorded_once,
    a_refund_for_an_unknown_order_is_acknowledged,
    a_locked_database_makes_wechat_retry_and_the_retry_succeeds,
    forged_notifications_never_touch_the_orders,
);

/// `--metrics-listen`: the Prometheus endpoint counts what the notification port answered.
#[tokio::test]
async fn metrics_are_scraped_after_a_notification() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let shop = Shop::start_with(None, &["--metrics-listen".to_owned(), metrics.clone()]);
    shop.create("M1", 990).await;
    assert_eq!(
        shop.notify("TRANSACTION.SUCCESS", &payment_for("M1", 990))
            .await,
        StatusCode::NO_CONTENT
    );
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &payment_for("M1", 990))
        .timestamp(now())
        .build()
        .unwrap();
    shop.http.notify("/wechatpay/notify", forged).await;

    let (status, body) = Http::new(&metrics)
        .send(
            http::Request::get("/metrics")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    for expected in [
        "wechatpay_notifications_total{outcome=\"acknowledged\",reason=\"none\",event_type=\"TRANSACTION.SUCCESS\",version=\"3\"} 1",
        "wechatpay_notifications_total{outcome=\"refused\",reason=\"invalid_signature\",event_type=\"none\",version=\"3\"} 1",
        "# TYPE wechatpay_answer_duration_seconds histogram",
        "wechatpay_answer_duration_seconds_count{outcome=\"acknowledged\"} 1",
        "wechatpay_handler_duration_seconds_count 1",
    ] {
        assert!(
            text.lines().any(|line| line == expected),
            "no {expected} in\n{text}"
        );
    }
}
