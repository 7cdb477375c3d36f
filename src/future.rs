//! [`ResponseFuture`]: buffer the body, verify and decrypt, claim (with the dedupe guard),
//! call the inner service, settle the claim, answer.

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Service};

use crate::body::BufferedBody;
use crate::dedupe::{Claim, StoreFuture, new_token};
use crate::error::{Rejection, RejectionKind};
use crate::notification::Notification;
use crate::pipeline::Pipeline;
use crate::refresh::RefreshWait;
use crate::reply;
use crate::verify::CheckedHeaders;

pin_project! {
    /// The future of [`WechatPay`](crate::WechatPay): nameable, and `Send` whenever the
    /// inner service, its future and the request body are. Only the dedupe guard's store
    /// operations and the wait for a key refresh are boxed, and only when they happen.
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
        // The answer is known.
        Answered { response: Option<Response<BufferedBody>> },
        // Waiting for a key refresh: the serial was unknown.
        Refreshing {
            #[pin]
            wait: RefreshWait,
            request: Option<(Request<B>, S, Arc<Pipeline>)>,
        },
        // Reading the body.
        Buffering {
            #[pin]
            collect: Collect<Limited<B>>,
            // A body that trickles or stalls must not hold the task (and its buffers). Armed
            // only when the body is not there at once: the usual body costs no timer.
            timeout: Option<Pin<Box<Sleep>>>,
            pending: Option<Pending<S>>,
        },
        // Asking the dedupe store whether this event may run.
        Claiming {
            #[pin]
            claim: StoreFuture<Claim>,
            verified: Option<Verified<S>>,
        },
        // The handler runs, against its deadline.
        Calling {
            #[pin]
            future: S::Future,
            // Armed only if the handler does not answer at once.
            deadline: Option<Pin<Box<Sleep>>>,
            run: Run,
        },
        // Marking the event done, or releasing the claim, before answering.
        Settling {
            #[pin]
            settle: StoreFuture<()>,
            response: Option<Response<BufferedBody>>,
            notification: Notification,
            completing: bool,
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

/// A verified request and the ready service, waiting for the claim.
struct Verified<S> {
    request: Request<BufferedBody>,
    inner: S,
    run: Run,
}

/// One handler run: its notification, and the claim it holds, if any.
struct Run {
    pipeline: Arc<Pipeline>,
    notification: Notification,
    held: Option<Held>,
}

/// A claim this request holds in the dedupe store.
struct Held {
    key: String,
    token: String,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(crate) fn rejected(rejection: Rejection) -> Self {
        Self {
            state: answered(reply::failure(rejection)),
        }
    }

    pub(crate) fn buffering(
        request: Request<B>,
        checked: CheckedHeaders,
        inner: S,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            state: buffering(request, checked, inner, pipeline),
        }
    }

    pub(crate) fn refreshing(
        request: Request<B>,
        wait: RefreshWait,
        inner: S,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        Self {
            state: State::Refreshing {
                wait,
                request: Some((request, inner, pipeline)),
            },
        }
    }
}

fn buffering<S, B>(
    request: Request<B>,
    checked: CheckedHeaders,
    inner: S,
    pipeline: Arc<Pipeline>,
) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let collect = Limited::new(body, pipeline.max_body_size).collect();
    State::Buffering {
        collect,
        timeout: None,
        pending: Some(Pending {
            parts,
            checked,
            inner,
            pipeline,
        }),
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
            let next = match this.state.as_mut().project() {
                StateProj::Answered { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("future polled after completion")));
                }
                StateProj::Refreshing { wait, request } => {
                    ready!(wait.poll(cx));
                    let (request, inner, pipeline) =
                        request.take().expect("future polled after completion");
                    // Checked again from the start: the refresh may have added the key.
                    match pipeline.check_headers(request.headers()) {
                        Ok(checked) => buffering(request, checked, inner, pipeline),
                        Err(rejection) => answered(reply::failure(rejection)),
                    }
                }
                StateProj::Buffering {
                    collect,
                    timeout,
                    pending,
                } => match collect.poll(cx) {
                    Poll::Ready(collected) => {
                        let pending = pending.take().expect("future polled after completion");
                        after_body(pending, collected)
                    }
                    Poll::Pending => {
                        let limit = pending
                            .as_ref()
                            .map_or(Duration::ZERO, |p| p.pipeline.body_timeout);
                        let timer =
                            timeout.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                        ready!(timer.as_mut().poll(cx));
                        tracing::warn!(
                            timeout_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                            "refused a notification whose body did not arrive in time \
                             (a slow or stalled client)"
                        );
                        answered(reply::failure(Rejection::new(
                            RejectionKind::BodyTimeout,
                            "body read timed out",
                        )))
                    }
                },
                StateProj::Claiming { claim, verified } => {
                    let claim = ready!(claim.poll(cx));
                    let verified = verified.take().expect("future polled after completion");
                    after_claim(verified, claim)
                }
                StateProj::Calling {
                    future,
                    deadline,
                    run,
                } => {
                    // A panicking handler becomes a retry; the connection and the server
                    // carry on.
                    let response = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(result)) => run.pipeline.answer(result, &run.notification),
                        Err(panic) => panicked(&run.notification, panic.as_ref()),
                        Ok(Poll::Pending) => {
                            // Past the deadline the handler's state is unknown: dropping
                            // its future cancels it, and WeChat Pay retries instead of
                            // timing out on us.
                            let limit = run.pipeline.handler_deadline;
                            let timer =
                                deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                            ready!(timer.as_mut().poll(cx));
                            timed_out(run)
                        }
                    };
                    settle(take_run(run), response)
                }
                StateProj::Settling {
                    settle,
                    response,
                    notification,
                    completing,
                } => {
                    if let Err(error) = ready!(settle.poll(cx)) {
                        log_settle_error(notification, *completing, &error);
                    }
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("future polled after completion")));
                }
            };
            this.state.set(next);
        }
    }
}

fn answered<S, B>(response: Response<BufferedBody>) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    State::Answered {
        response: Some(response),
    }
}

/// The body is in: verify and decrypt, then claim (guard on) or call (guard off).
fn after_body<S, B>(
    pending: Pending<S>,
    collected: Result<http_body_util::Collected<B::Data>, BoxError>,
) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let Pending {
        mut parts,
        checked,
        inner,
        pipeline,
    } = pending;
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return answered(reply::failure(body_error(&error))),
    };
    let notification = match pipeline.open(&checked, &parts.headers, &body) {
        Ok(notification) => notification,
        Err(rejection) => return answered(reply::failure(rejection)),
    };
    parts.extensions.insert(notification.clone());
    let request = Request::from_parts(parts, BufferedBody::new(body));
    let Some(dedupe) = &pipeline.dedupe else {
        let run = Run {
            pipeline,
            notification,
            held: None,
        };
        return call(inner, request, run);
    };
    let key = (dedupe.key)(&notification);
    let token = new_token();
    let claim = dedupe.bounded(dedupe.store.claim(key.clone(), token.clone(), dedupe.lease));
    let run = Run {
        pipeline: Arc::clone(&pipeline),
        notification,
        held: Some(Held { key, token }),
    };
    State::Claiming {
        claim,
        verified: Some(Verified {
            request,
            inner,
            run,
        }),
    }
}

/// The store answered: run the handler, or answer for it.
fn after_claim<S, B>(
    verified: Verified<S>,
    claim: Result<Claim, crate::dedupe::StoreError>,
) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let Verified {
        request,
        inner,
        mut run,
    } = verified;
    let id = run.notification.id();
    let event_type = run.notification.event_type();
    let key = run.held.as_ref().map_or("", |held| held.key.as_str());
    match claim {
        Ok(Claim::Claimed) => call(inner, request, run),
        Ok(Claim::Done) => {
            tracing::info!(
                id,
                event_type,
                key,
                "a copy of a notification the handler already processed: acknowledged \
                 without running the handler again"
            );
            answered(reply::success(run.pipeline.success))
        }
        Ok(Claim::InProgress) => {
            tracing::info!(
                id,
                event_type,
                key,
                "another copy of this notification is being handled right now (here or on \
                 another instance); answering 500 so WeChat Pay retries"
            );
            answered(reply::failure(Rejection::new(
                RejectionKind::InProgress,
                "notification is being processed",
            )))
        }
        Err(error) => {
            let run_anyway = run
                .pipeline
                .dedupe
                .as_ref()
                .is_some_and(|dedupe| dedupe.run_handler_on_store_error);
            if run_anyway {
                tracing::warn!(
                    id,
                    event_type,
                    %error,
                    "the dedupe store failed; running the handler unguarded as configured \
                     (its transaction is the only guard)"
                );
                run.held = None;
                call(inner, request, run)
            } else {
                tracing::error!(
                    id,
                    event_type,
                    %error,
                    "the dedupe store failed; answering 500 so WeChat Pay retries (nothing \
                     is lost)"
                );
                answered(reply::failure(Rejection::new(
                    RejectionKind::DedupeUnavailable,
                    "dedupe store unavailable",
                )))
            }
        }
    }
}

/// Calls the ready service, catching a panic in `call` itself.
fn call<S, B>(mut inner: S, request: Request<BufferedBody>, run: Run) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
        Ok(future) => State::Calling {
            future,
            deadline: None,
            run,
        },
        Err(panic) => {
            let response = panicked(&run.notification, panic.as_ref());
            settle(run, response)
        }
    }
}

/// With a claim held: mark the event done after a success, release the claim after any
/// failure, then answer. Without one: answer.
fn settle<S, B>(run: Run, response: Response<BufferedBody>) -> State<S, B>
where
    S: Service<Request<BufferedBody>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let Run {
        pipeline,
        notification,
        held,
    } = run;
    let (Some(held), Some(dedupe)) = (held, &pipeline.dedupe) else {
        return answered(response);
    };
    let completing = response.status().is_success();
    let settle = if completing {
        dedupe.bounded(dedupe.store.complete(held.key, held.token, dedupe.keep))
    } else {
        dedupe.bounded(dedupe.store.release(held.key, held.token))
    };
    State::Settling {
        settle,
        response: Some(response),
        notification,
        completing,
    }
}

/// Moves the run out of the `Calling` state, which is replaced right after.
fn take_run(run: &mut Run) -> Run {
    Run {
        pipeline: Arc::clone(&run.pipeline),
        notification: run.notification.clone(),
        held: run.held.take(),
    }
}

fn log_settle_error(
    notification: &Notification,
    completing: bool,
    error: &crate::dedupe::StoreError,
) {
    let id = notification.id();
    let event_type = notification.event_type();
    if completing {
        tracing::error!(
            id,
            event_type,
            %error,
            "the handler succeeded but the dedupe store did not record it; a later copy may \
             run the handler again (its transaction must absorb it)"
        );
    } else {
        tracing::warn!(
            id,
            event_type,
            %error,
            "could not release the dedupe claim; it expires with its lease"
        );
    }
}

fn timed_out(run: &Run) -> Response<BufferedBody> {
    tracing::error!(
        id = run.notification.id(),
        event_type = run.notification.event_type(),
        deadline_ms = u64::try_from(run.pipeline.handler_deadline.as_millis()).unwrap_or(u64::MAX),
        "the handler did not answer within the deadline; cancelled it and answering 500 so \
         WeChat Pay retries"
    );
    reply::failure(Rejection::new(
        RejectionKind::HandlerTimeout,
        "handler timed out",
    ))
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
