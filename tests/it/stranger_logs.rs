//! What anyone on the internet can make us log is rate-limited, probes are counted only
//! when they name a key we have, and refusals say the likely cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use axum::Router;
use axum::routing::post;
use http::StatusCode;
use support::{NOW, axum_request, capture_logs, delivery, send_signed, test_layer};
use tower::ServiceExt;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};
use tower_wechatpay::{Handled, Notified, Retry};

#[tokio::test]
async fn a_flood_of_forgeries_logs_one_line_per_kind() {
    let (_guard, logs) = capture_logs();
    let layer = test_layer();
    for _ in 0..20 {
        let forged = TestSigner::stranger()
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW)
            .serial(TestSigner::public_key_mode().serial())
            .build()
            .unwrap();
        assert_eq!(
            send_signed(&layer, forged).await.0.status,
            StatusCode::UNAUTHORIZED
        );
        let random_serial = delivery("TRANSACTION.SUCCESS", &sample_payment()).with_header(
            "wechatpay-serial",
            "PUB_KEY_ID_0000000000000000000000000001",
        );
        assert_eq!(
            send_signed(&layer, random_serial).await.0.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let text = logs.text();
    assert_eq!(
        text.matches("signature does not verify").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("unknown Wechatpay-Serial").count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn probes_are_counted_only_for_a_known_serial() {
    let layer = test_layer();
    let probe = delivery("TRANSACTION.SUCCESS", &sample_payment()).into_probe();
    let imitation = probe.clone().with_header(
        "wechatpay-serial",
        "PUB_KEY_ID_0000000000000000000000000001",
    );
    let (answer, _) = send_signed(&layer, imitation).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(layer.probes_seen(), 0);
    let (answer, _) = send_signed(&layer, probe).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(layer.probes_seen(), 1);
}

#[tokio::test]
async fn a_probe_log_line_counts_the_probe_it_reports() {
    let (_guard, logs) = capture_logs();
    let layer = test_layer();
    let probe = delivery("TRANSACTION.SUCCESS", &sample_payment()).into_probe();
    let (answer, _) = send_signed(&layer, probe).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let text = logs.text();
    assert!(text.contains("probes_seen=1 "), "{text}");
}

#[tokio::test]
async fn a_json_request_without_signature_headers_is_not_blamed_on_apiv2() {
    let (_guard, logs) = capture_logs();
    let unsigned = http::Request::post("/")
        .header("content-type", "application/json")
        .body(tower_wechatpay::BufferedBody::new("{}".into()))
        .unwrap();
    let (answer, _) = support::send(&test_layer(), unsigned).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let text = logs.text();
    assert!(text.contains("refused a notification request"), "{text}");
    assert!(!text.contains("APIv2"), "{text}");
}

#[tokio::test]
async fn an_empty_signature_type_means_the_default_type() {
    let signed = delivery("TRANSACTION.SUCCESS", &sample_payment())
        .with_header("wechatpay-signature-type", "");
    let (answer, seen) = send_signed(&test_layer(), signed).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(seen.count(), 1);
}

#[tokio::test]
async fn a_reserialised_body_is_logged_as_most_likely_rewritten_on_the_way() {
    let (_guard, logs) = capture_logs();
    let signed = delivery("TRANSACTION.SUCCESS", &sample_payment());
    let value: serde_json::Value = serde_json::from_slice(&signed.body).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let (answer, _) = send_signed(&test_layer(), signed.with_body(pretty)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        logs.text().contains("rewritten on the way"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_compact_forgery_is_not_blamed_on_a_proxy() {
    let (_guard, logs) = capture_logs();
    let signed = delivery("TRANSACTION.SUCCESS", &sample_payment());
    let body =
        String::from_utf8(signed.body.to_vec())
            .unwrap()
            .replacen("\"id\":\"", "\"id\":\"x", 1);
    let (answer, _) = send_signed(&test_layer(), signed.with_body(body)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let text = logs.text();
    assert!(text.contains("signature does not verify"), "{text}");
    assert!(!text.contains("rewritten"), "{text}");
}

#[tokio::test]
async fn a_stale_timestamp_is_logged_as_a_number() {
    let (_guard, logs) = capture_logs();
    let stale = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW - 600)
        .build()
        .unwrap();
    let (answer, _) = send_signed(&test_layer(), stale).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let text = logs.text();
    assert!(text.contains(&format!("timestamp={}", NOW - 600)), "{text}");
    assert!(!text.contains("Some("), "{text}");
}

#[tokio::test]
async fn a_refund_on_a_payment_route_is_logged_as_refused_before_the_handler() {
    let (_guard, logs) = capture_logs();
    async fn paid(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    let app = Router::new()
        .route("/notify", post(paid))
        .route_layer(test_layer());
    let response = app
        .oneshot(axum_request("REFUND.SUCCESS", &sample_refund()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = logs.text();
    assert!(text.contains("before its handler ran"), "{text}");
    assert!(text.contains("Notified<Event>"), "{text}");
    assert!(!text.contains("the handler asked for a retry"), "{text}");
}
