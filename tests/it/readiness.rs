//! The instance that was polled ready is the one that is called.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::payment_request;

use http::{Request, Response, StatusCode};

use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock;

use tower_wechatpay::{BufferedBody, Notification, WechatPayLayer};

#[tokio::test]
async fn the_ready_instance_is_called_and_backpressure_passes_through() {
    let layer: WechatPayLayer = support::test_layer();
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<BufferedBody>, Response<BufferedBody>, _>(layer);

    // The inner service is not ready: neither are we.
    handle.allow(0);
    assert_pending!(service.poll_ready::<Request<BufferedBody>>());

    // One call allowed: poll ready, then call. The mock panics if `call` reaches an
    // instance that was not polled ready, and counts what it got.
    handle.allow(1);
    assert_ready_ok!(service.poll_ready::<Request<BufferedBody>>());
    // The body is read inside the future, so it must run for the inner call to happen.
    let response = tokio::spawn(service.call(payment_request()));

    let (request, send_response) = handle
        .next_request()
        .await
        .expect("the inner service is called");
    assert!(request.extensions().get::<Notification>().is_some());
    send_response.send_response(Response::new(BufferedBody::empty()));
    assert_eq!(
        response.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // The allowance is used up: the clone left behind is not ready until allowed again.
    assert_pending!(service.poll_ready::<Request<BufferedBody>>());
}

#[tokio::test]
async fn a_rejected_request_does_not_use_the_inner_service() {
    let layer = support::test_layer();
    let (mut service, mut handle) =
        mock::spawn_layer::<Request<BufferedBody>, Response<BufferedBody>, _>(layer);
    handle.allow(1);
    assert_ready_ok!(service.poll_ready::<Request<BufferedBody>>());
    let forged = payment_request().map(|_| BufferedBody::new("{}".into()));
    let response = service.call(forged).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The inner service saw nothing.
    let next =
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await;
    assert!(next.is_err(), "no request reached the inner service");
}
