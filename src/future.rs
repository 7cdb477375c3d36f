//! [`ResponseFuture`]: buffer the body, verify and decrypt, call the inner service, answer.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower::{BoxError, Service};

use crate::body::BufferedBody;
use crate::error::{Rejection, RejectionKind};
use crate::notification::Notification;
use crate::pipeline::Pipeline;
use crate::reply;
use crate::verify::CheckedHeaders;

pin_project! {
    /// The future of [`WechatPay`](crate::WechatPay): unboxed and nameable, `Send`
    /// whenever the inner service, its future and the request body are.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<BufferedBody>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<BufferedBody>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Rejected { response: Option<Response<BufferedBody>> },
        Buffering {
            #[pin]
            collect: Collect<Limited<B>>,
            pending: Option<Pending<S>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            pipeline: Arc<Pipeline>,
            notification: Notification,
        },
    }
}

/// What waits for the body: the request head, the checked headers and the ready service.
struct Pending<S> {
    parts: Parts,
    checked: CheckedHeaders,
    inner: S,
    pipeline: Arc<Pipeline>,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            state: State::Rejected {
                response: Some(reply::failure(rejection)),
            },
        }
    }

    pub(crate) fn buffering(
        request: Request<B>,
        checked: CheckedHeaders,
        inner: S,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        let collect = Limited::new(body, pipeline.max_body_size).collect();
        Self {
            state: State::Buffering {
                collect,
                pending: Some(Pending {
                    parts,
                    checked,
                    inner,
                    pipeline,
                }),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<BufferedBody>, Response = Response<ResBody>>,
    S::Error: Display,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<BufferedBody>, S::Error>;

    // The only `expect`s: polling a finished future is a caller bug, not request data.
    #[allow(clippy::expect_used)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("future polled after completion")));
                }
                StateProj::Buffering { collect, pending } => {
                    let collected = ready!(collect.poll(cx));
                    let Pending {
                        mut parts,
                        checked,
                        mut inner,
                        pipeline,
                    } = pending.take().expect("future polled after completion");
                    let body = match collected {
                        Ok(collected) => collected.to_bytes(),
                        Err(error) => {
                            let rejection = body_error(&error);
                            this.state.set(State::Rejected {
                                response: Some(reply::failure(rejection)),
                            });
                            continue;
                        }
                    };
                    match pipeline.open(&checked, &body) {
                        Ok(notification) => {
                            parts.extensions.insert(notification.clone());
                            let request = Request::from_parts(parts, BufferedBody::new(body));
                            let future = inner.call(request);
                            this.state.set(State::Calling {
                                future,
                                pipeline,
                                notification,
                            });
                        }
                        Err(rejection) => this.state.set(State::Rejected {
                            response: Some(reply::failure(rejection)),
                        }),
                    }
                }
                StateProj::Calling {
                    future,
                    pipeline,
                    notification,
                } => {
                    let result = ready!(future.poll(cx));
                    return Poll::Ready(Ok(pipeline.answer(result, notification)));
                }
            }
        }
    }
}

fn body_error(error: &BoxError) -> Rejection {
    if error.downcast_ref::<LengthLimitError>().is_some() {
        tracing::warn!("refused a notification body over the limit");
        Rejection::new(RejectionKind::BodyTooLarge, "body too large")
    } else {
        tracing::warn!(%error, "could not read a notification body");
        Rejection::new(RejectionKind::BodyUnreadable, "could not read body")
    }
}
