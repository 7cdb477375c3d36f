//! One answer deadline from the request's arrival covers every step, on a paused clock: a
//! slow body leaves the handler only what is left, a stuck key refresher is abandoned, and
//! a slow done-marker write never holds back the acknowledgement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use support::{NOW, answer, capture_logs, payment_request, send_signed, test_layer};
use tokio::time::{Instant, Sleep};
use tower::{ServiceBuilder, ServiceExt};
use tower_wechatpay::dedupe::{Claim, Dedupe, DedupeStore, StoreFuture};
use tower_wechatpay::refresh::KeyRefresher;
use tower_wechatpay::test_util::{
    TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner, sample_payment,
};
use tower_wechatpay::{BufferedBody, KeyRing, RejectionKind, WechatPayLayer};

/// A handler that takes `takes` (virtual time) and acknowledges.
fn slow_handler(
    takes: Duration,
) -> impl tower::Service<
    Request<BufferedBody>,
    Response = Response<BufferedBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: Request<BufferedBody>| async move {
        tokio::time::sleep(takes).await;
        Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
    })
}

/// The whole body, but only after `delay`.
struct Late {
    body: Option<Bytes>,
    delay: Pin<Box<Sleep>>,
}

impl Body for Late {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.delay.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(self.body.take().map(|body| Ok(Frame::data(body))))
    }
}

fn arriving_after(delay: Duration) -> Request<Late> {
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let mut request = Request::post("/");
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    request
        .body(Late {
            body: Some(signed.body),
            delay: Box::pin(tokio::time::sleep(delay)),
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_leaves_the_handler_only_what_is_left_of_the_deadline() {
    let service = ServiceBuilder::new()
        .layer(test_layer())
        .service(slow_handler(Duration::from_secs(3)));
    let started = Instant::now();
    // 2.5 s for the body + 3 s of handler would be 5.5 s: past WeChat Pay's 5 s.
    let response = service
        .oneshot(arriving_after(Duration::from_millis(2500)))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), WechatPayLayer::DEFAULT_ANSWER_DEADLINE);
    let answer = answer(response).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::HandlerTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_within_the_deadline_is_acknowledged() {
    let service = ServiceBuilder::new()
        .layer(test_layer())
        .service(slow_handler(Duration::from_millis(3900)));
    let started = Instant::now();
    let response = service.oneshot(payment_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(started.elapsed(), Duration::from_millis(3900));
}

/// Claims at once; marking done takes `complete_takes`, then records it.
#[derive(Clone, Default)]
struct SlowToComplete {
    complete_takes: Duration,
    completed: Arc<AtomicBool>,
}

impl DedupeStore for SlowToComplete {
    fn claim(&self, _: String, _: String, _: Duration) -> StoreFuture<Claim> {
        Box::pin(async { Ok(Claim::Claimed) })
    }
    fn complete(&self, _: String, _: String, _: Duration) -> StoreFuture<()> {
        let (takes, completed) = (self.complete_takes, Arc::clone(&self.completed));
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            completed.store(true, Ordering::SeqCst);
            Ok(())
        })
    }
    fn release(&self, _: String, _: String) -> StoreFuture<()> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_done_marker_write_never_holds_back_the_acknowledgement() {
    let store = SlowToComplete {
        complete_takes: Duration::from_millis(800),
        ..SlowToComplete::default()
    };
    let service = ServiceBuilder::new()
        .layer(test_layer().dedupe(Dedupe::new(store.clone())).unwrap())
        .service(slow_handler(Duration::from_millis(3500)));
    let started = Instant::now();
    let response = service.oneshot(payment_request()).await.unwrap();
    // The handler succeeded at 3.5 s; the write would end at 4.3 s: answered at 4 s.
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(started.elapsed(), WechatPayLayer::DEFAULT_ANSWER_DEADLINE);
    assert!(!store.completed.load(Ordering::SeqCst));
    // The write goes on in the background and lands (at 4.3 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.completed.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_fast_done_marker_write_is_awaited_before_answering() {
    let store = SlowToComplete {
        complete_takes: Duration::from_millis(100),
        ..SlowToComplete::default()
    };
    let service = ServiceBuilder::new()
        .layer(test_layer().dedupe(Dedupe::new(store.clone())).unwrap())
        .service(slow_handler(Duration::from_millis(10)));
    let response = service.oneshot(payment_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(store.completed.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_refresher_that_never_finishes_is_abandoned_and_a_later_serial_refreshes_again() {
    let (_guard, logs) = capture_logs();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let refresher = KeyRefresher::new(move |_keys: KeyRing| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<(), tower::BoxError>>()
    })
    .timeout(Duration::from_secs(30))
    .min_interval(Duration::from_secs(60));
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW)
        .key_refresher(refresher);
    let signed_with_certificate = || {
        TestSigner::certificate_mode()
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW)
            .build()
            .unwrap()
    };
    let (answer, _) = send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(logs.text().contains("stuck"), "{}", logs.text());
    tokio::time::sleep(Duration::from_secs(30)).await;
    // More than the minimum interval after the first start: a new refresh may run.
    let (answer, _) = send_signed(&layer, signed_with_certificate()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "refreshing is not off for good"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_wait_is_bounded_by_the_answer_deadline() {
    let refresher =
        KeyRefresher::new(|_keys: KeyRing| std::future::pending::<Result<(), tower::BoxError>>())
            .max_wait(Duration::from_secs(10));
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap()
        .clock(|| NOW)
        .key_refresher(refresher);
    let signed = TestSigner::certificate_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let started = Instant::now();
    let (answer, _) = send_signed(&layer, signed).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(started.elapsed(), WechatPayLayer::DEFAULT_ANSWER_DEADLINE);
}
