//! `wechatpay-sim diagnose`: captures made with the simulator's own keys and signer,
//! written as raw HTTP and as JSON, diagnosed by the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use example_support::harness::TempDir;
use serde_json::{Map, Value, json};
use tower_wechatpay::test_util::SignedNotification;
use wechatpay_sim::keys::{Keys, Mode, file, random_alphanumeric};
use wechatpay_sim::notify::{Notification, unix_now};
use wechatpay_sim::resource;

use crate::support::{arg, keys, sim, stderr, stdout};

/// A fresh key directory and a payment notification signed with its keys.
struct Case {
    _dir: TempDir,
    keys: Keys,
    openid: String,
    out_trade_no: String,
    notification: Notification,
}

fn case(mode: Mode) -> Case {
    let (dir, keys) = keys();
    let resource = resource::payment(&keys);
    let text = |name: &str| resource.pointer(name).unwrap().as_str().unwrap().to_owned();
    let (openid, out_trade_no) = (text("/payer/openid"), text("/out_trade_no"));
    let notification = Notification::new(&keys, mode, "TRANSACTION.SUCCESS", &resource).unwrap();
    Case {
        _dir: dir,
        keys,
        openid,
        out_trade_no,
        notification,
    }
}

/// Which keys the receiver passes.
#[derive(Clone, Copy)]
enum Held {
    Both,
    PublicKeyOnly,
    CertificateOnly,
}

impl Case {
    fn signed(&self) -> SignedNotification {
        self.notification.attempt().unwrap()
    }

    /// Writes `bytes` into the key directory as `name`.
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.keys.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn receiver(&self, held: Held) -> Vec<String> {
        let path = |name: &str| arg(&self.keys.dir.join(name)).to_owned();
        let mut flags = vec!["--apiv3-key-file".to_owned(), path(file::APIV3_KEY)];
        if matches!(held, Held::Both | Held::PublicKeyOnly) {
            flags.push("--public-key".to_owned());
            flags.push(format!(
                "{}={}",
                self.keys.public_key_id,
                path(file::PUBLIC_KEY)
            ));
        }
        if matches!(held, Held::Both | Held::CertificateOnly) {
            flags.push("--certificate".to_owned());
            flags.push(path(file::PLATFORM_CERT));
        }
        flags
    }

    /// Runs `diagnose` on `capture` as a receiver holding both keys, plus `extra` flags.
    async fn diagnose(&self, capture: &Path, extra: &[&str]) -> Output {
        self.diagnose_as(capture, Held::Both, extra).await
    }

    async fn diagnose_as(&self, capture: &Path, held: Held, extra: &[&str]) -> Output {
        let mut args = vec!["diagnose".to_owned(), "--capture".to_owned()];
        args.push(arg(capture).to_owned());
        args.extend(self.receiver(held));
        args.extend(extra.iter().map(|flag| (*flag).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sim(&args).await
    }
}

/// `{"headers": {name: value}, "body": "…"}`.
fn as_json(signed: &SignedNotification) -> Vec<u8> {
    let headers: Map<String, Value> = signed
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap())))
        .collect();
    serde_json::to_vec_pretty(&json!({"headers": headers, "body": signed.body_text()})).unwrap()
}

/// A raw HTTP request with `eol` line ends, header names in Title-Case.
fn as_http(signed: &SignedNotification, eol: &str, content_length: bool) -> Vec<u8> {
    let mut head = format!("POST /wechatpay/notify HTTP/1.1{eol}Host: shop.example{eol}");
    for (name, value) in &signed.headers {
        let title: Vec<String> = name
            .as_str()
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        head.push_str(&format!(
            "{}: {}{eol}",
            title.join("-"),
            value.to_str().unwrap()
        ));
    }
    if content_length {
        head.push_str(&format!("Content-Length: {}{eol}", signed.body.len()));
    }
    head.push_str(eol);
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&signed.body);
    bytes
}

/// The value with every object's keys sorted, at every depth.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let ordered: BTreeMap<&String, Value> = fields
                .iter()
                .map(|(name, inner)| (name, sorted(inner)))
                .collect();
            Value::Object(
                ordered
                    .into_iter()
                    .map(|(name, inner)| (name.clone(), inner))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn assert_exit(output: &Output, code: i32) -> String {
    let printed = stdout(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{printed}\nstderr:\n{}",
        stderr(output)
    );
    printed
}

#[tokio::test]
async fn a_genuine_capture_verifies_and_shows_the_resource_with_the_openid_redacted() {
    let case = case(Mode::PublicKey);
    let signed = case.signed();
    let capture = case.write("capture.json", as_json(&signed));
    let output = case.diagnose(&capture, &[]).await;
    let printed = assert_exit(&output, 0);
    for step in [
        "ok    headers: Wechatpay-Timestamp, -Nonce, -Signature, -Serial present",
        "ok    signature type: WECHATPAY2-SHA256-RSA2048",
        "ok    timestamp:",
        "ok    probe:",
        "ok    serial:",
        "ok    signature: verifies over the exact",
        "ok    decryption:",
        "ok    resource:",
        "verdict: verifies",
    ] {
        assert!(printed.contains(step), "{step} in\n{printed}");
    }
    assert!(printed.contains(&case.out_trade_no), "{printed}");
    assert!(printed.contains("\"openid\": \"<redacted>\""), "{printed}");
    assert!(!printed.contains(&case.openid), "{printed}");
    let signature = signed.headers["wechatpay-signature"].to_str().unwrap();
    assert!(!printed.contains(signature), "{printed}");
    assert!(!printed.contains(&case.keys.api_v3_key), "{printed}");
}

#[tokio::test]
async fn a_raw_http_capture_with_crlf_and_content_length_verifies() {
    let case = case(Mode::PublicKey);
    let mut bytes = as_http(&case.signed(), "\r\n", true);
    bytes.extend_from_slice(b"\r\n"); // past Content-Length: not the body
    let capture = case.write("capture.http", bytes);
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 0);
    assert!(printed.contains("(raw HTTP,"), "{printed}");
    assert!(printed.contains("verdict: verifies"), "{printed}");
}

#[tokio::test]
async fn a_raw_http_capture_with_lf_and_no_content_length_verifies() {
    let case = case(Mode::PublicKey);
    let capture = case.write("capture.http", as_http(&case.signed(), "\n", false));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 0);
    assert!(
        printed.contains("ok    signature: verifies over the exact"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_final_newline_an_editor_added_to_a_raw_capture_is_not_taken_for_the_body() {
    let case = case(Mode::PublicKey);
    let mut bytes = as_http(&case.signed(), "\n", false);
    bytes.push(b'\n');
    let capture = case.write("capture.http", bytes);
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 0);
    assert!(
        printed.contains("without the file's final newline"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_certificate_signed_capture_verifies_with_the_certificate_alone() {
    let case = case(Mode::Certificate);
    let capture = case.write("capture.json", as_json(&case.signed()));
    let output = case.diagnose_as(&capture, Held::CertificateOnly, &[]).await;
    let printed = assert_exit(&output, 0);
    assert!(
        printed.contains(&format!(
            "ok    serial: {}: the platform certificate you hold",
            case.keys.platform.serial
        )),
        "{printed}"
    );
}

#[tokio::test]
async fn json_with_header_pairs_and_body_base64_verifies() {
    let case = case(Mode::PublicKey);
    let signed = case.signed();
    let pairs: Vec<Value> = signed
        .headers
        .iter()
        .map(|(name, value)| json!([name.as_str().to_uppercase(), value.to_str().unwrap()]))
        .collect();
    let capture = case.write(
        "capture.json",
        json!({"headers": pairs, "body_base64": STANDARD.encode(&signed.body)}).to_string(),
    );
    assert_exit(&case.diagnose(&capture, &[]).await, 0);
}

#[tokio::test]
async fn a_pretty_printed_body_is_diagnosed_as_reserialised() {
    let case = case(Mode::PublicKey);
    let signed = case.signed();
    let value: Value = serde_json::from_slice(&signed.body).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    // As a framework logs it: the original Content-Length, the body it parsed and re-wrote.
    let length = signed.body.len().to_string();
    let logged = signed
        .with_header("content-length", &length)
        .with_body(pretty);
    let capture = case.write("capture.json", as_json(&logged));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(
        printed.contains(&format!(
            "note  capture: Content-Length says {length} bytes"
        )),
        "{printed}"
    );
    assert!(printed.contains("FAIL  signature:"), "{printed}");
    assert!(
        printed.contains(
            "the body was re-serialised by a proxy or framework: verify the raw bytes received"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("verdict: does not verify: the signature step fails"),
        "{printed}"
    );
    assert!(!printed.contains(&case.openid), "{printed}");
}

#[tokio::test]
async fn a_body_with_sorted_keys_is_diagnosed_as_reserialised_in_another_field_order() {
    let case = case(Mode::PublicKey);
    let signed = case.signed();
    let value: Value = serde_json::from_slice(&signed.body).unwrap();
    let resorted = serde_json::to_string(&sorted(&value)).unwrap();
    assert_ne!(resorted.as_bytes(), &signed.body[..]);
    let capture = case.write(
        "capture.http",
        as_http(&signed.with_body(resorted), "\r\n", true),
    );
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(printed.contains("WeChat Pay's field order"), "{printed}");
    assert!(
        printed.contains("re-serialised by a proxy or framework"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_changed_body_does_not_match_the_signature() {
    let case = case(Mode::PublicKey);
    let signed = case.signed();
    let mut value: Value = serde_json::from_slice(&signed.body).unwrap();
    value["summary"] = json!("changed");
    let capture = case.write(
        "capture.json",
        as_json(&signed.with_body(value.to_string())),
    );
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(
        printed.contains(
            "the signature does not match: signed by another key, or the body was changed"
        ),
        "{printed}"
    );
    assert!(!printed.contains("re-serialised"), "{printed}");
}

/// The seconds in `timestamp: N s in the past`.
fn seconds_in_the_past(printed: &str) -> i64 {
    let rest = printed.split("timestamp: ").nth(1).unwrap();
    rest.split(" s in the past")
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_capture_thirty_minutes_old_fails_the_timestamp_by_that_many_seconds() {
    let case = case(Mode::PublicKey);
    let signed = case.notification.attempt_at(unix_now() - 1800).unwrap();
    let capture = case.write("capture.json", as_json(&signed));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(printed.contains("FAIL  timestamp:"), "{printed}");
    assert!(
        (1800..1810).contains(&seconds_in_the_past(&printed)),
        "{printed}"
    );
    assert!(printed.contains("(the window is ±300 s)"), "{printed}");
    assert!(printed.contains("use --ignore-time"), "{printed}");
    // Everything else checks out, and the verdict says so.
    assert!(printed.contains("ok    signature:"), "{printed}");
    assert!(
        printed.contains("with --ignore-time it verifies"),
        "{printed}"
    );
    assert!(!printed.contains(&case.out_trade_no), "{printed}");
}

#[tokio::test]
async fn with_ignore_time_a_stale_capture_verifies() {
    let case = case(Mode::PublicKey);
    let signed = case.notification.attempt_at(unix_now() - 1800).unwrap();
    let capture = case.write("capture.json", as_json(&signed));
    let output = case.diagnose(&capture, &["--ignore-time"]).await;
    let printed = assert_exit(&output, 0);
    assert!(printed.contains("skip  timestamp:"), "{printed}");
    assert!(printed.contains(&case.out_trade_no), "{printed}");
}

#[tokio::test]
async fn a_future_timestamp_points_at_the_clocks() {
    let case = case(Mode::PublicKey);
    let signed = case.notification.attempt_at(unix_now() + 900).unwrap();
    let capture = case.write("capture.json", as_json(&signed));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(printed.contains("s in the future"), "{printed}");
    assert!(printed.contains("check NTP"), "{printed}");
}

#[tokio::test]
async fn another_apiv3_key_is_diagnosed_as_the_wrong_apiv3_key() {
    let case = case(Mode::PublicKey);
    let capture = case.write("capture.json", as_json(&case.signed()));
    let other = case.write("other_apiv3_key.txt", random_alphanumeric(32));
    let mut args = vec!["diagnose", "--capture", arg(&capture)];
    let receiver = case.receiver(Held::Both);
    args.extend(receiver.iter().map(String::as_str));
    args[4] = arg(&other); // --apiv3-key-file
    let printed = assert_exit(&sim(&args).await, 1);
    assert!(printed.contains("ok    signature:"), "{printed}");
    assert!(printed.contains("FAIL  decryption:"), "{printed}");
    assert!(printed.contains("wrong APIv3 key"), "{printed}");
    assert!(printed.contains("reset"), "{printed}");
}

#[tokio::test]
async fn an_unknown_serial_lists_the_keys_held_and_says_which_key_to_add() {
    let case = case(Mode::PublicKey);
    let capture = case.write("capture.json", as_json(&case.signed()));
    let output = case.diagnose_as(&capture, Held::CertificateOnly, &[]).await;
    let printed = assert_exit(&output, 1);
    assert!(printed.contains("FAIL  serial:"), "{printed}");
    assert!(printed.contains(&case.keys.public_key_id), "{printed}");
    assert!(printed.contains(&case.keys.platform.serial), "{printed}");
    assert!(printed.contains("public key mode"), "{printed}");
    assert!(printed.contains("--public-key"), "{printed}");
}

#[tokio::test]
async fn a_certificate_signed_capture_with_only_the_public_key_says_add_the_certificate() {
    let case = case(Mode::Certificate);
    let capture = case.write("capture.json", as_json(&case.signed()));
    let output = case.diagnose_as(&capture, Held::PublicKeyOnly, &[]).await;
    let printed = assert_exit(&output, 1);
    assert!(printed.contains("FAIL  serial:"), "{printed}");
    assert!(printed.contains("certificate mode"), "{printed}");
    assert!(printed.contains(&case.keys.public_key_id), "{printed}");
}

#[tokio::test]
async fn a_signature_probe_is_named_and_must_be_refused() {
    let case = case(Mode::PublicKey);
    let capture = case.write("capture.json", as_json(&case.signed().into_probe()));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(
        printed.contains("FAIL  probe:")
            && printed.contains("a WeChat Pay signature probe: a receiver must refuse it"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_missing_header_is_named() {
    let case = case(Mode::PublicKey);
    let signed = case.signed().without_header("wechatpay-nonce");
    let capture = case.write("capture.http", as_http(&signed, "\r\n", true));
    let printed = assert_exit(&case.diagnose(&capture, &[]).await, 1);
    assert!(
        printed.contains("FAIL  headers: Wechatpay-Nonce missing"),
        "{printed}"
    );
}

#[tokio::test]
async fn bad_input_is_one_line_and_exit_2() {
    let case = case(Mode::PublicKey);
    let good = case.write("capture.json", as_json(&case.signed()));
    let garbage = case.write("garbage.txt", "this is not a request\n");
    let body_only = case.write("body.json", case.notification.body());
    let bad_pem = case.write("bad.pem", "-----BEGIN CERTIFICATE-----\nnope\n");
    let short_key = case.write("short_key.txt", "too short\n");
    let missing = case.keys.dir.join("missing.http");
    let key_file = case.keys.dir.join(file::APIV3_KEY);
    let key = arg(&key_file);
    let runs: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--capture", arg(&missing), "--apiv3-key-file", key],
            "missing.http",
        ),
        (
            vec!["--capture", arg(&garbage), "--apiv3-key-file", key],
            "neither raw HTTP",
        ),
        (
            vec!["--capture", arg(&body_only), "--apiv3-key-file", key],
            "headers",
        ),
        (
            vec!["--capture", arg(&good), "--apiv3-key-file", arg(&short_key)],
            "32",
        ),
        (
            vec![
                "--capture",
                arg(&good),
                "--apiv3-key-file",
                key,
                "--certificate",
                arg(&bad_pem),
            ],
            "bad.pem",
        ),
    ];
    for (flags, expected) in runs {
        let mut args = vec!["diagnose"];
        args.extend(flags);
        let output = sim(&args).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
}
