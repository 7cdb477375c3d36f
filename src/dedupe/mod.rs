//! The dedupe guard: its configuration, the store trait and the default key.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower::BoxError;

use crate::error::ConfigError;
use crate::models::Event;
use crate::notification::Notification;

pub use memory::InMemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// A boxed, sendable future, as the store methods return.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// Where claims and done markers live. Implementations must make `claim` atomic: two
/// callers (on any instances) can never both get [`Claim::Claimed`] for a live key.
pub trait DedupeStore: Send + Sync + 'static {
    /// Claims `key` for `token` for `lease`, unless it is done or claimed by someone else.
    fn claim(&self, key: String, token: String, lease: Duration) -> StoreFuture<Claim>;

    /// Marks `key` done for `keep` (whoever holds it: the event was applied).
    fn complete(&self, key: String, token: String, keep: Duration) -> StoreFuture<()>;

    /// Releases `key` if, and only if, `token` still holds it.
    fn release(&self, key: String, token: String) -> StoreFuture<()>;
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key now: run the handler.
    Claimed,
    /// The handler already succeeded for this key: acknowledge without running it.
    Done,
    /// Someone else holds the key (another copy is being handled right now).
    InProgress,
}

/// A store that could not answer (unreachable, timed out, full).
#[derive(Debug)]
pub struct StoreError {
    source: BoxError,
}

impl StoreError {
    /// Wraps the cause.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

// Display shows the cause's message and `source` goes on from the cause's own source (as
// `std::io::Error` does for custom errors), so a printed chain names each cause once.
impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dedupe store: {}", self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// The key a notification is deduplicated by; `None` runs the handler unguarded.
pub type KeyFn = Arc<dyn Fn(&Notification) -> Option<String> + Send + Sync>;

/// The dedupe guard: the handler runs at most once at a time per notification, and not
/// again after it succeeded, across every instance that shares the store.
///
/// WeChat Pay delivers the same notification many times: retries for about 24 hours after
/// any non-2xx answer, and sometimes concurrent copies from several servers within seconds,
/// landing on different instances behind a load balancer. With [`WechatPayLayer::dedupe`]
/// the layer, after verifying a notification:
///
/// 1. **claims** its key in the store, with a lease;
/// 2. if the key is already **done**, acknowledges without calling the handler;
/// 3. if another instance **holds the claim**, answers 500 at once: WeChat Pay retries in
///    15 s or more, by when the holder has finished and the retry is acknowledged as done.
///    Waiting for the holder instead would tie up a connection and eat into WeChat Pay's 5 s,
///    for an answer the retry gives anyway; and 500 is never wrong;
/// 4. otherwise calls the handler; on success marks the key done (kept 25 h, longer than
///    WeChat Pay's 24 h 4 min of retries); on any failure (retry answer, error, panic,
///    deadline) releases the claim so the next retry runs the handler again.
///
/// **Keys are identities.** Two notifications with the same key are one business event:
/// once one was handled, the other is acknowledged *without running the handler*. A key
/// that collides for two different events therefore acknowledges the second one silently.
/// The [`default_key`] names the merchant and the event's own id; a custom
/// [`key`](Dedupe::key) must be as specific (return `None` to run a notification
/// unguarded).
///
/// A crashed instance's claim expires with its lease. If the store fails (Redis down), the
/// answer is 500 so nothing is lost, unless [`Dedupe::run_handler_on_store_error`] is set:
/// then the handler runs unguarded and the database transaction is the only guard. The
/// guard never replaces that transaction: a store that loses its data (a Redis restart
/// without persistence) forgets what was done.
///
/// ```
/// use std::time::Duration;
/// use tower_wechatpay::WechatPayLayer;
/// use tower_wechatpay::dedupe::{Dedupe, InMemoryStore};
/// # use tower_wechatpay::test_util::TestSigner;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let layer = TestSigner::public_key_mode().layer()?;
/// let layer = layer.dedupe(Dedupe::new(InMemoryStore::new()).lease(Duration::from_secs(30)));
/// # Ok(()) }
/// ```
///
/// [`WechatPayLayer::dedupe`]: crate::WechatPayLayer::dedupe
#[derive(Clone)]
#[must_use]
pub struct Dedupe {
    pub(crate) store: Arc<dyn DedupeStore>,
    pub(crate) lease: Duration,
    pub(crate) keep: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) key: KeyFn,
    pub(crate) run_handler_on_store_error: bool,
}

impl Dedupe {
    /// How long a claim lasts by default: longer than any handler may run (the handler
    /// deadline is 4 s), short enough that a crashed instance's claim is gone by WeChat Pay's
    /// second retry.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// How long done markers are kept by default: WeChat Pay retries for 24 h 4 min.
    pub const DEFAULT_KEEP_DONE: Duration = Duration::from_secs(25 * 60 * 60);
    /// How long one store operation may take before it counts as a store failure.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(1);

    /// A guard over `store` with the default lease (30 s), done-marker lifetime (25 h),
    /// store timeout (1 s) and key ([`default_key`]).
    pub fn new(store: impl DedupeStore) -> Self {
        Self {
            store: Arc::new(store),
            lease: Self::DEFAULT_LEASE,
            keep: Self::DEFAULT_KEEP_DONE,
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
            key: Arc::new(default_key),
            run_handler_on_store_error: false,
        }
    }

    /// How long a claim lasts. It must outlast the answer deadline plus the store timeout
    /// (checked by [`WechatPayLayer::dedupe`](crate::WechatPayLayer::dedupe)), so a claim
    /// never expires under a handler that is still running.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a done marker is kept (at least 25 h to cover WeChat Pay's retries).
    pub fn keep_done(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    /// How long one store operation may take before it counts as failed.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Your own key: notifications with equal keys are one business event, and a copy of
    /// one already handled is acknowledged without running the handler, so make keys as
    /// specific as the event (name the merchant). `None` runs that notification unguarded;
    /// an empty key is refused (logged, and run unguarded).
    pub fn key(
        mut self,
        key: impl Fn(&Notification) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.key = Arc::new(key);
        self
    }

    /// When the store fails, run the handler anyway instead of answering 500. Only with a
    /// handler whose database transaction is itself exactly-once.
    pub fn run_handler_on_store_error(mut self) -> Self {
        self.run_handler_on_store_error = true;
        self
    }

    /// Longest lease accepted: a claim that outlives a crashed instance by hours blocks
    /// WeChat Pay's retries for as long.
    pub const MAX_LEASE: Duration = Duration::from_secs(60 * 60);
    /// Longest done-marker lifetime accepted (a month; WeChat Pay stops after 24 h 4 min).
    pub const MAX_KEEP_DONE: Duration = Duration::from_secs(31 * 24 * 60 * 60);

    /// Checks the durations against each other and against the layer's answer deadline.
    pub(crate) fn validate(&self, answer_deadline: Duration) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, reason: String| {
            Err(ConfigError::InvalidSetting { setting, reason })
        };
        if self.store_timeout.is_zero() {
            return invalid("dedupe store_timeout", "must be more than zero".into());
        }
        if self.lease > Self::MAX_LEASE {
            return invalid(
                "dedupe lease",
                format!(
                    "at most {} s (a crashed instance's claim blocks retries that long)",
                    Self::MAX_LEASE.as_secs()
                ),
            );
        }
        if self.keep > Self::MAX_KEEP_DONE || self.keep < self.lease {
            return invalid(
                "dedupe keep_done",
                format!(
                    "between the lease and {} days (25 h covers WeChat Pay's retries)",
                    Self::MAX_KEEP_DONE.as_secs() / 86_400
                ),
            );
        }
        let needed = answer_deadline.saturating_add(self.store_timeout);
        if self.lease < needed {
            return invalid(
                "dedupe lease",
                format!(
                    "must be at least the answer deadline plus the store timeout ({} ms), or \
                     a claim can expire under a handler that still runs and a copy runs \
                     beside it",
                    needed.as_millis()
                ),
            );
        }
        Ok(())
    }

    /// The store operation, bounded by the store timeout.
    pub(crate) fn bounded<T: Send + 'static>(&self, operation: StoreFuture<T>) -> StoreFuture<T> {
        let timeout = self.store_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, operation).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::new(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

impl<S: DedupeStore> From<S> for Dedupe {
    fn from(store: S) -> Self {
        Self::new(store)
    }
}

impl fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedupe")
            .field("lease", &self.lease)
            .field("keep", &self.keep)
            .field("store_timeout", &self.store_timeout)
            .field(
                "run_handler_on_store_error",
                &self.run_handler_on_store_error,
            )
            .finish_non_exhaustive()
    }
}

/// The default key: the business event, not the delivery, always naming the merchant so
/// merchants that share one store never collide. Whether the envelope `id` stays the same
/// across retries is not documented, so:
///
/// | event | key |
/// |---|---|
/// | payment | event type, `mchid`, `transaction_id` |
/// | partner payment | event type, `sp_mchid`, `sub_mchid`, `transaction_id` |
/// | combine payment | event type, `combine_mchid`, `combine_out_trade_no` |
/// | refund, final state (`SUCCESS`, `CLOSED`) | event type, merchant, `refund_id`, state |
/// | refund, other state (`ABNORMAL`, `PROCESSING`) | event type, merchant, `refund_id`, state, envelope `id` |
/// | APIv2 payment / refund (feature `v2`) | as its v3 twin: a copy delivered by either version is the same event |
/// | anything else, or a resource that did not match its model | event type, envelope `id` |
///
/// A non-final refund state is keyed by its notification too: after the abnormal-refund
/// retry API, a second `REFUND.ABNORMAL` for the same refund is a new event and must run.
pub fn default_key(notification: &Notification) -> Option<String> {
    let event_type = notification.event_type();
    let id = notification.id();
    let unset = |value: &Option<String>| value.clone().unwrap_or_default();
    Some(match notification.event() {
        Event::Payment(payment) => format!(
            "{event_type}:{}:{}",
            unset(&payment.mchid),
            payment.transaction_id
        ),
        Event::PartnerPayment(payment) => format!(
            "{event_type}:{}:{}:{}",
            payment.sp_mchid, payment.sub_mchid, payment.transaction_id
        ),
        Event::CombinePayment(combine) => format!(
            "{event_type}:combine:{}:{}",
            unset(&combine.combine_mchid),
            combine.combine_out_trade_no
        ),
        Event::Refund(refund) => {
            let merchant = match &refund.sp_mchid {
                Some(sp_mchid) => format!("{sp_mchid}:{}", unset(&refund.sub_mchid)),
                None => unset(&refund.mchid),
            };
            let base = format!(
                "{event_type}:{merchant}:{}:{}",
                refund.refund_id, refund.refund_status
            );
            match refund.refund_status.as_str() {
                "SUCCESS" | "CLOSED" => base,
                _ => format!("{base}:id:{id}"),
            }
        }
        // APIv2 events get the keys their v3 twins get (the same business event, whichever
        // version delivers it): a payment by merchant and transaction, a refund by merchant,
        // refund and state (`REFUNDCLOSE` is v3's `CLOSED`; `CHANGE`, v3's `ABNORMAL`, is
        // keyed per notification too). The event type is already mapped to v3's.
        #[cfg(feature = "v2")]
        Event::V2Payment(payment) => match &payment.sub_mch_id {
            Some(sub_mchid) => format!(
                "{event_type}:{}:{sub_mchid}:{}",
                payment.mch_id, payment.transaction_id
            ),
            None => format!("{event_type}:{}:{}", payment.mch_id, payment.transaction_id),
        },
        #[cfg(feature = "v2")]
        Event::V2Refund(refund) => {
            let merchant = match &refund.sub_mch_id {
                Some(sub_mchid) => format!("{}:{sub_mchid}", refund.mch_id),
                None => refund.mch_id.clone(),
            };
            let state = match refund.refund_status.as_str() {
                "REFUNDCLOSE" => "CLOSED",
                "CHANGE" => "ABNORMAL",
                other => other,
            };
            let base = format!("{event_type}:{merchant}:{}:{state}", refund.refund_id);
            match state {
                "SUCCESS" | "CLOSED" => base,
                _ => format!("{base}:id:{id}"),
            }
        }
        _ => format!("{event_type}:id:{id}"),
    })
}

/// A token unique to one claim: per-process random seeds (std's `RandomState` draws them
/// from the OS) and a counter.
pub(crate) fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let random = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}-{n:x}", random(n), random(!n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Lost;
    impl fmt::Display for Lost {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("socket closed")
        }
    }
    impl std::error::Error for Lost {}

    #[derive(Debug)]
    struct Connection(Lost);
    impl fmt::Display for Connection {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection lost")
        }
    }
    impl std::error::Error for Connection {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_store_error_chain_names_each_cause_once() {
        let error = StoreError::new(Connection(Lost));
        let mut chain = vec![error.to_string()];
        let mut cause = std::error::Error::source(&error);
        while let Some(next) = cause {
            chain.push(next.to_string());
            cause = next.source();
        }
        assert_eq!(chain, ["dedupe store: connection lost", "socket closed"]);
        assert!(
            std::error::Error::source(&error)
                .is_some_and(|source| source.downcast_ref::<Lost>().is_some())
        );
        let plain = StoreError::new("no answer within 1000 ms");
        assert_eq!(plain.to_string(), "dedupe store: no answer within 1000 ms");
        assert!(std::error::Error::source(&plain).is_none());
    }

    fn guard() -> Dedupe {
        Dedupe::new(InMemoryStore::new())
    }

    fn refused(dedupe: &Dedupe) -> Option<&'static str> {
        match dedupe.validate(Duration::from_secs(5)) {
            Ok(()) => None,
            Err(ConfigError::InvalidSetting { setting, .. }) => Some(setting),
            Err(other) => panic!("expected InvalidSetting, got {other:?}"),
        }
    }

    #[test]
    fn the_default_guard_is_valid_and_keeps_done_markers_past_wechat_pays_retries() {
        assert_eq!(refused(&guard()), None);
        // WeChat Pay retries for 24 h 4 min; a done marker must outlive them.
        assert!(guard().keep > Duration::from_secs(24 * 3600 + 4 * 60));
        assert_eq!(guard().keep, Dedupe::DEFAULT_KEEP_DONE);
        assert_eq!(Dedupe::DEFAULT_KEEP_DONE, Duration::from_secs(25 * 3600));
    }

    #[test]
    fn a_lease_of_one_hour_is_accepted_and_a_second_more_is_refused() {
        let hour = Duration::from_secs(3600);
        assert_eq!(refused(&guard().lease(hour)), None);
        assert_eq!(
            refused(&guard().lease(hour + Duration::from_secs(1))),
            Some("dedupe lease")
        );
    }

    #[test]
    fn done_markers_are_kept_between_the_lease_and_31_days_inclusive() {
        let month = Duration::from_secs(31 * 24 * 3600);
        assert_eq!(refused(&guard().keep_done(month)), None);
        assert_eq!(
            refused(&guard().keep_done(month + Duration::from_secs(1))),
            Some("dedupe keep_done")
        );
        let lease = Duration::from_secs(60);
        assert_eq!(refused(&guard().lease(lease).keep_done(lease)), None);
        assert_eq!(
            refused(
                &guard()
                    .lease(lease)
                    .keep_done(lease - Duration::from_secs(1))
            ),
            Some("dedupe keep_done")
        );
    }

    #[test]
    fn a_zero_store_timeout_is_refused() {
        assert_eq!(
            refused(&guard().store_timeout(Duration::ZERO)),
            Some("dedupe store_timeout")
        );
    }

    #[test]
    fn the_debug_output_shows_the_settings() {
        let debug = format!("{:?}", guard().lease(Duration::from_secs(42)));
        assert!(debug.starts_with("Dedupe {"), "{debug}");
        assert!(debug.contains("lease: 42s"), "{debug}");
        assert!(
            debug.contains("run_handler_on_store_error: false"),
            "{debug}"
        );
    }

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<String> = (0..10_000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 10_000);
    }
}
