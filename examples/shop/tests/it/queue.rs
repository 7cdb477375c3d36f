//! Queue mode (`shop --queue URL`) as users run it: shop processes store each notification
//! in the queue, acknowledge it once the queue committed it, and apply it in their worker.
//!
//! The storm, on each engine (SQLite file, PostgreSQL, Redis with its append-only file):
//! two instances share the queue and the orders database; every payment is delivered in
//! several concurrent copies to different instances, each resent after anything but 2xx,
//! as WeChat Pay does. Mid-storm an instance is killed (SIGKILL, the moment its worker
//! starts a job: every job takes 200 ms) and replaced; then the engine itself is killed
//! while the second half arrives, and restarted once deliveries were refused for it
//! (SQLite, being in-process, by killing every instance). Asserted: every
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
use tower_wechatpay::{Handled, Retry};

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
    /// Deliveries refused (5xx) or unanswered so far.
    failed: AtomicUsize,
}

impl Fleet {
    fn new(queue: String, extra: &[&str]) -> Self {
        Self::of(INSTANCES, queue, extra)
    }

    /// [`Fleet::new`] with `instances` instances.
    fn of(instances: usize, queue: String, extra: &[&str]) -> Self {
        let fleet = Self {
            dir: TempDir::new("shop-queue"),
            queue,
            extra: extra.iter().map(|flag| (*flag).to_owned()).collect(),
            instances: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            failed: AtomicUsize::new(0),
        };
        for _ in 0..instances {
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

    /// Waits until an instance logs that its worker started a job, SIGKILLs that instance
    /// at once (the job, 200 ms long, is orphaned mid-work) and starts another.
    fn kill_a_working_instance_and_replace(&self) {
        let started = Instant::now();
        let working =
            loop {
                let working =
                    self.instances.lock().unwrap().iter().position(|instance| {
                        instance.logged(&["working on a notification"]).is_some()
                    });
                if let Some(index) = working {
                    break index;
                }
                assert!(started.elapsed() < WITHIN, "no worker started a job");
                std::thread::sleep(Duration::from_millis(2));
            };
        let killed = {
            let mut instances = self.instances.lock().unwrap();
            self.live.lock().unwrap().remove(working);
            instances.remove(working)
        };
        drop(killed); // SIGKILL
        self.add();
    }

    /// SIGKILLs every instance.
    fn kill_all(&self) {
        let killed: Vec<Running> = {
            self.live.lock().unwrap().clear();
            std::mem::take(&mut *self.instances.lock().unwrap())
        };
        drop(killed);
    }

    /// Starts instances until there are [`INSTANCES`].
    fn start_all(&self) {
        while self.instances.lock().unwrap().len() < INSTANCES {
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
            self.failed.fetch_add(1, Ordering::SeqCst);
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
/// it works on one, then the engine down while the second half arrives, and back.
async fn storm(
    fleet: Arc<Fleet>,
    stop_engine: impl FnOnce(&Fleet) + Send + 'static,
    start_engine: impl FnOnce(&Fleet) + Send + 'static,
) {
    fleet.create_orders().await;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let resent = Arc::new(AtomicUsize::new(0));
    let mut deliveries = deliver_all(&fleet, 0..ORDERS / 2, &acknowledged, &resent);
    // Kill an instance the moment its worker starts a job (each takes 200 ms): the job is
    // orphaned mid-work, and must be taken again by another worker.
    let killer = Arc::clone(&fleet);
    tokio::task::spawn_blocking(move || killer.kill_a_working_instance_and_replace())
        .await
        .unwrap();
    // The engine goes down; the second half arrives; once deliveries were refused for it,
    // the engine comes back.
    let stopper = Arc::clone(&fleet);
    tokio::task::spawn_blocking(move || stop_engine(&stopper))
        .await
        .unwrap();
    let failed_before = fleet.failed.load(Ordering::SeqCst);
    deliveries.extend(deliver_all(
        &fleet,
        ORDERS / 2..ORDERS,
        &acknowledged,
        &resent,
    ));
    let started = Instant::now();
    while fleet.failed.load(Ordering::SeqCst) < failed_before + COPIES {
        assert!(started.elapsed() < WITHIN, "no delivery met the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let starter = Arc::clone(&fleet);
    tokio::task::spawn_blocking(move || start_engine(&starter))
        .await
        .unwrap();
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), ORDERS * COPIES);
    assert!(
        resent.load(Ordering::SeqCst) >= COPIES,
        "the outage was felt"
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
    storm(fleet, Fleet::kill_all, Fleet::start_all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_on_postgresql_applies_each_payment_once_through_kills_and_restarts() {
    let postgres = Postgres::start();
    let url = postgres.database("queue").await;
    let postgres = Arc::new(Mutex::new(postgres));
    let fleet = Arc::new(Fleet::new(url, &["--work-delay-ms", WORK_MS]));
    let (crash, restart) = (Arc::clone(&postgres), Arc::clone(&postgres));
    storm(
        fleet,
        move |_| crash.lock().unwrap().crash(),
        move |_| restart.lock().unwrap().restart(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_on_redis_applies_each_payment_once_through_kills_and_restarts() {
    let redis = Arc::new(Mutex::new(Redis::start_durable()));
    let url = redis.lock().unwrap().url();
    let fleet = Arc::new(Fleet::new(url, &["--work-delay-ms", WORK_MS]));
    let (kill, restart) = (Arc::clone(&redis), Arc::clone(&redis));
    storm(
        fleet,
        move |_| kill.lock().unwrap().kill(),
        move |_| restart.lock().unwrap().restart(),
    )
    .await;
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

// The library's queue in-process, on a SQLite file: what the worker does with one job.

/// A queue on a fresh SQLite file, the layer of the test signer, and the verified
/// notifications the layer makes of `resources`.
async fn in_process(tag: &str) -> (TempDir, Queue, tower_wechatpay::WechatPayLayer) {
    let dir = TempDir::new(tag);
    let queue = Queue::connect(&sqlite_queue(dir.path())).await.unwrap();
    let layer = TestSigner::public_key_mode().layer().unwrap();
    (dir, queue, layer)
}

/// Verifies a fresh delivery of `resource` and stores it, as the enqueuer does.
async fn enqueue(queue: &Queue, layer: &tower_wechatpay::WechatPayLayer, resource: &Value) {
    let signed = delivery("TRANSACTION.SUCCESS", resource);
    let notification = layer.verify(&signed.headers, &signed.body).unwrap();
    queue.enqueue(&notification, &signed.body).await.unwrap();
}

/// Runs `worker` until `done` holds (checked every 20 ms), then stops it.
async fn run_worker_until(worker: tower_wechatpay::queue::Worker, done: impl Fn() -> bool) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WITHIN, "the worker never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn copies_of_one_notification_are_stored_as_one_job() {
    let (_dir, queue, layer) = in_process("queue-copies").await;
    for _ in 0..5 {
        // Each copy is signed anew and has its own envelope id: the event key is the same.
        enqueue(&queue, &layer, &payment(7)).await;
    }
    enqueue(&queue, &layer, &payment(8)).await;
    assert_eq!(queue.depth().await.unwrap(), 2);
}

#[tokio::test]
async fn the_stored_job_keeps_the_payer_data_encrypted() {
    let (dir, queue, layer) = in_process("queue-at-rest").await;
    enqueue(&queue, &layer, &payment(1)).await;
    let db = SqlitePoolOptions::new()
        .connect(&format!("sqlite:{}", dir.path().join("queue.db").display()))
        .await
        .unwrap();
    let jobs: Vec<Vec<u8>> = sqlx::query_scalar("SELECT job FROM Jobs")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let job = String::from_utf8_lossy(&jobs[0]);
    assert!(job.contains("TRANSACTION.SUCCESS"), "{job}");
    assert!(
        job.contains("ciphertext"),
        "the envelope as received: {job}"
    );
    assert!(!job.contains("oTestOpenid"), "no payer id in clear: {job}");
    assert!(
        !job.contains("out_trade_no"),
        "no resource field in clear: {job}"
    );
    assert!(!job.contains("payer"), "no resource field in clear: {job}");
}

#[tokio::test]
async fn a_panicking_handler_is_retried_after_a_backoff_and_then_succeeds() {
    let (_dir, queue, layer) = in_process("queue-panic").await;
    enqueue(&queue, &layer, &payment(2)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let worker = queue
        .worker(&layer, move |notification| {
            let calls = Arc::clone(&seen);
            async move {
                assert_eq!(notification.event_type(), "TRANSACTION.SUCCESS");
                let Some(tower_wechatpay::Event::Payment(payment)) = Some(notification.event())
                else {
                    return Err(Retry::new("not a payment"));
                };
                assert_eq!(payment.out_trade_no, order_no(2), "decrypted again");
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("the first attempt panics");
                }
                Ok(Handled::Done)
            }
        })
        .backoff(Duration::from_millis(10), Duration::from_millis(20));
    let done = Arc::clone(&calls);
    let probe = queue.clone();
    run_worker_until(worker, move || done.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(probe.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_failing_its_last_attempt_raises_a_dead_letter_alert() {
    use tower_wechatpay::alert::{Alert, Alerts};
    let (_dir, queue, layer) = in_process("queue-alert").await;
    let raised = Arc::new(Mutex::new(Vec::<Alert>::new()));
    let sink = Arc::clone(&raised);
    let queue = queue.max_attempts(2).alerts(Alerts::new(move |alert| {
        sink.lock().unwrap().push(alert.clone())
    }));
    enqueue(&queue, &layer, &payment(3)).await;
    let worker = queue
        .worker(&layer, |_| async {
            Err::<Handled, _>(Retry::new("the ERP is down"))
        })
        .backoff(Duration::from_millis(10), Duration::from_millis(20));
    let alerts = Arc::clone(&raised);
    run_worker_until(worker, move || !alerts.lock().unwrap().is_empty()).await;
    let raised = raised.lock().unwrap().clone();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let Alert::DeadLettered {
        key,
        event_type,
        attempts,
        error,
    } = &raised[0]
    else {
        panic!("{raised:?}");
    };
    assert_eq!(event_type, "TRANSACTION.SUCCESS");
    assert!(key.contains(&format!("4200{}", order_no(3))), "{key}");
    assert_eq!(*attempts, 2);
    assert!(error.contains("the ERP is down"), "{error}");
    let letters = queue.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(&letters[0].key, key);
    assert_eq!(letters[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_to_a_dead_engine_fails_and_raises_queue_unreachable() {
    use tower_wechatpay::alert::{Alert, AlertKind, Alerts};
    let mut redis = Redis::start_durable();
    let layer = TestSigner::public_key_mode().layer().unwrap();
    let raised = Arc::new(Mutex::new(Vec::<Alert>::new()));
    let sink = Arc::clone(&raised);
    let queue = Queue::connect(&redis.url())
        .await
        .unwrap()
        .alerts(Alerts::new(move |alert| {
            sink.lock().unwrap().push(alert.clone())
        }));
    redis.kill();
    let signed = delivery("TRANSACTION.SUCCESS", &payment(4));
    let notification = layer.verify(&signed.headers, &signed.body).unwrap();
    assert!(queue.enqueue(&notification, &signed.body).await.is_err());
    let raised = raised.lock().unwrap().clone();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind(), AlertKind::QueueUnreachable);
}

/// A job that runs again after its effect (its worker died before the engine recorded it
/// done, or a second queue got a copy): the guard skips the handler.
#[tokio::test]
async fn the_dedupe_guard_runs_the_handler_once_when_an_event_runs_again() {
    use tower_wechatpay::dedupe::{Dedupe, InMemoryStore};
    let (_first_dir, first, layer) = in_process("queue-guard-1").await;
    let (_second_dir, second, _) = in_process("queue-guard-2").await;
    let guard = Dedupe::new(InMemoryStore::new());
    enqueue(&first, &layer, &payment(5)).await;
    enqueue(&second, &layer, &payment(5)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = Arc::clone(&calls);
        move |_| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Retry>(Handled::Done)
            }
        }
    };
    for queue in [&first, &second] {
        let worker = queue.worker(&layer, handler.clone()).dedupe(guard.clone());
        let probe = queue.clone();
        let drained = Arc::new(AtomicUsize::new(0));
        let watch = Arc::clone(&drained);
        let checker = tokio::spawn(async move {
            while probe.depth().await.unwrap() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            watch.store(1, Ordering::SeqCst);
        });
        run_worker_until(worker, move || drained.load(Ordering::SeqCst) == 1).await;
        checker.await.unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second run was a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_metrics_count_the_enqueue_and_the_job() {
    let dir = TempDir::new("queue-metrics");
    let metrics = format!("127.0.0.1:{}", example_support::harness::free_port());
    // One instance: the metrics address is its own.
    let fleet = Fleet::of(
        1,
        sqlite_queue(dir.path()),
        &["--metrics-listen", metrics.as_str()],
    );
    fleet.create_orders().await;
    fleet
        .deliver(|| delivery("TRANSACTION.SUCCESS", &payment(0)), 0)
        .await;
    fleet
        .orders_until("the payment applied", |rows| {
            rows.iter()
                .any(|(no, status, _)| no == &order_no(0) && status == "PAID")
        })
        .await;
    // The job's count is recorded just after its transaction commits: scrape until it is.
    let expected = [
        "wechatpay_queue_jobs_total{outcome=\"enqueued\"} 1",
        "wechatpay_queue_jobs_total{outcome=\"done\"} 1",
        "wechatpay_notifications_total{outcome=\"acknowledged\",reason=\"none\",event_type=\"TRANSACTION.SUCCESS\",version=\"3\"} 1",
        "# TYPE wechatpay_queue_depth gauge",
    ];
    let started = Instant::now();
    loop {
        let (status, body) = Http::new(&metrics)
            .send(
                http::Request::get("/metrics")
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|line| !text.lines().any(|have| have == *line))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(started.elapsed() < WITHIN, "no {missing:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
