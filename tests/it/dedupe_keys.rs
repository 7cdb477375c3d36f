//! Dedupe keys are identities: the default key names the merchant and the event, a
//! non-final refund state never becomes a 25-hour "done", and a custom key can opt out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::post;
use http::StatusCode;
use support::{axum_request, capture_logs, test_layer};
use tower::ServiceExt;
use tower_wechatpay::dedupe::{Dedupe, InMemoryStore};
use tower_wechatpay::test_util::{
    sample_combine_payment, sample_partner_payment, sample_payment, sample_refund,
};
use tower_wechatpay::{Handled, Notification, Notified, Retry};

/// A router whose handler counts its runs, behind the guard `dedupe`.
fn counting(dedupe: Dedupe) -> (Router, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(_): Notified<Notification>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Retry>(Handled::Done) }
            }),
        )
        .route_layer(test_layer().dedupe(dedupe).unwrap());
    (app, runs)
}

async fn deliver(app: &Router, event_type: &str, resource: &serde_json::Value) -> StatusCode {
    let response = app
        .clone()
        .oneshot(axum_request(event_type, resource))
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn combine_payments_of_two_merchants_with_one_order_number_both_run() {
    let (app, runs) = counting(Dedupe::new(InMemoryStore::new()));
    let first = sample_combine_payment();
    let mut other_merchant = first.clone();
    other_merchant["combine_mchid"] = "1900000999".into();
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &first).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &other_merchant).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "no silent acknowledgement");
    // A real copy of the first is still a copy.
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &first).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn payments_of_two_merchants_with_one_transaction_id_both_run() {
    let (app, runs) = counting(Dedupe::new(InMemoryStore::new()));
    let mut other_merchant = sample_payment();
    other_merchant["mchid"] = "1900000999".into();
    deliver(&app, "TRANSACTION.SUCCESS", &sample_payment()).await;
    deliver(&app, "TRANSACTION.SUCCESS", &other_merchant).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn partner_payments_are_keyed_by_sub_merchant_and_transaction_not_by_delivery() {
    let (app, runs) = counting(Dedupe::new(InMemoryStore::new()));
    let first = sample_partner_payment();
    let mut other_sub_merchant = first.clone();
    other_sub_merchant["sub_mchid"] = "1900000999".into();
    deliver(&app, "TRANSACTION.SUCCESS", &first).await;
    deliver(&app, "TRANSACTION.SUCCESS", &other_sub_merchant).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // A second delivery of the first (a new envelope id) is a copy.
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &first).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_second_abnormal_refund_notification_runs_the_handler_again() {
    let (app, runs) = counting(Dedupe::new(InMemoryStore::new()));
    let mut abnormal = sample_refund();
    abnormal["refund_status"] = "ABNORMAL".into();
    // After the abnormal-refund retry API, WeChat Pay may notify ABNORMAL again: a new
    // notification (new envelope id) for the same refund_id.
    deliver(&app, "REFUND.ABNORMAL", &abnormal).await;
    deliver(&app, "REFUND.ABNORMAL", &abnormal).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // A final state is one event, however often it is delivered.
    deliver(&app, "REFUND.SUCCESS", &sample_refund()).await;
    deliver(&app, "REFUND.SUCCESS", &sample_refund()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_custom_key_of_none_runs_the_handler_unguarded() {
    let dedupe = Dedupe::new(InMemoryStore::new()).key(|_: &Notification| None);
    let (app, runs) = counting(dedupe);
    deliver(&app, "TRANSACTION.SUCCESS", &sample_payment()).await;
    deliver(&app, "TRANSACTION.SUCCESS", &sample_payment()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_empty_custom_key_is_refused_with_a_log_line_and_never_groups_events() {
    let (_guard, logs) = capture_logs();
    let dedupe = Dedupe::new(InMemoryStore::new()).key(|_: &Notification| Some(String::new()));
    let (app, runs) = counting(dedupe);
    let mut other = sample_payment();
    other["transaction_id"] = "another".into();
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &sample_payment()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        deliver(&app, "TRANSACTION.SUCCESS", &other).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(
        logs.text().contains("returned an empty key"),
        "{}",
        logs.text()
    );
}
