//! [`ResponseFuture`]: buffer the body, verify and decrypt, call the inner service, answer.

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
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
            #[pin]
            deadline: Sleep,
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
                            let deadline = tokio::time::sleep(pipeline.handler_deadline);
                            match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                                Ok(future) => this.state.set(State::Calling {
                                    future,
                                    deadline,
                                    pipeline,
                                    notification,
                                }),
                                Err(panic) => this.state.set(State::Rejected {
                                    response: Some(panicked(&notification, panic.as_ref())),
                                }),
                            }
                        }
                        Err(rejection) => this.state.set(State::Rejected {
                            response: Some(reply::failure(rejection)),
                        }),
                    }
                }
                StateProj::Calling {
                    future,
                    deadline,
                    pipeline,
                    notification,
                } => {
                    // A panicking handler becomes a retry; the connection and the server
                    // carry on.
                    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(result)) => {
                            return Poll::Ready(Ok(pipeline.answer(result, notification)));
                        }
                        Ok(Poll::Pending) => {}
                        Err(panic) => {
                            return Poll::Ready(Ok(panicked(notification, panic.as_ref())));
                        }
                    }
                    // Past the deadline the handler's state is unknown: dropping its future
                    // cancels it, and WeChat Pay retries instead of timing out on us.
                    ready!(deadline.poll(cx));
                    tracing::error!(
                        id = notification.id(),
                        event_type = notification.event_type(),
                        deadline_ms = pipeline.handler_deadline.as_millis() as u64,
                        "the handler did not answer within the deadline; cancelled it and \
                         answering 500 so WeChat Pay retries"
                    );
                    return Poll::Ready(Ok(reply::failure(Rejection::new(
                        RejectionKind::HandlerTimeout,
                        "handler timed out",
                    ))));
                }
            }
        }
    }
}

fn panicked(notification: &Notification, panic: &(dyn Any + Send)) -> Response<BufferedBody> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(
        id = notification.id(),
        event_type = notification.event_type(),
        panic = message,
        "the handler panicked; answering 500 so WeChat Pay retries"
    );
    reply::failure(Rejection::new(
        RejectionKind::HandlerPanicked,
        "handler panicked",
    ))
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
