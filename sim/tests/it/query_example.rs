//! The root package's `query` example (built here as `query-client`) against `wechatpay-sim
//! serve` over real HTTP: its output lines and its exit codes.

use std::net::SocketAddr;
use std::process::{Command, Output};

use serde_json::{Value, json};
use wechatpay_sim::keys::{Keys, file};
use wechatpay_sim::serve::{CertificatesAnswer, ServeMode};

use crate::client::api;
use crate::support::{keys, stderr, stdout};

/// Which keys the example's ring gets.
enum Ring {
    Empty,
    PublicKey,
    Certificate,
}

/// The flags every run needs, for `keys`' merchant at `addr`, and the ring's flags.
fn flags(keys: &Keys, addr: SocketAddr, ring: Ring) -> Vec<String> {
    let path = |name: &str| keys.dir.join(name).to_str().unwrap().to_owned();
    let mut flags = vec![
        "--api-base".to_owned(),
        format!("http://{addr}"),
        "--mchid".to_owned(),
        keys.mchid.clone(),
        "--merchant-key".to_owned(),
        path(file::MERCHANT_KEY),
        "--merchant-serial".to_owned(),
        keys.merchant_serial.clone(),
        "--apiv3-key-file".to_owned(),
        path(file::APIV3_KEY),
        "--timeout-ms".to_owned(),
        "5000".to_owned(),
    ];
    match ring {
        Ring::Empty => {}
        Ring::PublicKey => flags.extend([
            "--public-key".to_owned(),
            format!("{}={}", keys.public_key_id, path(file::PUBLIC_KEY)),
        ]),
        Ring::Certificate => {
            flags.extend(["--certificate".to_owned(), path(file::PLATFORM_CERT)]);
        }
    }
    flags
}

/// Runs the example with `flags` then `command` to completion (off the runtime's threads,
/// which serve the simulator).
async fn query(flags: &[String], command: &[&str]) -> Output {
    let mut args = flags.to_vec();
    args.extend(command.iter().map(|arg| (*arg).to_owned()));
    tokio::task::spawn_blocking(move || {
        Command::new(example_support::harness::binary("query-client"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Creates a paid order (and, with `refund`, refunds part of it) through `/sim/…`.
async fn pay(addr: SocketAddr, out_trade_no: &str, refund: Option<&str>) -> Value {
    let http = example_support::harness::Http::new(&addr.to_string());
    let (status, order) = http
        .post_json(
            "/sim/pay",
            &json!({"out_trade_no": out_trade_no, "amount": 880}),
        )
        .await;
    assert!(status.is_success(), "{order}");
    if let Some(out_refund_no) = refund {
        let (status, refund) = http
            .post_json(
                "/sim/refund",
                &json!({"out_trade_no": out_trade_no, "out_refund_no": out_refund_no, "amount": 80}),
            )
            .await;
        assert!(status.is_success(), "{refund}");
    }
    order
}

/// The single line on stdout, parsed.
fn one_json_line(output: &Output) -> Value {
    let out = stdout(output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {out}\nstderr: {}", stderr(output));
    serde_json::from_str(lines[0]).unwrap()
}

#[tokio::test]
async fn certificates_prints_one_json_line_per_certificate_with_an_empty_ring() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let output = query(&flags(&keys, addr, Ring::Empty), &["certificates"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let line = one_json_line(&output);
    assert_eq!(line["serial_no"], keys.platform.serial.as_str());
    for field in ["effective_time", "expire_time"] {
        assert!(
            line[field].as_str().is_some_and(|t| t.contains('T')),
            "{line}"
        );
    }
    assert_eq!(line.as_object().unwrap().len(), 3, "{line}");
}

#[tokio::test]
async fn certificates_prints_nothing_for_a_public_key_only_merchant() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::PublicKey, CertificatesAnswer::Empty).await;
    let output = query(&flags(&keys, addr, Ring::PublicKey), &["certificates"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("no platform certificates"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn an_order_is_printed_as_verified_by_either_number() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let order = pay(addr, "CLI-ORDER-1", None).await;
    for (ring, by) in [
        (Ring::Certificate, ["--out-trade-no", "CLI-ORDER-1"]),
        (
            Ring::PublicKey,
            [
                "--transaction-id",
                order["transaction_id"].as_str().unwrap(),
            ],
        ),
    ] {
        let output = query(&flags(&keys, addr, ring), &["order", by[0], by[1]]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(one_json_line(&output), order);
    }
}

#[tokio::test]
async fn a_refund_is_printed_as_verified() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    pay(addr, "CLI-ORDER-2", Some("CLI-REFUND-2")).await;
    let output = query(
        &flags(&keys, addr, Ring::Certificate),
        &["refund", "--out-refund-no", "CLI-REFUND-2"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let refund = one_json_line(&output);
    assert_eq!(refund["out_refund_no"], "CLI-REFUND-2");
    assert_eq!(refund["out_trade_no"], "CLI-ORDER-2");
    assert_eq!(refund["status"], "SUCCESS");
    assert_eq!(refund["amount"]["refund"], 80);
}

#[tokio::test]
async fn a_wechat_pay_error_exits_1_with_its_code_message_and_status() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let output = query(
        &flags(&keys, addr, Ring::Certificate),
        &["order", "--out-trade-no", "NO-SUCH-ORDER"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let err = stderr(&output);
    assert!(err.contains("ORDER_NOT_EXIST"), "{err}");
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("订单不存在"), "{err}");
    assert!(err.contains("request-id: 08"), "{err}");
}

#[tokio::test]
async fn a_sign_error_shows_what_wechat_pay_signed() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    // The platform key is not the merchant key: WeChat Pay answers SIGN_ERROR.
    let mut flags = flags(&keys, addr, Ring::Certificate);
    let at = flags.iter().position(|f| f == "--merchant-key").unwrap() + 1;
    flags[at] = keys
        .dir
        .join(file::PLATFORM_KEY)
        .to_str()
        .unwrap()
        .to_owned();
    let output = query(&flags, &["order", "--out-trade-no", "X"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("SIGN_ERROR") && err.contains("401"), "{err}");
    assert!(err.contains("sign_information: {"), "{err}");
}

#[tokio::test]
async fn an_answer_that_cannot_be_verified_exits_1_and_prints_nothing() {
    let (_dir, keys) = keys();
    // Answers signed with the platform certificate; the ring holds only the public key.
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    pay(addr, "CLI-ORDER-3", None).await;
    let output = query(
        &flags(&keys, addr, Ring::PublicKey),
        &["order", "--out-trade-no", "CLI-ORDER-3"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let err = stderr(&output);
    assert!(err.contains("could not be verified"), "{err}");
    assert!(err.contains(&keys.platform.serial), "{err}");
}

#[tokio::test]
async fn an_unreachable_api_exits_1_not_2() {
    let (_dir, keys) = keys();
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let output = query(
        &flags(&keys, addr, Ring::Certificate),
        &["order", "--out-trade-no", "X"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("unreachable"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn bad_flags_exit_2() {
    let (_dir, keys) = keys();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = flags(&keys, addr, Ring::Certificate);
    let with = |flag: &str, value: &str| {
        let mut flags = good.clone();
        let at = flags.iter().position(|f| f == flag).unwrap() + 1;
        flags[at] = value.to_owned();
        flags
    };
    let missing_dir = keys.dir.join("missing.pem");
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("no command", good.clone(), vec![]),
        ("unknown command", good.clone(), vec!["payments"]),
        ("no order number", good.clone(), vec!["order"]),
        (
            "both order numbers",
            good.clone(),
            vec!["order", "--out-trade-no", "A", "--transaction-id", "B"],
        ),
        (
            "unknown flag",
            good.clone(),
            vec!["--verbose", "certificates"],
        ),
        ("no --mchid", good[2..].to_vec(), vec!["certificates"]),
        (
            "unreadable key file",
            with("--merchant-key", missing_dir.to_str().unwrap()),
            vec!["certificates"],
        ),
        (
            "not a private key",
            with(
                "--merchant-key",
                keys.dir.join(file::PLATFORM_CERT).to_str().unwrap(),
            ),
            vec!["certificates"],
        ),
        (
            "a short apiv3 key",
            with(
                "--apiv3-key-file",
                keys.dir.join(file::MCHID).to_str().unwrap(),
            ),
            vec!["certificates"],
        ),
        (
            "not a url",
            with("--api-base", "ftp:/x"),
            vec!["certificates"],
        ),
        (
            "a bad serial",
            with("--merchant-serial", "not-hex"),
            vec!["certificates"],
        ),
        (
            "a zero timeout",
            with("--timeout-ms", "0"),
            vec!["certificates"],
        ),
        (
            "a dot order number",
            good.clone(),
            vec!["order", "--out-trade-no", ".."],
        ),
    ];
    for (name, flags, command) in cases {
        let output = query(&flags, &command).await;
        assert_eq!(output.status.code(), Some(2), "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("error"),
            "{name}: {}",
            stderr(&output)
        );
    }
}
