//! The layer mounts on an axum `Router` directly and the handler extracts the notification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use axum::body::Body;
use axum::routing::post;
use axum::{Extension, Router};
use http::StatusCode;
use support::{NOW, test_layer};
use tower::ServiceExt;
use tower_wechatpay::Notification;
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};

async fn handler(Extension(notification): Extension<Notification>, body: String) -> StatusCode {
    // The handler gets the original bytes too.
    assert!(body.contains(notification.id()));
    match notification.payment() {
        Some(payment) if payment.amount.total == 990 => StatusCode::OK,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
        None => StatusCode::CONFLICT,
    }
}

fn app() -> Router {
    Router::new()
        .route("/wechatpay/notify", post(handler))
        .layer(test_layer())
}

fn request(event_type: &str, resource: &serde_json::Value) -> http::Request<Body> {
    let signed = TestSigner::public_key_mode()
        .notification(event_type, resource)
        .timestamp(NOW)
        .build()
        .unwrap();
    signed.into_request_to("/wechatpay/notify").map(Body::new)
}

#[tokio::test]
async fn a_router_with_the_layer_acknowledges_a_payment() {
    let response = app()
        .oneshot(request("TRANSACTION.SUCCESS", &sample_payment()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_handler_failure_on_a_router_is_a_fail_answer() {
    let response = app()
        .oneshot(request("REFUND.SUCCESS", &sample_refund()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["code"], "FAIL");
}

#[tokio::test]
async fn a_forged_request_never_reaches_the_router() {
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap()
        .into_request_to("/wechatpay/notify")
        .map(Body::new);
    let response = app().oneshot(forged).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn route_layer_guards_only_the_notify_route() {
    let app = Router::new()
        .route("/wechatpay/notify", post(handler).route_layer(test_layer()))
        .route("/health", axum::routing::get(|| async { "ok" }));
    let health = app
        .clone()
        .oneshot(http::Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let notify = app
        .oneshot(request("TRANSACTION.SUCCESS", &sample_payment()))
        .await
        .unwrap();
    assert_eq!(notify.status(), StatusCode::NO_CONTENT);
}
