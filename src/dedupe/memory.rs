//! [`InMemoryStore`]: the embedded store, for one instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, DedupeStore, StoreError, StoreFuture};

/// A store in this process's memory, with expiry and a bound on its size. It guards one
/// instance; several instances need a shared store such as `RedisStore`.
///
/// When full it first drops expired entries, then the done markers closest to expiry (a
/// later duplicate of such an event runs the handler again, which the handler's own
/// transaction must absorb); live claims are never dropped.
#[derive(Clone)]
pub struct InMemoryStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
}

#[derive(Debug, PartialEq)]
enum State {
    Claimed(String),
    Done,
}

impl InMemoryStore {
    /// The default bound: about 100k keys (tens of MiB at most).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store holding at most [`Self::DEFAULT_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// How many keys are held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    // The map is consistent between operations, so a poisoned lock is safe to reuse.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, key: String, token: String, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get(&key).filter(|entry| entry.expires > now) {
            return Ok(match entry.state {
                State::Done => Claim::Done,
                State::Claimed(_) => Claim::InProgress,
            });
        }
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            make_room(&mut entries, now, self.capacity)?;
        }
        entries.insert(
            key,
            Entry {
                state: State::Claimed(token),
                expires: now + lease,
            },
        );
        Ok(Claim::Claimed)
    }
}

/// Drops expired entries, then the done markers that expire first, until one key fits.
fn make_room(
    entries: &mut HashMap<String, Entry>,
    now: Instant,
    capacity: usize,
) -> Result<(), StoreError> {
    entries.retain(|_, entry| entry.expires > now);
    if entries.len() < capacity {
        return Ok(());
    }
    let mut done: Vec<(Instant, String)> = entries
        .iter()
        .filter(|(_, entry)| entry.state == State::Done)
        .map(|(key, entry)| (entry.expires, key.clone()))
        .collect();
    done.sort();
    // Free a tenth at once so a full store does not sort on every claim.
    let excess = entries.len() + 1 - capacity;
    let batch = excess.max(capacity / 10).min(done.len());
    for (_, key) in done.into_iter().take(batch) {
        entries.remove(&key);
    }
    if entries.len() < capacity {
        Ok(())
    } else {
        Err(StoreError::new("in-memory store full of live claims"))
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl DedupeStore for InMemoryStore {
    fn claim(&self, key: String, token: String, lease: Duration) -> StoreFuture<Claim> {
        let result = self.claim_now(key, token, lease);
        Box::pin(std::future::ready(result))
    }

    fn complete(&self, key: String, _token: String, keep: Duration) -> StoreFuture<()> {
        let expires = Instant::now() + keep;
        self.lock().insert(
            key,
            Entry {
                state: State::Done,
                expires,
            },
        );
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, key: String, token: String) -> StoreFuture<()> {
        let mut entries = self.lock();
        if entries
            .get(&key)
            .is_some_and(|entry| entry.state == State::Claimed(token))
        {
            entries.remove(&key);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const KEEP: Duration = Duration::from_secs(25 * 3600);

    async fn claim(store: &InMemoryStore, key: &str, token: &str) -> Claim {
        store.claim(key.into(), token.into(), LEASE).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_excludes_others_until_its_lease_expires() {
        let store = InMemoryStore::new();
        assert_eq!(claim(&store, "k", "a").await, Claim::Claimed);
        assert_eq!(claim(&store, "k", "b").await, Claim::InProgress);
        tokio::time::advance(LEASE - Duration::from_millis(1)).await;
        assert_eq!(claim(&store, "k", "b").await, Claim::InProgress);
        tokio::time::advance(Duration::from_millis(1)).await;
        // The holder crashed: its lease is over, the next copy takes over.
        assert_eq!(claim(&store, "k", "b").await, Claim::Claimed);
    }

    #[tokio::test(start_paused = true)]
    async fn release_frees_the_key_for_the_next_retry_but_only_by_the_holder() {
        let store = InMemoryStore::new();
        assert_eq!(claim(&store, "k", "a").await, Claim::Claimed);
        store.release("k".into(), "intruder".into()).await.unwrap();
        assert_eq!(claim(&store, "k", "b").await, Claim::InProgress);
        store.release("k".into(), "a".into()).await.unwrap();
        assert_eq!(claim(&store, "k", "b").await, Claim::Claimed);
    }

    #[tokio::test(start_paused = true)]
    async fn done_is_kept_for_its_lifetime_then_forgotten() {
        let store = InMemoryStore::new();
        assert_eq!(claim(&store, "k", "a").await, Claim::Claimed);
        store.complete("k".into(), "a".into(), KEEP).await.unwrap();
        assert_eq!(claim(&store, "k", "b").await, Claim::Done);
        tokio::time::advance(Duration::from_secs(24 * 3600 + 4 * 60)).await;
        assert_eq!(
            claim(&store, "k", "b").await,
            Claim::Done,
            "covers 24 h 4 min"
        );
        tokio::time::advance(KEEP).await;
        assert_eq!(claim(&store, "k", "b").await, Claim::Claimed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_evicts_expired_entries_then_the_oldest_done_markers() {
        let store = InMemoryStore::with_capacity(3);
        assert_eq!(claim(&store, "old-done", "a").await, Claim::Claimed);
        store
            .complete("old-done".into(), "a".into(), KEEP)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(claim(&store, "new-done", "a").await, Claim::Claimed);
        store
            .complete("new-done".into(), "a".into(), KEEP)
            .await
            .unwrap();
        assert_eq!(claim(&store, "live", "a").await, Claim::Claimed);
        assert_eq!(store.len(), 3);

        // Full: the done marker that expires first goes; the live claim stays.
        assert_eq!(claim(&store, "fourth", "a").await, Claim::Claimed);
        assert_eq!(store.len(), 3);
        assert_eq!(claim(&store, "old-done", "b").await, Claim::Claimed);
        assert_eq!(claim(&store, "live", "b").await, Claim::InProgress);
    }

    async fn done(store: &InMemoryStore, key: &str) {
        assert_eq!(claim(store, key, "t").await, Claim::Claimed);
        store.complete(key.into(), "t".into(), KEEP).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_small_store_evicts_only_the_done_marker_that_expires_first() {
        let store = InMemoryStore::with_capacity(3);
        for key in ["first", "second", "third"] {
            done(&store, key).await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(claim(&store, "fourth", "t").await, Claim::Claimed);
        assert_eq!(store.len(), 3);
        // The later done markers are still there: their copies are still acknowledged.
        assert_eq!(claim(&store, "second", "u").await, Claim::Done);
        assert_eq!(claim(&store, "third", "u").await, Claim::Done);
        assert_eq!(
            claim(&store, "first", "u").await,
            Claim::Claimed,
            "forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_frees_a_tenth_of_its_capacity_at_once() {
        let store = InMemoryStore::with_capacity(20);
        for n in 0..20 {
            done(&store, &format!("done-{n:02}")).await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(claim(&store, "new", "t").await, Claim::Claimed);
        // Two markers (the oldest) went to make room, so the next claims need no sorting.
        assert_eq!(store.len(), 19);
        assert_eq!(claim(&store, "done-02", "u").await, Claim::Done);
        assert_eq!(
            claim(&store, "done-01", "u").await,
            Claim::Claimed,
            "forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_purged_only_when_the_store_is_full() {
        let store = InMemoryStore::with_capacity(3);
        assert_eq!(claim(&store, "a", "t").await, Claim::Claimed);
        tokio::time::advance(LEASE).await;
        // Room left: no sweep on this claim, the expired claim is still counted.
        assert_eq!(claim(&store, "b", "t").await, Claim::Claimed);
        assert_eq!(store.len(), 2);
        assert!(!store.is_empty());
        assert_eq!(claim(&store, "c", "t").await, Claim::Claimed);
        assert_eq!(store.len(), 3);
        // Full: the sweep drops the expired claim before the new key goes in.
        assert_eq!(claim(&store, "d", "t").await, Claim::Claimed);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn a_new_store_is_empty_and_its_debug_shows_size_and_bound() {
        let store = InMemoryStore::with_capacity(7);
        assert!(store.is_empty());
        assert_eq!(store.len(), 0);
        assert_eq!(
            format!("{store:?}"),
            "InMemoryStore { len: 0, capacity: 7 }"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_full_of_live_claims_refuses_instead_of_dropping_one() {
        let store = InMemoryStore::with_capacity(2);
        assert_eq!(claim(&store, "a", "t").await, Claim::Claimed);
        assert_eq!(claim(&store, "b", "t").await, Claim::Claimed);
        assert!(store.claim("c".into(), "t".into(), LEASE).await.is_err());
        // Once a lease expires there is room again.
        tokio::time::advance(LEASE).await;
        assert_eq!(claim(&store, "c", "t").await, Claim::Claimed);
    }
}
