//! Served by hyper over a real TCP socket, as WeChat Pay would reach it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use support::NOW;
use tokio::net::TcpListener;
use tower_wechatpay::test_util::{TestSigner, sample_payment};
use tower_wechatpay::{BufferedBody, Notification};

async fn serve() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(support::test_layer())
        .service_fn(|request: Request<BufferedBody>| async move {
            let id = request
                .extensions()
                .get::<Notification>()
                .map(|n| n.id().to_owned())
                .unwrap_or_default();
            assert!(!id.is_empty());
            Ok::<_, Infallible>(Response::new(BufferedBody::empty()))
        });
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn post(addr: std::net::SocketAddr, request: Request<BufferedBody>) -> (StatusCode, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{addr}/wechatpay/notify").parse().unwrap();
    let body = body.collect().await.unwrap().to_bytes();
    let response = client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn genuine_notification_over_tcp_is_acknowledged() {
    let addr = serve().await;
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let (status, body) = post(addr, signed.into_request()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
}

#[tokio::test]
async fn forged_notification_over_tcp_is_refused_with_a_fail_body() {
    let addr = serve().await;
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sample_payment())
        .timestamp(NOW)
        .build()
        .unwrap();
    let (status, body) = post(
        addr,
        signed.with_body(&b"{\"forged\":true}"[..]).into_request(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["code"], "FAIL");
}
