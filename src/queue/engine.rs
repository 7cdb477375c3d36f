//! The engines under [`Queue`](super::Queue), all apalis backends: SQLite, PostgreSQL,
//! Redis. Everything engine-specific is here: connecting, pushing one job, the dead letter
//! list, requeueing, the depth.

use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use tower::BoxError;

use super::job::QueuedNotification;
use super::{DeadLetter, QueueError};

/// A connected engine.
#[derive(Clone)]
pub(crate) enum Engine {
    #[cfg(feature = "queue-sqlite")]
    Sqlite(apalis_sqlite::SqliteStorage<QueuedNotification>),
    #[cfg(feature = "queue-postgres")]
    Postgres(apalis_postgres::PostgresStorage<QueuedNotification>),
    #[cfg(feature = "queue-redis")]
    Redis(apalis_redis::RedisStorage<QueuedNotification>),
}

/// How long the idempotency key of a job is kept where the engine expires them (Redis):
/// longer than WeChat Pay resends one notification (24 h 4 min).
#[cfg(feature = "queue-redis")]
const KEEP_KEYS: Duration = Duration::from_secs(25 * 60 * 60);

/// Engine settings a worker needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub(crate) interval: Duration,
    pub(crate) missed: usize,
}

impl Engine {
    /// Connects by URL and creates the engine's tables (migrations) if needed.
    pub(crate) async fn connect(
        url: &str,
        queue: &str,
        heartbeat: Heartbeat,
    ) -> Result<Self, QueueError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            #[cfg(feature = "queue-sqlite")]
            "sqlite" => sqlite::connect(url, queue, heartbeat).await,
            #[cfg(feature = "queue-postgres")]
            "postgres" | "postgresql" => postgres::connect(url, queue, heartbeat).await,
            #[cfg(feature = "queue-redis")]
            "redis" | "rediss" => redis_engine::connect(url, queue, heartbeat).await,
            _ => Err(QueueError::config(format!(
                "unsupported queue URL scheme {scheme:?}: this build supports {}",
                supported()
            ))),
        }
    }

    /// Stores one job; returns once the engine has committed it (or already had a job
    /// under its key).
    pub(crate) async fn push(
        &self,
        job: QueuedNotification,
        max_attempts: u32,
    ) -> Result<(), QueueError> {
        use apalis_core::backend::TaskSink;
        let key = job.key.clone();
        let task = TaskBuilder::new(job)
            .idempotency_key(&key)
            .max_attempts(usize::try_from(max_attempts).unwrap_or(usize::MAX))
            .build();
        match self.clone() {
            #[cfg(feature = "queue-sqlite")]
            Self::Sqlite(mut storage) => storage.push_task(task).await.map_err(QueueError::engine),
            #[cfg(feature = "queue-postgres")]
            Self::Postgres(mut storage) => match storage.push_task(task).await {
                // PostgreSQL refuses a second job for a key instead of ignoring it: the
                // job is stored, which is all an enqueue promises.
                Err(error) if postgres::is_duplicate_key(&error) => Ok(()),
                result => result.map_err(QueueError::engine),
            },
            #[cfg(feature = "queue-redis")]
            Self::Redis(mut storage) => storage.push_task(task).await.map_err(QueueError::engine),
        }
    }

    /// Jobs that used up their attempts.
    #[cfg_attr(
        not(any(feature = "queue-sqlite", feature = "queue-postgres")),
        allow(unused_variables)
    )]
    pub(crate) async fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>, QueueError> {
        match self {
            #[cfg(feature = "queue-sqlite")]
            Self::Sqlite(storage) => sqlite::dead_letters(storage, queue).await,
            #[cfg(feature = "queue-postgres")]
            Self::Postgres(storage) => postgres::dead_letters(storage, queue).await,
            #[cfg(feature = "queue-redis")]
            Self::Redis(storage) => redis_engine::dead_letters(storage).await,
        }
    }

    /// Puts a dead job back in the queue with fresh attempts; `false` if no dead job has
    /// that id.
    #[cfg_attr(
        not(all(
            feature = "queue-redis",
            any(feature = "queue-sqlite", feature = "queue-postgres")
        )),
        allow(unused_variables)
    )]
    pub(crate) async fn requeue(
        &self,
        queue: &str,
        id: &str,
        max_attempts: u32,
    ) -> Result<bool, QueueError> {
        match self {
            #[cfg(feature = "queue-sqlite")]
            Self::Sqlite(storage) => sqlite::requeue(storage, queue, id).await,
            #[cfg(feature = "queue-postgres")]
            Self::Postgres(storage) => postgres::requeue(storage, queue, id).await,
            #[cfg(feature = "queue-redis")]
            Self::Redis(storage) => redis_engine::requeue(storage, id, max_attempts).await,
        }
    }

    /// Jobs waiting or running (not done, not dead).
    #[cfg_attr(
        not(any(feature = "queue-sqlite", feature = "queue-postgres")),
        allow(unused_variables)
    )]
    pub(crate) async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        match self {
            #[cfg(feature = "queue-sqlite")]
            Self::Sqlite(storage) => sqlite::depth(storage, queue).await,
            #[cfg(feature = "queue-postgres")]
            Self::Postgres(storage) => postgres::depth(storage, queue).await,
            #[cfg(feature = "queue-redis")]
            Self::Redis(storage) => redis_engine::depth(storage).await,
        }
    }
}

fn supported() -> String {
    let engines: [(&str, bool); 3] = [
        ("sqlite:PATH", cfg!(feature = "queue-sqlite")),
        ("postgres://", cfg!(feature = "queue-postgres")),
        ("redis://", cfg!(feature = "queue-redis")),
    ];
    let on: Vec<&str> = engines
        .iter()
        .filter(|(_, on)| *on)
        .map(|(url, _)| *url)
        .collect();
    if on.is_empty() {
        "none (enable queue-sqlite, queue-postgres or queue-redis)".to_owned()
    } else {
        on.join(", ")
    }
}

/// What a dead letter row holds, decoded.
fn dead_letter(id: String, job: &[u8], attempts: i64, last_result: Option<String>) -> DeadLetter {
    let decoded: Option<QueuedNotification> = serde_json::from_slice(job).ok();
    DeadLetter {
        id,
        key: decoded
            .as_ref()
            .map(|job| job.key.clone())
            .unwrap_or_default(),
        event_type: decoded
            .as_ref()
            .map(|job| job.event_type.clone())
            .unwrap_or_default(),
        received_unix: decoded.as_ref().map_or(0, |job| job.received_unix),
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: last_result.unwrap_or_default(),
    }
}

#[cfg(feature = "queue-sqlite")]
mod sqlite {
    use apalis_sqlite::{
        Config, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage,
    };
    use sqlx::Row;
    use std::str::FromStr;

    use super::{DeadLetter, Engine, Heartbeat, QueueError, dead_letter};

    pub(super) async fn connect(
        url: &str,
        queue: &str,
        heartbeat: Heartbeat,
    ) -> Result<Engine, QueueError> {
        // apalis' setup turns synchronous off on its connection; ours keep it FULL so a job
        // is on disk when the push returns, even across a power cut.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(QueueError::config)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(2));
        let setup = SqlitePool::connect_with(options.clone())
            .await
            .map_err(QueueError::engine)?;
        // Other instances on the file may be writing: a migration that finds the database
        // busy (SQLite answers some conflicts at once, whatever the busy timeout) tries again.
        let mut pause = std::time::Duration::from_millis(50);
        let mut tries = 0;
        loop {
            tries += 1;
            match SqliteStorage::setup(&setup).await {
                Ok(()) => break,
                Err(error) if tries < 20 && is_busy(&error) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                Err(error) => return Err(QueueError::engine(error)),
            }
        }
        setup.close().await;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(QueueError::engine)?;
        let config = Config::default()
            .queue(queue)
            .heartbeat_interval(heartbeat.interval)
            .missed_heartbeats(heartbeat.missed);
        Ok(Engine::Sqlite(
            SqliteStorage::new(&pool).with_config(config),
        ))
    }

    /// SQLITE_BUSY (5) or SQLITE_LOCKED (6), in any extended form, also inside a
    /// migration's error.
    fn is_busy(error: &apalis_sqlite::Error) -> bool {
        fn busy(error: &sqlx::Error) -> bool {
            match error {
                sqlx::Error::Database(database) => database
                    .code()
                    .and_then(|code| code.parse::<u32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
                sqlx::Error::Migrate(migrate) => match migrate.as_ref() {
                    sqlx::migrate::MigrateError::Execute(error)
                    | sqlx::migrate::MigrateError::ExecuteMigration(error, _) => busy(error),
                    _ => false,
                },
                _ => false,
            }
        }
        matches!(error, apalis_sqlite::Error::Database(error) if busy(error))
    }

    pub(super) async fn dead_letters(
        storage: &SqliteStorage<super::QueuedNotification>,
        queue: &str,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = sqlx::query(
            "SELECT id, job, attempts, last_result FROM Jobs WHERE job_type = ?1 AND \
             (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)) \
             ORDER BY done_at, id",
        )
        .bind(queue)
        .fetch_all(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        rows.iter()
            .map(|row| {
                Ok(dead_letter(
                    row.try_get("id").map_err(QueueError::engine)?,
                    &row.try_get::<Vec<u8>, _>("job")
                        .map_err(QueueError::engine)?,
                    row.try_get("attempts").map_err(QueueError::engine)?,
                    row.try_get("last_result").map_err(QueueError::engine)?,
                ))
            })
            .collect()
    }

    pub(super) async fn requeue(
        storage: &SqliteStorage<super::QueuedNotification>,
        queue: &str,
        id: &str,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE Jobs SET status = 'Pending', attempts = 0, lock_by = NULL, lock_at = NULL, \
             done_at = NULL, run_at = strftime('%s', 'now') WHERE job_type = ?1 AND id = ?2 AND \
             (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))",
        )
        .bind(queue)
        .bind(id)
        .execute(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn depth(
        storage: &SqliteStorage<super::QueuedNotification>,
        queue: &str,
    ) -> Result<u64, QueueError> {
        let depth: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM Jobs WHERE job_type = ?1 AND (status IN ('Pending', \
             'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(queue)
        .fetch_one(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }
}

#[cfg(feature = "queue-postgres")]
mod postgres {
    use apalis_postgres::{Config, PostgresStorage};
    use sqlx::Row;
    use sqlx::postgres::{PgPool, PgPoolOptions};

    use super::{DeadLetter, Engine, Heartbeat, QueueError, dead_letter};

    pub(super) async fn connect(
        url: &str,
        queue: &str,
        heartbeat: Heartbeat,
    ) -> Result<Engine, QueueError> {
        let pool: PgPool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(QueueError::engine)?;
        PostgresStorage::setup(&pool)
            .await
            .map_err(QueueError::engine)?;
        let config = Config::default()
            .queue(queue)
            .heartbeat_interval(heartbeat.interval)
            .missed_heartbeats(heartbeat.missed);
        Ok(Engine::Postgres(
            PostgresStorage::new(&pool).with_config(config),
        ))
    }

    /// Whether a push failed on the idempotency key's unique index: the job exists.
    pub(super) fn is_duplicate_key(
        error: &apalis_core::backend::TaskSinkError<apalis_postgres::Error>,
    ) -> bool {
        let apalis_core::backend::TaskSinkError::PushError(apalis_postgres::Error::Database(
            sqlx::Error::Database(database),
        )) = error
        else {
            return false;
        };
        database.is_unique_violation()
            && database
                .constraint()
                .is_some_and(|constraint| constraint.contains("idempotency"))
    }

    pub(super) async fn dead_letters(
        storage: &PostgresStorage<super::QueuedNotification>,
        queue: &str,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = sqlx::query(
            "SELECT id, job, attempts, last_result::text AS last_result FROM apalis.jobs \
             WHERE job_type = $1 AND (status = 'Killed' OR (status = 'Failed' AND attempts >= \
             max_attempts)) ORDER BY done_at, id",
        )
        .bind(queue)
        .fetch_all(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        rows.iter()
            .map(|row| {
                Ok(dead_letter(
                    row.try_get("id").map_err(QueueError::engine)?,
                    &row.try_get::<Vec<u8>, _>("job")
                        .map_err(QueueError::engine)?,
                    i64::from(
                        row.try_get::<i32, _>("attempts")
                            .map_err(QueueError::engine)?,
                    ),
                    row.try_get("last_result").map_err(QueueError::engine)?,
                ))
            })
            .collect()
    }

    pub(super) async fn requeue(
        storage: &PostgresStorage<super::QueuedNotification>,
        queue: &str,
        id: &str,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, lock_by = NULL, lock_at = \
             NULL, done_at = NULL, run_at = now() WHERE job_type = $1 AND id = $2 AND (status = \
             'Killed' OR (status = 'Failed' AND attempts >= max_attempts))",
        )
        .bind(queue)
        .bind(id)
        .execute(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn depth(
        storage: &PostgresStorage<super::QueuedNotification>,
        queue: &str,
    ) -> Result<u64, QueueError> {
        let depth: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND (status IN ('Pending', \
             'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(queue)
        .fetch_one(storage.pool())
        .await
        .map_err(QueueError::engine)?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }
}

#[cfg(feature = "queue-redis")]
mod redis_engine {
    use apalis_redis::{Config, RedisStorage};

    use super::{
        DeadLetter, Engine, Heartbeat, KEEP_KEYS, QueueError, QueuedNotification, dead_letter,
    };

    pub(super) async fn connect(
        url: &str,
        queue: &str,
        heartbeat: Heartbeat,
    ) -> Result<Engine, QueueError> {
        let connection = apalis_redis::connect(url)
            .await
            .map_err(QueueError::engine)?;
        let config = Config::default()
            .queue(queue)
            .heartbeat_interval(heartbeat.interval)
            .missed_heartbeats(heartbeat.missed)
            .idempotency_ttl(Some(KEEP_KEYS));
        Ok(Engine::Redis(
            RedisStorage::new(connection).with_config(config),
        ))
    }

    pub(super) async fn dead_letters(
        storage: &RedisStorage<QueuedNotification>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let config = storage.get_config().clone();
        let mut connection = storage.clone();
        let connection = connection.get_connection();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(config.dead_jobs_set())
            .query_async(connection)
            .await
            .map_err(QueueError::engine)?;
        let mut letters = Vec::with_capacity(ids.len());
        for id in ids {
            let job: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(config.job_data_hash())
                .arg(&id)
                .query_async(connection)
                .await
                .map_err(QueueError::engine)?;
            let meta_key = format!("{}:{id}", config.job_meta_hash());
            let (attempts, result): (Option<i64>, Option<String>) = redis::cmd("HMGET")
                .arg(&meta_key)
                .arg("attempts")
                .arg("result")
                .query_async(connection)
                .await
                .map_err(QueueError::engine)?;
            letters.push(dead_letter(
                id,
                &job.unwrap_or_default(),
                attempts.unwrap_or(0),
                result,
            ));
        }
        Ok(letters)
    }

    pub(super) async fn requeue(
        storage: &RedisStorage<QueuedNotification>,
        id: &str,
        max_attempts: u32,
    ) -> Result<bool, QueueError> {
        use apalis_core::backend::TaskSink;
        use apalis_core::task::builder::TaskBuilder;
        let config = storage.get_config().clone();
        let mut storage = storage.clone();
        let removed: i64 = redis::cmd("SREM")
            .arg(config.dead_jobs_set())
            .arg(id)
            .query_async(storage.get_connection())
            .await
            .map_err(QueueError::engine)?;
        if removed == 0 {
            return Ok(false);
        }
        let job: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(config.job_data_hash())
            .arg(id)
            .query_async(storage.get_connection())
            .await
            .map_err(QueueError::engine)?;
        let job: QueuedNotification = match job.map(|job| serde_json::from_slice(&job)) {
            Some(Ok(job)) => job,
            _ => {
                return Err(QueueError::engine(
                    "the dead job's data is gone or unreadable",
                ));
            }
        };
        // A new task, without an idempotency key: the dead one still holds its key.
        let task = TaskBuilder::new(job)
            .max_attempts(usize::try_from(max_attempts).unwrap_or(usize::MAX))
            .build();
        storage.push_task(task).await.map_err(QueueError::engine)?;
        Ok(true)
    }

    pub(super) async fn depth(
        storage: &RedisStorage<QueuedNotification>,
    ) -> Result<u64, QueueError> {
        let config = storage.get_config().clone();
        let mut storage = storage.clone();
        let (active, scheduled, inflight): (u64, u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(config.active_jobs_list())
            .cmd("ZCARD")
            .arg(config.scheduled_jobs_set())
            .cmd("ZCARD")
            .arg(config.inflight_jobs_set())
            .query_async(storage.get_connection())
            .await
            .map_err(QueueError::engine)?;
        Ok(active + scheduled + inflight)
    }
}

impl QueueError {
    pub(crate) fn engine(error: impl Into<BoxError>) -> Self {
        Self::Engine(error.into())
    }

    pub(crate) fn config(error: impl Into<BoxError>) -> Self {
        Self::Config(error.into())
    }
}
