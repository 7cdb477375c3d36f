//! The tampering checklist: every way a request can be altered is refused, with the right
//! status, a FAIL body, a typed rejection, and without reaching the handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use http::StatusCode;
use support::{NOW, send, send_signed, test_layer};
use tower_wechatpay::RejectionKind;
use tower_wechatpay::test_util::{
    SignedNotification, TEST_CERTIFICATE_SERIAL, TestSigner, sample_payment,
};

fn genuine() -> SignedNotification {
    TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap()
}

async fn assert_refused(signed: SignedNotification, status: StatusCode, kind: RejectionKind) {
    let (answer, seen) = send_signed(&test_layer(), signed).await;
    assert_eq!(answer.status, status);
    answer.fail_message();
    assert_eq!(answer.rejection.map(|r| r.kind()), Some(kind));
    assert_eq!(
        seen.count(),
        0,
        "the handler must not see a refused request"
    );
}

#[tokio::test]
async fn accepts_the_genuine_request() {
    let (answer, seen) = send_signed(&test_layer(), genuine()).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    assert_eq!(seen.count(), 1);
}

#[tokio::test]
async fn accepts_certificate_mode() {
    let signed = TestSigner::certificate_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let (answer, seen) = send_signed(&test_layer(), signed).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(seen.last().0.serial(), TEST_CERTIFICATE_SERIAL);
}

#[tokio::test]
async fn rejects_a_tampered_body() {
    let signed = genuine();
    let tampered = signed.body_text().replace("支付成功", "支付失败");
    assert_ne!(tampered, signed.body_text());
    assert_refused(
        signed.with_body(tampered),
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
}

#[tokio::test]
async fn rejects_a_body_with_one_more_byte() {
    let signed = genuine();
    let mut body = signed.body.to_vec();
    body.push(b' ');
    assert_refused(
        signed.with_body(body),
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
}

#[tokio::test]
async fn rejects_a_reserialised_body() {
    // What frameworks do to bodies: parse and re-serialise. Same JSON, other bytes.
    let signed = genuine();
    let value: serde_json::Value = serde_json::from_slice(&signed.body).unwrap();
    let reserialised = serde_json::to_vec_pretty(&value).unwrap();
    assert_refused(
        signed.with_body(reserialised),
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
}

#[tokio::test]
async fn rejects_each_missing_header_in_turn() {
    for header in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
    ] {
        let (answer, seen) = send_signed(&test_layer(), genuine().without_header(header)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{header}");
        assert_eq!(
            answer.fail_message(),
            format!("missing {} header", header.to_ascii_lowercase())
        );
        assert_eq!(
            answer.rejection.map(|r| r.kind()),
            Some(RejectionKind::MissingHeader)
        );
        assert_eq!(seen.count(), 0);
    }
}

#[tokio::test]
async fn header_names_are_case_insensitive() {
    let signed = genuine();
    let mut request = http::Request::post("/");
    for (name, value) in &signed.headers {
        // http normalizes names; send them as WeChat Pay spells them, and upper case.
        request = request.header(name.as_str().to_ascii_uppercase(), value);
    }
    let request = request
        .body(tower_wechatpay::BufferedBody::new(signed.body))
        .unwrap();
    let (answer, _) = send(&test_layer(), request).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn missing_signature_type_means_rsa() {
    let signed = genuine().without_header("wechatpay-signature-type");
    let (answer, seen) = send_signed(&test_layer(), signed).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(seen.count(), 1);
}

#[tokio::test]
async fn rejects_another_signature_type() {
    assert_refused(
        genuine().with_header("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3"),
        StatusCode::BAD_REQUEST,
        RejectionKind::UnsupportedSignatureType,
    )
    .await;
}

#[tokio::test]
async fn rejects_garbage_empty_and_truncated_signatures() {
    let signed = genuine();
    let signature = signed.headers["wechatpay-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let truncated = &signature[..signature.len() - 8];
    let wrong_length = &signature[..signature.len() - 4];
    for bad in ["garbage!!", "", truncated, wrong_length, "AAAA"] {
        assert_refused(
            genuine().with_header("Wechatpay-Signature", bad),
            StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidSignature,
        )
        .await;
    }
}

#[tokio::test]
async fn rejects_a_signature_by_another_key() {
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    assert_refused(
        forged,
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
}

#[tokio::test]
async fn rejects_and_counts_the_signature_probe() {
    let layer = test_layer();
    assert_eq!(layer.probes_seen(), 0);
    let (answer, seen) = send_signed(&layer, genuine().into_probe()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.fail_message(), "signature verification failed");
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::SignatureProbe)
    );
    assert_eq!(seen.count(), 0);
    assert_eq!(layer.probes_seen(), 1);
}

#[tokio::test]
async fn rejects_an_unknown_serial() {
    assert_refused(
        genuine().with_header(
            "Wechatpay-Serial",
            "PUB_KEY_ID_9999999999999999999999999999999999",
        ),
        StatusCode::UNAUTHORIZED,
        RejectionKind::UnknownSerial,
    )
    .await;
    assert_refused(
        genuine().with_header("Wechatpay-Serial", "ABCDEF"),
        StatusCode::UNAUTHORIZED,
        RejectionKind::UnknownSerial,
    )
    .await;
}

#[tokio::test]
async fn certificate_serials_match_in_lower_case_and_with_leading_zeros() {
    let signer = TestSigner::certificate_mode();
    for serial in [
        TEST_CERTIFICATE_SERIAL.to_ascii_lowercase(),
        format!("00{TEST_CERTIFICATE_SERIAL}"),
    ] {
        let signed = signer
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW)
            .serial(&serial)
            .build()
            .unwrap();
        let (answer, _) = send_signed(&test_layer(), signed).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{serial}");
    }
}

#[tokio::test]
async fn public_key_ids_match_exactly() {
    let signer = TestSigner::public_key_mode();
    let lower = signer.serial().to_ascii_lowercase();
    let without_prefix = signer.serial().trim_start_matches("PUB_KEY_ID_").to_owned();
    for serial in [lower, without_prefix] {
        let signed = signer
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW)
            .serial(&serial)
            .build()
            .unwrap();
        let (answer, _) = send_signed(&test_layer(), signed).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{serial}");
    }
}

#[tokio::test]
async fn timestamp_window_edges_in_both_directions() {
    let tolerance = 300;
    for (offset, accepted) in [
        (-(tolerance + 1), false),
        (-tolerance, true),
        (-(tolerance - 1), true),
        (tolerance - 1, true),
        (tolerance, true),
        (tolerance + 1, false),
    ] {
        let signed = TestSigner::public_key_mode()
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW + offset)
            .build()
            .unwrap();
        let (answer, seen) = send_signed(&test_layer(), signed).await;
        if accepted {
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "offset {offset}");
        } else {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "offset {offset}");
            assert_eq!(
                answer.rejection.map(|r| r.kind()),
                Some(RejectionKind::TimestampOutOfWindow)
            );
            assert_eq!(seen.count(), 0);
        }
    }
}

#[tokio::test]
async fn tolerance_is_configurable() {
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW - 61)
        .build()
        .unwrap();
    let layer = test_layer()
        .timestamp_tolerance(std::time::Duration::from_secs(60))
        .unwrap();
    let (answer, _) = send_signed(&layer, signed).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rejects_a_non_numeric_or_overflowing_timestamp() {
    for bad in ["soon", "1764300000.5", "", "99999999999999999999999", "0x1"] {
        assert_refused(
            genuine().with_header("Wechatpay-Timestamp", bad),
            StatusCode::BAD_REQUEST,
            RejectionKind::InvalidHeader,
        )
        .await;
    }
    // Extremes parse but are far outside the window.
    for extreme in [i64::MIN.to_string(), i64::MAX.to_string()] {
        assert_refused(
            genuine().with_header("Wechatpay-Timestamp", &extreme),
            StatusCode::UNAUTHORIZED,
            RejectionKind::TimestampOutOfWindow,
        )
        .await;
    }
}

#[tokio::test]
async fn rejects_a_changed_timestamp_or_nonce_inside_the_window() {
    assert_refused(
        genuine().with_header("Wechatpay-Timestamp", &(NOW + 1).to_string()),
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
    assert_refused(
        genuine().with_header("Wechatpay-Nonce", "ANOTHERNONCEANOTHERNONCEANOTHER0"),
        StatusCode::UNAUTHORIZED,
        RejectionKind::InvalidSignature,
    )
    .await;
}

fn with_resource(
    build: impl FnOnce(
        tower_wechatpay::test_util::NotificationBuilder<'_>,
    ) -> tower_wechatpay::test_util::NotificationBuilder<'_>,
) -> SignedNotification {
    let signer = TestSigner::public_key_mode();
    build(
        signer
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(NOW),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn genuine_but_wrong_apiv3_key_is_500_so_wechat_retries() {
    let signed = with_resource(|b| b.encrypted_with(b"AnotherApiV3KeyAnotherApiV3Key00"));
    assert_refused(
        signed,
        StatusCode::INTERNAL_SERVER_ERROR,
        RejectionKind::DecryptionFailed,
    )
    .await;
}

#[tokio::test]
async fn resource_nonce_must_be_12_bytes() {
    // A signed envelope whose nonce is 11 or 13 bytes cannot decrypt.
    for nonce in ["12345678901", "1234567890123"] {
        let signed = with_resource(|b| b.resource_nonce("123456789012"));
        let tampered_body = signed.body_text().replace("123456789012", nonce);
        let resigned = resign(&tampered_body);
        assert_refused(
            resigned,
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::DecryptionFailed,
        )
        .await;
    }
}

/// Signs an arbitrary body as WeChat Pay would: genuine, whatever it contains.
fn resign(body: &str) -> SignedNotification {
    let key = include_str!("../../src/test_util/keys/public_key_mode.key.pem");
    let signer = TestSigner::new(
        key,
        tower_wechatpay::test_util::TEST_PUBLIC_KEY_ID,
        tower_wechatpay::test_util::TEST_APIV3_KEY,
    )
    .unwrap();
    signer.sign_body(body.to_owned(), NOW).unwrap()
}

#[tokio::test]
async fn associated_data_is_authenticated() {
    let signed = with_resource(|b| b.associated_data(Some("transaction")));
    let tampered = resign(&signed.body_text().replace(
        r#""associated_data":"transaction""#,
        r#""associated_data":"refund""#,
    ));
    assert_refused(
        tampered,
        StatusCode::INTERNAL_SERVER_ERROR,
        RejectionKind::DecryptionFailed,
    )
    .await;
}

#[tokio::test]
async fn empty_or_missing_associated_data_decrypts() {
    for associated_data in [Some(""), None] {
        let signed = with_resource(|b| b.associated_data(associated_data));
        let (answer, seen) = send_signed(&test_layer(), signed).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{associated_data:?}");
        assert_eq!(seen.count(), 1);
    }
}

#[tokio::test]
async fn ciphertext_shorter_than_the_tag_is_refused() {
    let signed = with_resource(|b| b);
    let value: serde_json::Value = serde_json::from_slice(&signed.body).unwrap();
    let ciphertext = value["resource"]["ciphertext"].as_str().unwrap();
    for short in ["", "AAAA", "AAAAAAAAAAAAAAAAAAAA"] {
        let tampered = resign(&signed.body_text().replace(ciphertext, short));
        assert_refused(
            tampered,
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::DecryptionFailed,
        )
        .await;
    }
    let not_base64 = resign(&signed.body_text().replace(ciphertext, "!!!"));
    assert_refused(
        not_base64,
        StatusCode::INTERNAL_SERVER_ERROR,
        RejectionKind::DecryptionFailed,
    )
    .await;
}

#[tokio::test]
async fn unsupported_algorithm_is_500() {
    let signed = with_resource(|b| b.algorithm("AEAD_SM4_GCM"));
    assert_refused(
        signed,
        StatusCode::INTERNAL_SERVER_ERROR,
        RejectionKind::UnsupportedAlgorithm,
    )
    .await;
}

#[tokio::test]
async fn genuine_envelope_that_is_not_json_is_500() {
    for body in ["not json", "{}", r#"{"id":"x"}"#, ""] {
        assert_refused(
            resign(body),
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::MalformedEnvelope,
        )
        .await;
    }
}

#[tokio::test]
async fn a_genuine_resource_that_is_not_json_is_500() {
    let not_json = with_resource(|b| b.resource_text("not json"));
    assert_refused(
        not_json,
        StatusCode::INTERNAL_SERVER_ERROR,
        RejectionKind::MalformedResource,
    )
    .await;
}

#[tokio::test]
async fn oversized_body_with_content_length_is_413_before_reading() {
    let signed = genuine();
    let layer = test_layer().max_body_size(signed.body.len() - 1);
    let request = signed.clone().into_request();
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        signed.body.len().to_string().parse().unwrap(),
    );
    let (answer, seen) = send(&layer, http::Request::from_parts(parts, body)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    answer.fail_message();
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::BodyTooLarge)
    );
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn oversized_body_without_content_length_is_413() {
    // A streamed body with no length: the limit still holds while reading.
    use futures_util_free_stream::chunks;
    let signed = genuine();
    let layer = test_layer().max_body_size(100);
    let mut request = http::Request::post("/");
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let request = request.body(chunks(signed.body.clone(), 10)).unwrap();
    assert!(
        request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_none()
    );
    let seen = support::Seen::default();
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .service(support::recording(seen.clone(), StatusCode::OK));
    let response = tower::ServiceExt::oneshot(service, request).await.unwrap();
    let answer = support::answer(response).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    answer.fail_message();
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn a_body_at_the_limit_is_accepted() {
    let signed = genuine();
    let layer = test_layer().max_body_size(signed.body.len());
    let (answer, _) = send_signed(&layer, signed).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

/// `signed` as a request that declares `content_length`.
fn declaring(
    signed: &SignedNotification,
    content_length: usize,
) -> http::Request<tower_wechatpay::BufferedBody> {
    let (mut parts, body) = signed.clone().into_request().into_parts();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        content_length.to_string().parse().unwrap(),
    );
    http::Request::from_parts(parts, body)
}

#[tokio::test]
async fn a_declared_length_at_the_limit_is_accepted() {
    let signed = genuine();
    let layer = test_layer().max_body_size(signed.body.len());
    let (answer, seen) = send(&layer, declaring(&signed, signed.body.len())).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(seen.count(), 1);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_on_the_header_alone() {
    // The body itself fits: only the declared length can refuse it, before reading.
    let signed = genuine();
    let layer = test_layer().max_body_size(signed.body.len());
    let (answer, seen) = send(&layer, declaring(&signed, signed.body.len() + 1)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer.rejection.map(|r| r.kind()),
        Some(RejectionKind::BodyTooLarge)
    );
    assert_eq!(seen.count(), 0);
}

/// A body that arrives in small chunks with no declared length.
mod futures_util_free_stream {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    pub(super) struct Chunks {
        rest: Bytes,
        size: usize,
    }

    pub(super) fn chunks(bytes: Bytes, size: usize) -> Chunks {
        Chunks { rest: bytes, size }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.rest.is_empty() {
                return Poll::Ready(None);
            }
            let take = self.size.min(self.rest.len());
            let chunk = self.rest.split_to(take);
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
    }
}
