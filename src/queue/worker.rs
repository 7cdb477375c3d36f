//! [`Worker`]: takes jobs from the queue and runs the handler on each, once per event,
//! with retries, backoff and a dead letter.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::layers::retry::RetryPolicy;
use apalis::layers::retry::backoff::{ExponentialBackoffMaker, MakeBackoff};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use tower::util::rng::HasherRng;

use super::engine::Engine;
use super::job::QueuedNotification;
use super::{Queue, QueueError};
use crate::alert::{Alert, Alerts};
use crate::dedupe::{Claim, Dedupe, new_token};
use crate::metrics;
use crate::notification::Notification;
use crate::outcome::{Handled, Retry};
use crate::pipeline::Pipeline;

type BoxedHandler = Arc<
    dyn Fn(Notification) -> Pin<Box<dyn Future<Output = Result<Handled, Retry>> + Send>>
        + Send
        + Sync,
>;

/// Runs the handler on queued notifications: built by [`Queue::worker`], started with
/// [`run`](Worker::run).
///
/// Each job is retried in the worker, with exponential backoff
/// ([`backoff`](Worker::backoff)), until [`Queue::max_attempts`] are used; then it is a dead
/// letter ([`Queue::dead_letters`], [`Queue::requeue`]), logged at error. A job whose worker
/// died (killed, crashed, stopped heartbeating) is put back by the engine and taken again.
/// The handler is the same as a synchronous one: [`Handled`] (done or declined: the job is
/// finished) or [`Retry`] (try again later). With [`dedupe`](Worker::dedupe) its effect is
/// once per event, whichever worker or attempt runs it.
#[must_use]
pub struct Worker {
    queue: Queue,
    runner: Runner,
    name: String,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("job_timeout", &self.runner.job_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// What every job needs, shared by the worker's tasks.
#[derive(Clone)]
struct Runner {
    pipeline: Arc<Pipeline>,
    alerts: Alerts,
    handler: BoxedHandler,
    dedupe: Option<Dedupe>,
    max_attempts: u32,
    job_timeout: Duration,
}

impl Worker {
    /// The least wait before a failed job's second attempt (default 1 s); each next wait
    /// doubles, up to [`max_backoff`](Self::backoff), with jitter.
    pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);
    /// The longest wait between two attempts (default 5 min).
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
    /// How long one run of the handler may take (default 5 min): past it the run is
    /// cancelled and counts as a failed attempt.
    pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(5 * 60);

    pub(super) fn new<H, F>(queue: Queue, pipeline: Arc<Pipeline>, handler: H) -> Self
    where
        H: Fn(Notification) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Handled, Retry>> + Send + 'static,
    {
        let max_attempts = queue.max_attempts;
        let alerts = queue.alerts.clone().unwrap_or_else(Alerts::none);
        Self {
            queue,
            runner: Runner {
                pipeline,
                alerts,
                handler: Arc::new(move |notification| Box::pin(handler(notification))),
                dedupe: None,
                max_attempts,
                job_timeout: Self::DEFAULT_JOB_TIMEOUT,
            },
            name: format!("wechatpay-worker-{}", new_token()),
            min_backoff: Self::DEFAULT_MIN_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }

    /// The dedupe guard around each run: the handler runs at most once at a time per event
    /// and never again after it succeeded, across every worker sharing the store. Keys are
    /// the layer's, prefixed `queue:` (a layer and a worker may share one store). Its lease
    /// becomes the job timeout plus its store timeout, so a claim outlives every run.
    pub fn dedupe(mut self, dedupe: Dedupe) -> Self {
        self.runner.dedupe = Some(dedupe);
        self
    }

    /// Waits between attempts: from `min`, doubling up to `max`
    /// (defaults [`Self::DEFAULT_MIN_BACKOFF`], [`Self::DEFAULT_MAX_BACKOFF`]).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// How long one run may take (default [`Self::DEFAULT_JOB_TIMEOUT`]).
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.runner.job_timeout = timeout;
        self
    }

    /// The worker's name in the engine (unique by default; a name reused by two live
    /// workers confuses the engine's heartbeat). Each run after an engine failure adds
    /// `-N` to it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Takes and runs jobs until `shutdown` completes, then finishes the jobs it holds.
    /// When the engine fails (unreachable, restarted), the worker starts again after a
    /// pause, logging why: jobs wait in the engine meanwhile.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), QueueError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut work = std::pin::pin!(self.supervise(stopped));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut signalled = false;
        std::future::poll_fn(|cx| {
            if !signalled && shutdown.as_mut().poll(cx).is_ready() {
                signalled = true;
                let _ = stop.send(true);
            }
            work.as_mut().poll(cx)
        })
        .await
    }

    /// Takes and runs jobs for good (see [`run_until`](Self::run_until)).
    pub async fn run(self) -> Result<(), QueueError> {
        self.run_until(std::future::pending()).await
    }

    async fn supervise(
        &self,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let mut pause = self.min_backoff.max(Duration::from_millis(100));
        let mut runs: u64 = 0;
        loop {
            // A fresh name for every run: the engine gives the jobs the previous run held
            // (fetched, locked, perhaps acknowledged into a dead connection) to another
            // worker once that name stops beating. Reusing it would keep them locked by a
            // worker that looks alive, for good.
            runs += 1;
            let name = format!("{}-{runs}", self.name);
            let outcome = self.run_once(&name, stopped.clone()).await;
            if *stopped.borrow() {
                return outcome;
            }
            let error = match outcome {
                Ok(()) => QueueError::engine("the worker stopped without being asked to"),
                Err(error) => error,
            };
            self.runner.alerts.raise(Alert::QueueUnreachable {
                error: error.to_string(),
            });
            tracing::error!(
                worker = %name,
                %error,
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "the queue worker stopped on an engine error; starting it again after a pause \
                 (jobs wait in the queue)"
            );
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2).min(self.max_backoff.max(pause));
        }
    }

    async fn run_once(
        &self,
        name: &str,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            Ok::<(), apalis_core::error::WorkerError>(())
        };
        let retries = usize::try_from(self.runner.max_attempts.saturating_sub(1)).unwrap_or(0);
        let backoff = ExponentialBackoffMaker::new(
            self.min_backoff,
            self.max_backoff,
            0.5,
            HasherRng::default(),
        )
        .map_err(QueueError::config)?
        .make_backoff();
        let policy = RetryPolicy::retries(retries).with_backoff(backoff);
        let runner = Arc::new(self.runner.clone());
        macro_rules! run_on {
            ($backend:expr) => {
                WorkerBuilder::new(name)
                    .backend($backend)
                    .data(runner)
                    .retry(policy)
                    .build(run_job)
                    .run_until(shutdown)
                    .await
                    .map_err(QueueError::engine)
            };
        }
        match self.queue.engine.clone() {
            #[cfg(feature = "queue-sqlite")]
            Engine::Sqlite(storage) => run_on!(storage),
            #[cfg(feature = "queue-postgres")]
            Engine::Postgres(storage) => run_on!(storage),
            #[cfg(feature = "queue-redis")]
            Engine::Redis(storage) => run_on!(storage),
        }
    }
}

/// Why one attempt failed (the engine records its text as the job's last error).
#[derive(Debug)]
struct AttemptFailed(String);

impl std::fmt::Display for AttemptFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AttemptFailed {}

async fn run_job(
    job: QueuedNotification,
    attempt: Attempt,
    runner: Data<Arc<Runner>>,
) -> Result<(), AttemptFailed> {
    let attempt = u32::try_from(attempt.current()).unwrap_or(u32::MAX);
    let result = runner.attempt(&job).await;
    match &result {
        Ok(outcome) => {
            metrics::queue_job(outcome);
            tracing::debug!(id = %job.id, key = %job.key, attempt, outcome, "a queued notification was handled");
        }
        Err(error) if attempt >= runner.max_attempts => {
            metrics::queue_job("dead");
            tracing::error!(
                id = %job.id,
                event_type = %job.event_type,
                key = %job.key,
                attempts = attempt,
                %error,
                "a queued notification failed its last attempt and is now a dead letter: fix \
                 the cause, then requeue it (Queue::requeue); WeChat Pay will not resend it"
            );
            runner.alerts.raise(Alert::DeadLettered {
                key: job.key.clone(),
                event_type: job.event_type.clone(),
                attempts: attempt,
                error: error.to_string(),
            });
        }
        Err(error) => {
            metrics::queue_job("retry");
            tracing::warn!(
                id = %job.id,
                event_type = %job.event_type,
                key = %job.key,
                attempt,
                %error,
                "a queued notification failed; it is tried again after a backoff"
            );
        }
    }
    result.map(|_| ())
}

impl Runner {
    /// One attempt: open the job, claim its key, run the handler, settle the claim.
    async fn attempt(&self, job: &QueuedNotification) -> Result<&'static str, AttemptFailed> {
        let notification = job
            .reopen(&self.pipeline)
            .map_err(|rejection| AttemptFailed(format!("cannot open the job: {rejection}")))?;
        let held = match &self.dedupe {
            Some(dedupe) => {
                let key = format!("queue:{}", job.key);
                let token = new_token();
                let lease = self.job_timeout.saturating_add(dedupe.store_timeout);
                match dedupe
                    .bounded(dedupe.store.claim(key.clone(), token.clone(), lease))
                    .await
                {
                    Ok(Claim::Claimed) => Some((dedupe, key, token)),
                    Ok(Claim::Done) => return Ok("duplicate"),
                    Ok(Claim::InProgress) => {
                        return Err(AttemptFailed(
                            "another worker is handling this event right now".into(),
                        ));
                    }
                    Err(error) => return Err(AttemptFailed(error.to_string())),
                }
            }
            None => None,
        };
        let run = CatchUnwind {
            future: (self.handler)(notification),
        };
        let result = match tokio::time::timeout(self.job_timeout, run).await {
            Err(_) => Err(AttemptFailed("the handler timed out".into())),
            Ok(Err(panic)) => Err(AttemptFailed(format!(
                "the handler panicked: {}",
                panic_message(panic.as_ref())
            ))),
            Ok(Ok(Ok(Handled::Done))) => Ok("done"),
            Ok(Ok(Ok(Handled::Declined(declined)))) => {
                tracing::warn!(
                    id = %job.id,
                    event_type = %job.event_type,
                    reason = %declined,
                    "the handler declined a queued notification for a business reason (not \
                     applied; finished)"
                );
                Ok("declined")
            }
            Ok(Ok(Err(retry))) => Err(AttemptFailed(retry.to_string())),
        };
        if let Some((dedupe, key, token)) = held {
            let settle = if result.is_ok() {
                dedupe.store.complete(key, token, dedupe.keep)
            } else {
                dedupe.store.release(key, token)
            };
            if let Err(error) = dedupe.bounded(settle).await {
                tracing::warn!(id = %job.id, %error, "could not settle the queue worker's dedupe claim");
            }
        }
        result
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

pin_project_lite::pin_project! {
    /// A future whose panic becomes an error.
    struct CatchUnwind<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.project().future;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
