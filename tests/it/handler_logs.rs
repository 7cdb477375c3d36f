//! What the layer logs about handler outcomes: business rejections at warn with the reason,
//! retries at error with the cause, both with the notification id.
//!
//! Logs are captured per test thread (`support::capture_logs`), so these run beside the
//! other tests in one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::StatusCode;
use support::{NOW, test_layer};
use tower::ServiceExt;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{Handled, Notified, Retry};

async fn handler(Notified(payment): Notified<Transaction>) -> Result<Handled, Retry> {
    match payment.out_trade_no.as_str() {
        "reject" => Ok(Handled::declined("unknown order")),
        _ => Err(Retry::new(std::io::Error::other(
            "connection refused by db:5432",
        ))),
    }
}

#[tokio::test]
async fn business_rejections_warn_and_retries_error_with_the_notification_id() {
    let (_guard, captured) = support::capture_logs();

    let app = Router::new()
        .route("/notify", post(handler))
        .layer(test_layer());
    let mut ids = Vec::new();
    for (out_trade_no, status) in [
        ("reject", StatusCode::NO_CONTENT),
        ("fail", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let mut resource = sample_payment();
        resource["out_trade_no"] = out_trade_no.into();
        let signed = TestSigner::public_key_mode()
            .notification("TRANSACTION.SUCCESS", &resource)
            .timestamp(NOW)
            .build()
            .unwrap();
        let id = serde_json::from_slice::<serde_json::Value>(&signed.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        ids.push(id);
        let response = app
            .clone()
            .oneshot(signed.into_request_to("/notify").map(Body::new))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }

    let logs = captured.text();
    let warn = logs
        .lines()
        .find(|line| line.contains("WARN") && line.contains("business reason"))
        .unwrap_or_else(|| panic!("a warn line for the business rejection:\n{logs}"));
    assert!(
        warn.contains("unknown order") && warn.contains(&ids[0]),
        "{warn}"
    );
    let error = logs
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("handler failed"))
        .unwrap_or_else(|| panic!("an error line for the retry:\n{logs}"));
    assert!(
        error.contains("connection refused by db:5432") && error.contains(&ids[1]),
        "{error}"
    );
}
