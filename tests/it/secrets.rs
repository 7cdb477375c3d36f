//! Secrets and payer data never reach `Debug` output or logs, even at TRACE; the logs do
//! say what an operator needs: envelope id, event type, serial and outcome.
//!
//! Logs are captured per test thread (`support::capture_logs` keeps callsite interest per
//! thread), so this runs beside the other tests in one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use http::StatusCode;
use support::{NOW, send_signed, test_layer};
use tower_wechatpay::test_util::{TEST_APIV3_KEY, TEST_PUBLIC_KEY_ID, TestSigner, sample_payment};

const OPENID: &str = "oTestOpenid0000000000000SECRET";

#[tokio::test]
async fn logs_at_trace_never_contain_secrets_or_payer_data() {
    let (_guard, captured) = support::capture_logs();

    let signer = TestSigner::public_key_mode();
    let genuine = signer
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let signature = genuine.headers["wechatpay-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let layer = test_layer();

    // Accepted, handler failed, forged, probe, unknown serial, stale, wrong APIv3 key.
    let (answer, seen) = send_signed(&layer, genuine.clone()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let id = seen.last().0.id().to_owned();
    let plaintext = seen.last().0.resource_json().to_owned();
    send_signed(&layer, genuine.clone().with_body(&b"{\"x\":1}"[..])).await;
    send_signed(&layer, genuine.clone().into_probe()).await;
    send_signed(
        &layer,
        genuine.clone().with_header(
            "wechatpay-serial",
            "PUB_KEY_ID_0000000000000000000000000000000077",
        ),
    )
    .await;
    send_signed(
        &layer,
        genuine.clone().with_header("wechatpay-timestamp", "1"),
    )
    .await;
    let wrong_key = signer
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .encrypted_with(b"AnotherApiV3KeyAnotherApiV3Key00")
        .build()
        .unwrap();
    send_signed(&layer, wrong_key).await;
    let v2_refund = http::Request::post("/")
        .header("content-type", "text/xml")
        .body(tower_wechatpay::BufferedBody::new(
            "<xml><req_info>…</req_info></xml>".into(),
        ))
        .unwrap();
    let (answer, _) = support::send(&layer, v2_refund).await;
    // With the `v2` feature an XML body is read and refused for want of a v2 key (500, so
    // WeChat Pay keeps it); without it, for its missing headers.
    let refused = if cfg!(feature = "v2") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    assert_eq!(answer.status, refused);

    let logs = captured.text();
    for secret in [
        TEST_APIV3_KEY,
        OPENID,
        &plaintext,
        &signature,
        &signature[..40],
    ] {
        assert!(!logs.contains(secret), "logs leak {secret:.20}…:\n{logs}");
    }
    assert!(
        !logs.contains("4200830166131860913909960308"),
        "no resource field in logs"
    );
    for needed in [
        id.as_str(),
        "TRANSACTION.SUCCESS",
        TEST_PUBLIC_KEY_ID,
        "PUB_KEY_ID_0000000000000000000000000000000077",
        "verified and decrypted",
        "signature probe",
        "does not verify",
        "timestamp window",
        "APIv3 key is most likely wrong",
        "add the matching public key",
        "APIv2 (XML)",
    ] {
        assert!(
            logs.contains(needed),
            "logs should mention {needed:?}:\n{logs}"
        );
    }
}
