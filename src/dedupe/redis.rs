//! [`RedisStore`]: the dedupe store shared by several instances (feature `redis`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::{Claim, DedupeStore, StoreError, StoreFuture};

/// Claims, done markers and releases in Redis, atomic by Lua scripts, so two instances can
/// never both win a claim. Uses redis-rs's tokio `ConnectionManager`, which reconnects by
/// itself after Redis comes back.
///
/// ```no_run
/// use tower_wechatpay::WechatPayLayer;
/// use tower_wechatpay::dedupe::{Dedupe, RedisStore};
/// # async fn f(layer: WechatPayLayer) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = layer.dedupe(store)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    claim: Arc<Script>,
    release: Arc<Script>,
}

/// Claim `KEYS[1]` for token `ARGV[1]` for `ARGV[2]` ms unless it is done or held.
const CLAIM: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], 'claim:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
if value == 'done' then
  return 2
end
return 0
";

/// Delete `KEYS[1]` only if token `ARGV[1]` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == 'claim:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`). Commands time out after 1 s and the
    /// connection is re-established in the background when Redis returns.
    ///
    /// The 1 s command timeout matches the guard's default store timeout
    /// ([`Dedupe::DEFAULT_STORE_TIMEOUT`](super::Dedupe::DEFAULT_STORE_TIMEOUT)) and caps
    /// a longer [`Dedupe::store_timeout`](super::Dedupe::store_timeout): for a longer one,
    /// configure a `ConnectionManager` yourself and use [`RedisStore::new`].
    ///
    /// # Errors
    /// If the URL is invalid or Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::new)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::new)?;
        Ok(Self::new(connection))
    }

    /// Uses an existing connection manager.
    pub fn new(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Arc::from("wechatpay:dedupe:"),
            claim: Arc::new(Script::new(CLAIM)),
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    /// The prefix of every key this store writes (default `wechatpay:dedupe:`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl DedupeStore for RedisStore {
    fn claim(&self, key: String, token: String, lease: Duration) -> StoreFuture<Claim> {
        let mut connection = self.connection.clone();
        let script = Arc::clone(&self.claim);
        let key = self.key(&key);
        Box::pin(async move {
            let answer: i64 = script
                .key(key)
                .arg(token)
                .arg(millis(lease))
                .invoke_async(&mut connection)
                .await
                .map_err(StoreError::new)?;
            Ok(match answer {
                1 => Claim::Claimed,
                2 => Claim::Done,
                _ => Claim::InProgress,
            })
        })
    }

    fn complete(&self, key: String, _token: String, keep: Duration) -> StoreFuture<()> {
        let mut connection = self.connection.clone();
        let key = self.key(&key);
        Box::pin(async move {
            connection
                .pset_ex::<_, _, ()>(key, "done", millis(keep))
                .await
                .map_err(StoreError::new)
        })
    }

    fn release(&self, key: String, token: String) -> StoreFuture<()> {
        let mut connection = self.connection.clone();
        let script = Arc::clone(&self.release);
        let key = self.key(&key);
        Box::pin(async move {
            script
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut connection)
                .await
                .map(drop)
                .map_err(StoreError::new)
        })
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
