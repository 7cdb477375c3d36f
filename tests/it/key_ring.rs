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

const PLATFORM_CERT_A: &str = include_str!("../vectors/keys/platform_cert_a.pem");
const PLATFORM_CERT_A_SERIAL: &str = "6215B8B8902A174F11FA2AC0079DD25A49FE85B0";
const PLATFORM_CERT_B: &str = include_str!("../vectors/keys/platform_cert_b.pem");
const PLATFORM_CERT_B_SERIAL: &str = "653C4E59D8B9B45C1B98FBE466809A111BA1192E";
const VECTORS_PUBLIC_KEY: &str = include_str!("../vectors/keys/wechatpay_public_key.pem");
const RSA1024_PUBLIC_KEY: &str = include_str!("../keys/rsa1024.pub.pem");
const RSA1024_CERTIFICATE: &str = include_str!("../keys/rsa1024.cert.pem");
const EXPIRED_CERTIFICATE: &str = include_str!("../keys/expired.cert.pem");
const NOT_YET_VALID_CERTIFICATE: &str = include_str!("../keys/not_yet_valid.cert.pem");
const MERCHANT_API_CERTIFICATE: &str = include_str!("../keys/merchant_api.cert.pem");
const MERCHANT_API_CERTIFICATE_BY_ORG: &str = include_str!("../keys/merchant_api_org.cert.pem");
const PRIVATE_KEY: &str = include_str!("../../src/test_util/keys/stranger.key.pem");

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
        WechatPayLayer::new("short").unwrap_err(),
        ConfigError::ApiV3KeyLength { len: 5 }
    );
    assert_eq!(
        WechatPayLayer::new(format!("{TEST_APIV3_KEY}x")).unwrap_err(),
        ConfigError::ApiV3KeyLength { len: 33 }
    );
    let message = WechatPayLayer::new("short").unwrap_err().to_string();
    assert!(message.contains("32 bytes"), "{message}");
}

#[tokio::test]
async fn an_apiv3_key_read_from_a_file_works_with_its_trailing_newline() {
    for from_file in [
        format!("{TEST_APIV3_KEY}\n"),
        format!("{TEST_APIV3_KEY}\r\n"),
        format!("  {TEST_APIV3_KEY}\t\n\n"),
    ] {
        let layer = WechatPayLayer::new(from_file.as_bytes())
            .unwrap()
            .add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
            .unwrap()
            .clock(|| NOW);
        // It decrypts: the trimmed key is the key.
        let (answer, _) = send_signed(&layer, signed_by(&TestSigner::public_key_mode())).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    // Whitespace inside the key is not trimmed.
    let (head, tail) = TEST_APIV3_KEY.split_at(16);
    assert_eq!(
        WechatPayLayer::new(format!("{head} {tail}")).unwrap_err(),
        ConfigError::ApiV3KeyLength { len: 33 }
    );
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
        Err(ConfigError::InvalidPem {
            reason: "no -----BEGIN line found"
        })
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

#[test]
fn rsa_keys_under_2048_bits_are_refused_under_every_backend() {
    let keys = KeyRing::new();
    let error = keys
        .add_public_key(TEST_PUBLIC_KEY_ID, RSA1024_PUBLIC_KEY)
        .unwrap_err();
    assert_eq!(error, ConfigError::PublicKeyTooSmall { bits: 1024 });
    assert!(error.to_string().contains("2048"), "{error}");
    assert_eq!(
        keys.add_certificate(RSA1024_CERTIFICATE),
        Err(ConfigError::PublicKeyTooSmall { bits: 1024 })
    );
    assert!(keys.is_empty());

    // 2048-bit keys, in both forms, still go in.
    keys.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    keys.add_certificate(TEST_CERTIFICATE_PEM).unwrap();
    assert_eq!(keys.len(), 2);
}

#[test]
fn an_expired_platform_certificate_is_refused_with_the_way_out() {
    let keys = KeyRing::new();
    let error = keys.add_certificate(EXPIRED_CERTIFICATE).unwrap_err();
    assert_eq!(
        error,
        ConfigError::CertificateExpired {
            serial: "E0F1A2B3C".to_owned(),
            not_after: 1_609_459_200, // 2021-01-01T00:00:00Z
        }
    );
    let message = error.to_string();
    assert!(message.contains("2021-01-01T00:00:00Z"), "{message}");
    assert!(
        message.contains("download the current platform certificate"),
        "{message}"
    );
    assert!(message.contains("public key mode"), "{message}");
    assert!(keys.is_empty());
}

#[test]
fn a_platform_certificate_not_yet_valid_is_accepted_with_a_warning() {
    let (_guard, captured) = support::capture_logs();
    let keys = KeyRing::new();
    let serial = keys.add_certificate(NOT_YET_VALID_CERTIFICATE).unwrap();
    assert_eq!(serial, "F0F1A2B3C");
    assert!(keys.contains(&serial));
    let logs = captured.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("F0F1A2B3C"), "{logs}");
    assert!(logs.contains("2090-01-01T00:00:00Z"), "{logs}");
}

#[test]
fn the_merchant_api_certificate_is_refused_as_such() {
    let keys = KeyRing::new();
    let error = keys.add_certificate(MERCHANT_API_CERTIFICATE).unwrap_err();
    assert_eq!(
        error,
        ConfigError::MerchantCertificate {
            serial: "5CA275DC7B".to_owned(),
            subject: "1900012345".to_owned(),
        }
    );
    let message = error.to_string();
    assert!(message.contains("apiclient_cert.pem"), "{message}");
    assert!(
        message.contains("not wechat pay's platform certificate"),
        "{message}"
    );
    assert!(message.contains("PUB_KEY_ID_"), "{message}");

    // Recognized by its organization too, whatever its common name.
    assert!(matches!(
        keys.add_certificate(MERCHANT_API_CERTIFICATE_BY_ORG),
        Err(ConfigError::MerchantCertificate { .. })
    ));
    // Platform certificates issued to Tenpay are not mistaken for it.
    keys.add_certificate(PLATFORM_CERT_A).unwrap();
    assert_eq!(keys.serials(), [PLATFORM_CERT_A_SERIAL]);
}

#[test]
fn a_private_key_given_as_a_certificate_is_refused_without_being_quoted() {
    let keys = KeyRing::new();
    let error = keys.add_certificate(PRIVATE_KEY).unwrap_err();
    assert!(matches!(&error, ConfigError::UnexpectedPem { found, .. } if found == "PRIVATE KEY"));
    assert!(
        error.to_string().contains("never configure a private key"),
        "{error}"
    );
    assert!(!format!("{error:?}{error}").contains("MII"));
    // Not even after a certificate in the same file.
    let bundle = format!("{TEST_CERTIFICATE_PEM}{PRIVATE_KEY}");
    assert!(matches!(
        keys.add_certificates(bundle),
        Err(ConfigError::UnexpectedPem { .. })
    ));
    assert!(keys.is_empty());
}

/// The base64 of a PEM file, on one line.
fn base64_of(pem: &str) -> String {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .collect::<String>()
}

fn label_of(pem: &str) -> &str {
    pem.lines()
        .next()
        .unwrap()
        .trim_start_matches("-----BEGIN ")
        .trim_end_matches("-----")
}

/// The PEM shapes merchants really have, made from a strict RFC 7468 PEM.
fn pem_variants(pem: &str) -> Vec<(&'static str, String)> {
    let label = label_of(pem);
    let base64 = base64_of(pem);
    let wrapped_76 = base64
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        (
            "76-column lines",
            format!("-----BEGIN {label}-----\n{wrapped_76}\n-----END {label}-----\n"),
        ),
        ("CRLF line endings", pem.replace('\n', "\r\n")),
        (
            "the base64 on one line",
            format!("-----BEGIN {label}-----\n{base64}\n-----END {label}-----\n"),
        ),
        (
            "everything on one line",
            format!("-----BEGIN {label}-----{base64}-----END {label}-----"),
        ),
        ("surrounding whitespace", format!("\n\n  \t{pem}\n \n\n")),
        (
            "text before the BEGIN line",
            format!("subject=C = CN, O = Tenpay.com\nissuer=C = CN\n{pem}"),
        ),
        ("no final newline", pem.trim_end().to_owned()),
    ]
}

#[test]
fn certificates_in_every_real_pem_shape_are_accepted() {
    for (pem, serial) in [
        (TEST_CERTIFICATE_PEM, TEST_CERTIFICATE_SERIAL),
        (PLATFORM_CERT_A, PLATFORM_CERT_A_SERIAL),
    ] {
        for (shape, variant) in pem_variants(pem) {
            let keys = KeyRing::new();
            let added = keys.add_certificate(&variant);
            assert_eq!(added.as_deref(), Ok(serial), "{shape}");
        }
    }
}

#[test]
fn public_keys_in_every_real_pem_shape_are_accepted() {
    for pem in [TEST_PUBLIC_KEY_PEM, VECTORS_PUBLIC_KEY] {
        for (shape, variant) in pem_variants(pem) {
            let keys = KeyRing::new();
            let added = keys.add_public_key(TEST_PUBLIC_KEY_ID, &variant);
            assert_eq!(added, Ok(()), "{shape}");
        }
    }
}

#[test]
fn a_broken_pem_says_what_is_wrong() {
    let keys = KeyRing::new();
    let body = base64_of(TEST_CERTIFICATE_PEM);
    let mismatched = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END PUBLIC KEY-----\n");
    let error = keys.add_certificate(&mismatched).unwrap_err();
    assert_eq!(
        error,
        ConfigError::InvalidPem {
            reason: "the -----END label does not match the -----BEGIN label"
        }
    );
    assert!(error.to_string().contains("does not match"), "{error}");

    let truncated = TEST_CERTIFICATE_PEM.replace("-----END CERTIFICATE-----", "");
    assert_eq!(
        keys.add_certificate(&truncated),
        Err(ConfigError::InvalidPem {
            reason: "a -----BEGIN line without its -----END line"
        })
    );
    let mangled = TEST_CERTIFICATE_PEM.replacen("MII", "MI*", 1);
    assert!(matches!(
        keys.add_certificate(&mangled),
        Err(ConfigError::InvalidPem { .. })
    ));
    let two_keys = format!("{TEST_PUBLIC_KEY_PEM}{VECTORS_PUBLIC_KEY}");
    assert!(matches!(
        keys.add_public_key(TEST_PUBLIC_KEY_ID, &two_keys),
        Err(ConfigError::InvalidPem { .. })
    ));
    assert!(keys.is_empty());
}

#[test]
fn a_file_of_several_certificates_adds_them_all() {
    let bundle = format!("{PLATFORM_CERT_A}\n{PLATFORM_CERT_B}");
    let keys = KeyRing::new();
    assert_eq!(
        keys.add_certificates(&bundle).unwrap(),
        [PLATFORM_CERT_A_SERIAL, PLATFORM_CERT_B_SERIAL]
    );
    assert_eq!(keys.len(), 2);

    // add_certificate takes the same file and returns the first serial.
    let keys = KeyRing::new();
    assert_eq!(
        keys.add_certificate(&bundle).unwrap(),
        PLATFORM_CERT_A_SERIAL
    );
    assert!(keys.contains(PLATFORM_CERT_A_SERIAL) && keys.contains(PLATFORM_CERT_B_SERIAL));

    // And so does the layer.
    let layer = WechatPayLayer::new(TEST_APIV3_KEY)
        .unwrap()
        .add_certificates(&bundle)
        .unwrap();
    assert_eq!(layer.keys().len(), 2);
}

#[test]
fn a_file_with_one_bad_certificate_adds_none() {
    for bad in [
        EXPIRED_CERTIFICATE,
        MERCHANT_API_CERTIFICATE,
        RSA1024_CERTIFICATE,
    ] {
        let keys = KeyRing::new();
        let bundle = format!("{PLATFORM_CERT_A}{PLATFORM_CERT_B}{bad}");
        assert!(keys.add_certificates(&bundle).is_err());
        assert!(keys.add_certificate(&bundle).is_err());
        assert!(keys.is_empty(), "{:?}", keys.serials());
    }
}

#[tokio::test]
async fn a_certificate_past_its_validity_by_the_layers_clock_does_not_verify() {
    // The test certificate is valid 2025-01-01 to 2036-01-01.
    for now in [1_700_000_000_i64, 2_100_000_000] {
        let layer = TestSigner::certificate_mode()
            .layer()
            .unwrap()
            .clock(move || now);
        let signed = TestSigner::certificate_mode()
            .notification("TRANSACTION.SUCCESS", &sample_payment())
            .timestamp(now)
            .build()
            .unwrap();
        let (answer, seen) = send_signed(&layer, signed).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.rejection.map(|r| r.kind()),
            Some(RejectionKind::CertificateNotValid)
        );
        assert_eq!(seen.count(), 0);
    }
}

#[test]
fn remove_expired_drops_only_certificates_past_their_validity() {
    let keys = KeyRing::new();
    keys.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    let test_serial = keys.add_certificate(TEST_CERTIFICATE_PEM).unwrap();
    let later = keys.add_certificate(NOT_YET_VALID_CERTIFICATE).unwrap();

    // 2030: nothing has expired (the test certificate runs to 2036).
    assert!(keys.remove_expired(1_900_000_000).is_empty());
    assert_eq!(keys.len(), 3);

    // 2040: the test certificate has; the 2090 one and the public key stay.
    assert_eq!(
        keys.remove_expired(2_208_988_800),
        vec![test_serial.clone()]
    );
    assert!(!keys.contains(&test_serial));
    assert!(keys.contains(&later));
    assert!(keys.contains(TEST_PUBLIC_KEY_ID));
}
