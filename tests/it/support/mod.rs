//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod example;
#[cfg(feature = "redis")]
pub mod redis;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_wechatpay::test_util::SignedNotification;
use tower_wechatpay::{BufferedBody, Notification, Rejection, WechatPayLayer};

/// A fixed "now" for tests that use the test signer.
pub const NOW: i64 = 1_764_300_000;

/// What the handler saw.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<(Notification, Bytes)>>>);

impl Seen {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn last(&self) -> (Notification, Bytes) {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the handler ran")
    }
}

/// A handler that records the notification and body it got and answers `status`.
pub fn recording(
    seen: Seen,
    status: StatusCode,
) -> impl tower::Service<
    Request<BufferedBody>,
    Response = Response<BufferedBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |request: Request<BufferedBody>| {
        let seen = seen.clone();
        async move {
            let notification = request
                .extensions()
                .get::<Notification>()
                .cloned()
                .expect("the layer inserts the notification");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.0.lock().unwrap().push((notification, body));
            let mut response = Response::new(BufferedBody::empty());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

/// The test layer (both test keys), with the clock at [`NOW`].
pub fn test_layer() -> WechatPayLayer {
    tower_wechatpay::test_util::TestSigner::public_key_mode()
        .layer()
        .unwrap()
        .clock(|| NOW)
}

/// The answer, split up.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub rejection: Option<Rejection>,
}

impl Answer {
    pub fn fail_message(&self) -> String {
        let value: serde_json::Value =
            serde_json::from_slice(&self.body).expect("a FAIL body is JSON");
        assert_eq!(value["code"], "FAIL", "body: {value}");
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        value["message"]
            .as_str()
            .expect("message is a string")
            .to_owned()
    }
}

pub async fn answer(response: Response<BufferedBody>) -> Answer {
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned()),
        body: body.collect().await.unwrap().to_bytes(),
        rejection: parts.extensions.get::<Rejection>().cloned(),
    }
}

/// Sends one request through `layer` around a recording handler answering 200.
pub async fn send(layer: &WechatPayLayer, request: Request<BufferedBody>) -> (Answer, Seen) {
    let seen = Seen::default();
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(recording(seen.clone(), StatusCode::OK));
    let response = service.oneshot(request).await.unwrap();
    (answer(response).await, seen)
}

pub async fn send_signed(layer: &WechatPayLayer, signed: SignedNotification) -> (Answer, Seen) {
    send(layer, signed.into_request()).await
}

/// A genuine notification of `event_type` carrying `resource`, signed at [`NOW`]: a fresh
/// delivery (WeChat Pay signs every copy anew, with a new envelope id).
pub fn delivery(event_type: &str, resource: &serde_json::Value) -> SignedNotification {
    tower_wechatpay::test_util::TestSigner::public_key_mode()
        .notification(event_type, resource)
        .timestamp(NOW)
        .build()
        .unwrap()
}

/// A genuine payment notification as a `POST /` request.
pub fn payment_request() -> Request<BufferedBody> {
    delivery(
        "TRANSACTION.SUCCESS",
        &tower_wechatpay::test_util::sample_payment(),
    )
    .into_request()
}

/// An axum request to `/notify` carrying a fresh delivery.
pub fn axum_request(event_type: &str, resource: &serde_json::Value) -> Request<axum::body::Body> {
    delivery(event_type, resource)
        .into_request_to("/notify")
        .map(axum::body::Body::new)
}

/// Everything logged on this thread while the returned guard lives, at TRACE.
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, Captured) {
    // With one scoped subscriber alive, tracing takes it for the only one: a callsite
    // first hit meanwhile on another test's thread (no subscriber there) is then cached as
    // disabled for every thread, and this capture misses it. A second dispatcher, alive
    // for good, keeps the interest per thread.
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), captured)
}

/// Log output captured by [`capture_logs`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
