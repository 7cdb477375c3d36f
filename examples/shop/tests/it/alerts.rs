//! The shop's alerts, end to end: a real Redis killed under the running shop, and a wrong
//! APIv3 key; each alert arrives as JSON at a webhook (a small axum server in the test)
//! and in the shop's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::routing::post;
use axum::{Json, Router};
use example_support::harness::{Http, PATIENT, Redis, Running, TempDir, key_flags, now, start};
use http::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment};

/// A webhook that hands every JSON body it receives to the test.
struct Webhook {
    url: String,
    received: mpsc::UnboundedReceiver<Value>,
}

impl Webhook {
    async fn start() -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/alert",
            post(move |Json(alert): Json<Value>| {
                let _ = sender.send(alert);
                std::future::ready(StatusCode::NO_CONTENT)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alert", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    /// The next alert posted, within [`PATIENT`] (only a bug waits that long).
    async fn next(&mut self) -> Value {
        tokio::time::timeout(PATIENT, self.received.recv())
            .await
            .expect("an alert was posted to the webhook")
            .unwrap()
    }
}

/// An APIv3 key that is not the one the test signer encrypts with.
const OTHER_APIV3_KEY: &str = "0123456789abcdef0123456789abcdef";

/// The shop on a fresh SQLite file with the test keys (or another APIv3 key), alerts
/// posted to `webhook`.
fn shop(
    dir: &TempDir,
    webhook: &Webhook,
    extra: &[String],
    apiv3_key: Option<&str>,
) -> (Running, Http) {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--db".into(),
        format!("sqlite:{}", dir.path().join("shop.db").display()),
        "--alert-webhook".into(),
        webhook.url.clone(),
    ];
    args.extend(key_flags(dir.path()));
    if let Some(key) = apiv3_key {
        std::fs::write(dir.path().join("apiv3.txt"), format!("{key}\n")).unwrap();
    }
    args.extend_from_slice(extra);
    let running = start("shop", &args);
    let http = Http::new(&running.addr);
    (running, http)
}

/// The sample payment, signed now (the shop uses the system clock).
fn payment() -> SignedNotification {
    TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now())
        .build()
        .unwrap()
}

#[tokio::test]
async fn redis_killed_mid_run_answers_500_and_posts_dedupe_unreachable() {
    let mut redis = Redis::start();
    let mut webhook = Webhook::start().await;
    let dir = TempDir::new("shop-alerts");
    let (running, http) = shop(
        &dir,
        &webhook,
        &["--dedupe-redis".into(), redis.url()],
        None,
    );

    // Redis up: the guard claims, the shop answers (an unknown order is acknowledged).
    assert_eq!(
        http.notify("/wechatpay/notify", payment()).await,
        StatusCode::NO_CONTENT
    );
    redis.kill();
    assert_eq!(
        http.notify("/wechatpay/notify", payment()).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let alert = webhook.next().await;
    assert_eq!(alert["kind"], "dedupe_unreachable", "{alert}");
    assert!(
        alert["error"].as_str().unwrap().contains("dedupe store"),
        "{alert}"
    );
    assert!(
        alert["action"].as_str().unwrap().contains("Redis"),
        "{alert}"
    );
    running.wait_log(&["wechat pay alert", "dedupe_unreachable"]);

    // Still down: 500 again (the layer's tests check that the alert is not repeated
    // within the interval).
    assert_eq!(
        http.notify("/wechatpay/notify", payment()).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn a_wrong_apiv3_key_posts_undecryptable() {
    let mut webhook = Webhook::start().await;
    let dir = TempDir::new("shop-alerts");
    let (_running, http) = shop(&dir, &webhook, &[], Some(OTHER_APIV3_KEY));

    assert_eq!(
        http.notify("/wechatpay/notify", payment()).await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let alert = webhook.next().await;
    assert_eq!(alert["kind"], "undecryptable", "{alert}");
    assert_eq!(alert["event_type"], "TRANSACTION.SUCCESS", "{alert}");
    assert_eq!(alert["reason"], "decryption_failed", "{alert}");
    assert!(
        alert["action"].as_str().unwrap().contains("APIv3"),
        "{alert}"
    );
    let text = alert.to_string();
    assert!(!text.contains("oTestOpenid"), "{text}");
}
