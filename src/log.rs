//! Log lines that anyone on the internet can trigger, rate-limited: the first of each kind
//! is logged, then at most one line per interval, saying how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The least time between two lines of one kind.
pub(crate) const NOISE_INTERVAL: Duration = Duration::from_secs(60);

/// What an unauthenticated request was refused for, as far as the log is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Noise {
    TooLarge,
    MissingHeader,
    InvalidHeader,
    Stale,
    Probe,
    UnknownSerial,
    KeyNotValid,
    BadSignature,
    SlowBody,
    UnreadableBody,
}

const KINDS: usize = 10;

impl Noise {
    fn index(self) -> usize {
        self as usize
    }
}

/// One slot per [`Noise`] kind, shared by every clone of a layer.
#[derive(Default)]
pub(crate) struct NoiseLimiter {
    slots: [Slot; KINDS],
}

#[derive(Default)]
struct Slot {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl NoiseLimiter {
    /// Whether a line of this kind may be logged now; if so, how many were left out since
    /// the last one.
    pub(crate) fn allow(&self, kind: Noise) -> Option<u64> {
        let slot = &self.slots[kind.index()];
        let now = Instant::now();
        let mut last = slot.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.saturating_duration_since(at) < NOISE_INTERVAL => {
                slot.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(slot.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_line_passes_then_one_per_interval_with_the_count_left_out() {
        let limiter = NoiseLimiter::default();
        assert_eq!(limiter.allow(Noise::BadSignature), Some(0));
        assert_eq!(limiter.allow(Noise::BadSignature), None);
        assert_eq!(limiter.allow(Noise::BadSignature), None);
        // Kinds are independent.
        assert_eq!(limiter.allow(Noise::UnknownSerial), Some(0));
        tokio::time::advance(NOISE_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(limiter.allow(Noise::BadSignature), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limiter.allow(Noise::BadSignature), Some(3));
        assert_eq!(limiter.allow(Noise::BadSignature), None);
    }
}
