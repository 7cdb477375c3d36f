//! The inner service's result becomes exactly the answer WeChat Pay requires.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::payment_request;

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use support::{answer, test_layer};
use tower::ServiceExt;
use tower_wechatpay::{BufferedBody, RejectionKind, SuccessReply, WechatPayLayer};

async fn answer_for(
    layer: WechatPayLayer,
    status: StatusCode,
    body: &'static str,
) -> support::Answer {
    let service = tower::ServiceBuilder::new().layer(layer).service_fn(
        move |_: Request<BufferedBody>| async move {
            let mut response = Response::new(BufferedBody::new(body.into()));
            *response.status_mut() = status;
            response.extensions_mut().insert("from the handler");
            Ok::<_, Infallible>(response)
        },
    );
    answer(service.oneshot(payment_request()).await.unwrap()).await
}

#[tokio::test]
async fn handler_success_is_204_with_no_body_by_default() {
    for status in [StatusCode::OK, StatusCode::CREATED, StatusCode::NO_CONTENT] {
        let answer = answer_for(test_layer(), status, "handler text").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{status}");
        assert!(answer.body.is_empty(), "the handler's body is not sent");
        assert!(answer.rejection.is_none());
    }
}

#[tokio::test]
async fn success_reply_is_configurable() {
    let answer = answer_for(
        test_layer().success_reply(SuccessReply::OkEmpty),
        StatusCode::OK,
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());

    let answer = answer_for(
        test_layer().success_reply(SuccessReply::OkLegacyJson),
        StatusCode::OK,
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"code": "SUCCESS", "message": "成功"})
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn handler_4xx_and_5xx_keep_their_status_with_a_fail_body() {
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::CONFLICT,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let answer = answer_for(test_layer(), status, "secret handler detail").await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.fail_message(), "handler failed");
        let rejection = answer.rejection.unwrap();
        assert_eq!(rejection.kind(), RejectionKind::HandlerRetry);
        assert_eq!(rejection.status(), status);
    }
}

#[tokio::test]
async fn handler_1xx_or_3xx_becomes_500() {
    for status in [
        StatusCode::CONTINUE,
        StatusCode::FOUND,
        StatusCode::NOT_MODIFIED,
    ] {
        let answer = answer_for(test_layer(), status, "").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{status}");
        answer.fail_message();
        assert_eq!(
            answer.rejection.map(|r| r.kind()),
            Some(RejectionKind::UnexpectedHandlerStatus)
        );
    }
}

#[tokio::test]
async fn a_service_error_becomes_500_and_the_error_stays_inside() {
    let service = tower::ServiceBuilder::new().layer(test_layer()).service_fn(
        |_: Request<BufferedBody>| async {
            Err::<Response<BufferedBody>, _>(std::io::Error::other("database password=hunter2"))
        },
    );
    let response: Response<BufferedBody> = service.oneshot(payment_request()).await.unwrap();
    let answer = answer(response).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.fail_message(), "service error");
    assert!(!String::from_utf8_lossy(&answer.body).contains("hunter2"));
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::ServiceError)
    );
}

#[tokio::test]
async fn handler_response_extensions_reach_outer_layers() {
    let service = tower::ServiceBuilder::new().layer(test_layer()).service_fn(
        |_: Request<BufferedBody>| async {
            let mut response = Response::new(BufferedBody::empty());
            response.extensions_mut().insert(42_u32);
            Ok::<_, Infallible>(response)
        },
    );
    let response = service.oneshot(payment_request()).await.unwrap();
    assert_eq!(response.extensions().get::<u32>(), Some(&42));
}

#[test]
fn the_error_type_stays_the_inner_one() {
    // An `Infallible` inner service gives an `Infallible` layered service.
    fn assert_infallible<S: tower::Service<Request<BufferedBody>, Error = Infallible>>(_: &S) {}
    let service = tower::ServiceBuilder::new().layer(test_layer()).service_fn(
        |_: Request<BufferedBody>| async {
            Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
        },
    );
    assert_infallible(&service);
}

#[test]
fn the_service_and_future_are_send_and_the_notification_is_shareable() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<tower_wechatpay::Notification>();
    assert_send_sync_clone::<WechatPayLayer>();
    let mut service = tower::ServiceBuilder::new().layer(test_layer()).service_fn(
        |_: Request<BufferedBody>| async {
            Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
        },
    );
    let future = tower::Service::call(&mut service, payment_request());
    assert_send(&future);
}

#[tokio::test]
async fn a_future_polled_after_it_completed_answers_500_instead_of_panicking() {
    use tower::Service;
    let mut service = tower::ServiceBuilder::new().layer(test_layer()).service_fn(
        |_: Request<BufferedBody>| async {
            Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
        },
    );
    let forged = payment_request().map(|_| BufferedBody::new("{}".into()));
    let mut future = tokio_test::task::spawn(service.call(forged));
    let first = tokio_test::assert_ready_ok!(future.poll());
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let again = answer(tokio_test::assert_ready_ok!(future.poll())).await;
    assert_eq!(again.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        again.rejection.map(|r| r.kind()),
        Some(RejectionKind::Misconfigured)
    );
}
