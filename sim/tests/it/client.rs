//! The library's merchant API client (`tower_wechatpay::client`) against `wechatpay-sim
//! serve` over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use tower_wechatpay::KeyRing;
use tower_wechatpay::client::{Client, ClientError};
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
