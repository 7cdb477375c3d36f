//! How a request reaches the endpoint: over HTTP, or straight into a tower service (tests
//! on a paused clock). Every send is bounded by a timeout and timed.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use crate::error::SimError;

/// What the endpoint answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// From sending the request to the end of the answer's body.
    pub latency: Duration,
}

impl Answer {
    /// 2xx: WeChat Pay takes it as an acknowledgement.
    pub fn acknowledged(&self) -> bool {
        self.status.is_success()
    }

    /// The body as text, cut to `max` characters, on one line.
    pub fn body_excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body).replace(['\n', '\r'], " ");
        if text.chars().count() > max {
            format!("{}…", text.chars().take(max).collect::<String>())
        } else {
            text
        }
    }

    /// The latency in milliseconds.
    pub fn millis(&self) -> u128 {
        self.latency.as_millis()
    }
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout(Duration),
    /// The connection could not be made or broke (refused, reset, not HTTP).
    Connection(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(limit) => write!(f, "no answer within {} ms", limit.as_millis()),
            Failure::Connection(cause) => write!(f, "connection failed: {cause}"),
        }
    }
}

/// Somewhere to POST notifications.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Sends one request (the URI is the transport's; only method, headers and body are
    /// taken from `request`) and waits at most `timeout` for the whole answer.
    fn send(
        &self,
        request: Request<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer, Failure>> + Send;

    /// Where it sends, for messages.
    fn target(&self) -> String;
}

/// POSTs to a URL over HTTP/1.1, plain or TLS (server certificates checked against the
/// Mozilla roots, so a local self-signed certificate is refused: use the plain port).
#[derive(Clone)]
pub struct HttpTransport {
    client: tower_wechatpay::client::HttpsTransport,
    uri: Uri,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to `url` (`http://host:port/path`).
    pub fn new(url: &str) -> Result<Self, SimError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| SimError(format!("--to {url}: not a URL ({e})")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(SimError(format!(
                "--to {url}: expected an http:// or https:// URL such as http://127.0.0.1:3000/notify"
            )));
        }
        if uri.host().is_none() {
            return Err(SimError(format!("--to {url}: the URL has no host")));
        }
        // The library's client transport: rustls with the Mozilla roots, plain HTTP too.
        let client = tower_wechatpay::client::https_transport(Duration::from_secs(5))
            .map_err(|e| SimError(format!("--to {url}: {e}")))?;
        Ok(Self { client, uri })
    }
}

impl Transport for HttpTransport {
    async fn send(&self, request: Request<Bytes>, timeout: Duration) -> Result<Answer, Failure> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.uri.clone();
        let request = Request::from_parts(parts, Full::new(body));
        let started = Instant::now();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Connection(error_chain(&e)))?;
            answer(response, started, |e| error_chain(&e)).await
        };
        within(timeout, exchange).await
    }

    fn target(&self) -> String {
        self.uri.to_string()
    }
}

/// Calls a tower service in-process: the simulator against a layer with no network.
#[derive(Clone)]
pub struct ServiceTransport<S> {
    service: S,
}

impl<S> ServiceTransport<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S, B> Transport for ServiceTransport<S>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: fmt::Display,
{
    async fn send(&self, request: Request<Bytes>, timeout: Duration) -> Result<Answer, Failure> {
        use tower::ServiceExt;
        let started = Instant::now();
        let service = self.service.clone();
        let exchange = async move {
            let response = match service.oneshot(request.map(Full::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            answer(response, started, |e| e.to_string()).await
        };
        within(timeout, exchange).await
    }

    fn target(&self) -> String {
        "an in-process service".to_owned()
    }
}

/// The whole answer, timed from `started`; `describe` words a body error.
async fn answer<B: http_body::Body>(
    response: Response<B>,
    started: Instant,
    describe: impl FnOnce(B::Error) -> String,
) -> Result<Answer, Failure> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Failure::Connection(describe(e)))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        latency: started.elapsed(),
    })
}

/// `exchange`, or [`Failure::Timeout`] once `timeout` has passed.
async fn within(
    timeout: Duration,
    exchange: impl Future<Output = Result<Answer, Failure>>,
) -> Result<Answer, Failure> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
}

/// An error and its causes on one line (hyper's top-level message alone says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
