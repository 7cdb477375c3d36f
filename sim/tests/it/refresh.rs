//! Platform certificates that refresh themselves (`Client::refresh_certificates`,
//! `Client::key_refresher`, `Client::spawn_periodic_refresh`) against `wechatpay-sim serve`
//! over real HTTP, and on a paused clock against a fake transport.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::ServiceExt;
use tower_wechatpay::client::{Client, ClientError};
use tower_wechatpay::test_util::sample_payment;
use tower_wechatpay::{ConfigError, Handled, KeyRing, Notification, Notified, WechatPayLayer};
use wechatpay_sim::keys::{Keys, Mode, PlatformCertificate};
use wechatpay_sim::serve::{CertificatesAnswer, ServeMode};

use crate::client::{api, client};
use crate::support::{Running, keys, serve};

fn unix_now() -> i64 {
    wechatpay_sim::notify::unix_now()
}

fn at(unix_seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap()
}

/// A client of `keys`' merchant on `addr` whose clock runs `offset` seconds ahead.
fn client_ahead(keys: &Keys, addr: SocketAddr, ring: KeyRing, offset: Arc<AtomicI64>) -> Client {
    Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        ring,
    )
    .unwrap()
    .base_url(&format!("http://{addr}"))
    .unwrap()
    .api_v3_key(&keys.api_v3_key)
    .unwrap()
    .clock(move || unix_now() + offset.load(Ordering::SeqCst))
    .build()
    .unwrap()
}

/// `keys` whose (first) platform certificate is `platform`.
fn with_platform(keys: &Keys, platform: PlatformCertificate) -> Keys {
    let mut keys = keys.clone();
    keys.platform = platform;
    keys
}

/// A notification signed with `platform`, as a request to `/notify`.
fn notification_from(keys: &Keys, platform: &PlatformCertificate) -> Request<axum::body::Body> {
    let keys = with_platform(keys, platform.clone());
    wechatpay_sim::notify::Notification::new(
        &keys,
        Mode::Certificate,
        "TRANSACTION.SUCCESS",
        &sample_payment(),
    )
    .unwrap()
    .attempt()
    .unwrap()
    .into_request_to("/notify")
    .map(axum::body::Body::new)
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A receiver at `/notify` behind `layer`, recording the event types it handled.
fn receiver(layer: WechatPayLayer) -> (Router, Seen) {
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    let router = Router::new()
        .route(
            "/notify",
            post(move |Notified(n): Notified<Notification>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push(n.event_type().to_owned());
                    Handled::Done
                }
            }),
        )
        .route_layer(layer);
    (router, seen)
}

// ---------------------------------------------------------------------------------------
// One refresh against the simulator.

#[tokio::test]
async fn certificate_mode_refresh_adds_the_platform_certificate_to_an_empty_ring() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let ring = KeyRing::new();
    let client = client(&keys, addr, ring.clone());
    let report = client.refresh_certificates().await.unwrap();
    assert_eq!(report.added, [keys.platform.serial.as_str()]);
    assert!(report.held.is_empty() && report.removed.is_empty());
    assert!(!report.public_key_only);
    assert_eq!(ring.serials(), [keys.platform.serial.as_str()]);

    // Again: nothing new, nothing removed.
    let again = client.refresh_certificates().await.unwrap();
    assert!(
        again.added.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    assert_eq!(ring.serials(), [keys.platform.serial.as_str()]);
}

#[tokio::test]
async fn the_three_public_key_only_answers_are_nothing_to_download() {
    let (_dir, keys) = keys();
    for answer in [
        CertificatesAnswer::NotFound,
        CertificatesAnswer::SystemError,
        CertificatesAnswer::Empty,
    ] {
        let (addr, _server) = api(&keys, ServeMode::PublicKey, answer).await;
        // A ring holding the public key keeps it.
        let ring = KeyRing::new();
        ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
            .unwrap();
        let report = client(&keys, addr, ring.clone())
            .refresh_certificates()
            .await
            .unwrap_or_else(|error| panic!("{answer:?}: {error}"));
        assert!(report.public_key_only, "{answer:?}: {report:?}");
        assert!(report.added.is_empty() && report.held.is_empty() && report.removed.is_empty());
        assert_eq!(ring.serials(), [keys.public_key_id.as_str()], "{answer:?}");

        // A merchant that has not configured the public key yet: still no error (the
        // empty list carries nothing to trust), and the ring stays empty.
        let empty = KeyRing::new();
        let report = client(&keys, addr, empty.clone())
            .refresh_certificates()
            .await
            .unwrap_or_else(|error| panic!("{answer:?}, empty ring: {error}"));
        assert!(report.public_key_only, "{answer:?}: {report:?}");
        assert!(empty.is_empty());
    }
}

#[tokio::test]
async fn a_ring_whose_only_certificate_expired_still_refreshes_after_a_rotation() {
    // The trap (wechatpay-apache-httpclient#50): the ring's only certificate expired before
    // any refresh saw the new one; the download is signed by the new one. The client's clock
    // runs 200 s ahead, past the first certificate's end (within the 300 s answer window).
    let (_dir, keys) = keys();
    let now = unix_now();
    let first = tokio::task::spawn_blocking(move || {
        PlatformCertificate::generate_valid_between(at(now - 86_400), at(now + 100))
    })
    .await
    .unwrap()
    .unwrap();
    let keys = with_platform(&keys, first.clone());
    let (addr, server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let new_serial = server.rotate().await.unwrap();

    let ring = KeyRing::new();
    ring.add_certificate(&first.cert_pem).unwrap();
    ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
        .unwrap();
    let client = client_ahead(&keys, addr, ring.clone(), Arc::new(AtomicI64::new(200)));
    let report = client.refresh_certificates().await.unwrap();
    assert_eq!(report.added, [new_serial.as_str()]);
    // Expired certificates leave the ring; the public key never expires.
    assert_eq!(report.removed, [first.serial.as_str()]);
    let mut expected = vec![new_serial, keys.public_key_id.clone()];
    expected.sort();
    assert_eq!(ring.serials(), expected);
}

#[tokio::test]
async fn a_failed_refresh_removes_nothing() {
    let (_dir, keys) = keys();
    let now = unix_now();
    let first = tokio::task::spawn_blocking(move || {
        PlatformCertificate::generate_valid_between(at(now - 86_400), at(now + 100))
    })
    .await
    .unwrap()
    .unwrap();
    let ring = KeyRing::new();
    ring.add_certificate(&first.cert_pem).unwrap();
    ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
        .unwrap();
    let before = ring.serials();

    // Nobody listens there: the server is down. The client's clock says the certificate
    // has expired, and it still stays.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let client = client_ahead(&keys, down, ring.clone(), Arc::new(AtomicI64::new(200)));
    match client.refresh_certificates().await {
        Err(ClientError::Transport(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(ring.serials(), before);

    // An answer that does not verify (signed by a certificate the client cannot trust:
    // the simulator's listing is encrypted under another APIv3 key) fails too, and
    // removes nothing.
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let mut wrong = keys.clone();
    wrong.api_v3_key = "0123456789abcdef0123456789ABCDEF".to_owned();
    let client = client_ahead(&wrong, addr, ring.clone(), Arc::new(AtomicI64::new(200)));
    match client.refresh_certificates().await {
        Err(ClientError::UnexpectedAnswer { reason, .. }) => {
            assert!(reason.contains("apiv3 key"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ring.serials(), before);
}

#[tokio::test]
async fn a_certificate_not_yet_valid_is_held_until_its_validity_starts() {
    let (_dir, keys) = keys();
    let now = unix_now();
    let future = tokio::task::spawn_blocking(move || {
        PlatformCertificate::generate_valid_between(at(now + 120), at(now + 86_400))
    })
    .await
    .unwrap()
    .unwrap();
    // The server lists the future certificate and the current one; the current one signs.
    let server_keys = with_platform(&keys, future.clone());
    let (addr, server) = api(
        &server_keys,
        ServeMode::Certificate,
        CertificatesAnswer::NotFound,
    )
    .await;
    server.add_platform_certificate(&keys.platform).unwrap();

    let ring = KeyRing::new();
    let offset = Arc::new(AtomicI64::new(0));
    let client = client_ahead(&keys, addr, ring.clone(), Arc::clone(&offset));
    let report = client.refresh_certificates().await.unwrap();
    assert_eq!(report.added, [keys.platform.serial.as_str()]);
    assert_eq!(report.held, [future.serial.as_str()]);
    assert_eq!(ring.serials(), [keys.platform.serial.as_str()]);

    // 200 s later by the client's clock (the answers' timestamps are still within 300 s).
    offset.store(200, Ordering::SeqCst);
    let report = client.refresh_certificates().await.unwrap();
    assert_eq!(report.added, [future.serial.as_str()]);
    assert!(report.held.is_empty(), "{report:?}");
    let mut expected = vec![keys.platform.serial.clone(), future.serial.clone()];
    expected.sort();
    assert_eq!(ring.serials(), expected);
}

// ---------------------------------------------------------------------------------------
// Rotation: the layer meets the new serial, the refresher fetches it.

#[tokio::test]
async fn after_a_rotation_the_layer_refreshes_and_accepts_the_notification() {
    let (_dir, keys) = keys();
    let (addr, server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let layer = WechatPayLayer::new(&keys.api_v3_key)
        .unwrap()
        .add_certificate(&keys.platform.cert_pem)
        .unwrap();
    let client = client(&keys, addr, layer.keys().clone());
    let layer = layer.key_refresher(client.key_refresher());
    let ring = layer.keys().clone();

    // What `server.rotate()` does, keeping the new key to sign the notification with.
    let rotated = tokio::task::spawn_blocking(PlatformCertificate::generate)
        .await
        .unwrap()
        .unwrap();
    server.add_platform_certificate(&rotated).unwrap();
    assert!(!ring.contains(&rotated.serial));

    let (router, seen) = receiver(layer);
    let response = router
        .oneshot(notification_from(&keys, &rotated))
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "{status}: {body:?}");
    assert_eq!(*seen.lock().unwrap(), ["TRANSACTION.SUCCESS"]);
    assert!(ring.contains(&rotated.serial));
    assert!(ring.contains(&keys.platform.serial));
}

#[tokio::test]
async fn rotate_after_the_layer_meets_the_new_serial_and_accepts_the_notification() {
    let (_dir, keys) = keys();
    let mut server = Running::start(&keys, &["--mode", "certificate", "--rotate-after", "1"]).await;
    let layer = WechatPayLayer::new(&keys.api_v3_key)
        .unwrap()
        .add_certificate(&keys.platform.cert_pem)
        .unwrap();
    let client = client(&keys, server.addr, layer.keys().clone());
    let layer = layer.key_refresher(client.key_refresher());
    let ring = layer.keys().clone();
    let (router, seen) = receiver(layer);
    let receiver = serve(router).await;

    let line = server.wait_for(|line| line.starts_with("rotated:")).await;
    let new_serial = line
        .split_whitespace()
        .find(|word| word.len() == 40 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no serial in {line}"))
        .to_owned();
    assert!(!ring.contains(&new_serial));

    // The simulator signs the notification with its current (new) certificate; retries
    // on WeChat Pay's fast schedule in case a busy machine makes the first wait too long.
    let http = example_support::harness::Http::new(&server.addr.to_string());
    let (status, paid) = http
        .post_json(
            "/sim/pay",
            &json!({ "out_trade_no": "ROTATED-1", "amount": 100,
                     "notify_url": format!("http://{receiver}/notify"),
                     "notify_mode": "certificate", "schedule": "fast" }),
        )
        .await;
    assert!(status.is_success(), "{paid}");
    server
        .wait_for(|line| line.contains("ROTATED-1") && line.contains("acknowledged"))
        .await;
    assert_eq!(*seen.lock().unwrap(), ["TRANSACTION.SUCCESS"]);
    assert!(ring.contains(&new_serial));
}

// ---------------------------------------------------------------------------------------
// The periodic refresh, on a paused clock with a fake transport.

/// The fake transport: answers without the network.
type Fake =
    tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// A client whose transport answers every request with `answer(now)` and counts them;
/// its clock is `base` plus the (paused) Tokio time elapsed.
fn fake_client(
    keys: &Keys,
    ring: KeyRing,
    base: i64,
    answer: impl Fn(i64) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) -> (Client<Fake>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let start = tokio::time::Instant::now();
    let clock = move || base + i64::try_from(start.elapsed().as_secs()).unwrap();
    let now = clock;
    let service = Fake::new(tower::service_fn(move |_request: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let response = answer(now());
        async move { Ok::<_, Infallible>(response) }
    }));
    let client = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        ring,
    )
    .unwrap()
    .api_v3_key(&keys.api_v3_key)
    .unwrap()
    .clock(clock)
    .build_with_service(service);
    (client, calls)
}

/// WeChat Pay's answer to a public-key-only merchant.
fn not_found(_now: i64) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        br#"{"code":"RESOURCE_NOT_EXISTS","message":"no certificate"}"#,
    )));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A `/v3/certificates` answer listing `listed`, signed at `now` by `signer`.
fn listing(
    keys: &Keys,
    signer: &PlatformCertificate,
    listed: &[PlatformCertificate],
    now: i64,
) -> Response<Full<Bytes>> {
    let signer = signer.signer(&keys.api_v3_key).unwrap();
    let data: Vec<_> = listed
        .iter()
        .map(|certificate| {
            json!({
                "serial_no": certificate.serial,
                "effective_time": "2025-01-01T00:00:00+08:00",
                "expire_time": "2030-01-01T00:00:00+08:00",
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM",
                    "nonce": "fakenonce012",
                    "associated_data": "certificate",
                    "ciphertext": signer
                        .seal(certificate.cert_pem.as_bytes(), "fakenonce012", "certificate")
                        .unwrap(),
                },
            })
        })
        .collect();
    let body = json!({ "data": data }).to_string();
    let signed = signer
        .sign_body_with_nonce(body, now, "0123456789ABCDEF0123456789ABCDEF")
        .unwrap();
    let mut response = Response::new(Full::new(signed.body));
    *response.headers_mut() = signed.headers;
    response
}

#[tokio::test(start_paused = true)]
async fn the_periodic_refresh_runs_at_once_then_every_interval_and_stops_when_dropped() {
    let (_dir, keys) = keys();
    let (client, calls) = fake_client(&keys, KeyRing::new(), unix_now(), not_found);
    let interval = Duration::from_secs(3600);
    let refresh = client.spawn_periodic_refresh(interval).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the first run is immediate"
    );
    assert!(refresh.is_running());

    // Not before interval - 10 %, by interval + 10 %.
    tokio::time::sleep(interval.mul_f64(0.89)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(interval.mul_f64(0.22)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::sleep(interval.mul_f64(1.11)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    drop(refresh);
    tokio::time::sleep(interval * 10).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "dropping it stops it");

    let refresh = client.spawn_periodic_refresh(interval).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    refresh.stop();
    tokio::time::sleep(interval * 3).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "stop() stops it");
}

#[tokio::test(start_paused = true)]
async fn the_periodic_refresh_interval_is_bounded() {
    let (_dir, keys) = keys();
    let (client, calls) = fake_client(&keys, KeyRing::new(), unix_now(), not_found);
    for refused in [
        Duration::ZERO,
        Duration::from_secs(3599),
        Client::MAX_REFRESH_INTERVAL + Duration::from_secs(1),
    ] {
        match client.spawn_periodic_refresh(refused) {
            Err(ConfigError::InvalidSetting { setting, .. }) => {
                assert_eq!(setting, "certificate refresh interval");
            }
            other => panic!("{refused:?}: {other:?}"),
        }
    }
    let running: Vec<_> = [
        Client::MIN_REFRESH_INTERVAL,
        Client::DEFAULT_REFRESH_INTERVAL,
        Client::MAX_REFRESH_INTERVAL,
    ]
    .into_iter()
    .map(|accepted| client.spawn_periodic_refresh(accepted).unwrap())
    .collect();
    assert_eq!(
        Client::DEFAULT_REFRESH_INTERVAL,
        Duration::from_secs(12 * 3600)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    drop(running);
}

#[test]
fn the_periodic_refresh_needs_a_runtime() {
    let (_dir, keys) = keys();
    let service = tower::service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(not_found(0))
    });
    let client = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        KeyRing::new(),
    )
    .unwrap()
    .build_with_service(service);
    match client.spawn_periodic_refresh(Client::DEFAULT_REFRESH_INTERVAL) {
        Err(ConfigError::InvalidSetting { reason, .. }) => {
            assert!(reason.contains("Tokio"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_periodic_refresh_wakes_up_when_a_held_certificate_becomes_valid() {
    let (_dir, keys) = keys();
    let base = unix_now();
    let current = keys.platform.clone();
    let future =
        PlatformCertificate::generate_valid_between(at(base + 600), at(base + 86_400)).unwrap();
    let listed = [future.clone(), current.clone()];
    let answer_keys = keys.clone();
    let ring = KeyRing::new();
    let (client, calls) = fake_client(&keys, ring.clone(), base, move |now| {
        listing(&answer_keys, &current, &listed, now)
    });
    let refresh = client
        .spawn_periodic_refresh(Client::DEFAULT_REFRESH_INTERVAL)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ring.serials(), [keys.platform.serial.as_str()]);

    tokio::time::sleep(Duration::from_secs(590)).await;
    assert!(!ring.contains(&future.serial), "held until its notBefore");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        ring.contains(&future.serial),
        "added when its validity started"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "woke up for it, not after 12 h"
    );
    drop(refresh);
}
