//! Slow and stalled clients: a body that trickles in or stops must not hold a task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame};
use support::{NOW, Seen, answer, recording, test_layer};
use tower::ServiceExt;
use tower_wechatpay::RejectionKind;
use tower_wechatpay::test_util::{TestSigner, sample_payment};

/// Sends `prefix`, then one byte every `every` forever (or never, with `None`).
struct Trickle {
    prefix: Option<Bytes>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    every: Option<Duration>,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(every) = self.every else {
            return Poll::Pending; // stalled for good
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" ")))))
    }
}

async fn send_slowly(
    every: Option<Duration>,
    layer: tower_wechatpay::WechatPayLayer,
) -> (support::Answer, Seen, Duration) {
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let mut request = http::Request::post("/");
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let half = signed.body.slice(..signed.body.len() / 2);
    let request = request
        .body(Trickle {
            prefix: Some(half),
            sleep: None,
            every,
        })
        .unwrap();
    let seen = Seen::default();
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .service(recording(seen.clone(), StatusCode::OK));
    let started = tokio::time::Instant::now();
    let response = service.oneshot(request).await.unwrap();
    let elapsed = started.elapsed();
    (answer(response).await, seen, elapsed)
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_answered_408_at_the_body_timeout() {
    let (answer, seen, elapsed) = send_slowly(None, test_layer()).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer.fail_message(), "body read timed out");
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::BodyTimeout)
    );
    assert_eq!(seen.count(), 0);
    assert_eq!(
        elapsed,
        tower_wechatpay::WechatPayLayer::DEFAULT_BODY_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickling_body_cannot_keep_the_request_alive() {
    // One byte a second would take many minutes; the timeout bounds the whole body.
    let layer = test_layer().body_timeout(Duration::from_secs(2)).unwrap();
    let (answer, seen, elapsed) = send_slowly(Some(Duration::from_secs(1)), layer).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(seen.count(), 0);
    assert_eq!(elapsed, Duration::from_secs(2));
}
