//! Criterion benches of the merchant API client's own work per request, for the backend
//! this build uses (`cargo bench -p tower-wechatpay-benches --bench client`, or with
//! `--no-default-features --features rustcrypto`), through the public API with an
//! in-process transport (no network):
//!
//! - "sign a GET": the `Authorization` value (32-character nonce, RSA-2048 PKCS#1 v1.5
//!   SHA-256 signature, base64) and the request around it; the transport answers a 404
//!   at once, which is never verified, so this is the signing cost plus a few µs.
//! - "GET, answer verified": the same, then a pre-signed 200 answer verified with the key
//!   ring (RSA-2048 verify) and its body read: all the client's CPU per query.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower_wechatpay::client::{Client, ClientError};
use tower_wechatpay::test_util::{TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM, TestSigner};
use tower_wechatpay::{CRYPTO_BACKEND, KeyRing};
use wechatpay_sim::keys::Keys;

/// The clock of the pre-signed answer.
const NOW: i64 = 1_750_000_000;
const TARGET: &str = "/v3/pay/transactions/id/4200000000000000000000000001?mchid=1900000109";

fn client(c: &mut Criterion) {
    // A fresh RSA-2048 merchant key (nothing is written to disk).
    let keys = Keys::generate(&std::env::temp_dir()).unwrap();
    let ring = KeyRing::new();
    ring.add_public_key(TEST_PUBLIC_KEY_ID, TEST_PUBLIC_KEY_PEM)
        .unwrap();
    let builder = || {
        Client::builder(
            &keys.mchid,
            &keys.merchant_serial,
            &keys.merchant_key_pem,
            ring.clone(),
        )
        .unwrap()
        .retries(0)
        .unwrap()
        .clock(|| NOW)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    // Answers 404 to a signed request (500 to an unsigned one, which would fail the check).
    let refuse = tower::service_fn(|request: Request<Full<Bytes>>| async move {
        let signed = request
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|value| value.as_bytes().starts_with(b"WECHATPAY2-SHA256-RSA2048 "));
        let mut response = Response::new(Full::new(Bytes::from_static(
            br#"{"code":"ORDER_NOT_EXIST","message":"order not found"}"#,
        )));
        *response.status_mut() = if signed {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Ok::<_, Infallible>(response)
    });
    let signing = builder().build_with_service(refuse);
    match runtime.block_on(signing.get(TARGET)) {
        Err(ClientError::Api(api)) if api.status == StatusCode::NOT_FOUND => {}
        other => panic!("expected the 404: {other:?}"),
    }

    // Answers a payment signed with the test public key.
    let answer = TestSigner::public_key_mode()
        .sign_body(
            serde_json::json!({
                "appid": "wxd678efh567hg6787", "mchid": "1900000109",
                "out_trade_no": "1217752501201407033233368018",
                "transaction_id": "4200000000000000000000000001",
                "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
                "bank_type": "OTHERS", "attach": "", "success_time": "2025-06-15T10:00:00+08:00",
                "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                "amount": {"total": 100, "payer_total": 100, "currency": "CNY", "payer_currency": "CNY"}
            })
            .to_string(),
            NOW,
        )
        .unwrap();
    let answering =
        builder().build_with_service(tower::service_fn(move |_request: Request<Full<Bytes>>| {
            let answer = answer.clone();
            async move {
                let mut response = Response::new(Full::new(answer.body));
                *response.headers_mut() = answer.headers;
                Ok::<_, Infallible>(response)
            }
        }));
    runtime.block_on(answering.get(TARGET)).unwrap();

    let mut group = c.benchmark_group(CRYPTO_BACKEND);
    group.bench_function("client: sign a GET (nonce + RSA-2048), 404 answer", |b| {
        b.iter(|| black_box(runtime.block_on(signing.get(black_box(TARGET))).is_err()))
    });
    group.bench_function("client: sign a GET, 200 answer verified", |b| {
        b.iter(|| black_box(runtime.block_on(answering.get(black_box(TARGET))).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, client);
criterion_main!(benches);
