//! `wechatpay-sim send`: WeChat Pay's schedule on a paused clock, in-process; the binary
//! over HTTP against real receivers; bad input.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower_wechatpay::{Handled, Notification as Verified, Notified, Retry};
use wechatpay_sim::deliver::{Outcome, Plan, Progress, Schedule, WECHAT_GAPS, deliver};
use wechatpay_sim::keys::Mode;
use wechatpay_sim::notify::Notification;
use wechatpay_sim::resource;
use wechatpay_sim::transport::ServiceTransport;

use crate::support::{arg, keys, serve, sim, stderr, stdout};

/// One request as an in-process endpoint saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    nonce: String,
    signature: String,
    body: Bytes,
}

/// An endpoint that answers `status_for(n)` to its n-th request (1-based), recording each.
#[allow(clippy::type_complexity)]
fn endpoint(
    status_for: impl Fn(usize) -> StatusCode + Clone + Send + Sync + 'static,
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
    Arc<Mutex<Vec<Seen>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = Arc::clone(&seen);
    let service = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let log = Arc::clone(&log);
        let status_for = status_for.clone();
        async move {
            let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
            let (nonce, signature) = (header("wechatpay-nonce"), header("wechatpay-signature"));
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let n = {
                let mut log = log.lock().unwrap();
                log.push(Seen {
                    at: Instant::now(),
                    nonce,
                    signature,
                    body,
                });
                log.len()
            };
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status_for(n);
            Ok::<_, Infallible>(response)
        }
    });
    (service, seen)
}

fn plan(schedule: Schedule, copies: usize) -> Plan {
    Plan {
        gaps: schedule.gaps(),
        copies,
        timeout: Duration::from_secs(5),
    }
}

fn payment(keys: &wechatpay_sim::keys::Keys) -> Notification {
    Notification::new(
        keys,
        Mode::PublicKey,
        "TRANSACTION.SUCCESS",
        &resource::payment(keys),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_never_acknowledges_gets_sixteen_attempts_on_wechats_gaps() {
    let (_dir, keys) = keys();
    let (service, seen) = endpoint(|_| StatusCode::INTERNAL_SERVER_ERROR);
    let notification = payment(&keys);
    let mut lines = Vec::new();
    let outcome = deliver(
        &ServiceTransport::new(service),
        &notification,
        &plan(Schedule::Wechat, 1),
        |progress| lines.push(progress.line()),
    )
    .await
    .unwrap();

    assert_eq!(outcome, Outcome::NotAcknowledged { attempts: 16 });
    assert_eq!(outcome.line(), "not acknowledged after 16 attempt(s)");
    let seen = seen.lock().unwrap();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert_eq!(gaps, WECHAT_GAPS.to_vec());
    let total: Duration = gaps.iter().sum();
    assert_eq!(
        total,
        Duration::from_secs(24 * 3600 + 4 * 60),
        "WeChat gives up after 24 h 4 min"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("attempt ")).count(),
        16
    );
    assert!(
        lines.contains(&"next attempt in 3 min".to_owned()),
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_same_body_with_a_fresh_nonce_and_signature() {
    let (_dir, keys) = keys();
    let (service, seen) = endpoint(|n| {
        if n < 4 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    });
    let notification = payment(&keys);
    let outcome = deliver(
        &ServiceTransport::new(service),
        &notification,
        &plan(Schedule::Wechat, 1),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Acknowledged { attempts: 4 });
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|s| s.body == *notification.body()));
    let mut nonces: Vec<_> = seen.iter().map(|s| s.nonce.clone()).collect();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a nonce was reused");
    let mut signatures: Vec<_> = seen.iter().map(|s| s.signature.clone()).collect();
    signatures.sort();
    signatures.dedup();
    assert_eq!(signatures.len(), 4, "a signature was reused");
}

#[tokio::test(start_paused = true)]
async fn the_fast_schedule_divides_every_gap_by_a_thousand() {
    let (_dir, keys) = keys();
    let (service, seen) = endpoint(|_| StatusCode::BAD_REQUEST);
    let outcome = deliver(
        &ServiceTransport::new(service),
        &payment(&keys),
        &plan(Schedule::Fast, 1),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::NotAcknowledged { attempts: 16 });
    let seen = seen.lock().unwrap();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    let expected: Vec<Duration> = WECHAT_GAPS.iter().map(|g| *g / 1000).collect();
    assert_eq!(gaps, expected);
}

#[tokio::test(start_paused = true)]
async fn once_sends_a_single_attempt() {
    let (_dir, keys) = keys();
    let (service, seen) = endpoint(|_| StatusCode::INTERNAL_SERVER_ERROR);
    let outcome = deliver(
        &ServiceTransport::new(service),
        &payment(&keys),
        &plan(Schedule::Once, 1),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::NotAcknowledged { attempts: 1 });
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_answer_slower_than_the_timeout_counts_as_a_failed_attempt() {
    let (_dir, keys) = keys();
    let calls = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&calls);
    let slow_then_fast = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let n = {
            let mut calls = counter.lock().unwrap();
            *calls += 1;
            *calls
        };
        async move {
            if n == 2 {
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = if n == 1 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut lines = Vec::new();
    let outcome = deliver(
        &ServiceTransport::new(slow_then_fast),
        &payment(&keys),
        &plan(Schedule::Wechat, 1),
        |p| {
            lines.push(p.line());
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Acknowledged { attempts: 3 });
    assert!(
        lines
            .iter()
            .any(|l| l == "attempt 2: no answer within 5000 ms"),
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn copies_go_out_concurrently_and_the_stragglers_are_retried() {
    let (_dir, keys) = keys();
    // The first five requests are the copies; two of them are told to retry.
    let (service, seen) = endpoint(|n| {
        if n == 2 || n == 4 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    });
    let mut copies = Vec::new();
    let outcome = deliver(
        &ServiceTransport::new(service),
        &payment(&keys),
        &plan(Schedule::Wechat, 5),
        |p| {
            if let Progress::Attempt(attempt) = p {
                copies.push(attempt.copy);
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Acknowledged { attempts: 2 });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    assert!(
        seen[..5].iter().all(|s| s.at == seen[0].at),
        "the copies were not concurrent"
    );
    assert_eq!(seen[5].at - seen[0].at, WECHAT_GAPS[0]);
    assert_eq!(copies.iter().filter(|c| c.is_some()).count(), 5);
}

#[tokio::test(start_paused = true)]
async fn the_layer_verifies_every_attempt_and_its_handler_sees_one_notification_id() {
    let (_dir, keys) = keys();
    let ids = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&ids);
    let handler = tower::service_fn(move |request: Request<tower_wechatpay::BufferedBody>| {
        let log = Arc::clone(&log);
        async move {
            let notification = request.extensions().get::<Verified>().unwrap();
            let n = {
                let mut log = log.lock().unwrap();
                log.push(notification.id().to_owned());
                log.len()
            };
            // The first two attempts meet a database that is down.
            let outcome = if n < 3 {
                Err(Retry::new("database down"))
            } else {
                Ok(Handled::Done)
            };
            Ok::<_, Infallible>(tower_wechatpay::into_http_response(outcome))
        }
    });
    let service = tower::Layer::layer(&keys.receiver_layer().unwrap(), handler);
    let notification = payment(&keys);
    let outcome = deliver(
        &ServiceTransport::new(service),
        &notification,
        &plan(Schedule::Wechat, 1),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Acknowledged { attempts: 3 });
    let ids = ids.lock().unwrap();
    assert_eq!(ids.len(), 3, "an attempt did not verify");
    assert!(ids.iter().all(|id| *id == ids[0]));
}

#[tokio::test]
async fn send_delivers_to_a_real_receiver_and_says_acknowledged() {
    let (dir, keys) = keys();
    let seen = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let log = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Verified>| {
                let log = Arc::clone(&log);
                async move {
                    let mut resource = n.resource_value().unwrap();
                    resource["event_type"] = n.event_type().into();
                    log.lock().unwrap().push(resource);
                    Handled::Done
                }
            }),
        )
        .route_layer(keys.receiver_layer().unwrap());
    let addr = serve(app).await;
    let url = format!("http://{addr}/notify");

    let output = sim(&[
        "send",
        "--keys",
        arg(dir.path()),
        "--to",
        &url,
        "--set",
        "amount.total=1",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let out = stdout(&output);
    assert!(
        out.lines()
            .any(|l| l.starts_with("attempt 1: 204 No Content in ")),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("acknowledged after 1 attempt(s)"));

    let output = sim(&[
        "send",
        "--keys",
        arg(dir.path()),
        "--to",
        &url,
        "--event",
        "REFUND.SUCCESS",
        "--mode",
        "certificate",
    ])
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(seen[0]["amount"]["total"], 1);
    assert_eq!(seen[0]["mchid"], keys.mchid.as_str());
    assert_eq!(seen[0]["trade_state"], "SUCCESS");
    assert_eq!(seen[1]["event_type"], "REFUND.SUCCESS");
    assert_eq!(seen[1]["refund_status"], "SUCCESS");
    assert!(seen[1]["refund_id"].is_string() && seen[1]["out_refund_no"].is_string());
}

#[tokio::test]
async fn send_retries_on_the_fast_schedule_until_the_receiver_acknowledges() {
    let (dir, _keys) = keys();
    let calls = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&calls);
    let app = Router::new().route(
        "/notify",
        post(move || {
            let counter = Arc::clone(&counter);
            async move {
                let mut calls = counter.lock().unwrap();
                *calls += 1;
                if *calls < 3 {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"code":"FAIL","message":"busy"}"#,
                    )
                } else {
                    (StatusCode::OK, "")
                }
            }
        }),
    );
    let url = format!("http://{}/notify", serve(app).await);
    let output = sim(&[
        "send",
        "--keys",
        arg(dir.path()),
        "--to",
        &url,
        "--schedule",
        "fast",
    ])
    .await;
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains(r#"attempt 1: 500 Internal Server Error in "#),
        "{out}"
    );
    assert!(out.contains(r#"{"code":"FAIL","message":"busy"}"#), "{out}");
    assert!(out.contains("next attempt in 15 ms"), "{out}");
    assert_eq!(out.lines().last(), Some("acknowledged after 3 attempt(s)"));
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[tokio::test]
async fn send_once_to_a_failing_receiver_exits_1() {
    let (dir, _keys) = keys();
    let app = Router::new().route("/notify", post(|| async { StatusCode::UNAUTHORIZED }));
    let url = format!("http://{}/notify", serve(app).await);
    let output = sim(&[
        "send",
        "--keys",
        arg(dir.path()),
        "--to",
        &url,
        "--schedule",
        "once",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output).lines().last(),
        Some("not acknowledged after 1 attempt(s)")
    );
}

#[tokio::test]
async fn copies_reach_the_receiver_as_separate_requests_of_one_notification() {
    let (dir, keys) = keys();
    let (addr, seen) = crate::support::healthy_receiver(&keys).await;
    let url = format!("http://{addr}/notify");
    let output = sim(&[
        "send",
        "--keys",
        arg(dir.path()),
        "--to",
        &url,
        "--copies",
        "4",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|(id, _)| *id == seen[0].0));
    assert_eq!(stdout(&output).matches(" copy ").count(), 4);
}

#[tokio::test]
async fn bad_input_is_one_line_and_exit_2() {
    let (dir, _keys) = keys();
    let unreadable = dir.path().join("missing");
    let port = example_support::harness::free_port();
    let nobody = format!("http://127.0.0.1:{port}/notify");
    // A listener that accepts and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/notify", hanging.local_addr().unwrap());
    let _keep = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            open.push(socket);
        }
    });
    let plain = serve(Router::new().route("/notify", post(|| async { StatusCode::OK }))).await;
    let plain_as_tls = format!("https://{plain}/notify");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--keys", arg(&unreadable), "--to", &nobody],
            "not a readable directory",
        ),
        (
            vec!["--keys", arg(dir.path()), "--to", &nobody],
            "Connection refused",
        ),
        (
            // https goes through the TLS connector; a plain-HTTP port cannot complete it.
            vec!["--keys", arg(dir.path()), "--to", &plain_as_tls],
            "connection failed",
        ),
        (
            vec![
                "--keys",
                arg(dir.path()),
                "--to",
                &hanging_url,
                "--timeout-ms",
                "300",
            ],
            "no answer within 300 ms",
        ),
        (
            vec!["--keys", arg(dir.path()), "--to", "ftp://example/notify"],
            "expected an http:// or https:// URL",
        ),
        (
            vec![
                "--keys",
                arg(dir.path()),
                "--to",
                &nobody,
                "--set",
                "amount",
            ],
            "expected FIELD=VALUE",
        ),
        (
            vec![
                "--keys",
                arg(dir.path()),
                "--to",
                &nobody,
                "--resource",
                arg(&unreadable),
            ],
            "missing",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["send"];
        full.extend(args.iter().copied());
        let output = sim(&full).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{full:?}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{full:?}: {message}");
        assert!(message.contains(expected), "{full:?}: {message}");
    }
}
