//! [`ResponseFuture`]: the path of one request once its headers passed, within one answer
//! deadline counted from its arrival: wait for a key refresh (unknown serial), read the
//! body, verify and decrypt, claim (dedupe guard), reserve the inner service, call it,
//! settle the claim, answer.

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
use http_body_util::{BodyExt, Collected, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};

use crate::alert::Alert;
use crate::body::BufferedBody;
use crate::dedupe::{Claim, StoreError, StoreFuture, new_token};
use crate::error::{Rejection, RejectionKind};
use crate::log::Noise;
use crate::metrics::{self, Stopwatch};
use crate::notification::Notification;
use crate::pipeline::Pipeline;
use crate::refresh::RefreshWait;
use crate::reply;
use crate::verify::CheckedHeaders;
#[cfg(feature = "v2")]
use crate::verify::HeaderProblem;

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
        state: State<S::Future, B>,
        // A clone of the inner service, polled ready only once the request is verified
        // (and claimed): strangers never hold a permit of a concurrency limit or buffer.
        inner: Option<S>,
        pipeline: Arc<Pipeline>,
        // When the whole answer is due: every step gets what is left of it.
        deadline: Instant,
        // One timer for every step that waits, armed only when a step does not finish at
        // once (the usual in-memory body and fast handler cost no timer).
        timer: Option<Pin<Box<Sleep>>>,
        // The verified notification and the claim held for it, once there is one.
        run: Option<Run>,
        // An APIv2 (XML) request: the answer is rewritten in v2's language.
        v2: bool,
        // When the request arrived, for the answer duration (nothing without metrics).
        arrived: Stopwatch,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        // The answer is known.
        Answered { response: Option<Response<BufferedBody>> },
        // Waiting for a key refresh: the serial was unknown.
        Refreshing { wait: RefreshWait, request: Option<Request<B>> },
        // Reading the body, until `until` (body timeout or deadline, whichever is first).
        Buffering {
            #[pin]
            collect: Collect<Limited<B>>,
            head: Option<(Parts, Head)>,
            until: Instant,
        },
        // Asking the dedupe store whether this event may run.
        Claiming { claim: StoreFuture<Claim>, request: Option<Request<BufferedBody>> },
        // Waiting for the inner service to be ready.
        Reserving { request: Option<Request<BufferedBody>> },
        // The handler runs.
        Calling { #[pin] future: F, started: Stopwatch },
        // Marking the event done, or releasing the claim, before answering.
        Settling { settle: Option<StoreFuture<()>>, response: Option<Response<BufferedBody>> },
    }
}

/// What the headers said before the body: signed (v3), or no `Wechatpay-*` header at all,
/// which may be an APIv2 XML body (decided once it is in).
enum Head {
    Signed(CheckedHeaders),
    #[cfg(feature = "v2")]
    Unsigned(HeaderProblem),
}

/// A verified notification and the claim held for it, if any.
struct Run {
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
    /// Refused before the body: no inner service, no timer.
    pub(crate) fn rejected(rejection: Rejection, pipeline: Arc<Pipeline>) -> Self {
        let deadline = Instant::now() + pipeline.deadline;
        Self::new(
            answered(reply::failure(rejection)),
            None,
            pipeline,
            deadline,
        )
    }

    /// The headers passed: read the body.
    pub(crate) fn buffering(
        request: Request<B>,
        checked: CheckedHeaders,
        inner: S,
        pipeline: Arc<Pipeline>,
        deadline: Instant,
    ) -> Self {
        let state = buffering(request, Head::Signed(checked), &pipeline, deadline);
        Self::new(state, Some(inner), pipeline, deadline)
    }

    /// No `Wechatpay-*` header at all: read the body, which may be APIv2 XML; if it is not,
    /// the request is refused for `problem` as it would have been before the body.
    #[cfg(feature = "v2")]
    pub(crate) fn undecided(
        request: Request<B>,
        problem: HeaderProblem,
        inner: S,
        pipeline: Arc<Pipeline>,
        deadline: Instant,
    ) -> Self {
        let state = buffering(request, Head::Unsigned(problem), &pipeline, deadline);
        Self::new(state, Some(inner), pipeline, deadline)
    }

    /// The serial is unknown and a refresh may add it: wait for it, then check again.
    pub(crate) fn refreshing(
        request: Request<B>,
        wait: RefreshWait,
        inner: S,
        pipeline: Arc<Pipeline>,
        deadline: Instant,
    ) -> Self {
        let state = State::Refreshing {
            wait,
            request: Some(request),
        };
        Self::new(state, Some(inner), pipeline, deadline)
    }

    fn new(
        state: State<S::Future, B>,
        inner: Option<S>,
        pipeline: Arc<Pipeline>,
        deadline: Instant,
    ) -> Self {
        // Every constructor's deadline is its arrival plus the answer budget.
        let arrived = Stopwatch::at(deadline.checked_sub(pipeline.deadline).unwrap_or(deadline));
        Self {
            state,
            inner,
            pipeline,
            deadline,
            timer: None,
            run: None,
            v2: false,
            arrived,
        }
    }
}

fn buffering<F, B>(
    request: Request<B>,
    head: Head,
    pipeline: &Pipeline,
    deadline: Instant,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let until = Instant::now()
        .checked_add(pipeline.body_timeout)
        .map_or(deadline, |end| end.min(deadline));
    State::Buffering {
        collect: Limited::new(body, pipeline.max_body_size).collect(),
        head: Some((parts, head)),
        until,
    }
}

fn answered<F, B>(response: Response<BufferedBody>) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    State::Answered {
        response: Some(response),
    }
}

/// The value in an `Option` a state still holds, or, if the future was polled after it
/// completed (a caller bug, never request data), a 500 instead of a panic.
macro_rules! held {
    ($value:expr) => {
        match $value {
            Some(value) => value,
            None => return Poll::Ready(Ok(polled_after_completion())),
        }
    };
}

fn polled_after_completion() -> Response<BufferedBody> {
    tracing::error!("a WechatPay response future was polled after it completed (a caller bug)");
    reply::failure(Rejection::new(
        RejectionKind::Misconfigured,
        "future polled after completion",
    ))
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<BufferedBody>, Response = Response<ResBody>>,
    S::Error: Display,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<BufferedBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Answered { response } => {
                    let response = held!(response.take());
                    let verified = this.run.as_ref().map(|run| &run.notification);
                    metrics::answered(&response, verified, *this.v2, *this.arrived);
                    if let Some(notification) = verified {
                        this.pipeline.count_answer(&response, notification);
                    }
                    #[cfg(feature = "v2")]
                    if *this.v2 {
                        return Poll::Ready(Ok(reply::into_v2(response)));
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Refreshing { wait, request } => {
                    let refreshed = match wait.as_mut().poll(cx) {
                        Poll::Ready(refreshed) => refreshed,
                        Poll::Pending => {
                            ready!(poll_timer(this.timer, *this.deadline, cx));
                            false
                        }
                    };
                    let request = held!(request.take());
                    // Checked again from the start: the refresh may have added the key.
                    match this.pipeline.check_headers(request.headers()) {
                        Ok(checked) => buffering(
                            request,
                            Head::Signed(checked),
                            this.pipeline,
                            *this.deadline,
                        ),
                        Err(problem) => {
                            answered(reply::failure(this.pipeline.refuse_after_refresh(
                                problem,
                                request.headers(),
                                refreshed,
                            )))
                        }
                    }
                }
                StateProj::Buffering {
                    collect,
                    head,
                    until,
                } => {
                    let collected = match collect.poll(cx) {
                        Poll::Ready(collected) => Some(collected),
                        Poll::Pending => {
                            ready!(poll_timer(this.timer, *until, cx));
                            None
                        }
                    };
                    let (parts, head) = held!(head.take());
                    match (collected, head) {
                        (Some(collected), Head::Signed(checked)) => {
                            opened(this.pipeline, this.run, parts, &checked, collected)
                        }
                        #[cfg(feature = "v2")]
                        (Some(collected), Head::Unsigned(problem)) => opened_unsigned(
                            this.pipeline,
                            this.run,
                            this.v2,
                            parts,
                            problem,
                            collected,
                        ),
                        (None, _) => answered(reply::failure(body_timed_out(this.pipeline))),
                    }
                }
                StateProj::Claiming { claim, request } => {
                    let claimed = match claim.as_mut().poll(cx) {
                        Poll::Ready(claimed) => claimed,
                        Poll::Pending => {
                            ready!(poll_timer(this.timer, *this.deadline, cx));
                            Err(StoreError::new("no answer within the answer deadline"))
                        }
                    };
                    let request = held!(request.take());
                    let run = held!(this.run.as_mut());
                    after_claim(this.pipeline, run, request, claimed)
                }
                StateProj::Reserving { request } => {
                    let inner = held!(this.inner.as_mut());
                    let run = held!(this.run.as_ref());
                    match inner.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let request = held!(request.take());
                            // A panic in `call` itself becomes a retry too.
                            match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                                Ok(future) => State::Calling {
                                    future,
                                    started: Stopwatch::start(),
                                },
                                Err(panic) => settle(
                                    this.pipeline,
                                    this.run,
                                    panicked(&run.notification, panic.as_ref()),
                                ),
                            }
                        }
                        Poll::Ready(Err(error)) => {
                            let response = not_ready(&run.notification, Some(&error));
                            settle(this.pipeline, this.run, response)
                        }
                        Poll::Pending => {
                            ready!(poll_timer(this.timer, *this.deadline, cx));
                            let response = not_ready::<S::Error>(&run.notification, None);
                            settle(this.pipeline, this.run, response)
                        }
                    }
                }
                StateProj::Calling { future, started } => {
                    let run = held!(this.run.as_ref());
                    // A panicking handler becomes a retry; the connection and the server
                    // carry on.
                    let response = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Ready(result)) => this.pipeline.answer(result, &run.notification),
                        Err(panic) => panicked(&run.notification, panic.as_ref()),
                        Ok(Poll::Pending) => {
                            // Past the deadline the handler's state is unknown: dropping
                            // its future cancels it, and WeChat Pay retries instead of
                            // timing out on us.
                            ready!(poll_timer(this.timer, *this.deadline, cx));
                            timed_out(&run.notification, this.pipeline)
                        }
                    };
                    metrics::handler_finished(*started);
                    settle(this.pipeline, this.run, response)
                }
                StateProj::Settling { settle, response } => {
                    let operation = held!(settle.as_mut());
                    match operation.as_mut().poll(cx) {
                        Poll::Ready(result) => {
                            if let Err(error) = result {
                                let completing =
                                    response.as_ref().is_some_and(|r| r.status().is_success());
                                log_settle_error(this.run.as_ref(), completing, &error);
                            }
                        }
                        Poll::Pending => {
                            ready!(poll_timer(this.timer, *this.deadline, cx));
                            // The answer must not wait for the store: let the write finish
                            // on its own, and answer now.
                            let operation = held!(settle.take());
                            finish_in_background(operation, this.run.as_ref());
                        }
                    }
                    answered(held!(response.take()))
                }
            };
            this.state.set(next);
        }
    }
}

/// Waits until `until` on the one timer, armed (or moved) on first need.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    until: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() != until {
                timer.as_mut().reset(until);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(until))),
    };
    timer.as_mut().poll(cx)
}

/// The body is in: verify and decrypt, then claim (guard on) or reserve the inner service.
fn opened<F, B>(
    pipeline: &Pipeline,
    run: &mut Option<Run>,
    parts: Parts,
    checked: &CheckedHeaders,
    collected: Result<Collected<B::Data>, BoxError>,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return answered(reply::failure(body_error(pipeline, &error))),
    };
    let notification = match pipeline.open(checked, &body) {
        Ok(notification) => notification,
        Err(rejection) => return answered(reply::failure(rejection)),
    };
    start(pipeline, run, parts, body, notification)
}

/// A body that came without `Wechatpay-*` headers: APIv2 XML (verified or decrypted with
/// the v2 key), or refused for the headers it lacks.
#[cfg(feature = "v2")]
fn opened_unsigned<F, B>(
    pipeline: &Pipeline,
    run: &mut Option<Run>,
    v2: &mut bool,
    parts: Parts,
    problem: HeaderProblem,
    collected: Result<Collected<B::Data>, BoxError>,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return answered(reply::failure(body_error(pipeline, &error))),
    };
    if !crate::v2::looks_like_v2(&body) {
        return answered(reply::failure(pipeline.refuse(problem, &parts.headers)));
    }
    *v2 = true;
    match pipeline.open_v2(&body) {
        Ok(notification) => start(pipeline, run, parts, body, notification),
        Err(rejection) => answered(reply::failure(rejection)),
    }
}

/// A verified notification: claim it (guard on), or reserve the inner service.
fn start<F, B>(
    pipeline: &Pipeline,
    run: &mut Option<Run>,
    mut parts: Parts,
    body: bytes::Bytes,
    notification: Notification,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    parts.extensions.insert(notification.clone());
    let request = Request::from_parts(parts, BufferedBody::new(body));
    let claim = pipeline
        .dedupe
        .as_ref()
        .and_then(|dedupe| Some((dedupe, dedupe_key(dedupe, &notification)?)));
    let Some((dedupe, key)) = claim else {
        *run = Some(Run {
            notification,
            held: None,
        });
        return State::Reserving {
            request: Some(request),
        };
    };
    let token = new_token();
    let claim = dedupe.bounded(dedupe.store.claim(key.clone(), token.clone(), dedupe.lease));
    *run = Some(Run {
        notification,
        held: Some(Held { key, token }),
    });
    State::Claiming {
        claim,
        request: Some(request),
    }
}

/// The notification's dedupe key; `None` runs it unguarded (the key function said so, or
/// gave an empty key, which would group unrelated events).
fn dedupe_key(dedupe: &crate::dedupe::Dedupe, notification: &Notification) -> Option<String> {
    let key = (dedupe.key)(notification)?;
    if key.is_empty() {
        tracing::error!(
            id = notification.id(),
            event_type = notification.event_type(),
            "the dedupe key function returned an empty key; refused it and running the \
             handler unguarded (return None for that, or a key naming the event)"
        );
        return None;
    }
    Some(key)
}

/// The store answered: reserve the inner service, or answer for the handler.
fn after_claim<F, B>(
    pipeline: &Pipeline,
    run: &mut Run,
    request: Request<BufferedBody>,
    claim: Result<Claim, StoreError>,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let id = run.notification.id();
    let event_type = run.notification.event_type();
    let key = run.held.as_ref().map_or("", |held| held.key.as_str());
    let reserve = State::Reserving {
        request: Some(request),
    };
    match claim {
        Ok(Claim::Claimed) => {
            metrics::dedupe("claimed");
            reserve
        }
        Ok(Claim::Done) => {
            metrics::dedupe("done_copy");
            tracing::info!(
                id,
                event_type,
                key,
                "a copy of a notification the handler already processed: acknowledged \
                 without running the handler again"
            );
            run.held = None;
            answered(reply::success(pipeline.success))
        }
        Ok(Claim::InProgress) => {
            metrics::dedupe("in_progress");
            tracing::info!(
                id,
                event_type,
                key,
                "another copy of this notification is being handled right now (here or on \
                 another instance); answering 500 so WeChat Pay retries"
            );
            run.held = None;
            answered(reply::failure(Rejection::new(
                RejectionKind::InProgress,
                "notification is being processed",
            )))
        }
        Err(error) => {
            metrics::dedupe("store_error");
            pipeline.alerts.raise(Alert::DedupeUnreachable {
                error: error.to_string(),
            });
            // The claim may have landed after we stopped waiting: release it (best effort,
            // token-checked, in the background) so it does not block retries for a lease.
            release_in_background(pipeline, run.held.take());
            let run_anyway = pipeline
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
                reserve
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

/// Releases a claim whose fate we do not know, without holding the answer.
fn release_in_background(pipeline: &Pipeline, held: Option<Held>) {
    let (Some(Held { key, token }), Some(dedupe)) = (held, &pipeline.dedupe) else {
        return;
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let release = dedupe.bounded(dedupe.store.release(key, token));
        runtime.spawn(async move {
            // A failure here changes nothing: the claim then expires with its lease.
            let _ = release.await;
        });
    }
}

/// With a claim held: mark the event done after a success, release the claim after any
/// failure, then answer. Without one: answer.
fn settle<F, B>(
    pipeline: &Pipeline,
    run: &mut Option<Run>,
    response: Response<BufferedBody>,
) -> State<F, B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let held = run.as_mut().and_then(|run| run.held.take());
    let (Some(Held { key, token }), Some(dedupe)) = (held, &pipeline.dedupe) else {
        return answered(response);
    };
    let operation = if response.status().is_success() {
        dedupe.store.complete(key, token, dedupe.keep)
    } else {
        dedupe.store.release(key, token)
    };
    State::Settling {
        settle: Some(dedupe.bounded(operation)),
        response: Some(response),
    }
}

/// The answer deadline came while the store was still settling: the store operation goes
/// on by itself (bounded by the store timeout), the answer goes out now.
fn finish_in_background(operation: StoreFuture<()>, run: Option<&Run>) {
    let id = run
        .map(|run| run.notification.id().to_owned())
        .unwrap_or_default();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            tracing::warn!(
                id,
                "the dedupe store is slow: answering now (the deadline is due) and finishing \
                 the store write in the background"
            );
            runtime.spawn(async move {
                if let Err(error) = operation.await {
                    tracing::error!(id, %error, "a background dedupe store write failed; a later \
                        copy may run the handler again (its transaction must absorb it)");
                }
            });
        }
        Err(_) => tracing::error!(
            id,
            "the dedupe store is slow and no runtime can finish its write: abandoned it; the \
             claim expires with its lease"
        ),
    }
}

fn log_settle_error(run: Option<&Run>, completing: bool, error: &StoreError) {
    let id = run.map_or("", |run| run.notification.id());
    let event_type = run.map_or("", |run| run.notification.event_type());
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

fn timed_out(notification: &Notification, pipeline: &Pipeline) -> Response<BufferedBody> {
    tracing::error!(
        id = notification.id(),
        event_type = notification.event_type(),
        deadline_ms = u64::try_from(pipeline.deadline.as_millis()).unwrap_or(u64::MAX),
        "the handler did not answer within the answer deadline; cancelled it and answering \
         500 so WeChat Pay retries"
    );
    reply::failure(Rejection::new(
        RejectionKind::HandlerTimeout,
        "handler timed out",
    ))
}

fn not_ready<E: Display>(notification: &Notification, error: Option<&E>) -> Response<BufferedBody> {
    let id = notification.id();
    let event_type = notification.event_type();
    match error {
        Some(error) => tracing::error!(
            id,
            event_type,
            %error,
            "the inner service failed to become ready; answering 500 so WeChat Pay retries"
        ),
        None => tracing::error!(
            id,
            event_type,
            "the inner service was not ready within the answer deadline (overloaded?); \
             answering 500 so WeChat Pay retries"
        ),
    }
    reply::failure(Rejection::new(
        RejectionKind::ServiceNotReady,
        "service not ready",
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

fn body_timed_out(pipeline: &Pipeline) -> Rejection {
    if let Some(left_out) = pipeline.noise.allow(Noise::SlowBody) {
        tracing::warn!(
            left_out,
            timeout_ms = u64::try_from(pipeline.body_timeout.as_millis()).unwrap_or(u64::MAX),
            "refused a notification whose body did not arrive in time (a slow or stalled \
             client)"
        );
    }
    Rejection::new(RejectionKind::BodyTimeout, "body read timed out")
}

fn body_error(pipeline: &Pipeline, error: &BoxError) -> Rejection {
    if error.downcast_ref::<LengthLimitError>().is_some() {
        if let Some(left_out) = pipeline.noise.allow(Noise::TooLarge) {
            tracing::warn!(left_out, "refused a notification body over the limit");
        }
        Rejection::new(RejectionKind::BodyTooLarge, "body too large")
    } else {
        if let Some(left_out) = pipeline.noise.allow(Noise::UnreadableBody) {
            tracing::warn!(left_out, %error, "could not read a notification body");
        }
        Rejection::new(RejectionKind::BodyUnreadable, "could not read body")
    }
}
