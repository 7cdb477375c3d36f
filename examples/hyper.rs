//! `WechatPayLayer` on a plain hyper server, no framework: a `tower::service_fn` handler
//! served with hyper-util. Uses the crate's test keys; put yours in their place.
//!
//! ```text
//! cargo run --example hyper            # listens on 127.0.0.1:3000 until Ctrl-C
//! ```

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower_wechatpay::test_util::TestSigner;
use tower_wechatpay::{BufferedBody, Notification};

async fn handle(request: Request<BufferedBody>) -> Result<Response<BufferedBody>, Infallible> {
    let mut response = Response::new(BufferedBody::empty());
    match request.extensions().get::<Notification>() {
        Some(notification) => {
            println!("{} {}", notification.event_type(), notification.id());
        }
        // Unreachable behind the layer; answering 500 keeps a misconfiguration from
        // ever acknowledging anything.
        None => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // In production: WechatPayLayer::new(apiv3_key)?.add_public_key(id, pem)?
    let layer = TestSigner::public_key_mode().layer()?;
    let service = tower::ServiceBuilder::new().layer(layer).service_fn(handle);

    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    if let Err(error) = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        eprintln!("connection error: {error}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
