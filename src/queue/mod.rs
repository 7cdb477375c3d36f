//! A durable queue for slow work (feature `queue` and one engine feature or more:
//! `queue-sqlite`, `queue-postgres`, `queue-redis`).
//!
//! WeChat Pay waits 5 s for an answer. When the business work takes longer (emails,
//! fulfilment, a slow ERP), the notification is **stored durably, acknowledged, and handled
//! later** by a [`Worker`], with retries, backoff and a dead letter:
//!
//! 1. the layer verifies and decrypts the notification as always;
//! 2. [`Queue::enqueuer`], its inner service, stores the job: the exact body, still
//!    encrypted, one job per event key (copies of a notification find the job already
//!    stored). The acknowledgement is sent **only after the engine committed the job**;
//!    an engine that fails or is too slow gets a 500, so WeChat Pay resends: nothing is
//!    lost;
//! 3. a [`Worker`] (any number, on any instance) takes jobs and runs the handler, the same
//!    `Fn(Notification) -> Result<Handled, Retry>` as a synchronous one, under the dedupe
//!    guard, so the effect happens once per event;
//! 4. a failing job is tried again with exponential backoff; after
//!    [`max_attempts`](Queue::max_attempts) it is a dead letter, listed by
//!    [`dead_letters`](Queue::dead_letters) and put back by [`requeue`](Queue::requeue);
//! 5. a job whose worker died (killed mid-job, crashed, partitioned) is put back by the
//!    engine once the worker missed its heartbeats, and another worker takes it.
//!
//! The engines are [apalis](https://docs.rs/apalis)' backends, chosen by URL:
//!
//! | URL | engine | for |
//! |---|---|---|
//! | `sqlite:PATH` | SQLite file (WAL, `synchronous = FULL`) | one instance, nothing to run |
//! | `postgres://…` | PostgreSQL (`apalis` schema) | many instances |
//! | `redis://…` | Redis (persistence on: `appendonly yes`, `appendfsync always` to survive a crash with nothing lost) | many instances |
//!
//! ```no_run
//! # #[cfg(feature = "queue-sqlite")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_wechatpay::queue::Queue;
//! use tower_wechatpay::{Handled, Notification, Retry, WechatPayLayer};
//! # let layer = tower_wechatpay::test_util::TestSigner::public_key_mode().layer()?;
//!
//! let queue = Queue::connect("sqlite:notifications.db").await?;
//! // The route: verify, then store and acknowledge.
//! let app: axum::Router = axum::Router::new()
//!     .route_service("/wechatpay/notify", queue.enqueuer())
//!     .layer(layer.clone());
//! // The worker: the slow work, once per event.
//! async fn fulfil(notification: Notification) -> Result<Handled, Retry> {
//!     Ok(Handled::Done)
//! }
//! tokio::spawn(queue.worker(&layer, fulfil).run());
//! # let _ = app; Ok(()) }
//! ```

mod engine;
mod job;
mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{BoxError, Service};

use crate::alert::{Alert, Alerts};
use crate::body::BufferedBody;
use crate::layer::WechatPayLayer;
use crate::notification::Notification;
use crate::outcome::{Handled, Retry};

pub use job::QueuedNotification;
pub use worker::Worker;

use engine::{Engine, Heartbeat};

/// A durable queue of verified notifications on an apalis engine. Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct Queue {
    engine: Engine,
    name: String,
    max_attempts: u32,
    /// Where enqueue failures, engine failures and dead letters are raised; `None` until
    /// set, then the layer's (see [`Queue::worker`]).
    alerts: Option<Alerts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A job that used up its attempts, as [`Queue::dead_letters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The engine's job id: what [`Queue::requeue`] takes.
    pub id: String,
    /// The event key (see [`QueuedNotification::key`]).
    pub key: String,
    /// The event type.
    pub event_type: String,
    /// When the layer accepted it, in Unix seconds.
    pub received_unix: i64,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error, as the engine recorded it.
    pub last_error: String,
}

/// Why the queue could not do what was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueError {
    /// The URL or a setting is wrong: fix the configuration.
    Config(BoxError),
    /// The engine failed or could not be reached.
    Engine(BoxError),
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(error) => write!(f, "queue configuration: {error}"),
            Self::Engine(error) => write!(f, "queue engine: {error}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(error) | Self::Engine(error) => Some(error.as_ref()),
        }
    }
}

impl Queue {
    /// Attempts per job by default, the first included.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
    /// The queue's name in the engine by default.
    pub const DEFAULT_NAME: &'static str = "wechatpay-notifications";
    /// How often a worker tells the engine it is alive by default; one that misses
    /// [`Self::MISSED_HEARTBEATS`] has its jobs put back.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
    /// Heartbeats a worker may miss before its jobs are given to others.
    pub const MISSED_HEARTBEATS: usize = 3;

    /// Connects to the engine named by `url` (`sqlite:PATH`, `postgres://…`, `redis://…`)
    /// and creates its tables if needed, with the default queue name and heartbeat.
    pub async fn connect(url: &str) -> Result<Self, QueueError> {
        Self::connect_with(url, Self::DEFAULT_NAME, Self::DEFAULT_HEARTBEAT).await
    }

    /// [`connect`](Self::connect) with a queue name (several queues may share an engine)
    /// and a worker heartbeat: a dead worker's jobs are taken again after
    /// `heartbeat` × [`Self::MISSED_HEARTBEATS`].
    pub async fn connect_with(
        url: &str,
        name: &str,
        heartbeat: Duration,
    ) -> Result<Self, QueueError> {
        if heartbeat < Duration::from_secs(1) {
            return Err(QueueError::config("the heartbeat must be at least 1 s"));
        }
        let heartbeat = Heartbeat {
            interval: heartbeat,
            missed: Self::MISSED_HEARTBEATS,
        };
        let engine = Engine::connect(url, name, heartbeat).await?;
        Ok(Self {
            engine,
            name: name.to_owned(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            alerts: None,
        })
    }

    /// Attempts per job, the first included (default [`Self::DEFAULT_MAX_ATTEMPTS`], at
    /// least 1). Applies to jobs stored from now on and to the worker's retries.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Where the queue raises its alerts ([`Alert::QueueUnreachable`] when an enqueue or the
    /// worker's engine fails, [`Alert::DeadLettered`]): usually the layer's
    /// ([`WechatPayLayer::alert_sink`]). Unset, a [`worker`](Self::worker) uses its layer's
    /// and enqueue failures are only logged and counted.
    pub fn alerts(mut self, alerts: Alerts) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Stores a verified notification with the exact body it arrived with; returns once the
    /// engine committed the job (or already held one for the same event).
    pub async fn enqueue(
        &self,
        notification: &Notification,
        body: &[u8],
    ) -> Result<(), QueueError> {
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        let job = QueuedNotification::new(notification, body, received)
            .map_err(|rejection| QueueError::config(rejection.message()))?;
        let result = self.engine.push(job, self.max_attempts).await;
        match &result {
            Ok(()) => crate::metrics::queue_job("enqueued"),
            Err(error) => {
                crate::metrics::queue_job("enqueue_failed");
                if let Some(alerts) = &self.alerts {
                    alerts.raise(Alert::QueueUnreachable {
                        error: error.to_string(),
                    });
                }
            }
        }
        result
    }

    /// The layer's inner service in queue mode: stores each notification and acknowledges
    /// it once stored; an enqueue that fails is answered 500 (WeChat Pay resends). Use it
    /// as the route's service (axum: `route_service`). The layer's answer deadline bounds
    /// the enqueue.
    pub fn enqueuer(&self) -> Enqueue {
        Enqueue {
            queue: self.clone(),
        }
    }

    /// A worker running `handler` on this queue's jobs, opening them with `layer`'s keys
    /// (the APIv3 key decrypts, the APIv2 key opens XML).
    pub fn worker<H, F>(&self, layer: &WechatPayLayer, handler: H) -> Worker
    where
        H: Fn(Notification) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Handled, Retry>> + Send + 'static,
    {
        let mut queue = self.clone();
        queue.alerts.get_or_insert_with(|| layer.alert_sink());
        Worker::new(queue, layer.shared_pipeline(), handler)
    }

    /// Jobs that used up their attempts, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.engine.dead_letters(&self.name).await
    }

    /// Puts the dead job `id` back with fresh attempts; `Ok(false)` if there is no dead job
    /// with that id.
    pub async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        self.engine.requeue(&self.name, id, self.max_attempts).await
    }

    /// Jobs waiting or being handled (neither done nor dead). Also recorded as the
    /// `wechatpay_queue_depth` gauge (feature `metrics`).
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let depth = self.engine.depth(&self.name).await?;
        crate::metrics::queue_depth(depth);
        Ok(depth)
    }
}

/// The inner service of queue mode (see [`Queue::enqueuer`]).
#[derive(Clone, Debug)]
pub struct Enqueue {
    queue: Queue,
}

// Any body type: behind the layer the body is the buffered one, which a framework's router
// (axum's `route_service`) may have converted to its own body type on the way.
impl<B> Service<Request<B>> for Enqueue
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<BufferedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let queue = self.queue.clone();
        Box::pin(async move {
            let Some(notification) = request.extensions().get::<Notification>().cloned() else {
                tracing::error!(
                    "the queue's enqueuer received a request without a verified notification: \
                     put it behind WechatPayLayer"
                );
                return Ok(Retry::new("enqueuer used without the layer").into_http_response());
            };
            let body = match request.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let error: BoxError = error.into();
                    tracing::error!(%error, "the enqueuer could not read the buffered body");
                    return Ok(Retry::new(error).into_http_response());
                }
            };
            match queue.enqueue(&notification, &body).await {
                Ok(()) => Ok(Handled::Done.into_http_response()),
                Err(error) => {
                    tracing::error!(
                        id = notification.id(),
                        event_type = notification.event_type(),
                        %error,
                        "could not store a notification in the queue; answering 500 so WeChat \
                         Pay resends it (nothing is lost)"
                    );
                    Ok(Retry::new(error).into_http_response())
                }
            }
        })
    }
}
