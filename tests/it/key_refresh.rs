#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The key refresher: called for unknown serials only, single-flight, at most once per
//! minimum interval, waited for at most `max_wait`; a key it adds verifies the request
//! that asked for it. Runs on a paused clock, so the intervals cost no real time.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::{NOW, capture_logs, send, send_signed};
use tokio::time::Instant;
use tower_wechatpay::refresh::KeyRefresher;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_PUBLIC_KEY_ID,
    TEST_PUBLIC_KEY_PEM, TestSigner, sample_payment,
};
use tower_wechatpay::{KeyRing, RejectionKind, WechatPayLayer};

/// What the refresher does when called (after `delay`), and how often it was called.
#[derive(Clone, Copy)]
enum Does {
    AddCertificate,
    Nothing,
    Fail,
    Panic,
}

#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
}

impl Counting {
    fn refresher(does: Does, delay: Duration) -> (Self, KeyRefresher) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let refresher = KeyRefresher::new(move |keys: KeyRing| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                match does {
                    Does::AddCertificate => {
                        keys.add_certificate(TEST_CERTIFICATE_PEM)?;
                        Ok(())
                    }
                    Does::Nothing => Ok(()),
                    Does::Fail => Err("certificate download failed: 503".into()),
                    Does::Panic => panic!("the refresher panicked"),
                }
            }
        });
        (Self { calls }, refresher)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A layer that knows only the public key; the platform certificate is "new".
fn layer_without_certificate(refresher: KeyRefresher) -> WechatPayLayer {
    WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW)
        .key_refresher(refresher)
}

/// A genuine notification signed with the platform certificate's key.
fn signed_with_certificate() -> SignedNotification {
    TestSigner::certificate_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap()
}

/// A forgery that passes every check before the key lookup, with serial `serial`.
fn forged_with_serial(serial: &str) -> SignedNotification {
    TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .serial(serial)
        .build()
        .unwrap()
}

fn random_serial(n: usize) -> String {
    format!(
        "{:040X}",
        (n as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    )
}

#[tokio::test(start_paused = true)]
async fn a_key_the_refresher_adds_verifies_the_request_that_asked_for_it() {
    let (counting, refresher) =
        Counting::refresher(Does::AddCertificate, Duration::from_millis(300));
    let layer = layer_without_certificate(refresher);
    assert!(
        !layer
            .keys()
            .contains(TestSigner::certificate_mode().serial())
    );

    let (answer, seen) = send_signed(&layer, signed_with_certificate()).await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(seen.count(), 1, "the handler got the notification");
    assert_eq!(counting.calls(), 1);

    // Known now: the next one neither waits nor refreshes.
    let started = Instant::now();
    let (answer, _) = send_signed(&layer, signed_with_certificate()).await;
    assert!(answer.status.is_success());
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(counting.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_a_new_key_share_one_refresh() {
    let (counting, refresher) =
        Counting::refresher(Does::AddCertificate, Duration::from_millis(500));
    let layer = layer_without_certificate(refresher);

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let layer = layer.clone();
        tasks.push(tokio::spawn(async move {
            send_signed(&layer, signed_with_certificate()).await
        }));
    }
    for task in tasks {
        let (answer, seen) = task.await.unwrap();
        assert!(answer.status.is_success(), "{}", answer.status);
        assert_eq!(seen.count(), 1);
    }
    assert_eq!(
        counting.calls(),
        1,
        "single-flight: one refresh for 50 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_forged_serials_causes_at_most_one_refresh_per_interval() {
    assert_eq!(KeyRefresher::DEFAULT_MIN_INTERVAL, Duration::from_secs(60));
    let (counting, refresher) = Counting::refresher(Does::Nothing, Duration::from_millis(200));
    let layer = layer_without_certificate(refresher);

    let flood = |from: usize| {
        let layer = layer.clone();
        async move {
            let mut tasks = Vec::new();
            for n in from..from + 200 {
                let layer = layer.clone();
                let forged = forged_with_serial(&random_serial(n));
                tasks.push(tokio::spawn(
                    async move { send_signed(&layer, forged).await },
                ));
            }
            for task in tasks {
                let (answer, seen) = task.await.unwrap();
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
                assert_eq!(
                    answer.rejection.unwrap().kind(),
                    RejectionKind::UnknownSerial
                );
                assert_eq!(seen.count(), 0);
            }
        }
    };

    flood(0).await;
    assert_eq!(
        counting.calls(),
        1,
        "200 unknown serials at once: one refresh"
    );

    // Within the interval: no refresh, and no waiting either.
    tokio::time::advance(Duration::from_secs(30)).await;
    let started = Instant::now();
    flood(1_000).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "nothing to wait for");
    assert_eq!(counting.calls(), 1);

    // 60 s after the first refresh started, one more is allowed, and only one.
    tokio::time::advance(Duration::from_secs(30)).await;
    flood(2_000).await;
    assert_eq!(counting.calls(), 2);
    flood(3_000).await;
    assert_eq!(counting.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_minimum_interval_is_configurable() {
    let (counting, refresher) = Counting::refresher(Does::Nothing, Duration::ZERO);
    let layer = layer_without_certificate(refresher.min_interval(Duration::from_secs(5)));
    send_signed(&layer, forged_with_serial("AB01")).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    send_signed(&layer, forged_with_serial("AB02")).await;
    assert_eq!(counting.calls(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    send_signed(&layer, forged_with_serial("AB03")).await;
    assert_eq!(counting.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresher_means_401_and_is_logged() {
    let (logs, captured) = capture_logs();
    let (counting, refresher) = Counting::refresher(Does::Fail, Duration::from_millis(100));
    let layer = layer_without_certificate(refresher);

    let (answer, seen) = send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.count(), 0);
    assert_eq!(counting.calls(), 1);
    // Within the interval the failure is not retried at once.
    send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(counting.calls(), 1);
    drop(logs);
    let text = captured.text();
    assert!(text.contains("the key refresher failed"), "{text}");
    assert!(text.contains("certificate download failed: 503"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_refresher_is_waited_for_at_most_max_wait_and_still_helps_the_resend() {
    assert_eq!(KeyRefresher::DEFAULT_MAX_WAIT, Duration::from_secs(2));
    let (counting, refresher) = Counting::refresher(Does::AddCertificate, Duration::from_secs(10));
    let layer = layer_without_certificate(refresher);

    let started = Instant::now();
    let (answer, seen) = send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.count(), 0);
    assert_eq!(started.elapsed(), KeyRefresher::DEFAULT_MAX_WAIT);

    // The refresh was not cancelled with the request: WeChat Pay's resend finds the key.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (answer, seen) = send_signed(&layer, signed_with_certificate()).await;
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(seen.count(), 1);
    assert_eq!(counting.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_refresher_does_not_hang_requests() {
    let (counting, refresher) = Counting::refresher(Does::Panic, Duration::from_millis(100));
    let layer = layer_without_certificate(refresher);

    let started = Instant::now();
    let (answer, _) = send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() < KeyRefresher::DEFAULT_MAX_WAIT,
        "woken by the panic, not the timeout"
    );
    assert_eq!(counting.calls(), 1);

    // The layer serves on.
    let genuine = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let (answer, _) = send_signed(&layer, genuine).await;
    assert!(answer.status.is_success());
}

#[tokio::test(start_paused = true)]
async fn only_an_unknown_serial_with_otherwise_good_headers_calls_the_refresher() {
    let (counting, refresher) = Counting::refresher(Does::Nothing, Duration::ZERO);
    let layer = layer_without_certificate(refresher);
    let unknown = || forged_with_serial("00C0FFEE");

    // A known key.
    let genuine = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    assert!(send_signed(&layer, genuine).await.0.status.is_success());
    // A probe, a stale timestamp, a signature that is not base64, a missing nonce.
    let cases = [
        unknown().into_probe(),
        forged_with_serial("00C0FFEE")
            .with_header("wechatpay-timestamp", &(NOW - 3_600).to_string()),
        unknown().with_header("wechatpay-signature", "not base64!"),
        unknown().without_header("wechatpay-nonce"),
    ];
    for case in cases {
        let (answer, _) = send(&layer, case.into_request()).await;
        assert!(answer.status.is_client_error(), "{}", answer.status);
    }
    // The synchronous API never refreshes.
    let forged = unknown();
    assert!(layer.verify(&forged.headers, &forged.body).is_err());
    assert_eq!(counting.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_refresher_belongs_to_the_key_ring_and_shows_in_debug() {
    let keys = KeyRing::new();
    assert!(!keys.has_refresher());
    let (_, refresher) = Counting::refresher(Does::Nothing, Duration::ZERO);
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .key_ring(keys.clone())
        .key_refresher(refresher);
    assert!(
        keys.has_refresher(),
        "set through the layer, seen through a clone of the ring"
    );
    assert!(format!("{keys:?}").contains("refresher: true"));
    drop(layer);
}
