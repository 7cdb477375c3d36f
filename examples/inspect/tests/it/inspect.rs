//! End to end: the `inspect` example as users run it, driven over real HTTP.
//!
//! `cargo test` builds the examples next to the test binaries; these tests run the one
//! built with the same features.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Output};

use example_support::harness::{Http, Redis, Running, TempDir, binary, key_flags, now, start};
use http::StatusCode;
use serde_json::Value;
use tower_wechatpay::test_util::{
    SignedNotification, TestSigner, sample_combine_payment, sample_payment, sample_refund,
};

/// `inspect --listen 127.0.0.1:0`, the test keys, and `extra` flags.
fn inspect(dir: &TempDir, extra: &[&str]) -> Running {
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(key_flags(dir.path()));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    start("inspect", &args)
}

/// The next line inspect printed, parsed. Call it only after the answer to the request
/// that printed it: the handler writes and flushes before the layer acknowledges.
fn next_line(inspect: &mut Running) -> Value {
    let mut line = String::new();
    inspect.stdout.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
}

/// A genuine delivery signed at `timestamp`: WeChat Pay signs every copy anew, with a new
/// envelope id.
fn delivery(event_type: &str, resource: &Value, timestamp: i64) -> SignedNotification {
    TestSigner::public_key_mode()
        .notification(event_type, resource)
        .timestamp(timestamp)
        .build()
        .unwrap()
}

fn run_inspect(args: &[&str]) -> Output {
    Command::new(binary("inspect")).args(args).output().unwrap()
}

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

/// With the guard on, two deliveries of one payment and a resend of the very same request
/// are all acknowledged, and the payment is printed once: the next line is the refund.
async fn duplicates_are_acknowledged_and_printed_once(inspect: &mut Running) {
    let http = Http::new(&inspect.addr);
    let payment = delivery("TRANSACTION.SUCCESS", &sample_payment(), now());
    let again = delivery("TRANSACTION.SUCCESS", &sample_payment(), now());
    let refund = delivery("REFUND.SUCCESS", &sample_refund(), now());
    assert_eq!(
        http.notify("/", payment.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(http.notify("/", again).await, StatusCode::NO_CONTENT);
    assert_eq!(http.notify("/", payment).await, StatusCode::NO_CONTENT);
    assert_eq!(http.notify("/", refund).await, StatusCode::NO_CONTENT);
    assert_eq!(next_line(inspect)["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(next_line(inspect)["event_type"], "REFUND.SUCCESS");
}

#[tokio::test]
async fn dedupe_memory_prints_a_duplicate_once_and_acknowledges_every_copy() {
    let dir = TempDir::new("inspect-dedupe-memory");
    let mut inspect = inspect(&dir, &["--dedupe", "memory"]);
    duplicates_are_acknowledged_and_printed_once(&mut inspect).await;
}

#[tokio::test]
async fn without_dedupe_every_copy_is_printed() {
    let dir = TempDir::new("inspect-no-dedupe");
    let mut inspect = inspect(&dir, &[]);
    let http = Http::new(&inspect.addr);
    let payment = delivery("TRANSACTION.SUCCESS", &sample_payment(), now());
    assert_eq!(
        http.notify("/", payment.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(http.notify("/", payment).await, StatusCode::NO_CONTENT);
    assert_eq!(next_line(&mut inspect)["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(next_line(&mut inspect)["event_type"], "TRANSACTION.SUCCESS");
}

#[tokio::test]
async fn dedupe_never_merges_events_whose_ids_collide_across_merchants() {
    let dir = TempDir::new("inspect-dedupe-collide");
    let mut inspect = inspect(&dir, &["--dedupe", "memory"]);
    let http = Http::new(&inspect.addr);
    // Two merchants' combine payments with one combine_out_trade_no, and two payments of
    // different merchants with one transaction_id: four events, four lines.
    let combine = sample_combine_payment();
    let mut other_combine = combine.clone();
    other_combine["combine_mchid"] = "1900000999".into();
    let mut other_payment = sample_payment();
    other_payment["mchid"] = "1900000999".into();
    for resource in [&combine, &other_combine, &sample_payment(), &other_payment] {
        let signed = delivery("TRANSACTION.SUCCESS", resource, now());
        assert_eq!(http.notify("/", signed).await, StatusCode::NO_CONTENT);
    }
    // A refund last, as a marker: every line printed before it is answered is on stdout,
    // so a merged event shows as a missing line instead of a hang.
    let marker = delivery("REFUND.SUCCESS", &sample_refund(), now());
    assert_eq!(http.notify("/", marker).await, StatusCode::NO_CONTENT);
    let mut printed = 0;
    while next_line(&mut inspect)["event_type"] != "REFUND.SUCCESS" {
        printed += 1;
    }
    assert_eq!(printed, 4, "every event printed once");
}

#[tokio::test]
async fn dedupe_redis_is_shared_by_two_instances() {
    let redis = Redis::start();
    let url = redis.url();
    let dir = TempDir::new("inspect-dedupe-redis");
    let mut first = inspect(&dir, &[&format!("--dedupe={url}")]);
    duplicates_are_acknowledged_and_printed_once(&mut first).await;

    // A second instance on the same Redis knows the payment is done: a copy delivered to
    // it is acknowledged without printing; what it has not seen, it prints.
    let mut second = inspect(&dir, &["--dedupe", &url]);
    let http = Http::new(&second.addr);
    let copy = delivery("TRANSACTION.SUCCESS", &sample_payment(), now());
    let mut other = sample_payment();
    other["transaction_id"] = "4200000000000000000000000002".into();
    let fresh = delivery("TRANSACTION.SUCCESS", &other, now());
    assert_eq!(http.notify("/", copy).await, StatusCode::NO_CONTENT);
    assert_eq!(http.notify("/", fresh).await, StatusCode::NO_CONTENT);
    let line = next_line(&mut second);
    assert_eq!(line["resource"]["transaction_id"], other["transaction_id"]);
}

#[tokio::test]
async fn dedupe_redis_that_is_unreachable_at_start_is_a_clear_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("inspect-dedupe-down");
    let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
    args.extend(key_flags(dir.path()));
    args.extend(["--dedupe".to_owned(), format!("redis://127.0.0.1:{port}/")]);
    let output = Command::new(binary("inspect"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("inspect: --dedupe redis://"), "{stderr}");
}

#[tokio::test]
async fn now_replays_a_notification_captured_hours_ago() {
    // Signed six hours before the test runs: far outside the 300 s window.
    let then = now() - 6 * 3600;
    let captured = delivery("TRANSACTION.SUCCESS", &sample_payment(), then);
    let dir = TempDir::new("inspect-now");

    let live = inspect(&dir, &[]);
    assert_eq!(
        Http::new(&live.addr).notify("/", captured.clone()).await,
        StatusCode::UNAUTHORIZED
    );

    let then_flag = format!("--now={}", then + 60);
    let mut replay = inspect(&dir, &[&then_flag]);
    assert_eq!(
        Http::new(&replay.addr).notify("/", captured).await,
        StatusCode::NO_CONTENT
    );
    let line = next_line(&mut replay);
    assert_eq!(line["resource"], sample_payment());

    // The window still applies around the fixed clock.
    let stale = delivery("TRANSACTION.SUCCESS", &sample_payment(), then - 3600);
    assert_eq!(
        Http::new(&replay.addr).notify("/", stale).await,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn inspect_refuses_bad_flags_with_exit_code_2() {
    let dir = TempDir::new("inspect-flags");
    let keys = key_flags(dir.path());
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let with_keys = |extra: &[&'static str]| {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(&keys);
        args.extend(extra);
        args
    };
    for (args, says) in [
        (vec!["--listen", "127.0.0.1:0"], "--apiv3-key-file"),
        (
            vec![
                "--listen",
                "nowhere",
                "--apiv3-key-file",
                "x",
                "--certificate",
                "c.pem",
            ],
            "'nowhere'",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--apiv3-key-file", "x"],
            "x: ",
        ),
        (vec!["--bogus"], "'--bogus'"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--apiv3-key-file",
                "/nonexistent",
                "--certificate",
                "c.pem",
            ],
            "/nonexistent: ",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--apiv3-key-file",
                "k",
                "--public-key",
                "no-equals-sign",
            ],
            "PUB_KEY_ID_…=FILE.pem",
        ),
        (
            with_keys(&[]).into_iter().take(4).collect(),
            "--public-key or --certificate",
        ),
        (with_keys(&["--dedupe", "bogus"]), "'bogus'"),
        (with_keys(&["--dedupe=memcached://x"]), "--dedupe"),
        (with_keys(&["--dedupe"]), "--dedupe"),
        (with_keys(&["--now", "yesterday"]), "'yesterday'"),
        (with_keys(&["--tolerance-secs=-1"]), "--tolerance-secs"),
    ] {
        let output = run_inspect(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn inspect_help_lists_every_flag() {
    let output = run_inspect(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen <ADDR>",
        "--apiv3-key-file <FILE>",
        "--public-key <PUB_KEY_ID_…=FILE.pem>",
        "--certificate <FILE.pem>",
        "--tolerance-secs <SECONDS>",
        "--now <UNIX_SECONDS>",
        "--dedupe <memory|redis://HOST:PORT/DB>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
