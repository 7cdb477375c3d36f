//! Refreshing the key ring when a notification names a serial it does not know, without
//! letting a flood of forged serials turn the receiver into an amplifier.
//!
//! A refresh runs on its own task (a request that gave up waiting does not cancel it), at
//! most one at a time (single-flight: every request that arrives meanwhile waits for the
//! same one), and at most once per minimum interval, counted from the start of the last.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tower::BoxError;

use crate::alert::{Alert, Alerts};
use crate::key_ring::KeyRing;
use crate::metrics;

/// What a refresher returns.
pub type RefreshFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

type RefreshFn = dyn Fn(KeyRing) -> RefreshFuture + Send + Sync;

/// Fetches WeChat Pay keys when a notification names a serial the [`KeyRing`] does not
/// know, e.g. by downloading the platform certificates (`GET /v3/certificates`) after a
/// rotation. It gets the key ring and adds what it found to it.
///
/// Installed with [`KeyRing::set_refresher`] or
/// [`WechatPayLayer::key_refresher`](crate::WechatPayLayer::key_refresher). Only requests
/// that passed every other header check (timestamp window, signature encoding, not a
/// probe) can trigger it, and never more than once per
/// [`min_interval`](Self::min_interval). It needs a Tokio runtime; the synchronous
/// [`WechatPayLayer::verify`](crate::WechatPayLayer::verify) never refreshes.
///
/// ```
/// use std::time::Duration;
/// use tower_wechatpay::{KeyRing, WechatPayLayer};
/// use tower_wechatpay::refresh::KeyRefresher;
/// # use tower_wechatpay::test_util::{TEST_APIV3_KEY, TEST_CERTIFICATE_PEM};
///
/// # async fn download_platform_certificates() -> Result<Vec<String>, std::io::Error> {
/// #     Ok(vec![TEST_CERTIFICATE_PEM.to_owned()])
/// # }
/// # fn main() -> Result<(), tower_wechatpay::ConfigError> {
/// let refresher = KeyRefresher::new(|keys: KeyRing| async move {
///     for pem in download_platform_certificates().await? {
///         keys.add_certificate(pem)?;
///     }
///     Ok(())
/// })
/// .min_interval(Duration::from_secs(300));
/// let layer = WechatPayLayer::new(TEST_APIV3_KEY)?.key_refresher(refresher);
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct KeyRefresher {
    refresh: Arc<RefreshFn>,
    min_interval: Duration,
    max_wait: Duration,
    timeout: Duration,
}

impl KeyRefresher {
    /// How long after a refresh started another one may start: a flood of unknown serials
    /// causes at most one refresh per interval.
    pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(60);

    /// How long a request with an unknown serial waits for the refresh before it is answered
    /// 401 (WeChat Pay then resends it; the refresh goes on and the resend finds the key).
    /// Below WeChat Pay's 5 s deadline with the default body timeout added.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);

    /// How long one refresh may run before it is abandoned as stuck (its future dropped); a
    /// later unknown serial may then start a new one, after the minimum interval.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A refresher that runs `refresh` with the key ring to fill. An error is logged and
    /// counts as a refresh (the interval still applies).
    pub fn new<F, Fut>(refresh: F) -> Self
    where
        F: Fn(KeyRing) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Self {
            refresh: Arc::new(move |keys| Box::pin(refresh(keys))),
            min_interval: Self::DEFAULT_MIN_INTERVAL,
            max_wait: Self::DEFAULT_MAX_WAIT,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// How long one refresh may run (default [`Self::DEFAULT_TIMEOUT`]). Past it the
    /// refresh is abandoned (its future dropped) and logged as stuck, so a refresher that
    /// never finishes cannot turn refreshing off for good.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The least time between the starts of two refreshes
    /// (default [`Self::DEFAULT_MIN_INTERVAL`]).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// How long a request waits for a refresh before it is answered 401
    /// (default [`Self::DEFAULT_MAX_WAIT`]; never longer than what is left of the layer's
    /// answer deadline).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
}

impl fmt::Debug for KeyRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRefresher")
            .field("min_interval", &self.min_interval)
            .field("max_wait", &self.max_wait)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A refresher and what it has done: when the last refresh started, and the one running.
pub(crate) struct RefreshState {
    refresher: KeyRefresher,
    last_started: Option<Instant>,
    running: Option<watch::Receiver<bool>>,
}

/// Resolves when the refresh a request waits for is over, or its wait is.
/// Its output says whether the refresh is over (finished, failed or gone), `false` if
/// the wait ended first.
pub(crate) type RefreshWait = Pin<Box<dyn Future<Output = bool> + Send>>;

impl RefreshState {
    pub(crate) fn new(refresher: KeyRefresher) -> Self {
        Self {
            refresher,
            last_started: None,
            running: None,
        }
    }

    pub(crate) fn refresher(&self) -> &KeyRefresher {
        &self.refresher
    }

    /// For a request whose serial is unknown: the refresh to wait for, and the refresh to
    /// start first if there is none running (the caller starts it outside the lock this
    /// state lives under, so the user's code never runs under it). `None` if no refresh
    /// may run now.
    pub(crate) fn wait_for_refresh(&mut self) -> Option<(RefreshWait, Option<StartRefresh>)> {
        let max_wait = self.refresher.max_wait;
        if let Some(running) = &self.running
            && !*running.borrow()
            && running.has_changed().is_ok()
        {
            return Some((wait(running.clone(), max_wait), None));
        }
        let now = Instant::now();
        if let Some(last) = self.last_started
            && now.duration_since(last) < self.refresher.min_interval
        {
            tracing::debug!(
                since_last_ms = duration_ms(now.duration_since(last)),
                "unknown Wechatpay-Serial: not refreshing keys, the last refresh was too recent"
            );
            return None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("unknown Wechatpay-Serial: cannot refresh keys outside a Tokio runtime");
            return None;
        };
        self.last_started = Some(now);
        let (done, running) = watch::channel(false);
        self.running = Some(running.clone());
        let start = StartRefresh {
            refresh: Arc::clone(&self.refresher.refresh),
            timeout: self.refresher.timeout,
            done,
            runtime,
        };
        Some((wait(running, max_wait), Some(start)))
    }
}

/// A refresh that was decided on and is to be started.
pub(crate) struct StartRefresh {
    refresh: Arc<RefreshFn>,
    timeout: Duration,
    done: watch::Sender<bool>,
    runtime: tokio::runtime::Handle,
}

impl StartRefresh {
    /// Runs the refresher for `keys` on its own task: a request that stops waiting does
    /// not cancel it.
    pub(crate) fn start(self, keys: KeyRing) {
        tracing::info!("unknown Wechatpay-Serial: refreshing WeChat Pay keys");
        metrics::key_refresh("started");
        let alerts = keys.alerts();
        let refresh = (self.refresh)(keys);
        let done = self.done;
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            // If the refresher panics, `done` is dropped with the task and the waiters
            // wake all the same; the guard says so in the log.
            let guard = Unfinished(Some(alerts.clone()));
            match tokio::time::timeout(timeout, refresh).await {
                Ok(Ok(())) => {
                    metrics::key_refresh("succeeded");
                    tracing::info!("refreshed WeChat Pay keys");
                }
                Ok(Err(error)) => {
                    metrics::key_refresh("failed");
                    tracing::error!(%error, "the key refresher failed");
                    alerts.raise(Alert::RefresherFailing {
                        error: error.to_string(),
                    });
                }
                Err(_) => {
                    metrics::key_refresh("abandoned");
                    tracing::error!(
                        timeout_ms = duration_ms(timeout),
                        "the key refresher is stuck: abandoned it after its timeout; a later \
                         unknown serial may start a new refresh after the minimum interval"
                    );
                    alerts.raise(Alert::RefresherFailing {
                        error: format!(
                            "stuck: abandoned after its timeout ({} ms)",
                            duration_ms(timeout)
                        ),
                    });
                }
            }
            guard.finished();
            let _ = done.send(true);
        });
    }
}

/// Logs (and alerts) a refresh that ended without finishing (its task panicked or was
/// cancelled).
struct Unfinished(Option<Alerts>);

impl Unfinished {
    /// The refresh ended (whatever its result): nothing to report on drop.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(alerts) = self.0.take() else {
            return;
        };
        metrics::key_refresh("failed");
        tracing::error!("the key refresher panicked or was cancelled");
        alerts.raise(Alert::RefresherFailing {
            error: "the refresher panicked or was cancelled".into(),
        });
    }
}

fn wait(mut running: watch::Receiver<bool>, max_wait: Duration) -> RefreshWait {
    Box::pin(async move {
        // An error means the refresh task is gone (it panicked): nothing more to wait for.
        tokio::time::timeout(max_wait, running.wait_for(|done| *done))
            .await
            .is_ok()
    })
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
