#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Metrics (feature `metrics`) read back through a real recorder (metrics-util's
//! `DebuggingRecorder`), installed for this thread only: the tests run on a current-thread
//! runtime, so other tests in the binary neither see nor disturb these counts.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use support::{NOW, delivery, test_layer};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_wechatpay::dedupe::{Claim, DedupeStore, InMemoryStore, StoreError, StoreFuture};
use tower_wechatpay::refresh::KeyRefresher;
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};
use tower_wechatpay::{Handled, KeyRing, Notification, Notified, Retry, WechatPayLayer};

/// An attacker's serial: it must never become a label value.
const ATTACKER_SERIAL: &str = "PUB_KEY_ID_0000000000000000000000000000ATTACKER";

/// Acknowledges payments and other events, declines successful refunds, retries abnormal
/// ones.
fn app(layer: WechatPayLayer) -> Router {
    Router::new()
        .route(
            "/notify",
            post(
                |Notified(notification): Notified<Notification>| async move {
                    match notification.event_type() {
                        "REFUND.SUCCESS" => Ok(Handled::declined("no such refund")),
                        "REFUND.ABNORMAL" => Err(Retry::new("the database is down")),
                        _ => Ok(Handled::Done),
                    }
                },
            ),
        )
        .layer(layer)
}

async fn send(app: &Router, request: http::Request<tower_wechatpay::BufferedBody>) {
    app.clone().oneshot(request.map(Body::new)).await.unwrap();
}

/// Every counter by name and sorted labels, and every histogram's sample count.
fn read(snapshotter: &Snapshotter) -> BTreeMap<String, u64> {
    let mut values = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match value {
            DebugValue::Counter(count) => count,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => continue,
        };
        values.insert(name, value);
    }
    values
}

fn notifications(outcome: &str, reason: &str, event_type: &str, version: &str) -> String {
    format!(
        "wechatpay_notifications_total{{event_type={event_type},outcome={outcome},reason={reason},version={version}}}"
    )
}

#[tokio::test(flavor = "current_thread")]
async fn every_count_matches_what_was_sent_in_a_mixed_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let layer = test_layer().dedupe(InMemoryStore::new()).unwrap();
    let app = app(layer);
    let genuine = delivery("TRANSACTION.SUCCESS", &sample_payment());

    // Acknowledged: a payment, a copy of it (the dedupe guard answers), another event type.
    send(&app, genuine.clone().into_request_to("/notify")).await;
    send(
        &app,
        delivery("TRANSACTION.SUCCESS", &sample_payment()).into_request_to("/notify"),
    )
    .await;
    let transfer = TestSigner::public_key_mode()
        .notification("MCHTRANSFER.BILL.FINISHED", &json!({ "state": "SUCCESS" }))
        .original_type("mch_transfer")
        .timestamp(NOW)
        .build()
        .unwrap();
    send(&app, transfer.into_request_to("/notify")).await;
    // Declined once, retried twice.
    send(
        &app,
        delivery("REFUND.SUCCESS", &sample_refund()).into_request_to("/notify"),
    )
    .await;
    for _ in 0..2 {
        send(
            &app,
            delivery("REFUND.ABNORMAL", &sample_refund()).into_request_to("/notify"),
        )
        .await;
    }
    // Refused: forged body (3), unknown serial, probe (2), stale, missing header.
    for n in 0..3 {
        let forged = genuine.clone().with_body(format!("{{\"forged\":{n}}}"));
        send(&app, forged.into_request_to("/notify")).await;
    }
    let unknown = genuine
        .clone()
        .with_header("wechatpay-serial", ATTACKER_SERIAL);
    send(&app, unknown.into_request_to("/notify")).await;
    for _ in 0..2 {
        send(
            &app,
            genuine.clone().into_probe().into_request_to("/notify"),
        )
        .await;
    }
    let stale = genuine.clone().with_header("wechatpay-timestamp", "1");
    send(&app, stale.into_request_to("/notify")).await;
    let missing = genuine.clone().without_header("wechatpay-nonce");
    send(&app, missing.into_request_to("/notify")).await;
    // An APIv2 body with no v2 key configured: refused (500, WeChat Pay keeps it).
    let v2 = http::Request::post("/notify")
        .header("content-type", "text/xml")
        .body(tower_wechatpay::BufferedBody::new(
            "<xml><return_code>SUCCESS</return_code></xml>".into(),
        ))
        .unwrap();
    send(&app, v2).await;

    let mut expected: BTreeMap<String, u64> = [
        (
            notifications("acknowledged", "none", "TRANSACTION.SUCCESS", "3"),
            2,
        ),
        (notifications("acknowledged", "none", "other", "3"), 1),
        (notifications("declined", "none", "REFUND.SUCCESS", "3"), 1),
        (
            notifications("retry", "handler_retry", "REFUND.ABNORMAL", "3"),
            2,
        ),
        (
            notifications("refused", "invalid_signature", "none", "3"),
            3,
        ),
        (notifications("refused", "unknown_serial", "none", "3"), 1),
        (notifications("refused", "signature_probe", "none", "3"), 2),
        (
            notifications("refused", "timestamp_out_of_window", "none", "3"),
            1,
        ),
        (notifications("refused", "missing_header", "none", "3"), 1),
        (notifications("refused", "misconfigured", "none", "2"), 1),
        (
            "wechatpay_answer_duration_seconds{outcome=acknowledged}".into(),
            3,
        ),
        (
            "wechatpay_answer_duration_seconds{outcome=declined}".into(),
            1,
        ),
        ("wechatpay_answer_duration_seconds{outcome=retry}".into(), 2),
        (
            "wechatpay_answer_duration_seconds{outcome=refused}".into(),
            9,
        ),
        // The copy never reached the handler.
        ("wechatpay_handler_duration_seconds{}".into(), 5),
        ("wechatpay_probes_total{}".into(), 2),
        ("wechatpay_dedupe_total{outcome=claimed}".into(), 5),
        ("wechatpay_dedupe_total{outcome=done_copy}".into(), 1),
    ]
    .into_iter()
    .collect();
    if !cfg!(feature = "v2") {
        // Without the feature an XML body is refused for its missing headers.
        expected.remove(&notifications("refused", "misconfigured", "none", "2"));
        *expected
            .get_mut(&notifications("refused", "missing_header", "none", "3"))
            .unwrap() += 1;
    }
    assert_eq!(read(&snapshotter), expected);
}

#[tokio::test(flavor = "current_thread")]
async fn label_values_never_carry_request_data() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let app = app(test_layer());
    let genuine = delivery("TRANSACTION.SUCCESS", &sample_payment());
    let envelope: serde_json::Value = serde_json::from_str(genuine.body_text()).unwrap();
    let id = envelope["id"].as_str().unwrap().to_owned();
    send(&app, genuine.clone().into_request_to("/notify")).await;
    let strangers = [
        genuine
            .clone()
            .with_header("wechatpay-serial", ATTACKER_SERIAL),
        genuine
            .clone()
            .with_header("wechatpay-nonce", "ATTACKER-NONCE"),
        genuine
            .clone()
            .with_body("{\"event_type\":\"ATTACKER.TYPE\"}"),
    ];
    for request in strangers {
        send(&app, request.into_request_to("/notify")).await;
    }
    let forged_type = TestSigner::public_key_mode()
        .notification("ATTACKER.CHOSEN.TYPE", &json!({}))
        .original_type("x")
        .timestamp(NOW)
        .build()
        .unwrap();
    send(&app, forged_type.into_request_to("/notify")).await;

    let names = read(&snapshotter)
        .into_keys()
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [ATTACKER_SERIAL, "ATTACKER", &id] {
        assert!(!names.contains(secret), "{secret} in\n{names}");
    }
    assert!(names.contains("event_type=other"), "{names}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn key_refreshes_are_counted_by_result() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let refresher = KeyRefresher::new(|_: KeyRing| async { Err("download failed: 503".into()) })
        .min_interval(Duration::from_secs(1));
    let app = app(test_layer().key_refresher(refresher));
    let unknown = || {
        delivery("TRANSACTION.SUCCESS", &sample_payment())
            .with_header("wechatpay-serial", ATTACKER_SERIAL)
            .into_request_to("/notify")
    };
    send(&app, unknown()).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    send(&app, unknown()).await;
    // Let the second refresh's task finish.
    tokio::task::yield_now().await;

    let values = read(&snapshotter);
    assert_eq!(
        values.get("wechatpay_key_refreshes_total{result=started}"),
        Some(&2)
    );
    assert_eq!(
        values.get("wechatpay_key_refreshes_total{result=failed}"),
        Some(&2)
    );
    assert_eq!(
        values.get(&notifications("refused", "unknown_serial", "none", "3")),
        Some(&2)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_copy_refused_while_another_runs_is_counted_in_progress() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let entered = Arc::new(Notify::new());
    let proceed = Arc::new(Notify::new());
    let app = {
        let (entered, proceed) = (entered.clone(), proceed.clone());
        Router::new()
            .route(
                "/notify",
                post(move || {
                    let (entered, proceed) = (entered.clone(), proceed.clone());
                    async move {
                        entered.notify_one();
                        proceed.notified().await;
                        Ok::<_, Retry>(Handled::Done)
                    }
                }),
            )
            .layer(test_layer().dedupe(InMemoryStore::new()).unwrap())
    };
    let copy = || delivery("TRANSACTION.SUCCESS", &sample_payment()).into_request_to("/notify");
    // The first copy holds its claim in the handler while the second arrives.
    let first = tokio::spawn({
        let (app, request) = (app.clone(), copy());
        async move { send(&app, request).await }
    });
    entered.notified().await;
    send(&app, copy()).await;
    proceed.notify_one();
    first.await.unwrap();

    let values = read(&snapshotter);
    assert_eq!(
        values.get("wechatpay_dedupe_total{outcome=claimed}"),
        Some(&1)
    );
    assert_eq!(
        values.get("wechatpay_dedupe_total{outcome=in_progress}"),
        Some(&1)
    );
    assert_eq!(
        values.get(&notifications(
            "retry",
            "in_progress",
            "TRANSACTION.SUCCESS",
            "3"
        )),
        Some(&1)
    );
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

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_store_that_fails_is_counted_store_error() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let app = app(test_layer().dedupe(Down).unwrap());
    for _ in 0..2 {
        send(
            &app,
            delivery("TRANSACTION.SUCCESS", &sample_payment()).into_request_to("/notify"),
        )
        .await;
    }

    let values = read(&snapshotter);
    assert_eq!(
        values.get("wechatpay_dedupe_total{outcome=store_error}"),
        Some(&2)
    );
    assert_eq!(values.get("wechatpay_dedupe_total{outcome=claimed}"), None);
    assert_eq!(
        values.get(&notifications(
            "retry",
            "dedupe_unavailable",
            "TRANSACTION.SUCCESS",
            "3"
        )),
        Some(&2)
    );
    // The handler never ran.
    assert_eq!(values.get("wechatpay_handler_duration_seconds{}"), None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refresh_stuck_past_its_timeout_is_counted_abandoned() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let timeout = Duration::from_secs(10);
    let refresher = KeyRefresher::new(|_: KeyRing| std::future::pending()).timeout(timeout);
    let app = app(test_layer().key_refresher(refresher));
    let unknown = delivery("TRANSACTION.SUCCESS", &sample_payment())
        .with_header("wechatpay-serial", ATTACKER_SERIAL)
        .into_request_to("/notify");
    // Answered 401 once its wait is over; the refresh runs on until its timeout. (Reading
    // the recorder in between would reset its counters.)
    send(&app, unknown).await;
    tokio::time::sleep(timeout).await;

    let values = read(&snapshotter);
    assert_eq!(
        values.get("wechatpay_key_refreshes_total{result=started}"),
        Some(&1)
    );
    assert_eq!(
        values.get("wechatpay_key_refreshes_total{result=abandoned}"),
        Some(&1)
    );
    assert_eq!(
        values.get("wechatpay_key_refreshes_total{result=failed}"),
        None
    );
}
