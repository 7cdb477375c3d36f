//! APIv2 (XML) notifications through the layer's service: the route shared with v3, the
//! answers in v2's language, handler outcomes, the dedupe guard, and no v2 key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use tower_wechatpay::dedupe::InMemoryStore;
use tower_wechatpay::test_util::{
    SignType, TEST_V2_KEY, V2TestSigner, sample_payment, sample_v2_payment, sample_v2_refund,
};
use tower_wechatpay::{BufferedBody, Event, WechatPayLayer};

use crate::support::{self, Answer, capture_logs, delivery, send, send_signed, test_layer};

const XML_SUCCESS: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

fn v2_layer() -> WechatPayLayer {
    test_layer().v2_key(TEST_V2_KEY).unwrap()
}

fn xml_request(body: String) -> Request<BufferedBody> {
    let mut request = Request::new(BufferedBody::new(Bytes::from(body)));
    *request.method_mut() = http::Method::POST;
    request
        .headers_mut()
        .insert("content-type", "text/xml".parse().unwrap());
    request
}

fn payment(sign_type: SignType) -> Request<BufferedBody> {
    xml_request(V2TestSigner::new(TEST_V2_KEY).payment_xml(sample_v2_payment(), sign_type, false))
}

fn refund() -> Request<BufferedBody> {
    let (outer, inner) = sample_v2_refund();
    xml_request(V2TestSigner::new(TEST_V2_KEY).refund_xml(outer, inner))
}

fn assert_xml_success(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(answer.body, XML_SUCCESS);
}

fn assert_xml_fail(answer: &Answer) -> String {
    assert!(answer.status.is_server_error(), "{}", answer.status);
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        text.starts_with("<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA["),
        "{text}"
    );
    text
}

#[tokio::test]
async fn a_v2_payment_reaches_the_handler_and_is_acknowledged_in_xml() {
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let (answer, seen) = send(&v2_layer(), payment(sign_type)).await;
        assert_xml_success(&answer);
        let (notification, body) = seen.last();
        assert_eq!(notification.version(), 2);
        assert_eq!(notification.event_type(), "TRANSACTION.SUCCESS");
        let Event::V2Payment(payment) = notification.event() else {
            panic!("{:?}", notification.event());
        };
        assert_eq!(payment.total_fee, 990);
        assert_eq!(payment.transaction_id, "4200830166131860913909960308");
        assert!(
            body.starts_with(b"<xml>"),
            "the handler gets the original body"
        );
    }
}

#[tokio::test]
async fn a_v2_refund_made_in_the_merchant_platform_reaches_the_handler() {
    let (answer, seen) = send(&v2_layer(), refund()).await;
    assert_xml_success(&answer);
    let (notification, _) = seen.last();
    assert_eq!(notification.event_type(), "REFUND.SUCCESS");
    let Event::V2Refund(refund) = notification.event() else {
        panic!("{:?}", notification.event());
    };
    assert_eq!(refund.refund_fee, 990);
    assert_eq!(refund.mch_id, "1900012345");
    assert_eq!(
        refund.refund_request_source.as_deref(),
        Some("VENDOR_PLATFORM")
    );
    let fields = notification.resource_value().unwrap();
    assert_eq!(fields["appid"], "wx8888888888888888", "outer fields kept");
    assert_eq!(fields["refund_id"], "50000000382019052709732678859");
}

#[tokio::test]
async fn a_forged_v2_payment_never_reaches_the_handler() {
    let forged = V2TestSigner::new("another-key-another-key-another-").payment_xml(
        sample_v2_payment(),
        SignType::Md5,
        false,
    );
    let (answer, seen) = send(&v2_layer(), xml_request(forged)).await;
    assert_xml_fail(&answer);
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn a_retry_from_the_handler_is_an_xml_fail_and_a_decline_an_xml_success() {
    for (status, acknowledged) in [
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        (StatusCode::SERVICE_UNAVAILABLE, false),
        (StatusCode::OK, true),
        (StatusCode::NO_CONTENT, true),
    ] {
        let seen = support::Seen::default();
        let service = tower::ServiceBuilder::new()
            .layer(v2_layer())
            .service(support::recording(seen.clone(), status));
        let response = tower::ServiceExt::oneshot(service, payment(SignType::Md5))
            .await
            .unwrap();
        let answer = support::answer(response).await;
        assert_eq!(seen.count(), 1);
        if acknowledged {
            assert_xml_success(&answer);
        } else {
            assert_xml_fail(&answer);
        }
    }
}

#[tokio::test]
async fn a_v2_copy_of_a_handled_payment_is_acknowledged_without_the_handler() {
    let layer = v2_layer().dedupe(InMemoryStore::new()).unwrap();
    let (first, seen) = send(&layer, payment(SignType::Md5)).await;
    assert_xml_success(&first);
    assert_eq!(seen.count(), 1);
    let (again, seen) = send(&layer, payment(SignType::HmacSha256)).await;
    assert_xml_success(&again);
    assert_eq!(seen.count(), 0, "the same payment ran twice");
    // Its v3 twin (same merchant and transaction) is the same business event.
    let (v3, seen) = send_signed(&layer, delivery("TRANSACTION.SUCCESS", &sample_payment())).await;
    assert_eq!(v3.status, StatusCode::NO_CONTENT);
    assert_eq!(
        seen.count(),
        0,
        "a v3 copy of a payment handled via v2 ran again"
    );
}

#[tokio::test]
async fn without_a_v2_key_xml_is_refused_and_the_log_says_what_to_configure() {
    let (_guard, logs) = capture_logs();
    let (answer, seen) = send(&test_layer(), payment(SignType::Md5)).await;
    assert_xml_fail(&answer);
    assert_eq!(seen.count(), 0);
    let text = logs.text();
    assert!(text.contains("no v2 key is configured"), "{text}");
    assert!(text.contains("WechatPayLayer::v2_key"), "{text}");
}

#[tokio::test]
async fn a_headerless_body_that_is_not_xml_is_refused_as_before() {
    let mut request = xml_request(r#"{"id":"x"}"#.to_owned());
    request
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let (answer, seen) = send(&v2_layer(), request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.fail_message().contains("missing"),
        "{}",
        answer.fail_message()
    );
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn xml_with_a_wechatpay_header_is_a_broken_v3_request_not_v2() {
    let mut request = payment(SignType::Md5);
    request
        .headers_mut()
        .insert("wechatpay-serial", "PUB_KEY_ID_0000".parse().unwrap());
    let (answer, seen) = send(&v2_layer(), request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn a_merchant_with_only_the_v2_key_accepts_v2_and_refuses_v3() {
    let layer = WechatPayLayer::v2_only(TEST_V2_KEY).unwrap();
    let (answer, seen) = send(&layer, payment(SignType::Md5)).await;
    assert_xml_success(&answer);
    assert_eq!(seen.count(), 1);
    let (v3, seen) = send_signed(&layer, delivery("TRANSACTION.SUCCESS", &sample_payment())).await;
    assert!(!v3.status.is_success());
    assert_eq!(seen.count(), 0);
}

#[test]
fn a_v2_key_that_is_not_32_characters_is_refused() {
    assert!(test_layer().v2_key("short").is_err());
    assert!(test_layer().v2_key(format!("{TEST_V2_KEY}\n")).is_ok());
}
