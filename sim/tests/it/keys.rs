//! `wechatpay-sim keys`.

use example_support::harness::TempDir;
use tower_wechatpay::KeyRing;

use crate::support::{arg, sim, stderr, stdout};

#[tokio::test]
async fn keys_writes_every_file_in_the_contracted_shape_and_prints_the_receiver_setup() {
    let dir = TempDir::new("sim-keys-out");
    let out = dir.path().join("keys");
    let output = sim(&["keys", "--out", arg(&out)]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    let api_v3_key = read("apiv3_key.txt");
    let api_v3_key = api_v3_key.trim();
    assert_eq!(api_v3_key.len(), 32);
    assert!(api_v3_key.bytes().all(|b| b.is_ascii_alphanumeric()));

    let id = read("wechatpay_public_key_id.txt");
    let digits = id.trim().strip_prefix("PUB_KEY_ID_").unwrap();
    assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    assert!(read("wechatpay_public_key.pem").starts_with("-----BEGIN PUBLIC KEY-----"));

    let serial = KeyRing::new()
        .add_certificate(read("platform_cert.pem"))
        .unwrap();
    assert_eq!(serial.len(), 40);
    assert!(
        serial
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    );
    assert!(read("platform_key.pem").starts_with("-----BEGIN PRIVATE KEY-----"));

    assert!(read("merchant_key.pem").starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(read("merchant_public_key.pem").starts_with("-----BEGIN PUBLIC KEY-----"));
    let merchant_serial = read("merchant_cert_serial.txt");
    assert_eq!(merchant_serial.trim().len(), 40);
    assert!(read("mchid.txt").trim().bytes().all(|b| b.is_ascii_digit()));

    let printed = stdout(&output);
    assert!(printed.contains("WechatPayLayer::new"), "{printed}");
    assert!(
        printed.contains(&format!(".add_public_key(\"{}\"", id.trim())),
        "{printed}"
    );
    assert!(printed.contains("--apiv3-key-file"), "{printed}");
    assert!(printed.contains(&serial), "{printed}");
}

#[tokio::test]
async fn keys_refuses_to_overwrite_and_leaves_the_old_keys_alone() {
    let dir = TempDir::new("sim-keys-twice");
    let out = dir.path().join("keys");
    assert!(sim(&["keys", "--out", arg(&out)]).await.status.success());
    let before = std::fs::read(out.join("apiv3_key.txt")).unwrap();
    let again = sim(&["keys", "--out", arg(&out)]).await;
    assert_eq!(again.status.code(), Some(2));
    let message = stderr(&again);
    assert!(message.contains("refusing to overwrite"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert_eq!(std::fs::read(out.join("apiv3_key.txt")).unwrap(), before);
}

#[tokio::test]
async fn two_runs_make_different_keys() {
    let dir = TempDir::new("sim-keys-fresh");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(sim(&["keys", "--out", arg(&a)]).await.status.success());
    assert!(sim(&["keys", "--out", arg(&b)]).await.status.success());
    for name in [
        "apiv3_key.txt",
        "platform_key.pem",
        "wechatpay_public_key.pem",
        "merchant_key.pem",
    ] {
        assert_ne!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name}"
        );
    }
}
