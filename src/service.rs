//! [`WechatPay`]: the service that guards an inner service.

use std::fmt::{self, Display};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body::Body;
use tower::{BoxError, Service};

use crate::body::BufferedBody;
use crate::error::{Rejection, RejectionKind};
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

impl<S: Clone> WechatPay<S> {
    /// Only the instance we polled is known to be ready (tower: "be careful when cloning
    /// inner services"); it travels into the future, a fresh clone stays.
    fn take_ready(&mut self) -> S {
        let not_ready = self.inner.clone();
        std::mem::replace(&mut self.inner, not_ready)
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let pipeline = Arc::clone(&self.pipeline);
        // Cheap checks first: a declared length over the limit, then every header.
        if declared_length(&request).is_some_and(|len| len > pipeline.max_body_size as u64) {
            tracing::warn!("refused a notification whose content-length is over the limit");
            let rejection = Rejection::new(RejectionKind::BodyTooLarge, "body too large");
            return ResponseFuture::rejected(rejection);
        }
        let problem = match pipeline.inspect_headers(request.headers()) {
            Ok(checked) => {
                return ResponseFuture::buffering(request, checked, self.take_ready(), pipeline);
            }
            Err(problem) => problem,
        };
        // Every other header check passed and the key may just be new to us: wait for a
        // (bounded, single-flight) refresh of the key ring, then check again.
        if matches!(problem, HeaderProblem::UnknownSerial { .. })
            && let Some(wait) = pipeline.keys.wait_for_refresh()
        {
            return ResponseFuture::refreshing(request, wait, self.take_ready(), pipeline);
        }
        ResponseFuture::rejected(pipeline.refuse(problem, request.headers()))
    }
}

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
