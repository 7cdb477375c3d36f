#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Alerts: each condition triggered for real through the layer, the rate limits, and the
//! traffic that must never raise one. Paused clocks; the layer's clock is set by hand.

use crate::support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::StatusCode;
use serde_json::json;
use support::{NOW, delivery};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_wechatpay::alert::{Alert, AlertKind, Alerts};
use tower_wechatpay::dedupe::{Claim, DedupeStore, InMemoryStore, StoreError, StoreFuture};
use tower_wechatpay::refresh::KeyRefresher;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner,
    sample_payment,
};
use tower_wechatpay::{
    Handled, KeyRing, Notification, Notified, Rejection, RejectionKind, Retry, WechatPayLayer,
};

/// The payer's openid in the sample payment: it must never reach an alert.
const PAYER_OPENID: &str = "oTestOpenid0000000000000SECRET";
/// An APIv3 key that is not the one the test signer encrypts with.
const OTHER_APIV3_KEY: &str = "0123456789abcdef0123456789abcdef";
const ATTACKER_SERIAL: &str = "PUB_KEY_ID_0000000000000000000000000000ATTACKER";
/// WeChat Pay resends for 24 h 4 min after the first attempt.
const GIVES_UP_AFTER: i64 = 24 * 3600 + 4 * 60;

/// What the closure got.
#[derive(Clone, Default)]
struct Raised(Arc<Mutex<Vec<Alert>>>);

impl Raised {
    fn all(&self) -> Vec<Alert> {
        self.0.lock().unwrap().clone()
    }

    fn kinds(&self) -> Vec<AlertKind> {
        self.all().iter().map(Alert::kind).collect()
    }

    fn install(&self, layer: WechatPayLayer) -> WechatPayLayer {
        let raised = self.clone();
        layer.on_alert(move |alert| raised.0.lock().unwrap().push(alert.clone()))
    }
}

/// A layer clock the test moves by hand.
#[derive(Clone)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn at(now: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now)))
    }

    fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    fn install(&self, layer: WechatPayLayer) -> WechatPayLayer {
        let now = Arc::clone(&self.0);
        layer.clock(move || now.load(Ordering::SeqCst))
    }
}

/// A route whose handler answers what `outcome` says for each run number.
fn app(
    layer: WechatPayLayer,
    outcome: impl Fn(usize) -> Result<Handled, Retry> + Clone + Send + Sync + 'static,
) -> Router {
    let runs = Arc::new(AtomicUsize::new(0));
    Router::new()
        .route(
            "/notify",
            post(move |Notified(_): Notified<Notification>| {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let answer = outcome(run);
                async move { answer }
            }),
        )
        .layer(layer)
}

fn always_done(_: usize) -> Result<Handled, Retry> {
    Ok(Handled::Done)
}

fn always_retry(_: usize) -> Result<Handled, Retry> {
    Err(Retry::new("the database is down"))
}

async fn send(app: &Router, signed: SignedNotification) -> (StatusCode, Option<RejectionKind>) {
    let request = signed.into_request_to("/notify").map(Body::new);
    let response = app.clone().oneshot(request).await.unwrap();
    let kind = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::kind);
    (response.status(), kind)
}

fn payment() -> SignedNotification {
    delivery("TRANSACTION.SUCCESS", &sample_payment())
}

/// The sample payment, delivered (signed) at `now`.
fn payment_at(now: i64) -> SignedNotification {
    TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now)
        .build()
        .unwrap()
}

fn test_layer(raised: &Raised) -> WechatPayLayer {
    raised.install(support::test_layer())
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

#[tokio::test(start_paused = true)]
async fn a_wrong_apiv3_key_raises_undecryptable() {
    let raised = Raised::default();
    let layer = WechatPayLayer::new(OTHER_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW);
    let app = app(raised.install(layer), always_done);
    assert_eq!(
        send(&app, payment()).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DecryptionFailed)
        )
    );
    assert_eq!(
        raised.all(),
        [Alert::Undecryptable {
            event_type: "TRANSACTION.SUCCESS".into(),
            reason: "decryption_failed",
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_resource_that_does_not_match_its_model_raises_unparsable() {
    let raised = Raised::default();
    let app = app(test_layer(&raised), always_done);
    let mut drifted = sample_payment();
    drifted["amount"]["total"] = json!("990");
    send(&app, delivery("TRANSACTION.SUCCESS", &drifted)).await;
    let [Alert::Unparsable { event_type, detail }] = &raised.all()[..] else {
        panic!("expected one Unparsable, got {:?}", raised.all());
    };
    assert_eq!(event_type, "TRANSACTION.SUCCESS");
    assert!(detail.contains("transaction model"), "{detail}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresher_raises_refresher_failing_and_the_serial_still_unknown() {
    let raised = Raised::default();
    let refresher = KeyRefresher::new(|_: KeyRing| async { Err("download failed: 503".into()) });
    let app = app(test_layer(&raised).key_refresher(refresher), always_done);
    let unknown = payment().with_header("wechatpay-serial", &format!("{ATTACKER_SERIAL}<x>"));
    assert_eq!(
        send(&app, unknown).await,
        (StatusCode::UNAUTHORIZED, Some(RejectionKind::UnknownSerial))
    );
    let mut alerts = raised.all();
    alerts.sort_by_key(|alert| alert.kind().as_str());
    assert_eq!(
        alerts,
        [
            Alert::RefresherFailing {
                error: "download failed: 503".into()
            },
            Alert::UnknownSerialAfterRefresh {
                serial: format!("{ATTACKER_SERIAL}x"),
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stuck_refresher_raises_refresher_failing_after_its_timeout() {
    let raised = Raised::default();
    let refresher =
        KeyRefresher::new(|_: KeyRing| std::future::pending()).timeout(Duration::from_secs(10));
    let app = app(test_layer(&raised).key_refresher(refresher), always_done);
    let unknown = payment().with_header("wechatpay-serial", ATTACKER_SERIAL);
    send(&app, unknown).await;
    // The request stopped waiting (max wait), the refresh is still running: no alert yet.
    assert_eq!(raised.kinds(), []);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let [Alert::RefresherFailing { error }] = &raised.all()[..] else {
        panic!("expected RefresherFailing, got {:?}", raised.all());
    };
    assert!(error.contains("stuck"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn alerts_set_before_the_key_ring_still_reach_its_refresher() {
    let raised = Raised::default();
    let keys = KeyRing::new();
    keys.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    let refresher = KeyRefresher::new(|_: KeyRing| async { Err("download failed: 503".into()) });
    let layer = raised
        .install(WechatPayLayer::new(TEST_APIV3_KEY).unwrap())
        .key_ring(keys)
        .key_refresher(refresher)
        .clock(|| NOW);
    let app = app(layer, always_done);
    send(
        &app,
        payment().with_header("wechatpay-serial", ATTACKER_SERIAL),
    )
    .await;
    assert!(
        raised.kinds().contains(&AlertKind::RefresherFailing),
        "{:?}",
        raised.all()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_dedupe_store_raises_dedupe_unreachable() {
    let raised = Raised::default();
    let app = app(test_layer(&raised).dedupe(Down).unwrap(), always_done);
    assert_eq!(
        send(&app, payment()).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DedupeUnavailable)
        )
    );
    assert_eq!(
        raised.all(),
        [Alert::DedupeUnreachable {
            error: "dedupe store: connection refused".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_always_retries_raises_keeps_failing_at_the_third_failure() {
    let raised = Raised::default();
    let clock = Clock::at(NOW);
    let app = app(clock.install(test_layer(&raised)), always_retry);
    let payment_json = sample_payment();
    let key = format!(
        "TRANSACTION.SUCCESS:{}:{}",
        payment_json["mchid"].as_str().unwrap(),
        payment_json["transaction_id"].as_str().unwrap()
    );
    for (n, at) in [NOW, NOW + 15, NOW + 30].into_iter().enumerate() {
        clock.set(at);
        assert_eq!(
            send(&app, payment_at(at)).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(RejectionKind::HandlerRetry)
            )
        );
        assert_eq!(raised.all().len(), usize::from(n == 2), "after failure {n}");
    }
    assert_eq!(
        raised.all(),
        [Alert::KeepsFailing {
            key,
            event_type: "TRANSACTION.SUCCESS".into(),
            failures: 3,
            first_failure_unix: NOW,
            last_reason: "handler_retry",
            wechat_gives_up_unix: NOW + GIVES_UP_AFTER,
        }]
    );
    // A fourth failure within the interval: counted, not delivered again.
    send(&app, payment()).await;
    assert_eq!(raised.all().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_notification_failing_for_longer_than_the_limit_alerts_with_fewer_failures() {
    let raised = Raised::default();
    let clock = Clock::at(NOW);
    let layer = clock
        .install(test_layer(&raised))
        .alert_when_failing(10, Duration::from_secs(3600));
    let app = app(layer, always_retry);
    send(&app, payment_at(NOW)).await;
    clock.set(NOW + 3599);
    send(&app, payment_at(NOW + 3599)).await;
    assert_eq!(raised.kinds(), []);
    clock.set(NOW + 3600);
    send(&app, payment_at(NOW + 3600)).await;
    let [
        Alert::KeepsFailing {
            failures,
            first_failure_unix,
            wechat_gives_up_unix,
            ..
        },
    ] = raised.all()[..]
    else {
        panic!("expected KeepsFailing, got {:?}", raised.all());
    };
    assert_eq!(
        (failures, first_failure_unix, wechat_gives_up_unix),
        (3, NOW, NOW + GIVES_UP_AFTER)
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_forgets_the_failures_of_its_event() {
    let raised = Raised::default();
    // Fails, fails, succeeds, then fails twice more: never three in a row.
    let app = app(test_layer(&raised), |run| {
        if run == 2 {
            Ok(Handled::Done)
        } else {
            Err(Retry::new("the database is down"))
        }
    });
    for _ in 0..5 {
        send(&app, payment()).await;
    }
    assert_eq!(raised.kinds(), []);
}

#[tokio::test(start_paused = true)]
async fn copies_refused_as_in_progress_are_not_failures() {
    let raised = Raised::default();
    let layer = test_layer(&raised)
        .dedupe(InMemoryStore::new())
        .unwrap()
        .alert_when_failing(1, Duration::from_secs(3600));
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
            .layer(layer)
    };
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, payment()).await }
    });
    entered.notified().await;
    for _ in 0..3 {
        assert_eq!(
            send(&app, payment()).await.1,
            Some(RejectionKind::InProgress)
        );
    }
    proceed.notify_one();
    assert_eq!(first.await.unwrap().0, StatusCode::NO_CONTENT);
    assert_eq!(raised.kinds(), []);
}

#[tokio::test(start_paused = true)]
async fn the_same_kind_and_key_is_delivered_once_per_interval() {
    let delivered = Arc::new(AtomicUsize::new(0));
    let alerts = Alerts::new({
        let delivered = delivered.clone();
        move |_| {
            delivered.fetch_add(1, Ordering::SeqCst);
        }
    });
    let down = || Alert::DedupeUnreachable {
        error: "connection refused".into(),
    };
    let failing = |key: &str| Alert::DeadLettered {
        key: key.into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        attempts: 5,
        error: "the database is down".into(),
    };
    assert!(alerts.raise(down()));
    assert!(!alerts.raise(down()));
    // Other keys and other kinds have their own slots.
    assert!(alerts.raise(failing("a")));
    assert!(alerts.raise(failing("b")));
    assert!(!alerts.raise(failing("a")));
    tokio::time::advance(Alerts::DEFAULT_INTERVAL - Duration::from_millis(1)).await;
    assert!(!alerts.raise(down()));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(alerts.raise(down()));
    assert!(alerts.raise(failing("a")));
    assert_eq!(delivered.load(Ordering::SeqCst), 5);
    // A sink that delivers nowhere delivers nothing.
    assert!(!Alerts::none().raise(down()));
}

#[tokio::test(start_paused = true)]
async fn the_layer_rate_limits_by_its_alert_interval() {
    let raised = Raised::default();
    let layer = test_layer(&raised)
        .alert_interval(Duration::from_secs(60))
        .alert_when_failing(100, Duration::from_secs(24 * 3600))
        .dedupe(Down)
        .unwrap();
    let app = app(layer, always_done);
    send(&app, payment()).await;
    send(&app, payment()).await;
    assert_eq!(raised.kinds(), [AlertKind::DedupeUnreachable]);
    tokio::time::advance(Duration::from_secs(60)).await;
    send(&app, payment()).await;
    assert_eq!(
        raised.kinds(),
        [AlertKind::DedupeUnreachable, AlertKind::DedupeUnreachable]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shared_sink_rate_limits_across_the_layer_and_its_other_users() {
    let raised = Raised::default();
    let layer = test_layer(&raised).dedupe(Down).unwrap();
    let sink = layer.alert_sink();
    assert!(sink.raise(Alert::DedupeUnreachable {
        error: "from a queue worker".into()
    }));
    send(&app(layer, always_done), payment()).await;
    assert_eq!(raised.kinds(), [AlertKind::DedupeUnreachable]);
}

#[tokio::test(start_paused = true)]
async fn a_forged_flood_raises_no_alert() {
    let raised = Raised::default();
    // Everything that alerts is on: a store that is down, one failure is enough.
    let layer = test_layer(&raised)
        .dedupe(Down)
        .unwrap()
        .alert_when_failing(1, Duration::ZERO)
        .max_body_size(4096);
    let app = app(layer, always_retry);
    let genuine = payment();
    for n in 0..20 {
        let forged = genuine.clone().with_body(format!("{{\"forged\":{n}}}"));
        assert_eq!(send(&app, forged).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&app, genuine.clone().into_probe()).await.0,
            StatusCode::UNAUTHORIZED
        );
        let stale = genuine.clone().with_header("wechatpay-timestamp", "1");
        assert_eq!(send(&app, stale).await.0, StatusCode::UNAUTHORIZED);
        let missing = genuine.clone().without_header("wechatpay-signature");
        assert_eq!(send(&app, missing).await.0, StatusCode::BAD_REQUEST);
        let unknown = genuine
            .clone()
            .with_header("wechatpay-serial", ATTACKER_SERIAL);
        assert_eq!(send(&app, unknown).await.0, StatusCode::UNAUTHORIZED);
        let oversized = genuine.clone().with_body("x".repeat(8192));
        assert_eq!(send(&app, oversized).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        let stranger = TestSigner::stranger()
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .serial(TEST_PUBLIC_KEY_ID)
            .timestamp(NOW)
            .build()
            .unwrap();
        assert_eq!(send(&app, stranger).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(raised.kinds(), []);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_alert_closure_does_not_break_the_answer() {
    let layer = WechatPayLayer::new(OTHER_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW)
        .on_alert(|_| panic!("the alert closure is broken"));
    let wrong_key = app(layer, always_done);
    assert_eq!(
        send(&wrong_key, payment()).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(RejectionKind::DecryptionFailed)
        )
    );
    // And a genuine, decryptable notification through a panicking sink is acknowledged.
    let layer = support::test_layer()
        .alert_when_failing(1, Duration::ZERO)
        .on_alert(|_| panic!("the alert closure is broken"));
    let retrying = app(layer, always_retry);
    assert_eq!(
        send(&retrying, payment()).await.1,
        Some(RejectionKind::HandlerRetry)
    );
}

#[test]
fn an_alert_is_one_line_and_a_flat_json_object_with_its_action() {
    let alert = Alert::KeepsFailing {
        key: "TRANSACTION.SUCCESS:1900012345:4200000001".into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        failures: 3,
        first_failure_unix: NOW,
        last_reason: "handler_retry",
        wechat_gives_up_unix: NOW + GIVES_UP_AFTER,
    };
    assert_eq!(alert.kind().as_str(), "keeps_failing");
    assert_eq!(
        alert.key(),
        Some("TRANSACTION.SUCCESS:1900012345:4200000001")
    );
    assert_eq!(
        serde_json::to_value(&alert).unwrap(),
        json!({
            "kind": "keeps_failing",
            "key": "TRANSACTION.SUCCESS:1900012345:4200000001",
            "event_type": "TRANSACTION.SUCCESS",
            "failures": 3,
            "first_failure_unix": NOW,
            "last_reason": "handler_retry",
            "wechat_gives_up_unix": NOW + GIVES_UP_AFTER,
            "action": alert.action(),
        })
    );
    let line = alert.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("failed 3 times"), "{line}");
    assert!(line.ends_with(alert.action()), "{line}");

    let undecryptable = Alert::Undecryptable {
        event_type: "REFUND.SUCCESS".into(),
        reason: "decryption_failed",
    };
    assert_eq!(undecryptable.key(), None);
    assert!(undecryptable.action().contains("APIv3 key"));
    assert_eq!(
        serde_json::to_value(&undecryptable).unwrap(),
        json!({
            "kind": "undecryptable",
            "event_type": "REFUND.SUCCESS",
            "reason": "decryption_failed",
            "action": undecryptable.action(),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn alerts_carry_no_key_signature_or_payer_data() {
    let raised = Raised::default();
    let layer = test_layer(&raised).alert_when_failing(1, Duration::ZERO);
    let retrying = app(layer, always_retry);
    let genuine = payment();
    let signature = genuine
        .clone()
        .into_request()
        .headers()
        .get("wechatpay-signature")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    send(&retrying, genuine.clone()).await;
    let mut drifted = sample_payment();
    drifted["amount"]["total"] = json!("990");
    send(&retrying, delivery("TRANSACTION.SUCCESS", &drifted)).await;
    let wrong_key = WechatPayLayer::new(OTHER_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW);
    send(&app(raised.install(wrong_key), always_done), genuine).await;

    let alerts = raised.all();
    // The drifted one reaches the handler too (as Event::Unparsed), and fails.
    assert_eq!(
        raised.kinds(),
        [
            AlertKind::KeepsFailing,
            AlertKind::Unparsable,
            AlertKind::KeepsFailing,
            AlertKind::Undecryptable
        ]
    );
    for alert in &alerts {
        let texts = [serde_json::to_string(alert).unwrap(), alert.to_string()];
        for text in texts {
            for secret in [PAYER_OPENID, TEST_APIV3_KEY, OTHER_APIV3_KEY, &signature] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
    }
}

#[cfg(feature = "v2")]
#[tokio::test(start_paused = true)]
async fn a_verified_v2_payment_that_does_not_fit_its_model_raises_unparsable_and_a_forged_one_none()
{
    use tower_wechatpay::test_util::{SignType, TEST_V2_KEY, V2TestSigner, sample_v2_payment};

    let raised = Raised::default();
    let app = app(
        test_layer(&raised).v2_key(TEST_V2_KEY).unwrap(),
        always_done,
    );
    let xml = |body: String| {
        http::Request::post("/notify")
            .header("content-type", "text/xml")
            .body(Body::from(body))
            .unwrap()
    };
    let mut drifted = sample_v2_payment();
    drifted.insert("total_fee".into(), "nine".into());
    let forged = V2TestSigner::new("0123456789abcdefghijABCDEFGHIJ01").payment_xml(
        sample_v2_payment(),
        SignType::Md5,
        false,
    );
    app.clone().oneshot(xml(forged)).await.unwrap();
    assert_eq!(raised.kinds(), []);
    let genuine = V2TestSigner::new(TEST_V2_KEY).payment_xml(drifted, SignType::Md5, false);
    app.clone().oneshot(xml(genuine)).await.unwrap();
    let [Alert::Unparsable { event_type, detail }] = &raised.all()[..] else {
        panic!("expected one Unparsable, got {:?}", raised.all());
    };
    assert_eq!(event_type, "TRANSACTION.SUCCESS");
    assert!(detail.contains("v2 transaction"), "{detail}");
}
