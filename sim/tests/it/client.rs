//! The library's merchant API client (`tower_wechatpay::client`) against `wechatpay-sim
//! serve` over real HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{BoxError, Service, ServiceExt};
use tower_wechatpay::KeyRing;
use tower_wechatpay::client::{
    Client, ClientBuilder, ClientError, OrderQuery, QueriedOrder, RefundQuery, https_transport,
};
use tower_wechatpay::test_util::{TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner};
use wechatpay_sim::keys::Keys;
use wechatpay_sim::serve::{CertificatesAnswer, Log, ServeMode, Server, app};

use crate::support::{keys, serve};

/// `wechatpay-sim serve` in-process on a free port.
pub async fn api(
    keys: &Keys,
    mode: ServeMode,
    answer: CertificatesAnswer,
) -> (SocketAddr, Arc<Server>) {
    let server = Server::new(keys.clone(), mode, answer, Log::silent()).unwrap();
    (serve(app(Arc::clone(&server))).await, server)
}

/// A client for `keys`' merchant, verifying with `ring`.
pub fn client(keys: &Keys, addr: SocketAddr, ring: KeyRing) -> Client {
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
    .build()
    .unwrap()
}

#[tokio::test]
async fn the_first_download_is_trusted_by_decryption_and_verified_by_what_it_carries() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let certificates = client(&keys, addr, KeyRing::new())
        .download_certificates()
        .await
        .unwrap();
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].serial_no, keys.platform.serial);
    assert_eq!(certificates[0].pem.trim(), keys.platform.cert_pem.trim());
}

#[tokio::test]
async fn a_paid_order_is_queried_and_verified() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let http = example_support::harness::Http::new(&addr.to_string());
    let (status, order) = http
        .post_json(
            "/sim/pay",
            &serde_json::json!({"out_trade_no": "ORDER/1", "amount": 990}),
        )
        .await;
    assert!(status.is_success(), "{order}");
    let ring = KeyRing::new();
    ring.add_certificate(&keys.platform.cert_pem).unwrap();
    let client = client(&keys, addr, ring);
    let queried = client
        .query_order_by_transaction_id(order["transaction_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(queried.out_trade_no, "ORDER/1");
    assert_eq!(queried.amount.total, 990);
    let missing = client
        .query_order_by_transaction_id("4200000000000000000000000000")
        .await;
    match missing {
        Err(ClientError::Api(api)) => assert_eq!(api.code, "ORDER_NOT_EXIST"),
        other => panic!("{other:?}"),
    }
}

/// A client for `keys`' merchant against `addr`, its builder adjusted by `adjust`, sending
/// through `service`.
fn client_with<S>(
    keys: &Keys,
    addr: SocketAddr,
    ring: KeyRing,
    adjust: impl FnOnce(ClientBuilder) -> ClientBuilder,
    service: S,
) -> Client<S> {
    let builder = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        ring,
    )
    .unwrap()
    .base_url(&format!("http://{addr}"))
    .unwrap()
    .api_v3_key(&keys.api_v3_key)
    .unwrap();
    adjust(builder).build_with_service(service)
}

/// A ring holding `keys`' platform certificate and WeChat Pay public key.
fn full_ring(keys: &Keys) -> KeyRing {
    let ring = KeyRing::new();
    ring.add_certificate(&keys.platform.cert_pem).unwrap();
    ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
        .unwrap();
    ring
}

/// Creates a paid order through `POST /sim/pay`; its query answer.
async fn pay(addr: SocketAddr, body: Value) -> Value {
    let http = example_support::harness::Http::new(&addr.to_string());
    let (status, order) = http.post_json("/sim/pay", &body).await;
    assert!(status.is_success(), "{order}");
    order
}

/// Refunds through `POST /sim/refund`; the refund's query answer.
async fn refund(addr: SocketAddr, body: Value) -> Value {
    let http = example_support::harness::Http::new(&addr.to_string());
    let (status, refund) = http.post_json("/sim/refund", &body).await;
    assert!(status.is_success(), "{refund}");
    refund
}

/// The default transport, counting the requests it sends.
fn counting_transport(
    count: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let inner = https_transport(Duration::from_secs(5)).unwrap();
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        count.fetch_add(1, Ordering::SeqCst);
        let inner = inner.clone();
        async move { inner.oneshot(request).await.map_err(BoxError::from) }
    })
}

/// A fixed clock for answers signed by a fake service.
const NOW: i64 = 1_750_000_000;

/// A fake WeChat Pay that answers `500 SYSTEM_ERROR` `failures` times, then `answer` signed
/// with the crate's test public key at [`NOW`]; it counts the requests.
fn flaky_service(
    failures: usize,
    answer: Value,
    count: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            if n < failures {
                let mut response = Response::new(Full::new(Bytes::from(
                    json!({"code": "SYSTEM_ERROR", "message": "系统繁忙"}).to_string(),
                )));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(response);
            }
            let signed = TestSigner::public_key_mode()
                .sign_body(answer.to_string(), NOW)
                .unwrap();
            let mut response = Response::new(Full::new(signed.body));
            *response.headers_mut() = signed.headers;
            Ok(response)
        }
    })
}

fn test_ring() -> KeyRing {
    let ring = KeyRing::new();
    ring.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    ring
}

#[tokio::test]
async fn signed_requests_are_accepted_and_public_key_answers_verified() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::PublicKey, CertificatesAnswer::NotFound).await;
    let order = pay(addr, json!({"out_trade_no": "PK1", "amount": 1})).await;
    let ring = KeyRing::new();
    ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
        .unwrap();
    let client = client_with(
        &keys,
        addr,
        ring,
        |b| b.wechatpay_serial(&keys.public_key_id).unwrap(),
        https_transport(Duration::from_secs(5)).unwrap(),
    );
    let answer = client
        .query_order(&OrderQuery::TransactionId(
            order["transaction_id"].as_str().unwrap().into(),
        ))
        .await
        .unwrap();
    assert_eq!(answer.serial, keys.public_key_id);
    assert_eq!(answer.json::<Value>().unwrap(), order);
    assert!(answer.request_id.is_some());
}

#[tokio::test]
async fn a_wrong_merchant_key_is_a_typed_sign_error_with_what_was_signed() {
    let (_dir, mut keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    // Another RSA-2048 key under the merchant's serial: WeChat Pay's own key will do.
    keys.merchant_key_pem = keys.platform.key_pem.clone();
    let error = client(&keys, addr, full_ring(&keys))
        .query_order(&OrderQuery::OutTradeNo("NONE".into()))
        .await
        .unwrap_err();
    let ClientError::Api(api) = error else {
        panic!("{error:?}")
    };
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.code, "SIGN_ERROR");
    let info = api.sign_information().expect("sign_information");
    assert_eq!(info["method"], "GET");
    assert_eq!(
        info["url"],
        "/v3/pay/transactions/out-trade-no/NONE?mchid=".to_owned() + &keys.mchid
    );
    assert!(
        info["truncated_sign_message"]
            .as_str()
            .unwrap()
            .starts_with("GET\n/v3/pay/")
    );
    assert!(api.request_id.is_some());
}

#[tokio::test]
async fn an_answer_changed_by_one_byte_is_refused() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let order = pay(addr, json!({"out_trade_no": "TAMPER1", "amount": 100})).await;
    let inner = https_transport(Duration::from_secs(5)).unwrap();
    let tampering = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let inner = inner.clone();
        async move {
            let response = inner.oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let mut body = body.collect().await?.to_bytes().to_vec();
            // "amount":100 → "amount":101 (or any one byte, same length).
            let at = body
                .windows(3)
                .position(|w| w == b"100")
                .unwrap_or(body.len() / 2);
            body[at + 2] ^= 1;
            Ok::<_, BoxError>(Response::from_parts(parts, Full::new(Bytes::from(body))))
        }
    });
    let client = client_with(
        &keys,
        addr,
        full_ring(&keys),
        |b| b.retries(0).unwrap(),
        tampering,
    );
    let error = client
        .query_order_by_out_trade_no(order["out_trade_no"].as_str().unwrap())
        .await
        .unwrap_err();
    let ClientError::NotVerified(not_verified) = error else {
        panic!("{error:?}")
    };
    assert!(not_verified.reason.contains("signature"), "{not_verified}");
    assert_eq!(
        not_verified.serial.as_deref(),
        Some(keys.platform.serial.as_str())
    );
}

#[tokio::test]
async fn a_download_with_the_certificate_already_held_verifies_with_the_ring() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Certificate, CertificatesAnswer::NotFound).await;
    let ring = KeyRing::new();
    ring.add_certificate(&keys.platform.cert_pem).unwrap();
    let certificates = client(&keys, addr, ring.clone())
        .download_certificates()
        .await
        .unwrap();
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].serial_no, keys.platform.serial);
    assert!(!certificates[0].effective_time.is_empty());
    assert!(!certificates[0].expire_time.is_empty());
    assert_eq!(
        ring.len(),
        1,
        "a download adds nothing to the ring by itself"
    );
}

#[tokio::test]
async fn public_key_only_answers_are_an_empty_list_not_an_error() {
    let (_dir, keys) = keys();
    for answer in [
        CertificatesAnswer::NotFound,
        CertificatesAnswer::SystemError,
        CertificatesAnswer::Empty,
    ] {
        let (addr, _server) = api(&keys, ServeMode::PublicKey, answer).await;
        let ring = KeyRing::new();
        ring.add_public_key(&keys.public_key_id, &keys.public_key_pem)
            .unwrap();
        let client = client_with(
            &keys,
            addr,
            ring,
            |b| b.retries(0).unwrap(),
            https_transport(Duration::from_secs(5)).unwrap(),
        );
        let certificates = client.download_certificates().await;
        assert!(
            certificates.as_ref().is_ok_and(Vec::is_empty),
            "{answer:?}: {certificates:?}"
        );
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_configured_time() {
    let (_dir, keys) = keys();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accepted, never read from nor answered
        }
    });
    let limit = Duration::from_millis(500);
    let client = client_with(
        &keys,
        addr,
        full_ring(&keys),
        |b| b.timeout(limit).unwrap(),
        https_transport(Duration::from_secs(5)).unwrap(),
    );
    let started = std::time::Instant::now();
    let error = client
        .query_order_by_transaction_id("4200")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, ClientError::Timeout(l) if l == limit),
        "{error:?}"
    );
    assert!(elapsed < limit + Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_after_bounded_retries() {
    let (_dir, keys) = keys();
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // closed: connections are refused
    let count = Arc::new(AtomicUsize::new(0));
    let client = client_with(
        &keys,
        addr,
        full_ring(&keys),
        |b| b.retries(2).unwrap(),
        counting_transport(Arc::clone(&count)),
    );
    let error = client
        .query_order_by_transaction_id("4200")
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "the first attempt and 2 retries"
    );
}

#[tokio::test]
async fn direct_orders_are_queried_by_either_number() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let order = pay(
        addr,
        json!({"out_trade_no": "BOTH1", "amount": 250, "attach": "x"}),
    )
    .await;
    let client = client(&keys, addr, full_ring(&keys));
    let transaction_id = order["transaction_id"].as_str().unwrap();
    let by_id = client
        .query_order_by_transaction_id(transaction_id)
        .await
        .unwrap();
    assert_eq!(by_id.out_trade_no, "BOTH1");
    assert_eq!(by_id.amount.total, 250);
    match client.query_order_by_out_trade_no("BOTH1").await.unwrap() {
        QueriedOrder::Paid(paid) => {
            assert_eq!(paid.transaction_id, transaction_id);
            assert_eq!(paid.trade_state, "SUCCESS");
        }
        other => panic!("{other:?}"),
    }
    // The simulator only makes paid orders, so `QueriedOrder::Unpaid` is not reached here
    // (see the unit tests of `queried`).
}

#[tokio::test]
async fn partner_orders_are_queried_with_the_sub_merchant() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let order = pay(
        addr,
        json!({"out_trade_no": "SUB1", "amount": 300, "sub_mchid": "1900000110"}),
    )
    .await;
    let client = client(&keys, addr, full_ring(&keys));
    let transaction_id = order["transaction_id"].as_str().unwrap();
    let by_id = client
        .query_partner_order_by_transaction_id("1900000110", transaction_id)
        .await
        .unwrap();
    assert_eq!(by_id.sub_mchid, "1900000110");
    assert_eq!(by_id.out_trade_no, "SUB1");
    match client
        .query_partner_order_by_out_trade_no("1900000110", "SUB1")
        .await
        .unwrap()
    {
        QueriedOrder::Paid(paid) => assert_eq!(paid.transaction_id, transaction_id),
        other => panic!("{other:?}"),
    }
    let other_sub = client
        .query_partner_order_by_out_trade_no("1900000999", "SUB1")
        .await
        .unwrap_err();
    assert_eq!(
        other_sub.api().map(|api| api.code.as_str()),
        Some("ORDER_NOT_EXIST")
    );
}

#[tokio::test]
async fn a_refund_is_queried_and_its_status_read() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    pay(addr, json!({"out_trade_no": "R-ORDER", "amount": 500})).await;
    refund(
        addr,
        json!({"out_trade_no": "R-ORDER", "out_refund_no": "R-1", "amount": 200}),
    )
    .await;
    let client = client(&keys, addr, full_ring(&keys));
    let refund = client.query_refund(&RefundQuery::new("R-1")).await.unwrap();
    assert_eq!(refund.out_refund_no, "R-1");
    assert_eq!(refund.refund_status, "SUCCESS");
    assert_eq!(refund.amount.refund, 200);
    let missing = client
        .query_refund(&RefundQuery::new("R-2"))
        .await
        .unwrap_err();
    assert_eq!(
        missing.api().map(|api| api.code.as_str()),
        Some("RESOURCE_NOT_EXISTS")
    );
}

#[tokio::test]
async fn order_numbers_are_escaped_so_they_reach_their_own_order() {
    let (_dir, keys) = keys();
    let (addr, _server) = api(&keys, ServeMode::Both, CertificatesAnswer::NotFound).await;
    let odd = "A/B?mchid=1&c#d 订单%2F";
    pay(addr, json!({"out_trade_no": odd, "amount": 7})).await;
    pay(addr, json!({"out_trade_no": "A", "amount": 8})).await;
    let client = client(&keys, addr, full_ring(&keys));
    match client.query_order_by_out_trade_no(odd).await.unwrap() {
        QueriedOrder::Paid(paid) => {
            assert_eq!(paid.out_trade_no, odd);
            assert_eq!(paid.amount.total, 7);
        }
        other => panic!("{other:?}"),
    }
    let dots = client.query_order_by_out_trade_no("..").await.unwrap_err();
    assert!(
        matches!(dots, ClientError::InvalidArgument { .. }),
        "{dots:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_get_is_retried_after_server_errors_until_it_succeeds() {
    let (_dir, keys) = keys();
    let count = Arc::new(AtomicUsize::new(0));
    let answer =
        json!({"out_trade_no": "RETRY1", "trade_state": "NOTPAY", "trade_state_desc": "未支付"});
    let client = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        test_ring(),
    )
    .unwrap()
    .clock(|| NOW)
    .build_with_service(flaky_service(2, answer, Arc::clone(&count)));
    let queried = client.query_order_by_out_trade_no("RETRY1").await.unwrap();
    assert_eq!(
        queried,
        QueriedOrder::Unpaid {
            out_trade_no: "RETRY1".into(),
            trade_state: "NOTPAY".into(),
            trade_state_desc: Some("未支付".into()),
        }
    );
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_post_is_never_repeated() {
    let (_dir, keys) = keys();
    let count = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(
        &keys.mchid,
        &keys.merchant_serial,
        &keys.merchant_key_pem,
        test_ring(),
    )
    .unwrap()
    .clock(|| NOW)
    .build_with_service(flaky_service(2, json!({}), Arc::clone(&count)));
    let error = client
        .post_json(
            "/v3/pay/transactions/out-trade-no/X/close",
            &json!({"mchid": keys.mchid}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.api().map(|api| api.status),
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
