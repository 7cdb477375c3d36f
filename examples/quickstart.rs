//! The two-minute tour: an axum server with `WechatPayLayer` on an ephemeral port, using the
//! crate's built-in test keys, receives a genuine notification, a forged one, a stale one
//! and a signature probe over real HTTP, and says what each got and why.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_wechatpay::models::Transaction;
use tower_wechatpay::test_util::{SignedNotification, TestSigner, sample_payment};
use tower_wechatpay::{Handled, Notified, Retry};

/// The handler: it only ever sees verified, decrypted notifications. `Ok(Handled::Done)`
/// acknowledges; an error (`?`) would make WeChat Pay retry.
async fn payment_notified(Notified(payment): Notified<Transaction>) -> Result<Handled, Retry> {
    println!(
        "    handler: order {} paid {} fen (transaction {}, state {})",
        payment.out_trade_no, payment.amount.total, payment.transaction_id, payment.trade_state
    );
    // Record the payment idempotently here (see examples/shop.rs), then acknowledge.
    Ok(Handled::Done)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The layer's own logs (stderr) say why each request was refused, as in production.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_wechatpay=info".into()),
        )
        .init();
    let signer = TestSigner::public_key_mode();
    // In production: WechatPayLayer::new(apiv3_key)?.add_public_key(id, pem)?
    let layer = signer.layer()?;
    let app = Router::new()
        .route("/wechatpay/notify", post(payment_notified))
        .layer(layer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("server with WechatPayLayer listening on http://{addr}/wechatpay/notify\n");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let payment = sample_payment();
    let genuine = signer
        .notification("TRANSACTION.SUCCESS", &payment)
        .timestamp(now)
        .build()?;
    let forged = TestSigner::stranger()
        .notification("TRANSACTION.SUCCESS", &payment)
        .timestamp(now)
        .build()?;
    let stale = signer
        .notification("TRANSACTION.SUCCESS", &payment)
        .timestamp(now - 600)
        .build()?;
    let probe = genuine.clone().into_probe();

    let cases = [
        (
            "a genuine payment notification",
            genuine,
            StatusCode::NO_CONTENT,
            "signature verified, resource decrypted, handler ran: acknowledged, so WeChat Pay \
             stops sending it",
        ),
        (
            "a forged one (signed by a key we do not trust)",
            forged,
            StatusCode::UNAUTHORIZED,
            "the signature does not verify: refused, the handler never saw it",
        ),
        (
            "a stale one (signed 10 minutes ago, e.g. a replay)",
            stale,
            StatusCode::UNAUTHORIZED,
            "outside the 5-minute timestamp window: refused before the body is even read",
        ),
        (
            "a WeChat Pay signature probe (WECHATPAY/SIGNTEST/)",
            probe,
            StatusCode::UNAUTHORIZED,
            "probes must fail verification; WeChat Pay then resends it correctly signed",
        ),
    ];
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut surprises = 0;
    for (what, signed, expected, why) in cases {
        println!("sending {what}");
        let (status, body) = send(&client, addr, signed).await?;
        let body = if body.is_empty() {
            "(empty body)".to_owned()
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        println!("    answer: {} {body}", status.as_u16());
        if status == expected {
            println!("    why: {why}\n");
        } else {
            surprises += 1;
            println!("    UNEXPECTED: should have been {}\n", expected.as_u16());
        }
    }
    println!("probes refused so far: {}", layer.probes_seen());
    if surprises > 0 {
        return Err(format!("{surprises} answer(s) were not what WeChat Pay requires").into());
    }
    Ok(())
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: std::net::SocketAddr,
    signed: SignedNotification,
) -> Result<(StatusCode, Bytes), Box<dyn std::error::Error>> {
    let mut request = Request::post(format!("http://{addr}/wechatpay/notify"));
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let response = client
        .request(request.body(Full::new(signed.body))?)
        .await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}
