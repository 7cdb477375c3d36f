//! End to end: the `inspect` example as users run it, driven over real HTTP.
//!
//! `cargo test` builds the examples next to the test binaries; this test runs the one
//! built with the same features.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::BufRead;
use std::process::Command;

use http::StatusCode;
use support::example::{Http, TempDir, binary, key_flags, now, start};
use tower_wechatpay::test_util::{TestSigner, sample_payment, sample_refund};

#[tokio::test]
async fn inspect_prints_each_accepted_notification_as_one_json_line() {
    let dir = TempDir::new("inspect");
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(key_flags(dir.path()));
    args.extend(["--tolerance-secs".to_owned(), "300".to_owned()]);
    let mut inspect = start("inspect", &args);
    let http = Http::new(&inspect.addr);

    let payment = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now())
        .build()
        .unwrap();
    let refund = TestSigner::certificate_mode()
        .notification("REFUND.SUCCESS", &sample_refund())
        .timestamp(now())
        .build()
        .unwrap();
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(now())
        .build()
        .unwrap();

    assert_eq!(
        http.notify("/any/path", forged).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.notify("/", payment.clone().into_probe()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.notify("/any/path", payment).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(http.notify("/other", refund).await, StatusCode::NO_CONTENT);

    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        inspect.stdout.read_line(&mut line).unwrap();
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(lines[0]["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(lines[0]["resource"], sample_payment());
    assert!(lines[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(lines[1]["event_type"], "REFUND.SUCCESS");
    assert_eq!(lines[1]["resource"], sample_refund());
}

#[test]
fn inspect_refuses_bad_flags_with_exit_code_2() {
    for args in [
        vec!["--listen", "127.0.0.1:0"],
        vec![
            "--listen",
            "nowhere",
            "--apiv3-key-file",
            "x",
            "--certificate",
            "c.pem",
        ],
        vec!["--listen", "127.0.0.1:0", "--apiv3-key-file", "x"],
        vec!["--bogus"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--apiv3-key-file",
            "/nonexistent",
            "--certificate",
            "c.pem",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--apiv3-key-file",
            "k",
            "--public-key",
            "no-equals-sign",
        ],
    ] {
        let output = Command::new(binary("inspect"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("inspect: "), "{args:?}: {stderr}");
    }
}
