//! Schema drift: a genuine payment whose resource no longer matches the model still reaches
//! handlers that read the raw resource; handlers that need the model answer a retry; `null`
//! where an array or object may be is read as "none".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use axum::Router;
use axum::routing::post;
use http::StatusCode;
use support::{NOW, axum_request, capture_logs, send_signed, test_layer};
use tower::ServiceExt;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment};
use tower_wechatpay::{Event, Handled, Notification, Notified, RejectionKind, Retry};

/// A payment whose `amount` went missing: JSON, but not the transaction model.
const DRIFTED: &str =
    r#"{"mchid":"1900012345","out_trade_no":"1","transaction_id":"2","trade_state":"SUCCESS"}"#;

fn drifted() -> SignedNotification {
    TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .resource_text(DRIFTED)
        .timestamp(NOW)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_drifted_resource_reaches_a_handler_that_reads_the_raw_notification() {
    let (answer, seen) = send_signed(&test_layer(), drifted()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let (notification, _) = seen.last();
    let Event::Unparsed(error) = notification.event() else {
        panic!("expected Event::Unparsed, got {:?}", notification.event());
    };
    assert_eq!(error.model(), "transaction");
    assert_eq!(error.category(), "data");
    assert!(notification.payment().is_none());
    assert_eq!(notification.resource_json(), DRIFTED);
}

async fn status_through(app: Router) -> (StatusCode, Option<RejectionKind>) {
    let request = drifted()
        .into_request_to("/notify")
        .map(axum::body::Body::new);
    let response = app.oneshot(request).await.unwrap();
    let kind = response
        .extensions()
        .get::<tower_wechatpay::Rejection>()
        .map(|r| r.kind());
    (response.status(), kind)
}

#[tokio::test]
async fn handlers_that_need_the_model_answer_a_retry() {
    async fn typed(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    async fn event(Notified(_): Notified<Event>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    async fn raw(Notified(n): Notified<Notification>) -> Result<Handled, Retry> {
        assert!(matches!(n.event(), Event::Unparsed(_)));
        Ok(Handled::Done)
    }
    let route = |app: Router| app.route_layer(test_layer());
    let (status, kind) = status_through(route(Router::new().route("/notify", post(typed)))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(kind, Some(RejectionKind::MalformedResource));
    let (status, kind) = status_through(route(Router::new().route("/notify", post(event)))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(kind, Some(RejectionKind::MalformedResource));
    let (status, _) = status_through(route(Router::new().route("/notify", post(raw)))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn each_drift_cause_is_logged_at_error_once() {
    let (_guard, logs) = capture_logs();
    let layer = test_layer();
    for _ in 0..3 {
        let (answer, _) = send_signed(&layer, drifted()).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    let text = logs.text();
    assert_eq!(text.matches("schema drift").count(), 1, "{text}");
    assert!(text.contains("ERROR"), "{text}");
    // A payer's data never reaches the log through serde's message.
    assert!(!text.contains("1900012345"), "{text}");
}

#[tokio::test]
async fn null_where_an_array_or_object_may_be_is_read_as_none() {
    let mut payment = sample_payment();
    payment["promotion_detail"] = serde_json::Value::Null;
    payment["payer"] = serde_json::Value::Null;
    let request = axum_request("TRANSACTION.SUCCESS", &payment);
    async fn typed(Notified(payment): Notified<Transaction>) -> Result<Handled, Retry> {
        assert!(payment.promotion_detail.is_empty());
        assert!(payment.payer.openid.is_none());
        Ok(Handled::Done)
    }
    let app = Router::new()
        .route("/notify", post(typed))
        .route_layer(test_layer());
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}
