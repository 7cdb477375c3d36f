//! The independent conformance vectors (`tests/vectors`, copied unedited from
//! `../shared/vectors`): every case through the layer with the clock at the vectors' `now`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use base64::Engine;
use http::{Request, StatusCode};
use serde_json::Value;
use support::{Seen, answer, recording};
use tower::ServiceExt;
use tower_wechatpay::{BufferedBody, KeyRing, WechatPayLayer};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{path}")).unwrap()
}

fn cases() -> Value {
    serde_json::from_str(&read("cases.json")).unwrap()
}

fn vector_layer(vectors: &Value) -> WechatPayLayer {
    let keys = KeyRing::new();
    keys.add_public_key(
        read("keys/wechatpay_public_key_id.txt").trim(),
        read("keys/wechatpay_public_key.pem"),
    )
    .unwrap();
    let mut serials = vec![
        keys.add_certificate(read("keys/platform_cert_a.pem"))
            .unwrap(),
        keys.add_certificate(read("keys/platform_cert_b.pem"))
            .unwrap(),
    ];
    serials.sort();
    let mut expected: Vec<String> = vectors["certificate_serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|serial| serial.as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        serials, expected,
        "certificate serials read from the certificates"
    );
    assert_eq!(
        vectors["public_key_id"].as_str().unwrap(),
        read("keys/wechatpay_public_key_id.txt").trim()
    );

    let now = vectors["now"].as_i64().unwrap();
    WechatPayLayer::new(read("keys/apiv3_key.txt").trim())
        .unwrap()
        .key_ring(keys)
        .timestamp_tolerance(Duration::from_secs(
            vectors["timestamp_tolerance_seconds"].as_u64().unwrap(),
        ))
        .unwrap()
        .clock(move || now)
}

fn request(case: &Value) -> Request<BufferedBody> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(case["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, case["body_text"].as_str().unwrap().as_bytes());
    let mut builder = Request::post("/wechatpay/notify");
    for header in case["headers"].as_array().unwrap() {
        builder = builder.header(header[0].as_str().unwrap(), header[1].as_str().unwrap());
    }
    builder.body(BufferedBody::new(body.into())).unwrap()
}

fn status_matches(expected: &Value, status: StatusCode) -> bool {
    match expected {
        Value::String(class) if class == "2xx" => status.is_success(),
        Value::Number(code) => code.as_u64() == Some(u64::from(status.as_u16())),
        Value::Array(codes) => codes.iter().any(|code| status_matches(code, status)),
        other => panic!("unknown expected status {other}"),
    }
}

#[tokio::test]
async fn every_vector_gets_its_expected_answer() {
    let vectors = cases();
    let layer = vector_layer(&vectors);
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "all vectors are present");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let seen = Seen::default();
        let service = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(recording(seen.clone(), StatusCode::OK));
        let response = service.oneshot(request(case)).await.unwrap();
        let answer = answer(response).await;
        assert!(
            status_matches(&case["status"], answer.status),
            "{name}: expected {}, got {}",
            case["status"],
            answer.status
        );
        match case["expect"].as_str().unwrap() {
            "accept" => {
                assert_eq!(seen.count(), 1, "{name}: the handler runs once");
                let (notification, body) = seen.last();
                assert_eq!(
                    body,
                    case["body_text"].as_str().unwrap().as_bytes(),
                    "{name}"
                );
                let resource: Value = notification.resource_value().unwrap();
                assert_eq!(resource, case["resource"], "{name}: decrypted resource");
                assert_eq!(notification.id(), case["envelope"]["id"], "{name}");
                assert_eq!(
                    notification.event_type(),
                    case["envelope"]["event_type"],
                    "{name}"
                );
                assert!(answer.body.is_empty(), "{name}: success has no body");
            }
            "reject" => {
                assert_eq!(seen.count(), 0, "{name}: the handler never runs");
                answer.fail_message();
                let rejection = answer.rejection.expect("a rejection in the extensions");
                assert_eq!(rejection.status(), answer.status, "{name}");
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
}

#[tokio::test]
async fn accepted_vectors_are_typed() {
    let vectors = cases();
    let layer = vector_layer(&vectors);
    for case in vectors["cases"].as_array().unwrap() {
        if case["expect"] != "accept" {
            continue;
        }
        let request = request(case);
        let (parts, body) = request.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let notification = layer.verify(&parts.headers, &body).unwrap();
        let resource = &case["resource"];
        if notification.event_type().starts_with("REFUND.") {
            let refund = notification.refund().expect("a refund model");
            assert_eq!(refund.refund_id, resource["refund_id"]);
            assert_eq!(refund.amount.refund, resource["amount"]["refund"]);
        } else {
            let payment = notification.payment().expect("a payment model");
            assert_eq!(payment.transaction_id, resource["transaction_id"]);
            assert_eq!(payment.amount.total, resource["amount"]["total"]);
            assert!(payment.is_success());
        }
    }
}
