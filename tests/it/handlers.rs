//! Handler outcomes, the `Notified` extractor, the handler deadline and panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use axum::{Extension, Router};
use http::StatusCode;
use support::{axum_request, test_layer};
use tower::ServiceExt;
use tower_wechatpay::models::{Refund, Transaction};
use tower_wechatpay::test_util::{sample_partner_payment, sample_payment, sample_refund};
use tower_wechatpay::{Event, Handled, Notification, Notified, Rejection, RejectionKind, Retry};

fn payment() -> http::Request<Body> {
    axum_request("TRANSACTION.SUCCESS", &sample_payment())
}

struct Answer {
    status: StatusCode,
    message: Option<String>,
    kind: Option<RejectionKind>,
}

async fn send(app: Router, request: http::Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let kind = response
        .extensions()
        .get::<Rejection>()
        .map(Rejection::kind);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let message = (!body.is_empty()).then(|| {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "FAIL");
        value["message"].as_str().unwrap().to_owned()
    });
    Answer {
        status,
        message,
        kind,
    }
}

fn app<H, T>(handler: H) -> Router
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    Router::new()
        .route("/notify", post(handler))
        .layer(test_layer())
}

#[tokio::test]
async fn done_is_acknowledged() {
    async fn handler(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.message, None);
}

#[tokio::test]
async fn a_business_rejection_is_acknowledged() {
    async fn handler(Notified(payment): Notified<Transaction>) -> Result<Handled, Retry> {
        if let Err(rejection) = payment.check_amount(1) {
            return Ok(Handled::declined(rejection));
        }
        Ok(Handled::Done)
    }
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn question_mark_on_an_error_makes_wechat_retry() {
    async fn handler(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
        let _: u64 = "database is down".parse()?;
        Ok(Handled::Done)
    }
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.message.as_deref(), Some("handler failed"));
    assert_eq!(answer.kind, Some(RejectionKind::HandlerRetry));
}

#[tokio::test]
async fn an_explicit_retry_makes_wechat_retry() {
    async fn handler() -> Result<Handled, Retry> {
        Err(Retry::new("inventory service timed out"))
    }
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn the_extractor_without_the_layer_is_a_500_never_an_acknowledgement() {
    async fn handler(Notified(_): Notified<Transaction>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    let unguarded = Router::new().route("/notify", post(handler));
    let answer = send(unguarded, payment()).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.message.as_deref(),
        Some("wechatpay layer not mounted")
    );
    assert_eq!(answer.kind, Some(RejectionKind::Misconfigured));
}

#[tokio::test]
async fn the_extractor_refuses_a_notification_of_another_kind_with_a_retry() {
    async fn handler(Notified(_): Notified<Refund>) -> Result<Handled, Retry> {
        Ok(Handled::Done)
    }
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let answer = send(
        app(handler),
        axum_request("REFUND.SUCCESS", &sample_refund()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_extractor_takes_any_kind_as_event_or_notification() {
    async fn by_event(Notified(event): Notified<Event>) -> StatusCode {
        match event {
            Event::PartnerPayment(_) => StatusCode::OK,
            _ => StatusCode::CONFLICT,
        }
    }
    async fn by_notification(Notified(notification): Notified<Notification>) -> StatusCode {
        if notification.partner_payment().is_some() {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        }
    }
    let partner = || axum_request("TRANSACTION.SUCCESS", &sample_partner_payment());
    assert_eq!(
        send(app(by_event), partner()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(app(by_notification), partner()).await.status,
        StatusCode::NO_CONTENT
    );
}

/// Sets a flag when dropped: proves the handler's future was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_over_the_deadline_is_cancelled_and_answered_500() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let handler = move || {
        let flag = flag.clone();
        async move {
            let _guard = DropFlag(flag);
            // The paused clock jumps: no real waiting.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Retry>(Handled::Done)
        }
    };
    let started = tokio::time::Instant::now();
    let answer = send(app(handler), payment()).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.message.as_deref(), Some("handler timed out"));
    assert_eq!(answer.kind, Some(RejectionKind::HandlerTimeout));
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the handler was cancelled"
    );
    assert_eq!(
        started.elapsed(),
        tower_wechatpay::WechatPayLayer::DEFAULT_ANSWER_DEADLINE
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_configurable_and_a_fast_handler_is_unaffected() {
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, Retry>(Handled::Done)
    };
    let strict = Router::new().route("/notify", post(slow)).layer(
        test_layer()
            .answer_deadline(Duration::from_secs(1))
            .unwrap(),
    );
    assert_eq!(
        send(strict, payment()).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        send(app(slow), payment()).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_the_service_keeps_serving() {
    async fn handler(Extension(notification): Extension<Notification>) -> StatusCode {
        if notification.refund().is_some() {
            panic!("bug in the refund path");
        }
        StatusCode::OK
    }
    let app = app(handler);
    let answer = send(
        app.clone(),
        axum_request("REFUND.SUCCESS", &sample_refund()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.message.as_deref(), Some("handler panicked"));
    assert_eq!(answer.kind, Some(RejectionKind::HandlerPanicked));
    assert_eq!(send(app, payment()).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_panicking_handler_over_real_http_leaves_the_server_up() {
    async fn handler(Extension(notification): Extension<Notification>) -> StatusCode {
        if notification.refund().is_some() {
            panic!("bug in the refund path");
        }
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(handler)).await });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let send_http = |request: http::Request<Body>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = format!("http://{addr}/notify").parse().unwrap();
            client
                .request(http::Request::from_parts(parts, body))
                .await
                .unwrap()
                .status()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            send_http(axum_request("REFUND.SUCCESS", &sample_refund())).await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(send_http(payment()).await, StatusCode::NO_CONTENT);
    }
}

#[test]
fn outcomes_without_axum_map_to_plain_responses() {
    let done = tower_wechatpay::into_http_response(Ok(Handled::Done));
    assert_eq!(done.status(), StatusCode::OK);
    let retry = tower_wechatpay::into_http_response(Err(Retry::new("db down")));
    assert_eq!(retry.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
