//! The inner service is reserved (polled ready) only once a request is verified: strangers
//! waiting for their body never hold a permit of a concurrency limit, and refused requests
//! never touch the inner service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use support::{NOW, answer, payment_request, test_layer};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{BufferedBody, RejectionKind};

/// A request body that never arrives.
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// Valid headers (a stranger can copy them from any genuine request), a body that stalls.
fn stalled_request() -> Request<Stalled> {
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let mut request = Request::post("/");
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    request.body(Stalled).unwrap()
}

/// An inner service that counts its calls and acknowledges.
fn counting(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<BufferedBody>,
    Response = Response<BufferedBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: Request<BufferedBody>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(BufferedBody::empty())) }
    })
}

#[tokio::test(start_paused = true)]
async fn slow_strangers_do_not_take_the_permits_of_a_concurrency_limited_inner() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(test_layer())
        .concurrency_limit(1)
        .service(counting(calls.clone()));
    // Two strangers stall their bodies: each holds a request of ours, and neither may
    // hold the inner service's only permit.
    let mut strangers = Vec::new();
    for _ in 0..2 {
        let stranger = service.clone();
        strangers.push(tokio::spawn(async move {
            stranger.oneshot(stalled_request()).await
        }));
    }
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let response = service.clone().oneshot(payment_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "answered without waiting"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for stranger in strangers {
        let answer = answer(stranger.await.unwrap().unwrap()).await;
        assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_request_never_touches_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(test_layer())
        .concurrency_limit(1)
        .service(counting(calls.clone()));
    let forged = payment_request().map(|_| BufferedBody::new("{}".into()));
    let response = service.clone().oneshot(forged).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The permit is free: a genuine request goes through at once.
    let response = service.oneshot(payment_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_inner_service_that_never_becomes_ready_is_a_500_at_the_deadline() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<BufferedBody>, Response<BufferedBody>>();
    handle.allow(0);
    let service = ServiceBuilder::new().layer(test_layer()).service(mock);
    let started = tokio::time::Instant::now();
    let response = service.oneshot(payment_request()).await.unwrap();
    assert_eq!(
        started.elapsed(),
        tower_wechatpay::WechatPayLayer::DEFAULT_ANSWER_DEADLINE
    );
    let answer = answer(response).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::ServiceNotReady)
    );
}
