//! Queue mode (`shop --queue URL`) as users run it: shop processes store each notification
//! in the queue, acknowledge it once the queue committed it, and apply it in their worker.
//!
//! The storm, on each engine (SQLite file, PostgreSQL, Redis with its append-only file):
//! two instances share the queue and the orders database; every payment is delivered in
//! several concurrent copies to different instances, each resent after anything but 2xx,
//! as WeChat Pay does. Mid-storm one instance is killed (SIGKILL, while its worker holds
//! jobs: every job takes 200 ms) and replaced; later the engine itself is killed and
//! restarted (SQLite, being in-process, by killing every instance). Asserted: every
//! notification acknowledged, every payment applied exactly once, none lost (an
//! acknowledgement for a job the queue did not commit would leave its order unpaid), no dead
//! letter, nothing left in the queue.
//!
//! The deliveries resend after a short pause (a real server's restart has no event to wait
//! on); only bounds far above what a loaded machine needs end a wait with a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use example_support::harness::{Http, Redis, Running, TempDir, key_flags, now, start};
use http::StatusCode;
use serde_json::{Value, json};
use sqlx::sqlite::SqlitePoolOptions;
use tower_wechatpay::queue::Queue;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment, sample_refund};

use crate::support::postgres::Postgres;

const ORDERS: usize = 24;
const COPIES: usize = 3;
const INSTANCES: usize = 2;
/// How long every notification takes to apply: the worker is mid-job when it is killed.
const WORK_MS: &str = "200";
/// A bound only a bug reaches.
const WITHIN: Duration = Duration::from_secs(180);

/// Shop instances in queue mode over one orders database and one queue.
struct Fleet {
    dir: TempDir,
    queue: String,
    extra: Vec<String>,
    instances: Mutex<Vec<Running>>,
    /// The live instances' addresses, for the deliveries.
    live: Mutex<Vec<Http>>,
}

impl Fleet {
    fn new(queue: String, extra: &[&str]) -> Self {
        let fleet = Self {
            dir: TempDir::new("shop-queue"),
            queue,
            extra: extra.iter().map(|flag| (*flag).to_owned()).collect(),
            instances: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
        };
        for _ in 0..INSTANCES {
            fleet.add();
        }
        fleet
    }

    fn orders_db(&self) -> PathBuf {
        self.dir.path().join("orders.db")
    }

    fn start_one(&self) -> Running {
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--db".into(),
            format!("sqlite:{}", self.orders_db().display()),
            "--queue".into(),
            self.queue.clone(),
            "--queue-heartbeat".into(),
            "1".into(),
        ];
        args.extend(key_flags(self.dir.path()));
        args.extend(self.extra.iter().cloned());
        start("shop", &args)
    }

    /// Starts one more instance.
    fn add(&self) {
        let running = self.start_one();
        self.live.lock().unwrap().push(Http::new(&running.addr));
        self.instances.lock().unwrap().push(running);
    }

    /// SIGKILLs the first instance (its worker's jobs are orphaned) and starts another.
    fn kill_one_and_replace(&self) {
        let killed = {
            let mut instances = self.instances.lock().unwrap();
            self.live.lock().unwrap().remove(0);
            instances.remove(0)
        };
        drop(killed); // SIGKILL
        self.add();
    }

    /// SIGKILLs every instance, then starts as many again.
    fn kill_all_and_restart(&self) {
        let killed: Vec<Running> = {
            self.live.lock().unwrap().clear();
            std::mem::take(&mut *self.instances.lock().unwrap())
        };
        let count = killed.len();
        drop(killed);
        for _ in 0..count {
            self.add();
        }
    }

    fn pick(&self, n: usize) -> Option<Http> {
        let live = self.live.lock().unwrap();
        (!live.is_empty()).then(|| live[n % live.len()].clone())
    }

    /// Resends like WeChat Pay until acknowledged: after a failure, a connection error or a
    /// timeout, to the next instance.
    async fn deliver(&self, signed: impl Fn() -> SignedNotification, first: usize) -> usize {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(http) = self.pick(first + attempts)
                && let Some(status) = http.try_notify("/wechatpay/notify", &signed()).await
            {
                if status.is_success() {
                    return attempts;
                }
                assert!(
                    status.is_server_error(),
                    "only 2xx or a retry (5xx), got {status}"
                );
            }
            assert!(started.elapsed() < WITHIN, "never acknowledged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_orders(&self) {
        let http = self.pick(0).unwrap();
        for n in 0..ORDERS {
            let (status, _) = http
                .post_json(
                    "/orders",
                    &json!({"out_trade_no": order_no(n), "total": total(n)}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED);
        }
    }

    /// Waits until `ready` holds on the orders database.
    async fn orders_until(&self, what: &str, ready: impl Fn(&[(String, String, i64)]) -> bool) {
        let db = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite:{}", self.orders_db().display()))
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let rows: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT out_trade_no, status, payments_applied FROM orders ORDER BY out_trade_no",
            )
            .fetch_all(&db)
            .await
            .unwrap();
            if ready(&rows) {
                return;
            }
            assert!(
                started.elapsed() < WITHIN,
                "{what}: not within {WITHIN:?}: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn order_no(n: usize) -> String {
    format!("Q{n:04}")
}

fn total(n: usize) -> i64 {
    100 + i64::try_from(n).unwrap()
}

fn payment(n: usize) -> Value {
    let mut resource = sample_payment();
    resource["out_trade_no"] = order_no(n).into();
    resource["transaction_id"] = format!("4200{}", order_no(n)).into();
    resource["amount"]["total"] = total(n).into();
    resource["amount"]["payer_total"] = total(n).into();
    resource
}

/// A fresh delivery: WeChat Pay signs every copy anew.
fn delivery(event_type: &str, resource: &Value) -> SignedNotification {
    TestSigner::public_key_mode()
        .notification(event_type, resource)
        .timestamp(now())
        .build()
        .unwrap()
}

/// Delivers the payments of `orders`, [`COPIES`] concurrent copies each, each resent until
/// acknowledged; counts the acknowledgements and the deliveries refused or unanswered.
fn deliver_all(
    fleet: &Arc<Fleet>,
    orders: std::ops::Range<usize>,
    acknowledged: &Arc<AtomicUsize>,
    resent: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut deliveries = Vec::new();
    for n in orders {
        for copy in 0..COPIES {
            let fleet = Arc::clone(fleet);
            let acknowledged = Arc::clone(acknowledged);
            let resent = Arc::clone(resent);
            deliveries.push(tokio::spawn(async move {
                let resource = payment(n);
                let attempts = fleet
                    .deliver(|| delivery("TRANSACTION.SUCCESS", &resource), n + copy)
                    .await;
                resent.fetch_add(attempts - 1, Ordering::SeqCst);
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }));
        }
    }
    deliveries
}

/// The storm (see the module docs): the first half of the payments, a worker killed while
/// it works on one, the second half while the engine is killed and restarted.
async fn storm(fleet: Arc<Fleet>, restart_engine: impl FnOnce(&Fleet) + Send + 'static) {
    fleet.create_orders().await;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let resent = Arc::new(AtomicUsize::new(0));
    let mut deliveries = deliver_all(&fleet, 0..ORDERS / 2, &acknowledged, &resent);
    // Kill the first instance the moment its worker starts a job (each takes 200 ms):
    // the job is orphaned mid-work, and must be taken again by another worker.
    let killer = Arc::clone(&fleet);
    tokio::task::spawn_blocking(move || {
        killer.instances.lock().unwrap()[0].wait_log(&["working on a notification"]);
        killer.kill_one_and_replace();
    })
    .await
    .unwrap();
    let first_half = acknowledged.load(Ordering::SeqCst);
    deliveries.extend(deliver_all(
        &fleet,
        ORDERS / 2..ORDERS,
        &acknowledged,
        &resent,
    ));
    // The engine goes down once the second half is under way, and comes back.
    let restarter = Arc::clone(&fleet);
    let seen = Arc::clone(&acknowledged);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while seen.load(Ordering::SeqCst) <= first_half {
            assert!(started.elapsed() < WITHIN, "the storm stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        restart_engine(&restarter);
    })
    .await
    .unwrap();
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), ORDERS * COPIES);
    assert!(
        resent.load(Ordering::SeqCst) > 0,
        "the faults were felt: some deliveries were refused or unanswered and resent"
    );

    fleet
        .orders_until("every order paid", |rows| {
            rows.len() == ORDERS && rows.iter().all(|(_, status, _)| status == "PAID")
        })
        .await;
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite:{}", fleet.orders_db().display()))
        .await
        .unwrap();
    let (paid_once, payments): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE payments_applied = 1), \
                (SELECT count(*) FROM payments)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        paid_once,
        i64::try_from(ORDERS).unwrap(),
        "each applied exactly once"
    );
    assert_eq!(payments, i64::try_from(ORDERS).unwrap());

    let queue = Queue::connect(&fleet.queue).await.unwrap();
    assert!(queue.dead_letters().await.unwrap().is_empty());
    let started = Instant::now();
    while queue.depth().await.unwrap() > 0 {
        assert!(started.elapsed() < WITHIN, "jobs left in the queue");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sqlite_queue(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("queue.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_on_sqlite_applies_each_payment_once_through_kills_and_restarts() {
    let dir = TempDir::new("queue-sqlite");
    let fleet = Arc::new(Fleet::new(
        sqlite_queue(dir.path()),
        &["--work-delay-ms", WORK_MS],
    ));
    // SQLite runs inside the shop: restarting the engine is restarting every process.
    storm(fleet, Fleet::kill_all_and_restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_on_postgresql_applies_each_payment_once_through_kills_and_restarts() {
    let postgres = Arc::new(Mutex::new(Postgres::start()));
    let url = postgres.lock().unwrap().database("queue").await;
    let fleet = Arc::new(Fleet::new(url, &["--work-delay-ms", WORK_MS]));
    let server = Arc::clone(&postgres);
    storm(fleet, move |_| server.lock().unwrap().restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_on_redis_applies_each_payment_once_through_kills_and_restarts() {
    let redis = Arc::new(Mutex::new(Redis::start_durable()));
    let url = redis.lock().unwrap().url();
    let fleet = Arc::new(Fleet::new(url, &["--work-delay-ms", WORK_MS]));
    let server = Arc::clone(&redis);
    storm(fleet, move |_| server.lock().unwrap().restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_queue_is_answered_500_and_the_resend_is_stored() {
    let mut redis = Redis::start_durable();
    let fleet = Fleet::new(redis.url(), &[]);
    fleet.create_orders().await;
    let http = fleet.pick(0).unwrap();
    redis.kill();
    let status = http
        .try_notify(
            "/wechatpay/notify",
            &delivery("TRANSACTION.SUCCESS", &payment(0)),
        )
        .await;
    assert_eq!(status, Some(StatusCode::INTERNAL_SERVER_ERROR));
    redis.restart();
    fleet
        .deliver(|| delivery("TRANSACTION.SUCCESS", &payment(0)), 0)
        .await;
    fleet
        .orders_until("the resent payment applied", |rows| {
            rows.iter().any(|(no, status, applied)| {
                no == &order_no(0) && status == "PAID" && *applied == 1
            })
        })
        .await;
}

/// A refund for an order whose payment never arrived fails every attempt: a dead letter,
/// listed and requeued with the `dead-letters` example once the payment is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_every_attempt_is_dead_lettered_listed_and_requeued() {
    let dir = TempDir::new("queue-dead");
    let url = sqlite_queue(dir.path());
    let fleet = Fleet::new(url.clone(), &["--max-attempts", "2"]);
    fleet.create_orders().await;
    let mut refund = sample_refund();
    refund["out_trade_no"] = order_no(1).into();
    refund["transaction_id"] = format!("4200{}", order_no(1)).into();
    refund["refund_id"] = "50000000382019052709732678859".into();
    refund["amount"] =
        json!({"total": total(1), "refund": 50, "payer_total": total(1), "payer_refund": 50});
    fleet
        .deliver(|| delivery("REFUND.SUCCESS", &refund), 0)
        .await;

    let list = |args: &[&str]| {
        let output = std::process::Command::new(example_support::harness::binary("dead-letters"))
            .args(["--queue", &url])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let started = Instant::now();
    let line = loop {
        let (code, out) = list(&["list"]);
        assert_eq!(code, Some(0));
        if let Some(line) = out.lines().next() {
            break line.to_owned();
        }
        assert!(started.elapsed() < WITHIN, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(line.contains("REFUND.SUCCESS"), "{line}");
    assert!(line.contains("attempts=2"), "{line}");
    assert!(line.contains("before its payment was applied"), "{line}");
    let id = line.split('\t').next().unwrap().to_owned();
    assert_eq!(list(&["requeue", "no-such-job"]).0, Some(1));

    // The payment arrives; the requeued refund then applies.
    fleet
        .deliver(|| delivery("TRANSACTION.SUCCESS", &payment(1)), 0)
        .await;
    fleet
        .orders_until("the payment applied", |rows| {
            rows.iter()
                .any(|(no, status, _)| no == &order_no(1) && status == "PAID")
        })
        .await;
    let (code, out) = list(&["requeue", &id]);
    assert_eq!(code, Some(0), "{out}");
    fleet
        .orders_until("the requeued refund applied", |rows| {
            rows.iter()
                .any(|(no, status, _)| no == &order_no(1) && status == "PARTIALLY_REFUNDED")
        })
        .await;
    assert_eq!(list(&["list"]).1, "");
}
