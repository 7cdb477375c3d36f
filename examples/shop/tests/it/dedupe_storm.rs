//! The multi-instance storm: three servers built on the layer share one Redis and one
//! database. Hundreds of notifications are each delivered several times, concurrently, to
//! random instances; a share of handler attempts fail on purpose and are redelivered the way
//! WeChat Pay would. Then Redis is killed mid-storm and restarted.
//!
//! Asserted: every business effect applied exactly once, none left unapplied, the handler
//! never ran twice at the same time for one key, never ran while Redis was down, and (while
//! Redis is up) never ran again after it succeeded.
//!
//! Nothing here waits on the clock. A redelivery waits for what would make it succeed: a
//! copy refused as "in progress" for the holder of the claim to be answered, a copy refused
//! because Redis is down for Redis to be back; other refusals are redelivered at once. The
//! outage starts after 200 acknowledgements and ends once copies were refused for it and no
//! handler run is left in flight, whatever the machine's speed. Redis gets budgets no loaded
//! machine reaches (`harness::PATIENT`; store timeout `harness::STORE_TIMEOUT`, as long as
//! the answer deadline allows), so only the outage fails store operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use example_support::harness::{Http, PATIENT, Redis, TempDir, now};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::Full;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Executor, SqlitePool};
use tokio::sync::watch;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment};
use tower_wechatpay::{Handled, Notified, Retry};

const INSTANCES: usize = 3;
const COPIES: usize = 5;
/// Deliveries of one copy before giving up: a redelivery waits for its condition, so a
/// handful is the norm; this bound only turns a bug (an endless refusal) into a failure.
const TRIES: usize = 50;

/// What every handler run did, per key, across all instances.
#[derive(Default)]
struct Stats {
    running: usize,
    max_running: usize,
    attempts: usize,
    successes: usize,
}

/// What the deliveries and the outage wait on, instead of sleeping.
struct Signals {
    /// Per key: bumped when a copy of the key is answered with anything but "in progress",
    /// that is after the layer settled a claim or held none. A copy refused as in progress
    /// waits for it: the holder's answer.
    settled: HashMap<String, watch::Sender<u64>>,
    /// Whether Redis is up.
    redis_up: watch::Sender<bool>,
    /// Bumped on every answer: the outage re-checks on it.
    tick: watch::Sender<u64>,
    /// Set from the kill until the restart begins: a copy sent meanwhile (epoch 1) cannot
    /// get a claim, so a run for one is unguarded.
    dead: AtomicBool,
    unguarded: AtomicUsize,
    /// 0 until Redis was killed, then 1; and the copies in flight that were sent in each.
    /// A copy sent before the kill may hold a claim Redis granted; one sent after cannot.
    epoch: AtomicUsize,
    in_flight: [AtomicUsize; 2],
    acknowledged: AtomicUsize,
    retried: AtomicUsize,
    /// Copies refused because the store was unavailable while Redis was down.
    refused_while_down: AtomicUsize,
    storm_done: AtomicBool,
}

impl Signals {
    fn new<'a>(keys: impl Iterator<Item = &'a String>) -> Self {
        Self {
            settled: keys.map(|key| (key.clone(), watch::channel(0).0)).collect(),
            redis_up: watch::channel(true).0,
            tick: watch::channel(0).0,
            dead: AtomicBool::new(false),
            unguarded: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            in_flight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            acknowledged: AtomicUsize::new(0),
            retried: AtomicUsize::new(0),
            refused_while_down: AtomicUsize::new(0),
            storm_done: AtomicBool::new(false),
        }
    }

    fn tick(&self) {
        self.tick.send_modify(|n| *n += 1);
    }

    /// Returns once `condition` holds; re-checked on every tick. The bound only turns a
    /// bug (a condition that never comes) into a failure instead of a hang.
    async fn until(&self, condition: impl Fn(&Self) -> bool) {
        let mut ticks = self.tick.subscribe();
        while !condition(self) {
            tokio::time::timeout(PATIENT, ticks.changed())
                .await
                .expect("the storm makes progress")
                .unwrap();
        }
    }
}

#[derive(Clone)]
struct World {
    db: SqlitePool,
    stats: Arc<Mutex<HashMap<String, Stats>>>,
    signals: Arc<Signals>,
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
    headers: http::HeaderMap,
    Notified(payment): Notified<Transaction>,
) -> Result<Handled, Retry> {
    let key = payment.transaction_id.clone();
    if headers.get(EPOCH).is_some_and(|epoch| epoch == "1")
        && world.signals.dead.load(Ordering::SeqCst)
    {
        world.signals.unguarded.fetch_add(1, Ordering::SeqCst);
    }
    let attempt = {
        let mut stats = world.stats.lock().unwrap();
        let entry = stats.entry(key.clone()).or_default();
        entry.running += 1;
        entry.max_running = entry.max_running.max(entry.running);
        entry.attempts += 1;
        entry.attempts
    };
    let _running = Running(world.clone(), key.clone());
    // Let every other task in: concurrent copies would overlap here if the guard let them.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
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
                // A write that waits longer fails the run, which is redelivered.
                .busy_timeout(Duration::from_secs(2))
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
        )
        .await
        .unwrap()
}

/// One instance: its own layer, Redis connection and database pool; shared stats.
async fn instance(redis: &Redis, db_path: &std::path::Path, world: &World) -> Http {
    let layer = TestSigner::public_key_mode()
        .layer()
        .unwrap()
        .dedupe(redis.dedupe("storm:").await)
        .unwrap();
    let world = World {
        db: database(db_path).await,
        ..world.clone()
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

/// Why a copy was refused, from the FAIL body's message.
#[derive(Debug, PartialEq)]
enum Refusal {
    InProgress,
    StoreUnavailable,
    Other(String),
}

/// The header that tells the handler in which epoch its copy was sent.
const EPOCH: &str = "x-storm-epoch";

async fn send(
    instance: &Http,
    signed: &SignedNotification,
    epoch: usize,
) -> (StatusCode, Option<Refusal>) {
    let mut request = Request::post("/notify").header(EPOCH, epoch.to_string());
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let (status, body) = instance
        .send(request.body(Full::new(signed.body.clone())).unwrap())
        .await;
    if status.is_success() {
        return (status, None);
    }
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let refusal = match value["message"].as_str().unwrap() {
        "notification is being processed" => Refusal::InProgress,
        "dedupe store unavailable" => Refusal::StoreUnavailable,
        other => Refusal::Other(other.to_owned()),
    };
    (status, Some(refusal))
}

/// Delivers one copy like WeChat Pay: on anything but 2xx, again, each time to a random
/// instance, once what refused it has changed.
async fn deliver(
    instances: &[Http],
    key: &str,
    signed: SignedNotification,
    mut pick: usize,
    signals: &Signals,
) {
    let settled = &signals.settled[key];
    let mut settled_seen = settled.subscribe();
    let mut redis_up = signals.redis_up.subscribe();
    for _ in 0..TRIES {
        let before = *settled_seen.borrow_and_update();
        let epoch = signals.epoch.load(Ordering::SeqCst);
        signals.in_flight[epoch].fetch_add(1, Ordering::SeqCst);
        let (status, refusal) = send(&instances[pick % instances.len()], &signed, epoch).await;
        signals.in_flight[epoch].fetch_sub(1, Ordering::SeqCst);
        if refusal != Some(Refusal::InProgress) {
            settled.send_modify(|n| *n += 1);
        }
        if status.is_success() {
            signals.acknowledged.fetch_add(1, Ordering::SeqCst);
            signals.tick();
            return;
        }
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "only 2xx or a retry"
        );
        signals.retried.fetch_add(1, Ordering::SeqCst);
        if refusal == Some(Refusal::StoreUnavailable) && !*signals.redis_up.borrow() {
            signals.refused_while_down.fetch_add(1, Ordering::SeqCst);
        }
        signals.tick();
        pick = pick.wrapping_mul(31).wrapping_add(7);
        match refusal {
            // Another copy holds the claim: again once some copy of this key was answered
            // otherwise since this one was sent (the holder, after settling its claim).
            Some(Refusal::InProgress) => {
                let settled = settled_seen.wait_for(|n| *n > before);
                tokio::time::timeout(PATIENT, settled)
                    .await
                    .expect("the holder of the claim is answered")
                    .unwrap();
            }
            // Again once Redis is up (at once if it is: the first copies after a restart
            // meet the connection manager's failed reconnect, and start a new one).
            Some(Refusal::StoreUnavailable) => {
                tokio::time::timeout(PATIENT, redis_up.wait_for(|up| *up))
                    .await
                    .expect("Redis comes back")
                    .unwrap();
            }
            // The handler failed (on purpose, or the database was busy): again at once.
            _ => {}
        }
    }
    panic!("{key}: a copy was refused {TRIES} times");
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
    signals: &Signals,
    rng: &mut XorShift,
) {
    let picks: Vec<Vec<usize>> = notifications
        .iter()
        .map(|_| (0..COPIES).map(|_| rng.next()).collect())
        .collect();
    futures_util::stream::iter(notifications.iter().zip(picks))
        .for_each_concurrent(16, |((key, signed), picks)| async move {
            futures_util::future::join_all(
                picks
                    .into_iter()
                    .map(|pick| deliver(instances, key, signed.clone(), pick, signals)),
            )
            .await;
        })
        .await;
    signals.storm_done.store(true, Ordering::SeqCst);
    signals.tick();
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
    let first = notifications("T1", 500);
    let second = notifications("T2", 200);
    let world = World {
        db: db.clone(),
        stats: Arc::default(),
        signals: Arc::new(Signals::new(
            first.iter().chain(&second).map(|(key, _)| key),
        )),
    };
    let signals = Arc::clone(&world.signals);
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(instance(&redis, &db_path, &world).await);
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    // Phase 1: 500 notifications × 5 copies, Redis up.
    seed(&db, first.iter().map(|(key, _)| key)).await;
    let started = Instant::now();
    storm(&instances, &first, &signals, &mut rng).await;
    eprintln!(
        "phase 1: {} deliveries acknowledged, {} retried, in {:?}",
        signals.acknowledged.load(Ordering::SeqCst),
        signals.retried.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert_eq!(signals.acknowledged.load(Ordering::SeqCst), 500 * COPIES);
    let effects = applied(&db).await;
    {
        let stats = world.stats.lock().unwrap();
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
    seed(&db, second.iter().map(|(key, _)| key)).await;
    signals.acknowledged.store(0, Ordering::SeqCst);
    signals.retried.store(0, Ordering::SeqCst);
    signals.storm_done.store(false, Ordering::SeqCst);
    let outage = async {
        // Let the storm get going, then cut Redis.
        signals
            .until(|s| s.acknowledged.load(Ordering::SeqCst) >= 200)
            .await;
        signals.redis_up.send_replace(false);
        redis.kill();
        signals.dead.store(true, Ordering::SeqCst);
        signals.epoch.store(1, Ordering::SeqCst);
        // Down until every copy sent before the kill was answered, so that the runs of the
        // claims Redis granted before dying are over (a run still going when Redis returns
        // empty could overlap a new claim's run), and copies were refused for the outage.
        // Or until the storm is over, which would be a bug.
        signals
            .until(|s| {
                (s.in_flight[0].load(Ordering::SeqCst) == 0
                    && s.refused_while_down.load(Ordering::SeqCst) > 0)
                    || s.storm_done.load(Ordering::SeqCst)
            })
            .await;
        signals.dead.store(false, Ordering::SeqCst);
        redis.restart();
        signals.redis_up.send_replace(true);
    };
    let ((), ()) = tokio::join!(storm(&instances, &second, &signals, &mut rng), outage);
    let refused_while_down = signals.refused_while_down.load(Ordering::SeqCst);
    eprintln!(
        "phase 2: {} acknowledged, {} retried ({} refused while Redis was down)",
        signals.acknowledged.load(Ordering::SeqCst),
        signals.retried.load(Ordering::SeqCst),
        refused_while_down
    );
    assert!(
        refused_while_down > 0,
        "Redis down means 500s, not acknowledgements"
    );
    assert_eq!(
        signals.unguarded.load(Ordering::SeqCst),
        0,
        "no handler ran for a copy sent while Redis was dead"
    );
    assert_eq!(signals.acknowledged.load(Ordering::SeqCst), 200 * COPIES);
    let effects = applied(&db).await;
    let stats = world.stats.lock().unwrap();
    for (key, _) in &second {
        // Redis came back empty, so a key may have run again after success; the
        // database transaction keeps the effect exactly once, and nothing is lost.
        assert_eq!(effects[key], 1, "{key}: effect applied exactly once");
        assert!(stats[key].successes >= 1, "{key}: processed");
        // Redis returned only after the last run holding a lost claim ended.
        assert_eq!(stats[key].max_running, 1, "{key}: never two runs at once");
    }
}
