//! Keys: both modes at once, rotation while serving, and clear configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use http::StatusCode;
use support::{NOW, send_signed};
use tower_wechatpay::test_util::{
    TEST_APIV3_KEY, TEST_CERTIFICATE_PEM, TEST_CERTIFICATE_SERIAL, TEST_PUBLIC_KEY_ID,
    TEST_PUBLIC_KEY_PEM, TestSigner, sample_payment,
};
use tower_wechatpay::{ConfigError, KeyRing, RejectionKind, WechatPayLayer};

fn signed_by(signer: &TestSigner) -> tower_wechatpay::test_util::SignedNotification {
    signer
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap()
}

#[tokio::test]
async fn keys_added_and_removed_while_serving_apply_at_once() {
    // The certificate → public key migration: start with the certificate only.
    let keys = KeyRing::new();
    keys.add_certificate(TEST_CERTIFICATE_PEM).unwrap();
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .key_ring(keys.clone())
        .clock(|| NOW);

    let by_public_key = TestSigner::public_key_mode();
    let by_certificate = TestSigner::certificate_mode();
    let (answer, _) = send_signed(&layer, signed_by(&by_public_key)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.rejection.unwrap().kind(),
        RejectionKind::UnknownSerial
    );

    // WeChat Pay starts signing some callbacks with the public key: add it, no rebuild.
    keys.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    for signer in [&by_public_key, &by_certificate] {
        let (answer, _) = send_signed(&layer, signed_by(signer)).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }

    // At 100 %, the certificate is revoked.
    assert!(keys.remove(&TEST_CERTIFICATE_SERIAL.to_ascii_lowercase()));
    assert!(!keys.remove(TEST_CERTIFICATE_SERIAL));
    let (answer, _) = send_signed(&layer, signed_by(&by_certificate)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let (answer, _) = send_signed(&layer, signed_by(&by_public_key)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(keys.serials(), vec![TEST_PUBLIC_KEY_ID.to_owned()]);
}

#[test]
fn the_certificate_serial_is_read_from_the_certificate() {
    let keys = KeyRing::new();
    assert_eq!(
        keys.add_certificate(TEST_CERTIFICATE_PEM).unwrap(),
        TEST_CERTIFICATE_SERIAL
    );
    assert!(keys.contains(&TEST_CERTIFICATE_SERIAL.to_ascii_lowercase()));
}

#[test]
fn the_apiv3_key_must_be_32_bytes() {
    assert_eq!(
        WechatPayLayer::new(format!("{TEST_APIV3_KEY}\n")).unwrap_err(),
        ConfigError::ApiV3KeyLength { len: 33 }
    );
    assert!(WechatPayLayer::new("short").is_err());
    let message = WechatPayLayer::new("short").unwrap_err().to_string();
    assert!(message.contains("32 bytes"), "{message}");
}

#[test]
fn public_key_ids_need_their_prefix() {
    let keys = KeyRing::new();
    let bare = TEST_PUBLIC_KEY_ID.trim_start_matches("PUB_KEY_ID_");
    assert_eq!(
        keys.add_public_key(bare, TEST_PUBLIC_KEY_PEM),
        Err(ConfigError::PublicKeyIdFormat)
    );
    assert!(keys.is_empty());
}

#[test]
fn a_pem_of_the_wrong_kind_is_named() {
    let keys = KeyRing::new();
    let error = keys
        .add_public_key(TEST_PUBLIC_KEY_ID, TEST_CERTIFICATE_PEM)
        .unwrap_err();
    assert!(matches!(&error, ConfigError::UnexpectedPem { found, .. } if found == "CERTIFICATE"));
    assert!(error.to_string().contains("add_certificate"));

    let error = keys.add_certificate(TEST_PUBLIC_KEY_PEM).unwrap_err();
    assert!(error.to_string().contains("add_public_key"), "{error}");

    let private = include_str!("../../src/test_util/keys/stranger.key.pem");
    let error = keys
        .add_public_key(TEST_PUBLIC_KEY_ID, private)
        .unwrap_err();
    assert!(
        error.to_string().contains("never configure a private key"),
        "{error}"
    );
    // The error never quotes the key material.
    assert!(!format!("{error:?}{error}").contains("MII"));
}

#[test]
fn garbage_is_not_a_key() {
    let keys = KeyRing::new();
    assert_eq!(
        keys.add_public_key(TEST_PUBLIC_KEY_ID, "not a pem"),
        Err(ConfigError::InvalidPem)
    );
    let not_rsa = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert_eq!(
        keys.add_public_key(TEST_PUBLIC_KEY_ID, not_rsa),
        Err(ConfigError::InvalidPublicKey)
    );
    let not_x509 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        keys.add_certificate(not_x509),
        Err(ConfigError::InvalidCertificate)
    );
}

#[test]
fn pkcs1_public_keys_and_crlf_line_endings_are_accepted() {
    let keys = KeyRing::new();
    let crlf = TEST_PUBLIC_KEY_PEM.replace('\n', "\r\n");
    keys.add_public_key(TEST_PUBLIC_KEY_ID, crlf).unwrap();
    assert!(keys.contains(TEST_PUBLIC_KEY_ID));
}

#[tokio::test]
async fn a_pkcs1_public_key_verifies_like_the_spki_one() {
    let pkcs1 = include_str!("../keys/public_key_mode.pkcs1.pem");
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_public_key(TEST_PUBLIC_KEY_ID, pkcs1)
        .unwrap()
        .clock(|| NOW);
    let (answer, _) = send_signed(&layer, signed_by(&TestSigner::public_key_mode())).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}
