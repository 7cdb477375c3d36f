//! Prometheus-style metrics (feature `metrics`), through the [`metrics`](https://docs.rs/metrics)
//! facade: this crate records, the application installs the exporter it wants (e.g.
//! `metrics-exporter-prometheus`, as the shop example does on `--metrics-listen`). Without
//! a recorder installed every point is a no-op; without the feature none is compiled in.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `wechatpay_notifications_total` | counter | `outcome`, `reason`, `event_type`, `version` | every answer the layer gives |
//! | `wechatpay_answer_duration_seconds` | histogram | `outcome` | from the request's arrival to its answer |
//! | `wechatpay_handler_duration_seconds` | histogram | none | the inner service's call, for verified notifications |
//! | `wechatpay_probes_total` | counter | none | WeChat Pay's `WECHATPAY/SIGNTEST/` probes naming a key we have |
//! | `wechatpay_key_refreshes_total` | counter | `result` | key refreshes for an unknown serial |
//! | `wechatpay_dedupe_total` | counter | `outcome` | what the dedupe guard's claim answered |
//! | `wechatpay_queue_jobs_total` | counter | `outcome` | the durable queue (feature `queue`): enqueues and job attempts |
//! | `wechatpay_queue_depth` | gauge | none | jobs waiting or being handled, as last read by `Queue::depth` (call it on a timer; the shop example reads it every 10 s) |
//!
//! Label values, all from fixed lists (never an id, a serial or other request data):
//!
//! | label | values |
//! |---|---|
//! | `outcome` (notifications, answer duration) | `acknowledged` (2xx), `declined` (2xx, the handler declined for a business reason: [`Declined`](crate::Declined)), `retry` (a verified notification answered with a failure: WeChat Pay resends it), `refused` (not verified: strangers, probes, stale or broken requests, or no key for it) |
//! | `reason` | `none` for `acknowledged` and `declined`; otherwise the [`RejectionKind`](crate::RejectionKind) in snake case ([`RejectionKind::as_str`](crate::RejectionKind::as_str)), e.g. `invalid_signature`, `handler_retry`, `in_progress` |
//! | `event_type` | for verified notifications the known event types (`TRANSACTION.SUCCESS`, `TRANSACTION.FAIL`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`), any other `other`; `none` when refused |
//! | `version` | `3` (JSON, signed headers) or `2` (APIv2 XML) |
//! | `result` (key refreshes) | `started`, then one of `succeeded`, `failed` (an error or a panic), `abandoned` (stuck past its timeout) |
//! | `outcome` (queue jobs) | `enqueued`, `enqueue_failed` (answered 500: WeChat Pay resends), then per attempt `done`, `declined`, `duplicate` (the dedupe guard found it done), `retry` (failed, tried again after a backoff), `dead` (failed its last attempt: a dead letter) |
//! | `outcome` (dedupe) | `claimed` (the handler runs), `done_copy` (a copy of a processed event: acknowledged without running), `in_progress` (another copy runs now: retry), `store_error` (the store did not answer) |
//!
//! A request whose connection goes away before its answer is not counted. Call
//! [`describe`] once after installing the recorder to give the exporter help texts and
//! units.
//!
//! Alert on `retry` (ours to fix: a failing handler, a wrong APIv3 key, a dead dedupe
//! store) and on `key_refreshes_total{result!="started",result!="succeeded"}`; `refused`
//! is mostly traffic anyone can send and is for dashboards, not pages. The layer can page
//! by itself too: see [`alert`](crate::alert).

use tokio::time::Instant;

#[cfg(feature = "metrics")]
pub use on::describe;
#[cfg(feature = "metrics")]
pub(crate) use on::{answered, dedupe, handler_finished, key_refresh, probe};
#[cfg(all(feature = "metrics", feature = "queue"))]
pub(crate) use on::{queue_depth, queue_job};

/// When something started, for a duration histogram; nothing without the feature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: Instant,
}

impl Stopwatch {
    /// Started at `at` (an instant the caller already has).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn at(at: Instant) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: at,
        }
    }

    /// Started now (reads the clock only with the feature).
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: Instant::now(),
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    use http::Response;
    use metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };

    use super::Stopwatch;
    use crate::body::BufferedBody;
    use crate::error::Rejection;
    use crate::notification::Notification;
    use crate::outcome::Declined;

    const NOTIFICATIONS: &str = "wechatpay_notifications_total";
    const ANSWER_DURATION: &str = "wechatpay_answer_duration_seconds";
    const HANDLER_DURATION: &str = "wechatpay_handler_duration_seconds";
    const QUEUE_JOBS: &str = "wechatpay_queue_jobs_total";
    const QUEUE_DEPTH: &str = "wechatpay_queue_depth";
    const PROBES: &str = "wechatpay_probes_total";
    const KEY_REFRESHES: &str = "wechatpay_key_refreshes_total";
    const DEDUPE: &str = "wechatpay_dedupe_total";

    /// Gives the installed recorder a help text and a unit for each metric (optional).
    pub fn describe() {
        describe_counter!(
            NOTIFICATIONS,
            "WeChat Pay notification requests answered, by outcome, reason, event type and version"
        );
        describe_histogram!(
            ANSWER_DURATION,
            Unit::Seconds,
            "From a notification request's arrival to its answer"
        );
        describe_histogram!(
            HANDLER_DURATION,
            Unit::Seconds,
            "How long the handler (inner service) took for a verified notification"
        );
        describe_counter!(
            PROBES,
            "WeChat Pay signature probes (WECHATPAY/SIGNTEST/) naming a known key"
        );
        describe_counter!(
            KEY_REFRESHES,
            "Key refreshes for an unknown Wechatpay-Serial, by result"
        );
        describe_counter!(DEDUPE, "Dedupe guard claims, by outcome");
        describe_counter!(
            QUEUE_JOBS,
            "Durable queue: enqueues and job attempts, by outcome"
        );
        describe_gauge!(
            QUEUE_DEPTH,
            "Durable queue: jobs waiting or being handled (neither done nor dead)"
        );
    }

    /// Every answer, at the one place it leaves the layer; `verified` is the notification
    /// when the request was verified.
    pub(crate) fn answered(
        response: &Response<BufferedBody>,
        verified: Option<&Notification>,
        v2: bool,
        arrived: Stopwatch,
    ) {
        let extensions = response.extensions();
        let (outcome, reason) = if response.status().is_success() {
            if extensions.get::<Declined>().is_some() {
                ("declined", "none")
            } else {
                ("acknowledged", "none")
            }
        } else {
            let reason = extensions
                .get::<Rejection>()
                .map_or("unknown", |rejection| rejection.kind().as_str());
            (
                if verified.is_some() {
                    "retry"
                } else {
                    "refused"
                },
                reason,
            )
        };
        let event_type = verified.map_or("none", |n| event_type_label(n.event_type()));
        counter!(
            NOTIFICATIONS,
            "outcome" => outcome,
            "reason" => reason,
            "event_type" => event_type,
            "version" => if v2 { "2" } else { "3" },
        )
        .increment(1);
        histogram!(ANSWER_DURATION, "outcome" => outcome).record(arrived.started.elapsed());
    }

    /// The handler's call ended (answer, error, panic or timeout).
    pub(crate) fn handler_finished(started: Stopwatch) {
        histogram!(HANDLER_DURATION).record(started.started.elapsed());
    }

    /// A probe that names a key we have.
    pub(crate) fn probe() {
        counter!(PROBES).increment(1);
    }

    /// A key refresh `started`, `succeeded`, `failed` or was `abandoned`.
    pub(crate) fn key_refresh(result: &'static str) {
        counter!(KEY_REFRESHES, "result" => result).increment(1);
    }

    /// The dedupe claim answered `claimed`, `done_copy`, `in_progress` or `store_error`.
    #[cfg(feature = "queue")]
    pub(crate) fn queue_job(outcome: &'static str) {
        counter!(QUEUE_JOBS, "outcome" => outcome).increment(1);
    }

    #[cfg(feature = "queue")]
    #[allow(clippy::cast_precision_loss)] // a queue depth fits f64's 53 bits
    pub(crate) fn queue_depth(depth: u64) {
        gauge!(QUEUE_DEPTH).set(depth as f64);
    }

    pub(crate) fn dedupe(outcome: &'static str) {
        counter!(DEDUPE, "outcome" => outcome).increment(1);
    }

    /// The event type as a label: known types as themselves, anything else `other`.
    pub(crate) fn event_type_label(event_type: &str) -> &'static str {
        match event_type {
            "TRANSACTION.SUCCESS" => "TRANSACTION.SUCCESS",
            "TRANSACTION.FAIL" => "TRANSACTION.FAIL",
            "REFUND.SUCCESS" => "REFUND.SUCCESS",
            "REFUND.ABNORMAL" => "REFUND.ABNORMAL",
            "REFUND.CLOSED" => "REFUND.CLOSED",
            _ => "other",
        }
    }

    #[cfg(test)]
    mod tests {
        use super::event_type_label;

        #[test]
        fn unknown_event_types_are_labelled_other() {
            assert_eq!(event_type_label("REFUND.SUCCESS"), "REFUND.SUCCESS");
            assert_eq!(event_type_label("TRANSACTION.SUCCESS\u{0}x"), "other");
            assert_eq!(event_type_label("ATTACKER.CONTROLLED.123"), "other");
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    use http::Response;

    use super::Stopwatch;
    use crate::body::BufferedBody;
    use crate::notification::Notification;

    #[inline(always)]
    pub(crate) fn answered(
        _: &Response<BufferedBody>,
        _: Option<&Notification>,
        _: bool,
        _: Stopwatch,
    ) {
    }
    #[inline(always)]
    pub(crate) fn handler_finished(_: Stopwatch) {}
    #[inline(always)]
    pub(crate) fn probe() {}
    #[inline(always)]
    pub(crate) fn key_refresh(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn dedupe(_: &'static str) {}

    #[cfg(feature = "queue")]
    #[inline(always)]
    pub(crate) fn queue_job(_: &'static str) {}
    #[cfg(feature = "queue")]
    #[inline(always)]
    pub(crate) fn queue_depth(_: u64) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use off::{answered, dedupe, handler_finished, key_refresh, probe};
#[cfg(all(not(feature = "metrics"), feature = "queue"))]
pub(crate) use off::{queue_depth, queue_job};
