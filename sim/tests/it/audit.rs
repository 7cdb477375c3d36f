//! `wechatpay-sim audit`: our layer passes every check (over HTTP through the binary, and
//! in-process); deliberately broken receivers are each flagged by the right check; bad
//! input exits 2 with one line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use example_support::harness::{TempDir, free_port};
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use tower_wechatpay::dedupe::{Dedupe, InMemoryStore};
use tower_wechatpay::{Handled, Notification, Notified, Rejection};
use wechatpay_sim::audit::{self, Evidence, Report, name};
use wechatpay_sim::keys::{Keys, Mode};
use wechatpay_sim::transport::ServiceTransport;

use crate::support::{Seen, arg, healthy_receiver, keys, serve, sim, stderr, stdout};

/// `wechatpay-sim audit --keys DIR --to http://ADDR/notify [extra…]`.
async fn audit_binary(keys: &Keys, addr: SocketAddr, extra: &[&str]) -> Output {
    let url = format!("http://{addr}/notify");
    let mut args = vec!["audit", "--keys", arg(&keys.dir), "--to", &url];
    args.extend_from_slice(extra);
    sim(&args).await
}

/// The text line of check `name`: (`PASS` or `FAIL`, the rest).
fn line<'a>(printed: &'a str, name: &str) -> (&'a str, &'a str) {
    printed
        .lines()
        .filter_map(|line| line.split_once("  "))
        .find(|(_, rest)| {
            rest.trim_start()
                .strip_prefix(name)
                .is_some_and(|after| after.starts_with(' '))
        })
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{printed}"))
}

/// What the line of check `name` says after `PASS`/`FAIL`.
fn rest(output: &Output, name: &str) -> String {
    line(&stdout(output), name).1.to_owned()
}

/// Asserts the binary exited 1 and the line of each of `failing` says FAIL, every other
/// check PASS.
fn assert_flagged_by(output: &Output, failing: &[&str]) {
    let printed = stdout(output);
    assert_eq!(output.status.code(), Some(1), "{printed}{}", stderr(output));
    for check in name::ALL {
        let (verdict, rest) = line(&printed, check);
        let expected = if failing.contains(&check) {
            "FAIL"
        } else {
            "PASS"
        };
        assert_eq!(verdict, expected, "{check}: {rest}\n{printed}");
    }
}

/// The layer configured for `keys` at `/` (where in-process requests go), handler
/// `Handled::Done`, each rejection's kind echoed in an `x-rejection` header.
fn layer_router(keys: &Keys) -> Router {
    Router::new()
        .route(
            "/",
            post(|Notified(_): Notified<Notification>| async { Handled::Done }),
        )
        .route_layer(keys.receiver_layer().unwrap())
        .layer(axum::middleware::map_response(
            |mut response: Response| async {
                if let Some(rejection) = response.extensions().get::<Rejection>() {
                    let kind = format!("{:?}", rejection.kind());
                    response
                        .headers_mut()
                        .insert("x-rejection", HeaderValue::from_str(&kind).unwrap());
                }
                response
            },
        ))
}

async fn audit_in_process(router: Router, keys: &Keys, mode: Mode) -> Report {
    audit::audit(&ServiceTransport::new(router), keys, mode)
        .await
        .unwrap()
}

fn answer<'a>(report: &'a Report, check: &str) -> &'a audit::Check {
    report.check(check).unwrap()
}

#[tokio::test]
async fn a_healthy_receiver_passes_every_check_over_http_and_its_handler_sees_only_genuine_requests()
 {
    let (_dir, keys) = keys();
    let (addr, seen) = healthy_receiver(&keys).await;
    let output = audit_binary(&keys, addr, &[]).await;
    let printed = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{printed}{}",
        stderr(&output)
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), name::ALL.len() + 1, "{printed}");
    for (line, check) in lines.iter().zip(name::ALL) {
        assert!(line.starts_with("PASS  "), "{line}");
        assert!(line.contains(check), "{line}");
        assert!(line.contains(" — "), "every line says why: {line}");
    }
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("17/17 checks passed in "), "{summary}");
    // The figure the README quotes (not asserted: machines under load vary).
    eprintln!("healthy receiver over HTTP: {summary}");

    // The genuine notification twice and the five copies of another: nothing refused
    // ever reached the handler.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2 + audit::COPIES, "{seen:?}");
    let ids: HashSet<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn the_json_report_parses_and_agrees_with_the_text_report() {
    let (_dir, keys) = keys();
    let (addr, _seen) = healthy_receiver(&keys).await;
    let output = audit_binary(&keys, addr, &["--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["passed"], json!(true), "{report:#}");
    assert_eq!(report["target"], json!(format!("http://{addr}/notify")));
    assert_eq!(report["mode"], json!("public-key"));
    assert!(report["duration_ms"].is_u64(), "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, name::ALL);
    for check in checks {
        assert_eq!(check["passed"], json!(true), "{check:#}");
        assert!(check["why"].as_str().is_some_and(|why| !why.is_empty()));
        let answer = &check["answer"];
        assert!(answer["status"].is_u64(), "{check:#}");
        assert!(answer["latency_ms"].is_u64(), "{check:#}");
        assert!(answer["body"].is_string(), "{check:#}");
    }
    let forged = &checks[3]["answer"];
    assert_eq!(forged["status"], json!(401), "{forged:#}");
    let body: Value = serde_json::from_str(forged["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], json!("FAIL"));

    let text = audit_binary(&keys, addr, &[]).await;
    let printed = stdout(&text);
    for check in checks {
        let (verdict, _) = line(&printed, check["name"].as_str().unwrap());
        assert_eq!(verdict, "PASS");
    }
}

#[tokio::test]
async fn in_process_the_layer_passes_every_check_in_both_key_modes() {
    let (_dir, keys) = keys();
    for mode in [Mode::PublicKey, Mode::Certificate] {
        let report = audit_in_process(layer_router(&keys), &keys, mode).await;
        assert!(report.passed(), "{mode:?}:\n{}", report.text());
        let names: Vec<&str> = report.checks.iter().map(|check| check.name).collect();
        assert_eq!(names, name::ALL);
        assert_eq!(report.target, "an in-process service");
    }
}

#[tokio::test]
async fn each_refusal_check_is_refused_by_the_layer_for_its_own_reason() {
    let (_dir, keys) = keys();
    let report = audit_in_process(layer_router(&keys), &keys, Mode::PublicKey).await;
    let expected = [
        (name::FORGED, "InvalidSignature"),
        (name::ONE_BYTE, "InvalidSignature"),
        (name::RESERIALISED, "InvalidSignature"),
        (name::STALE, "TimestampOutOfWindow"),
        (name::AHEAD, "TimestampOutOfWindow"),
        (name::PROBE, "SignatureProbe"),
        (name::UNKNOWN_SERIAL, "UnknownSerial"),
        (name::NO_TIMESTAMP, "MissingHeader"),
        (name::NO_NONCE, "MissingHeader"),
        (name::NO_SIGNATURE, "MissingHeader"),
        (name::NO_SERIAL, "MissingHeader"),
        (name::OTHER_APIV3_KEY, "DecryptionFailed"),
    ];
    for (check, kind) in expected {
        let Evidence::Answer(answer) = &answer(&report, check).evidence else {
            panic!("{check}: no answer");
        };
        assert_eq!(answer.headers["x-rejection"], kind, "{check}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_receiver_with_dedupe_and_a_slow_handler_still_acknowledges_every_copy() {
    let (_dir, keys) = keys();
    let layer = keys
        .receiver_layer()
        .unwrap()
        .dedupe(Dedupe::new(InMemoryStore::new()))
        .unwrap();
    let router = Router::new()
        .route(
            "/",
            post(|Notified(_): Notified<Notification>| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Handled::Done
            }),
        )
        .route_layer(layer);
    let report = audit_in_process(router, &keys, Mode::PublicKey).await;
    assert!(report.passed(), "{}", report.text());
    let copies = answer(&report, name::CONCURRENT);
    // Four copies found the first one in progress and were retried until it was done.
    assert!(!copies.detail.contains("(0 retries)"), "{}", copies.detail);
}

#[tokio::test]
async fn a_receiver_that_does_not_verify_is_flagged_for_acknowledging_forgeries() {
    let (_dir, keys) = keys();
    // Parses the body and says SUCCESS: what "we query the order anyway" receivers do.
    let app = Router::new().route(
        "/notify",
        post(|body: Bytes| async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(envelope) if envelope.get("event_type").is_some() => {
                    (StatusCode::OK, r#"{"code":"SUCCESS","message":"成功"}"#)
                }
                _ => (
                    StatusCode::BAD_REQUEST,
                    r#"{"code":"FAIL","message":"bad body"}"#,
                ),
            }
        }),
    );
    let addr = serve(app).await;
    let output = audit_binary(&keys, addr, &[]).await;
    assert_flagged_by(
        &output,
        &[
            name::FORGED,
            name::ONE_BYTE,
            name::RESERIALISED,
            name::STALE,
            name::AHEAD,
            name::PROBE,
            name::UNKNOWN_SERIAL,
            name::NO_TIMESTAMP,
            name::NO_NONCE,
            name::NO_SIGNATURE,
            name::NO_SERIAL,
            name::OTHER_APIV3_KEY,
            // No failure answer was ever given, so there is none to judge.
            name::FAIL_JSON,
        ],
    );
    let forged = rest(&output, name::FORGED);
    assert!(forged.contains("200 OK"), "{forged}");
    assert!(forged.contains("ships goods nobody paid for"), "{forged}");
}

#[tokio::test]
async fn a_receiver_that_answers_500_after_handling_fails_the_genuine_check() {
    let (_dir, keys) = keys();
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    // The handler runs (the order is marked paid), then something after it fails.
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Notification>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock()
                        .unwrap()
                        .push((n.id().to_owned(), n.event_type().to_owned()));
                    Handled::Done
                }
            }),
        )
        .route_layer(keys.receiver_layer().unwrap())
        .layer(axum::middleware::map_response(|response: Response| async {
            if response.status().is_success() {
                let body = r#"{"code":"FAIL","message":"session store unavailable"}"#;
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            } else {
                response
            }
        }));
    let addr = serve(app).await;
    let output = audit_binary(&keys, addr, &[]).await;
    assert_flagged_by(&output, &[name::GENUINE, name::AGAIN, name::CONCURRENT]);
    let genuine = rest(&output, name::GENUINE);
    assert!(genuine.contains("500 Internal Server Error"), "{genuine}");
    assert!(!seen.lock().unwrap().is_empty(), "the handler ran");
}

#[tokio::test]
async fn a_receiver_slower_than_5_s_fails_the_time_limit_check_naming_the_request() {
    let (_dir, keys) = keys();
    let calls = Arc::new(AtomicUsize::new(0));
    // A cold start in front of the layer (whose own 4 s answer deadline would turn a slow
    // handler into a 500): the first request takes 6 s, the rest are fast.
    let app = Router::new()
        .route(
            "/notify",
            post(|Notified(_): Notified<Notification>| async { Handled::Done }),
        )
        .route_layer(keys.receiver_layer().unwrap())
        .layer(axum::middleware::map_request(
            move |request: axum::extract::Request| {
                let calls = Arc::clone(&calls);
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        tokio::time::sleep(Duration::from_secs(6)).await;
                    }
                    request
                }
            },
        ));
    let addr = serve(app).await;
    let output = audit_binary(&keys, addr, &[]).await;
    assert_flagged_by(&output, &[name::WITHIN_5_S]);
    let late = rest(&output, name::WITHIN_5_S);
    assert!(late.contains("genuine payment acknowledged took"), "{late}");
}

#[tokio::test]
async fn a_receiver_that_refuses_in_plain_text_fails_the_fail_json_check() {
    let (_dir, keys) = keys();
    let app = Router::new()
        .route(
            "/notify",
            post(|Notified(_): Notified<Notification>| async { Handled::Done }),
        )
        .route_layer(keys.receiver_layer().unwrap())
        .layer(axum::middleware::map_response(|response: Response| async {
            if response.status().is_success() {
                response
            } else {
                let mut plain = Response::new(Body::from("signature error"));
                *plain.status_mut() = response.status();
                plain
            }
        }));
    let addr = serve(app).await;
    let output = audit_binary(&keys, addr, &[]).await;
    assert_flagged_by(&output, &[name::FAIL_JSON]);
    let fail_json = rest(&output, name::FAIL_JSON);
    assert!(fail_json.contains("signature error"), "{fail_json}");
}

/// Exit 2 and exactly one line on stderr, containing `expected`.
fn assert_bad_input(output: &Output, expected: &str) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{message}{}", stdout(output));
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(message.contains(expected), "{message}");
}

#[tokio::test]
async fn an_unreadable_key_directory_exits_2_with_one_line() {
    let (_dir, keys) = keys();
    let (addr, _seen) = healthy_receiver(&keys).await;
    let missing = TempDir::new("sim-audit-no-keys");
    let nowhere = missing.path().join("absent");
    let url = format!("http://{addr}/notify");
    let output = sim(&["audit", "--keys", arg(&nowhere), "--to", &url]).await;
    assert_bad_input(&output, "not a readable directory");
}

#[tokio::test]
async fn a_url_that_is_not_http_exits_2_with_one_line() {
    let (_dir, keys) = keys();
    let output = sim(&["audit", "--keys", arg(&keys.dir), "--to", "not a url"]).await;
    assert_bad_input(&output, "--to");
}

#[tokio::test]
async fn an_unreachable_url_exits_2_with_one_line() {
    let (_dir, keys) = keys();
    let url = format!("http://127.0.0.1:{}/notify", free_port());
    let output = sim(&["audit", "--keys", arg(&keys.dir), "--to", &url]).await;
    assert_bad_input(
        &output,
        "did not answer the first request: connection failed",
    );
}

#[tokio::test]
async fn a_url_that_accepts_but_never_answers_exits_2_with_one_line() {
    let (_dir, keys) = keys();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let output = audit_binary(&keys, addr, &[]).await;
    assert_bad_input(
        &output,
        "did not answer the first request: no answer within 8000 ms",
    );
}
