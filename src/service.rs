//! [`WechatPay`]: the service that guards an inner service.

use std::fmt::{self, Display};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower::{BoxError, Service};

use crate::body::BufferedBody;
use crate::future::ResponseFuture;
use crate::pipeline::Pipeline;
use crate::verify::HeaderProblem;

/// The service made by [`WechatPayLayer`](crate::WechatPayLayer): the inner service sees
/// only verified, decrypted notifications, and WeChat Pay sees only the answers it expects.
pub struct WechatPay<S> {
    inner: S,
    pipeline: Arc<Pipeline>,
}

impl<S> WechatPay<S> {
    pub(crate) fn new(inner: S, pipeline: Arc<Pipeline>) -> Self {
        Self { inner, pipeline }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for WechatPay<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pipeline: Arc::clone(&self.pipeline),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WechatPay<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatPay")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WechatPay<S>
where
    S: Service<Request<BufferedBody>, Response = Response<ResBody>> + Clone,
    S::Error: Display,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<BufferedBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    /// Always ready: the inner service is reserved per request, inside the future, only
    /// once the request is verified (as `tower::util::Oneshot` does), so unauthenticated
    /// requests waiting for their body or a key refresh never hold an inner permit.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let pipeline = Arc::clone(&self.pipeline);
        // The answer deadline counts from here.
        let deadline = Instant::now() + pipeline.deadline;
        let problem = match pipeline.check_headers(request.headers()) {
            Ok(checked) => {
                let inner = self.inner.clone();
                return ResponseFuture::buffering(request, checked, inner, pipeline, deadline);
            }
            Err(problem) => problem,
        };
        // Every other header check passed and the key may just be new to us: wait for a
        // (bounded, single-flight) refresh of the key ring, then check again.
        if matches!(problem, HeaderProblem::UnknownSerial { .. })
            && let Some(wait) = pipeline.keys.wait_for_refresh()
        {
            let inner = self.inner.clone();
            return ResponseFuture::refreshing(request, wait, inner, pipeline, deadline);
        }
        // No `Wechatpay-*` header at all: perhaps an APIv2 XML notification, which only
        // its body can tell.
        #[cfg(feature = "v2")]
        if matches!(problem, HeaderProblem::Missing(_)) && no_wechatpay_header(request.headers()) {
            let inner = self.inner.clone();
            return ResponseFuture::undecided(request, problem, inner, pipeline, deadline);
        }
        let rejection = pipeline.refuse(problem, request.headers());
        ResponseFuture::rejected(rejection, pipeline)
    }
}

/// Whether none of the four signed-request headers is present (an APIv2 request carries
/// none; a v3 request missing some of them is refused as such).
#[cfg(feature = "v2")]
fn no_wechatpay_header(headers: &http::HeaderMap) -> bool {
    use crate::verify::{NONCE, SERIAL, SIGNATURE, TIMESTAMP};
    [TIMESTAMP, NONCE, SIGNATURE, SERIAL]
        .iter()
        .all(|name| !headers.contains_key(name))
}
