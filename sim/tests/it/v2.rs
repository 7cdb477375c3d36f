//! APIv2 (XML): `keys` writes the APIv2 key, `send --v2` delivers payments (MD5,
//! HMAC-SHA256) and refunds to the layer with `.v2_key(…)`, only an XML SUCCESS body counts
//! as an acknowledgement, and `audit --v2` grades healthy and broken receivers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use example_support::harness::TempDir;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use wechatpay_sim::audit::v2::name;
use wechatpay_sim::deliver::{Outcome, Plan, Schedule, deliver};
use wechatpay_sim::keys::Keys;
use wechatpay_sim::transport::ServiceTransport;
use wechatpay_sim::v2::{self, SignType, V2Notification};

use crate::support::{arg, healthy_v2_receiver, keys, serve, sim, stderr, stdout};

const XML_SUCCESS: &str = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

async fn send_v2(keys: &Keys, addr: SocketAddr, extra: &[&str]) -> Output {
    let url = format!("http://{addr}/notify");
    let mut args = vec!["send", "--v2", "--keys", arg(&keys.dir), "--to", &url];
    args.extend_from_slice(extra);
    sim(&args).await
}

async fn audit_v2(keys: &Keys, addr: SocketAddr, extra: &[&str]) -> Output {
    let url = format!("http://{addr}/notify");
    let mut args = vec!["audit", "--v2", "--keys", arg(&keys.dir), "--to", &url];
    args.extend_from_slice(extra);
    sim(&args).await
}

fn exit(output: &Output) -> Option<i32> {
    output.status.code()
}

fn both(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

#[tokio::test]
async fn keys_write_the_apiv2_key_and_print_where_it_goes() {
    let dir = TempDir::new("sim-keys-v2");
    let out = dir.path().join("keys");
    let output = sim(&["keys", "--out", arg(&out)]).await;
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    let key = std::fs::read_to_string(out.join("apiv2_key.txt")).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(out.join("apiv3_key.txt").exists());
    let printed = stdout(&output);
    assert!(printed.contains(".v2_key("), "{printed}");
    let flag = format!("--v2-key-file {}/apiv2_key.txt", out.display());
    assert!(printed.contains(&flag), "{printed}");
    assert!(printed.contains("--apiv3-key-file"), "{printed}");
    let keys = Keys::load(&out).unwrap();
    assert_eq!(keys.api_v2_key.as_deref(), Some(key));
}

#[tokio::test]
async fn send_v2_md5_payment_is_acknowledged_and_the_handler_sees_a_v2_payment() {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_v2_receiver(&keys, false).await;
    let output = send_v2(&keys, addr, &["--schedule", "once", "--set", "total_fee=1"]).await;
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    let out = stdout(&output);
    assert!(
        out.starts_with("sending APIv2 payment (MD5 sign, with sign_type) to "),
        "{out}"
    );
    assert!(out.contains("attempt 1: 200 OK in "), "{out}");
    assert!(out.contains("<return_code><![CDATA[SUCCESS]]>"), "{out}");
    assert_eq!(out.lines().last(), Some("acknowledged after 1 attempt(s)"));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (version, kind, fields) = &seen[0];
    assert_eq!((*version, *kind), (2, "V2Payment"));
    assert_eq!(fields["total_fee"], "1");
    assert_eq!(fields["cash_fee"], "1", "the cash amount follows total_fee");
    assert_eq!(fields["mch_id"], keys.mchid);
    assert_eq!(fields["sign_type"], "MD5");
    assert_eq!(fields["sign"].len(), 32);
    assert_eq!(fields["result_code"], "SUCCESS");
    assert_eq!(fields["time_end"].len(), 14);
    assert!(fields["out_trade_no"].starts_with("SIM"));
    assert_eq!(fields["transaction_id"].len(), 28);
}

#[tokio::test]
async fn send_v2_hmac_sha256_payment_without_sign_type_is_acknowledged() {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_v2_receiver(&keys, false).await;
    let output = send_v2(
        &keys,
        addr,
        &[
            "--schedule",
            "once",
            "--sign-type",
            "hmac-sha256",
            "--no-sign-type",
            "--set",
            "attach=order-7",
        ],
    )
    .await;
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    assert!(
        stdout(&output).contains("(HMAC-SHA256 sign, without sign_type)"),
        "{}",
        stdout(&output)
    );
    let seen = seen.lock().unwrap();
    let (version, kind, fields) = &seen[0];
    assert_eq!((*version, *kind), (2, "V2Payment"));
    assert!(!fields.contains_key("sign_type"), "{fields:?}");
    assert_eq!(fields["sign"].len(), 64);
    assert_eq!(fields["attach"], "order-7");
}

#[tokio::test]
async fn send_v2_refund_is_acknowledged_and_the_handler_sees_the_decrypted_refund() {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_v2_receiver(&keys, false).await;
    let output = send_v2(
        &keys,
        addr,
        &[
            "--schedule",
            "once",
            "--event",
            "REFUND.SUCCESS",
            "--set",
            "refund_fee=50",
        ],
    )
    .await;
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    assert!(
        stdout(&output).starts_with("sending APIv2 refund"),
        "{}",
        stdout(&output)
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (version, kind, fields) = &seen[0];
    assert_eq!((*version, *kind), (2, "V2Refund"));
    assert_eq!(fields["mch_id"], keys.mchid);
    assert_eq!(fields["refund_status"], "SUCCESS");
    assert_eq!(fields["refund_fee"], "50");
    assert_eq!(fields["cash_refund_fee"], "50");
    assert_eq!(fields["total_fee"], "99");
    assert_eq!(fields["refund_request_source"], "VENDOR_PLATFORM");
    assert_eq!(fields["refund_recv_accout"], "支付用户零钱");
    let time = &fields["success_time"];
    assert_eq!(
        (time.len(), &time[4..5], &time[10..11]),
        (19, "-", " "),
        "{time}"
    );
    for field in [
        "refund_id",
        "out_refund_no",
        "transaction_id",
        "out_trade_no",
    ] {
        assert!(fields.contains_key(field), "{field}: {fields:?}");
    }
}

#[tokio::test]
async fn a_json_success_reply_is_not_an_acknowledgement_of_a_v2_notification() {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_v2_receiver(&keys, true).await;
    let output = send_v2(&keys, addr, &["--schedule", "once"]).await;
    assert_eq!(exit(&output), Some(1), "{}", both(&output));
    let out = stdout(&output);
    let attempt = out
        .lines()
        .find(|line| line.starts_with("attempt 1: 200 OK"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        attempt.contains(r#"{"code":"SUCCESS","message":"成功"}"#),
        "{attempt}"
    );
    assert!(attempt.contains("not an XML SUCCESS body"), "{attempt}");
    assert!(attempt.contains("JSON reply"), "{attempt}");
    assert_eq!(
        out.lines().last(),
        Some("not acknowledged after 1 attempt(s)")
    );
    // The handler ran: the receiver's only fault is the reply's language.
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn send_v2_with_a_key_directory_without_the_apiv2_key_exits_2_saying_what_to_do() {
    let (dir, keys) = keys();
    std::fs::remove_file(dir.path().join("apiv2_key.txt")).unwrap();
    // v3 still works from such a directory.
    assert!(Keys::load(dir.path()).unwrap().api_v2_key.is_none());
    let output = send_v2(&keys, "127.0.0.1:9".parse().unwrap(), &[]).await;
    assert_eq!(exit(&output), Some(2), "{}", both(&output));
    let message = stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("apiv2_key.txt"), "{message}");
    assert!(message.contains("make fresh keys"), "{message}");
    let output = audit_v2(&keys, "127.0.0.1:9".parse().unwrap(), &[]).await;
    assert_eq!(exit(&output), Some(2), "{}", both(&output));
}

/// An in-process endpoint answering `answers[n]` to its n-th request (the last one after
/// that), recording each request.
#[allow(clippy::type_complexity)]
fn scripted(
    answers: &'static [(StatusCode, &'static str)],
) -> (
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + Sync
    + 'static,
    Arc<Mutex<Vec<Request<Bytes>>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let service = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes();
            let n = {
                let mut log = log.lock().unwrap();
                log.push(Request::from_parts(parts, body));
                log.len()
            };
            let (status, body) = answers[(n - 1).min(answers.len() - 1)];
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    });
    (service, seen)
}

#[tokio::test(start_paused = true)]
async fn v2_attempts_resend_the_same_xml_until_an_xml_success_body_on_the_same_schedule() {
    let (_dir, keys) = keys();
    static ANSWERS: [(StatusCode, &str); 4] = [
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<xml><return_code>FAIL</return_code></xml>",
        ),
        (StatusCode::NO_CONTENT, ""),
        (StatusCode::OK, r#"{"code":"SUCCESS","message":"成功"}"#),
        (StatusCode::OK, XML_SUCCESS),
    ];
    let (service, seen) = scripted(&ANSWERS);
    let notification = V2Notification::payment(
        keys.v2_key().unwrap(),
        &v2::payment_fields(&keys),
        SignType::Md5,
        true,
    )
    .unwrap();
    let plan = Plan {
        gaps: Schedule::Wechat.gaps(),
        copies: 1,
        timeout: Duration::from_secs(5),
    };
    let mut lines = Vec::new();
    let outcome = deliver(
        &ServiceTransport::new(service),
        &notification,
        &plan,
        |progress| lines.push(progress.line()),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Acknowledged { attempts: 4 }, "{lines:#?}");
    assert!(
        lines[2].starts_with("attempt 2: 204 No Content")
            && lines[2].contains("not an XML SUCCESS body"),
        "{lines:#?}"
    );
    assert!(lines[4].contains("JSON reply"), "{lines:#?}");
    assert_eq!(lines[3], "next attempt in 15 s");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    for request in seen.iter() {
        assert_eq!(
            request.body(),
            notification.body(),
            "the same XML every time"
        );
        assert_eq!(request.headers()["content-type"], "text/xml");
        assert!(
            request
                .headers()
                .keys()
                .all(|name| !name.as_str().starts_with("wechatpay-")),
            "{:?}",
            request.headers()
        );
    }
    assert!(notification.body().starts_with(b"<xml>"));
}

/// Asserts the binary exited 1 and the line of each of `failing` says FAIL, every other v2
/// check PASS; returns the printed report.
fn assert_flagged_by(output: &Output, failing: &[&str]) -> String {
    let printed = stdout(output);
    assert_eq!(exit(output), Some(1), "{}", both(output));
    for check in name::ALL {
        let line = printed
            .lines()
            .find(|line| line.get(6..).is_some_and(|rest| rest.starts_with(check)))
            .unwrap_or_else(|| panic!("no line for {check:?} in:\n{printed}"));
        let expected = if failing.contains(&check) {
            "FAIL"
        } else {
            "PASS"
        };
        assert!(line.starts_with(expected), "{check}: {line}\n{printed}");
    }
    printed
}

#[tokio::test]
async fn audit_v2_passes_the_layer_with_a_v2_key_and_its_handler_sees_only_genuine_ones() {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_v2_receiver(&keys, false).await;
    let output = audit_v2(&keys, addr, &[]).await;
    let printed = stdout(&output);
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), name::ALL.len() + 1, "{printed}");
    for (line, check) in lines.iter().zip(name::ALL) {
        assert!(line.starts_with("PASS  "), "{line}");
        assert!(line.contains(check), "{line}");
        assert!(line.contains(" — "), "every line says why: {line}");
    }
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("11/11 checks passed in "), "{summary}");
    assert!(summary.ends_with(", APIv2 XML)"), "{summary}");
    eprintln!("healthy v2 receiver over HTTP: {summary}");
    {
        let seen = seen.lock().unwrap();
        let kinds: Vec<&str> = seen.iter().map(|(_, kind, _)| *kind).collect();
        assert_eq!(
            kinds,
            ["V2Payment", "V2Payment", "V2Payment", "V2Refund"],
            "only the genuine four reached the handler"
        );
    }

    let output = audit_v2(&keys, addr, &["--json"]).await;
    assert_eq!(exit(&output), Some(0), "{}", both(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["mode"], "apiv2");
    assert_eq!(report["passed"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), name::ALL.len());
    let forged = checks.iter().find(|c| c["name"] == name::FORGED).unwrap();
    assert!(
        forged["answer"]["status"].as_u64().unwrap() >= 500,
        "{forged}"
    );
    assert!(
        forged["answer"]["body"]
            .as_str()
            .unwrap()
            .contains("<return_code><![CDATA[FAIL]]>"),
        "{forged}"
    );
}

#[tokio::test]
async fn audit_v2_flags_a_receiver_that_acknowledges_everything_with_xml_success() {
    let (_dir, keys) = keys();
    let app = Router::new().route("/notify", post(|| async { XML_SUCCESS }));
    let output = audit_v2(&keys, serve(app).await, &[]).await;
    let printed = assert_flagged_by(
        &output,
        &[
            name::FORGED,
            name::MISSING_SIGN,
            name::SIGN_TYPE_TAMPERED,
            name::BODY_CHANGED,
            name::REFUND_OTHER_KEY,
            name::FAIL_XML,
        ],
    );
    assert!(printed.contains("5/11 checks passed"), "{printed}");
}

#[tokio::test]
async fn audit_v2_flags_a_json_success_reply_on_every_acknowledgement_check() {
    let (_dir, keys) = keys();
    let (addr, _seen) = healthy_v2_receiver(&keys, true).await;
    let output = audit_v2(&keys, addr, &[]).await;
    let printed = assert_flagged_by(
        &output,
        &[
            name::GENUINE_MD5,
            name::AGAIN,
            name::GENUINE_HMAC,
            name::GENUINE_REFUND,
        ],
    );
    for check in [
        name::GENUINE_MD5,
        name::AGAIN,
        name::GENUINE_HMAC,
        name::GENUINE_REFUND,
    ] {
        let line = printed
            .lines()
            .find(|line| line.contains(check))
            .unwrap_or_else(|| panic!("{printed}"));
        assert!(
            line.contains("— JSON reply instead of XML flagged as a failure"),
            "{line}"
        );
    }
}
