//! The dedupe guard through the layer: claim, done, release on every kind of failure,
//! concurrent copies, store failures; against the in-memory store and a real Redis (the
//! latter with the `redis` feature, which `bash .ci/test` enables).
//!
//! Time: the tests without Redis run on a paused clock, so deadlines, store timeouts and
//! leases are exact and cost nothing, however busy the machine. The Redis tests need real
//! time (a paused clock would jump past every timeout while Redis answers over a socket),
//! so their store timeout is as long as the answer deadline allows and nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::StatusCode;
#[cfg(feature = "redis")]
use support::redis::Redis;
use support::{NOW, axum_request, test_layer};
use tokio::sync::Notify;
use tower::ServiceExt;
#[cfg(feature = "redis")]
use tower_wechatpay::dedupe::RedisStore;
use tower_wechatpay::dedupe::{
    Claim, Dedupe, DedupeStore, InMemoryStore, StoreError, StoreFuture, default_key,
};
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};
use tower_wechatpay::{
    Handled, Notification, Notified, Rejection, RejectionKind, Retry, WechatPayLayer,
};

async fn send(app: &Router, request: http::Request<Body>) -> (StatusCode, Option<RejectionKind>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let kind = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::kind);
    (response.status(), kind)
}

/// Delivers a fresh copy of the sample payment to `app`.
async fn deliver(app: &Router) -> (StatusCode, Option<RejectionKind>) {
    send(app, axum_request("TRANSACTION.SUCCESS", &sample_payment())).await
}

/// A handler that counts its runs and answers what `outcome` says for each run number.
fn counting(
    layer: WechatPayLayer,
    runs: Arc<AtomicUsize>,
    outcome: fn(usize) -> Result<Handled, Retry>,
) -> Router {
    Router::new()
        .route(
            "/notify",
            post(move |Notified(_): Notified<Notification>| {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                async move { outcome(run) }
            }),
        )
        .layer(layer)
}

fn done(_: usize) -> Result<Handled, Retry> {
    Ok(Handled::Done)
}

async fn after_success_copies_are_acknowledged_without_running(layer: WechatPayLayer) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(layer, runs.clone(), done);
    for _ in 0..5 {
        assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_failed_run_releases_the_claim_for_the_retry(layer: WechatPayLayer) {
    let runs = Arc::new(AtomicUsize::new(0));
    // The first two runs fail (database down), the third succeeds.
    let app = counting(layer, runs.clone(), |run| {
        if run < 2 {
            Err(Retry::new("database down"))
        } else {
            Ok(Handled::Done)
        }
    });
    assert_eq!(deliver(&app).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(deliver(&app).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

async fn a_copy_during_a_run_gets_500_and_the_retry_finds_it_done(layer: WechatPayLayer) {
    let runs = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(Notify::new());
    let proceed = Arc::new(Notify::new());
    let app = {
        let (runs, entered, proceed) = (runs.clone(), entered.clone(), proceed.clone());
        Router::new()
            .route(
                "/notify",
                post(move || {
                    let (runs, entered, proceed) = (runs.clone(), entered.clone(), proceed.clone());
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        entered.notify_one();
                        proceed.notified().await;
                        Ok::<_, Retry>(Handled::Done)
                    }
                }),
            )
            .layer(layer)
    };
    let mut first = tokio::spawn({
        let app = app.clone();
        async move { deliver(&app).await }
    });
    // A layer that answers without running the handler fails here instead of hanging.
    tokio::select! {
        () = entered.notified() => {}
        answer = &mut first => panic!("answered {answer:?} without running the handler"),
    }
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::InProgress)
        )
    );
    proceed.notify_one();
    assert_eq!(first.await.unwrap().0, StatusCode::NO_CONTENT);
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn in_memory_after_success_copies_are_acknowledged_without_running() {
    after_success_copies_are_acknowledged_without_running(
        test_layer().dedupe(InMemoryStore::new()).unwrap(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn in_memory_a_failed_run_releases_the_claim_for_the_retry() {
    a_failed_run_releases_the_claim_for_the_retry(
        test_layer().dedupe(InMemoryStore::new()).unwrap(),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn in_memory_a_copy_during_a_run_gets_500_and_the_retry_finds_it_done() {
    a_copy_during_a_run_gets_500_and_the_retry_finds_it_done(
        test_layer().dedupe(InMemoryStore::new()).unwrap(),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_guard_behaves_the_same() {
    let redis = Redis::start();
    for (i, scenario) in [0, 1, 2].into_iter().enumerate() {
        let guard = redis.dedupe(&format!("scenario{i}:")).await;
        // On real time the first copy's handler must outlast the second copy's whole round
        // trip: no deadline a starved machine could reach.
        let layer = test_layer()
            .answer_deadline(Duration::from_secs(5))
            .unwrap()
            .dedupe(guard)
            .unwrap();
        match scenario {
            0 => after_success_copies_are_acknowledged_without_running(layer).await,
            1 => a_failed_run_releases_the_claim_for_the_retry(layer).await,
            _ => a_copy_during_a_run_gets_500_and_the_retry_finds_it_done(layer).await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_releases_the_claim() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer().dedupe(InMemoryStore::new()).unwrap(),
        runs.clone(),
        |run| {
            if run == 0 {
                panic!("bug on the first run");
            }
            Ok(Handled::Done)
        },
    );
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::HandlerPanicked)
        )
    );
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_run_past_the_deadline_releases_the_claim() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/notify",
                post(move || {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if run == 0 {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Ok::<_, Retry>(Handled::Done)
                    }
                }),
            )
            .layer(test_layer().dedupe(InMemoryStore::new()).unwrap())
    };
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::HandlerTimeout)
        )
    );
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_business_rejection_counts_as_done() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer().dedupe(InMemoryStore::new()).unwrap(),
        runs.clone(),
        |_| Ok(Handled::declined("unknown order")),
    );
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A store that is down.
struct Down;

impl DedupeStore for Down {
    fn claim(&self, _: String, _: String, _: Duration) -> StoreFuture<Claim> {
        Box::pin(async { Err(StoreError::new("connection refused")) })
    }
    fn complete(&self, _: String, _: String, _: Duration) -> StoreFuture<()> {
        Box::pin(async { Err(StoreError::new("connection refused")) })
    }
    fn release(&self, _: String, _: String) -> StoreFuture<()> {
        Box::pin(async { Err(StoreError::new("connection refused")) })
    }
}

/// A store that never answers.
struct Hung;

impl DedupeStore for Hung {
    fn claim(&self, _: String, _: String, _: Duration) -> StoreFuture<Claim> {
        Box::pin(std::future::pending())
    }
    fn complete(&self, _: String, _: String, _: Duration) -> StoreFuture<()> {
        Box::pin(std::future::pending())
    }
    fn release(&self, _: String, _: String) -> StoreFuture<()> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_is_a_500_and_the_handler_does_not_run() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(test_layer().dedupe(Down).unwrap(), runs.clone(), done);
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DedupeUnavailable)
        )
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn opting_in_runs_the_handler_when_the_store_fails() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer()
            .dedupe(Dedupe::new(Down).run_handler_on_store_error())
            .unwrap(),
        runs.clone(),
        done,
    );
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_hangs_is_bounded_by_the_store_timeout() {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer()
            .dedupe(Dedupe::new(Hung).store_timeout(Duration::from_millis(300)))
            .unwrap(),
        runs.clone(),
        done,
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DedupeUnavailable)
        )
    );
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// Applies every command at once (as Redis does when it got it), but its claim replies
/// arrive late while `slow` is set: the claim lands although the caller gave up waiting.
#[derive(Clone)]
struct SlowReplies {
    inner: InMemoryStore,
    slow: Arc<std::sync::atomic::AtomicBool>,
}

impl DedupeStore for SlowReplies {
    fn claim(&self, key: String, token: String, lease: Duration) -> StoreFuture<Claim> {
        let applied = self.inner.claim(key, token, lease);
        let slow = self.slow.load(Ordering::SeqCst);
        Box::pin(async move {
            let claim = applied.await;
            if slow {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            claim
        })
    }
    fn complete(&self, key: String, token: String, keep: Duration) -> StoreFuture<()> {
        self.inner.complete(key, token, keep)
    }
    fn release(&self, key: String, token: String) -> StoreFuture<()> {
        self.inner.release(key, token)
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_answered_after_the_store_timeout_is_released_not_left_to_block_retries() {
    let store = SlowReplies {
        inner: InMemoryStore::new(),
        slow: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer()
            .dedupe(Dedupe::new(store.clone()).store_timeout(Duration::from_millis(300)))
            .unwrap(),
        runs.clone(),
        done,
    );
    assert_eq!(
        deliver(&app).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DedupeUnavailable)
        )
    );
    // WeChat Pay's retry, 15 s later, well inside the 30 s lease: it runs the handler.
    store.slow.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(deliver(&app).await, (StatusCode::NO_CONTENT, None));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_key_is_the_business_event_not_the_delivery() {
    let layer = test_layer();
    let open = |request: http::Request<Body>| {
        let layer = layer.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
            layer.verify(&parts.headers, &body).unwrap()
        }
    };
    // Two deliveries of one payment carry different envelope ids but one key.
    let a = open(axum_request("TRANSACTION.SUCCESS", &sample_payment())).await;
    let b = open(axum_request("TRANSACTION.SUCCESS", &sample_payment())).await;
    assert_ne!(a.id(), b.id());
    assert_eq!(default_key(&a), default_key(&b));
    assert_eq!(
        default_key(&a).unwrap(),
        "TRANSACTION.SUCCESS:1900012345:4200830166131860913909960308"
    );
    // Refund success and refund abnormal of one refund are two events.
    let success = open(axum_request("REFUND.SUCCESS", &sample_refund())).await;
    let mut abnormal_resource = sample_refund();
    abnormal_resource["refund_status"] = "ABNORMAL".into();
    let abnormal = open(axum_request("REFUND.ABNORMAL", &abnormal_resource)).await;
    assert_ne!(default_key(&success), default_key(&abnormal));
    assert!(
        default_key(&success)
            .unwrap()
            .contains("50000000382019052709732678859")
    );
    // Unknown events fall back to the envelope id.
    let other = open(
        TestSigner::public_key_mode()
            .notification(
                "COMPLAINT.CREATE",
                &serde_json::json!({"complaint_id": "1"}),
            )
            .original_type("complaint")
            .timestamp(NOW)
            .build()
            .unwrap()
            .into_request_to("/notify")
            .map(Body::new),
    )
    .await;
    assert!(default_key(&other).unwrap().ends_with(other.id()));
}

#[tokio::test(start_paused = true)]
async fn a_custom_key_groups_what_the_user_says() {
    let runs = Arc::new(AtomicUsize::new(0));
    let per_order = Dedupe::new(InMemoryStore::new())
        .key(|n: &Notification| n.payment().map(|p| p.out_trade_no.clone()));
    let app = counting(test_layer().dedupe(per_order).unwrap(), runs.clone(), done);
    let mut other_transaction = sample_payment();
    other_transaction["transaction_id"] = "another".into();
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        send(
            &app,
            axum_request("TRANSACTION.SUCCESS", &other_transaction)
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "same order, one run");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_claims_are_atomic_with_leases_and_token_checked_releases() {
    let redis = Redis::start();
    let store = redis.store("atomic:").await;
    let lease = Duration::from_secs(30);
    assert_eq!(
        store.claim("k".into(), "a".into(), lease).await.unwrap(),
        Claim::Claimed
    );
    // The lease is set on the key (it expires if the holder crashes).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("atomic:k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 29_000 && ttl <= 30_000, "pttl {ttl}");

    // 200 concurrent claims for one fresh key: exactly one wins.
    let claims = futures_util::future::join_all((0..200).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim("race".into(), format!("t{i}"), lease)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c == Claim::Claimed).count(), 1);
    assert_eq!(
        claims.iter().filter(|c| **c == Claim::InProgress).count(),
        199
    );

    // Only the holder releases.
    store.release("k".into(), "intruder".into()).await.unwrap();
    assert_eq!(
        store.claim("k".into(), "b".into(), lease).await.unwrap(),
        Claim::InProgress
    );
    store.release("k".into(), "a".into()).await.unwrap();
    assert_eq!(
        store.claim("k".into(), "b".into(), lease).await.unwrap(),
        Claim::Claimed
    );
    // Done markers live at least 25 h.
    store
        .complete(
            "k".into(),
            "b".into(),
            tower_wechatpay::dedupe::Dedupe::DEFAULT_KEEP_DONE,
        )
        .await
        .unwrap();
    assert_eq!(
        store.claim("k".into(), "c".into(), lease).await.unwrap(),
        Claim::Done
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("atomic:k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > (24 * 3600 + 4 * 60) * 1000, "pttl {ttl}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_down_is_a_500_then_the_guard_recovers_after_restart() {
    let mut redis = Redis::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer().dedupe(redis.dedupe("down:").await).unwrap(),
        runs.clone(),
        done,
    );
    redis.kill();
    // A dead Redis refuses or resets at once: no timeout is involved in this 500.
    for _ in 0..3 {
        let (status, kind) = deliver(&app).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(kind, Some(RejectionKind::DedupeUnavailable));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran unguarded");

    redis.restart();
    // The connection manager reconnects when a command finds its connection broken: the
    // first copy after the restart may still get the failure of a reconnect attempt made
    // while Redis was down, and that failure starts a new attempt, which the next copy
    // waits for (against a server that is up now). No sleeping between copies: each copy
    // waits for the reconnect itself, so two tries are enough and a third is spare.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let status = deliver(&app).await.0;
        statuses.push(status);
        if status.is_success() {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::NO_CONTENT),
        "{statuses:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // And the guard guards again.
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_store_connect_opens_a_working_store() {
    // The library's own constructor, with its production timeouts (three connection
    // attempts of up to 1 s each); the other Redis tests use `support::redis::PATIENT`.
    let redis = Redis::start();
    let store = RedisStore::connect(&redis.url())
        .await
        .unwrap()
        .prefix("connect:");
    // The prefix is applied: the claim lands under it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let before: i64 = redis::cmd("EXISTS")
        .arg("connect:k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(before, 0);
    let lease = Duration::from_secs(30);
    // One command under the library's 1 s response timeout: the only production budget
    // left in these tests (a local Redis answers in well under a millisecond).
    let claim = store.claim("k".into(), "a".into(), lease).await;
    assert_eq!(claim.unwrap(), Claim::Claimed);
    let after: i64 = redis::cmd("EXISTS")
        .arg("connect:k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(after, 1);
}

/// A store that claims, then fails to record the outcome.
struct WriteFails;

impl DedupeStore for WriteFails {
    fn claim(&self, _: String, _: String, _: Duration) -> StoreFuture<Claim> {
        Box::pin(async { Ok(Claim::Claimed) })
    }
    fn complete(&self, _: String, _: String, _: Duration) -> StoreFuture<()> {
        Box::pin(async { Err(StoreError::new("complete: connection reset")) })
    }
    fn release(&self, _: String, _: String) -> StoreFuture<()> {
        Box::pin(async { Err(StoreError::new("release: connection reset")) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_settle_is_logged_as_a_lost_done_marker_or_a_claim_left_to_expire() {
    let (_guard, logs) = support::capture_logs();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = counting(
        test_layer().dedupe(WriteFails).unwrap(),
        runs.clone(),
        |run| match run {
            0 => Ok(Handled::Done),
            _ => Err(Retry::new("database down")),
        },
    );
    // The answer is the handler's either way: the store's failure is only logged.
    assert_eq!(deliver(&app).await.0, StatusCode::NO_CONTENT);
    let text = logs.text();
    assert!(text.contains("did not record it"), "{text}");
    assert!(text.contains("complete: connection reset"), "{text}");
    assert!(!text.contains("could not release"), "{text}");

    assert_eq!(deliver(&app).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let text = logs.text();
    assert!(
        text.contains("could not release the dedupe claim"),
        "{text}"
    );
    assert!(text.contains("release: connection reset"), "{text}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
