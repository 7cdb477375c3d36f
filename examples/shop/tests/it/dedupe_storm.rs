//! The multi-instance storm: three servers built on the layer share one Redis and one
//! database. Hundreds of notifications are each delivered several times, concurrently, to
//! random instances; a share of handler attempts fail on purpose and are redelivered the way
//! WeChat Pay would. Then Redis is killed mid-storm and restarted.
//!
//! Asserted: every business effect applied exactly once, none left unapplied, the handler
//! never ran twice at the same time for one key, and (while Redis is up) never ran again
//! after it succeeded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use example_support::harness::{Http, Redis, TempDir, now};
use futures_util::StreamExt;
use http::StatusCode;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Executor, SqlitePool};
use tower_wechatpay::dedupe::RedisStore;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment};
use tower_wechatpay::{Handled, Notified, Retry};

const INSTANCES: usize = 3;
const COPIES: usize = 5;

/// What every handler run did, per key, across all instances.
#[derive(Default)]
struct Stats {
    running: usize,
    max_running: usize,
    attempts: usize,
    successes: usize,
}

#[derive(Clone)]
struct World {
    db: SqlitePool,
    stats: Arc<Mutex<HashMap<String, Stats>>>,
}

/// Leaves the "running" count when the run ends, however it ends.
struct Running(World, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .stats
            .lock()
            .unwrap()
            .get_mut(&self.1)
            .unwrap()
            .running -= 1;
    }
}

/// The handler: the shop's exactly-once write, plus bookkeeping, plus failures on purpose.
async fn handler(
    State(world): State<World>,
    Notified(payment): Notified<Transaction>,
) -> Result<Handled, Retry> {
    let key = payment.transaction_id.clone();
    let attempt = {
        let mut stats = world.stats.lock().unwrap();
        let entry = stats.entry(key.clone()).or_default();
        entry.running += 1;
        entry.max_running = entry.max_running.max(entry.running);
        entry.attempts += 1;
        entry.attempts
    };
    let _running = Running(world.clone(), key.clone());
    // Some work, so that concurrent copies would overlap if the guard let them.
    tokio::time::sleep(Duration::from_millis(2)).await;
    // One key in five fails its first attempt: a transient system failure.
    if fails_first_attempt(&key) && attempt == 1 {
        return Err(Retry::new("injected failure"));
    }
    sqlx::query("UPDATE effects SET applied = applied + 1 WHERE key = ? AND applied = 0")
        .bind(&key)
        .execute(&world.db)
        .await?;
    world.stats.lock().unwrap().get_mut(&key).unwrap().successes += 1;
    Ok(Handled::Done)
}

fn fails_first_attempt(key: &str) -> bool {
    key.bytes().map(usize::from).sum::<usize>() % 5 == 0
}

async fn database(path: &std::path::Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(2))
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
        )
        .await
        .unwrap()
}

/// One instance: its own layer, Redis connection and database pool; shared stats.
async fn instance(
    redis_url: &str,
    db_path: &std::path::Path,
    stats: &Arc<Mutex<HashMap<String, Stats>>>,
) -> Http {
    let layer = TestSigner::public_key_mode()
        .layer()
        .unwrap()
        .dedupe(RedisStore::connect(redis_url).await.unwrap())
        .unwrap();
    let world = World {
        db: database(db_path).await,
        stats: Arc::clone(stats),
    };
    let app = Router::new()
        .route("/notify", post(handler))
        .layer(layer)
        .with_state(world);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Http::new(&addr.to_string())
}

/// A tiny deterministic generator for "random" instances.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % 1_000_003).unwrap()
    }
}

/// Counts of what the deliveries got.
#[derive(Default)]
struct Answers {
    acknowledged: AtomicUsize,
    retried: AtomicUsize,
}

/// Delivers one copy like WeChat Pay: on anything but 2xx, again (here after 20 ms, not
/// 15 s), a bounded number of times, each time to a random instance.
async fn deliver(
    instances: &[Http],
    signed: SignedNotification,
    mut pick: usize,
    answers: &Answers,
) {
    for _ in 0..400 {
        let status = instances[pick % instances.len()]
            .notify("/notify", signed.clone())
            .await;
        if status.is_success() {
            answers.acknowledged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "only 2xx or a retry"
        );
        answers.retried.fetch_add(1, Ordering::Relaxed);
        pick = pick.wrapping_mul(31).wrapping_add(7);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a notification was never acknowledged");
}

fn notifications(prefix: &str, count: usize) -> Vec<(String, SignedNotification)> {
    let signer = TestSigner::public_key_mode();
    (0..count)
        .map(|i| {
            let key = format!("{prefix}{i:06}");
            let mut resource = sample_payment();
            resource["transaction_id"] = key.clone().into();
            resource["out_trade_no"] = format!("order-{key}").into();
            let signed = signer
                .notification("TRANSACTION.SUCCESS", &resource)
                .timestamp(now())
                .build()
                .unwrap();
            (key, signed)
        })
        .collect()
}

async fn seed(db: &SqlitePool, keys: impl Iterator<Item = &String>) {
    for key in keys {
        sqlx::query("INSERT INTO effects (key, applied) VALUES (?, 0)")
            .bind(key)
            .execute(db)
            .await
            .unwrap();
    }
}

/// Every copy of every notification, bursts of copies at once, many notifications at once.
async fn storm(
    instances: &[Http],
    notifications: &[(String, SignedNotification)],
    answers: &Answers,
    rng: &mut XorShift,
) {
    let picks: Vec<Vec<usize>> = notifications
        .iter()
        .map(|_| (0..COPIES).map(|_| rng.next()).collect())
        .collect();
    futures_util::stream::iter(notifications.iter().zip(picks))
        .for_each_concurrent(16, |((_, signed), picks)| async move {
            futures_util::future::join_all(
                picks
                    .into_iter()
                    .map(|pick| deliver(instances, signed.clone(), pick, answers)),
            )
            .await;
        })
        .await;
}

async fn applied(db: &SqlitePool) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT key, applied FROM effects")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_redis_one_database_exactly_once() {
    let mut redis = Redis::start();
    let dir = TempDir::new("storm");
    let db_path = dir.path().join("effects.db");
    let db = database(&db_path).await;
    db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, applied INTEGER NOT NULL)")
        .await
        .unwrap();
    let stats: Arc<Mutex<HashMap<String, Stats>>> = Arc::default();
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(instance(&redis.url(), &db_path, &stats).await);
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    // Phase 1: 500 notifications × 5 copies, Redis up.
    let first = notifications("T1", 500);
    seed(&db, first.iter().map(|(key, _)| key)).await;
    let answers = Answers::default();
    let started = Instant::now();
    storm(&instances, &first, &answers, &mut rng).await;
    eprintln!(
        "phase 1: {} deliveries acknowledged, {} retried, in {:?}",
        answers.acknowledged.load(Ordering::Relaxed),
        answers.retried.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert_eq!(answers.acknowledged.load(Ordering::Relaxed), 500 * COPIES);
    let effects = applied(&db).await;
    {
        let stats = stats.lock().unwrap();
        let mut failing = 0;
        for (key, _) in &first {
            assert_eq!(effects[key], 1, "{key}: effect applied exactly once");
            let entry = &stats[key];
            assert_eq!(entry.max_running, 1, "{key}: never two runs at once");
            assert_eq!(entry.successes, 1, "{key}: never run again after success");
            if fails_first_attempt(key) {
                failing += 1;
                assert!(entry.attempts >= 2, "{key}: the failed attempt was retried");
            }
        }
        assert!(failing > 50, "a real share of attempts failed ({failing})");
    }

    // Phase 2: 200 more; Redis dies mid-storm and comes back empty.
    let second = notifications("T2", 200);
    seed(&db, second.iter().map(|(key, _)| key)).await;
    let answers = Arc::new(Answers::default());
    let outage = async {
        // Let the storm get going, then cut Redis for a while.
        while answers.acknowledged.load(Ordering::Relaxed) < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let retried_before = answers.retried.load(Ordering::Relaxed);
        redis.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let retried_during = answers.retried.load(Ordering::Relaxed) - retried_before;
        redis.restart();
        retried_during
    };
    let (_, retried_during_outage) =
        tokio::join!(storm(&instances, &second, &answers, &mut rng), outage);
    eprintln!(
        "phase 2: {} acknowledged, {} retried ({} while Redis was down)",
        answers.acknowledged.load(Ordering::Relaxed),
        answers.retried.load(Ordering::Relaxed),
        retried_during_outage
    );
    assert!(
        retried_during_outage > 0,
        "Redis down means 500s, not acknowledgements"
    );
    assert_eq!(answers.acknowledged.load(Ordering::Relaxed), 200 * COPIES);
    let effects = applied(&db).await;
    let stats = stats.lock().unwrap();
    for (key, _) in &second {
        // Redis came back empty, so a key may have run again after success; the
        // database transaction keeps the effect exactly once, and nothing is lost.
        assert_eq!(effects[key], 1, "{key}: effect applied exactly once");
        assert!(stats[key].successes >= 1, "{key}: processed");
        // In-flight runs end long before Redis returns (700 ms), so no overlap either.
        assert_eq!(stats[key].max_running, 1, "{key}: never two runs at once");
    }
}
