//! The shared command connection: one multiplexed connection per process
//! (it pipelines concurrent requests on one socket), its replacement after
//! a failure, and the one place where Redis errors become [`Failure`]s.
//!
//! Connections are opened through a deadpool-redis pool, which bounds
//! concurrent (re)connections and their timeouts, and are then detached
//! and cached: taking a pooled object per command would cost a recycling
//! `PING` round trip each time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context as _, anyhow};
use concert_domain::Failure;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ErrorKind, FromRedisValue, RedisError, RedisResult, Script,
    ServerErrorKind,
};
use deadpool_redis::{Manager, Pool, PoolError, Runtime};

use crate::scripts::Call;
use crate::settings::RedisLockSettings;

/// The command connection of one process (shared by every handle).
pub(crate) struct Connection {
    pool: Pool,
    cached: Mutex<Option<Cached>>,
    generations: AtomicU64,
}

#[derive(Clone)]
struct Cached {
    conn: MultiplexedConnection,
    /// Which connection this is, so that a failure on an old one does not
    /// discard its replacement.
    generation: u64,
}

impl Connection {
    /// Configures the connection; nothing is opened until the first
    /// command. Fails only for an invalid URL.
    pub fn new(url: &str, settings: &RedisLockSettings) -> Result<Self, Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let manager = Manager::new_with_config(url, config)
            .context("invalid Redis URL")
            .map_err(Failure::unknown)?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(settings.connect_timeout + settings.response_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.response_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .context("building the Redis pool")
            .map_err(Failure::unknown)?;
        Ok(Self {
            pool,
            cached: Mutex::new(None),
            generations: AtomicU64::new(0),
        })
    }

    fn cached(&self) -> MutexGuard<'_, Option<Cached>> {
        // Only ever read or replaced whole: a panic cannot corrupt it.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached connection, or a new one (then also `true`).
    async fn current(&self) -> Result<(Cached, bool), Failure> {
        if let Some(cached) = self.cached().clone() {
            return Ok((cached, false));
        }
        let object = self.pool.get().await.map_err(pool_failure)?;
        let fresh = Cached {
            conn: deadpool_redis::Connection::take(object),
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
        };
        // Concurrent openers: the first one to finish is kept, the others
        // use theirs for this one command.
        self.cached().get_or_insert_with(|| fresh.clone());
        Ok((fresh, true))
    }

    /// Forgets connection `generation` (if it is still the cached one), so
    /// the next command opens a new one.
    fn discard(&self, generation: u64) {
        let mut cached = self.cached();
        if cached.as_ref().is_some_and(|c| c.generation == generation) {
            *cached = None;
        }
    }

    fn fail(&self, generation: u64, e: RedisError) -> Failure {
        let failure = failure(e);
        if matches!(failure, Failure::Unavailable(_)) {
            self.discard(generation);
        }
        failure
    }

    /// Runs `op` on the connection. When the cached connection turns out
    /// broken (Redis restarted or closed it: the socket is gone, not slow),
    /// `op` runs once more on a fresh connection before a failure is
    /// reported, so the first command after a Redis restart succeeds. A
    /// timeout is not retried (Redis is there but slow or stalled). `op`
    /// must therefore be safe to run twice.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_noting(op).await.0
    }

    /// [`Connection::run`], also telling whether `op` was started at all
    /// (false: no connection could be had, nothing reached Redis).
    pub async fn run_noting<T, F, Fut>(&self, op: F) -> (Result<T, Failure>, bool)
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (cached, fresh) = match self.current().await {
            Ok(current) => current,
            Err(e) => return (Err(e), false),
        };
        let result = match op(cached.conn).await {
            Ok(value) => Ok(value),
            Err(e) if !fresh && is_broken(&e) => {
                tracing::debug!(error = %e, "cached Redis connection broken; retrying on a new one");
                self.discard(cached.generation);
                match self.current().await {
                    Ok((cached, _)) => op(cached.conn)
                        .await
                        .map_err(|e| self.fail(cached.generation, e)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(self.fail(cached.generation, e)),
        };
        (result, true)
    }

    /// Calls `script` (`EVALSHA`, loading it on `NOSCRIPT`). Every script
    /// of this crate is safe to run twice for one call (see
    /// [`crate::scripts`]), as [`Connection::run`] requires.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &'static Script,
        call: &Call,
    ) -> Result<T, Failure> {
        self.invoke_noting(script, call).await.0
    }

    /// [`Connection::invoke`], also telling whether the call may have
    /// reached Redis (false only when no connection could be had).
    pub async fn invoke_noting<T: FromRedisValue>(
        &self,
        script: &'static Script,
        call: &Call,
    ) -> (Result<T, Failure>, bool) {
        let invocation = call.invocation(script);
        self.run_noting(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    /// One `PING`.
    pub async fn ping(&self) -> Result<(), Failure> {
        let pong: String = self
            .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Failure::unknown(anyhow!("unexpected PING reply {pong:?}")))
        }
    }

    /// Deletes every key matching `pattern` (`SCAN` + `DEL`); returns how
    /// many it deleted.
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, Failure> {
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(|mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let keys = &keys;
                let n: u64 = self
                    .run(|mut conn| async move {
                        redis::cmd("DEL").arg(keys).query_async(&mut conn).await
                    })
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// A failure of the connection itself (closed, reset), as opposed to a
/// timeout or an error reply.
fn is_broken(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_unrecoverable_error())
}

/// The translation of Redis errors: what means "cannot reach Redis, or not
/// in time" is [`Failure::Unavailable`]; the rest (script or protocol
/// errors, a misconfiguration) is [`Failure::Unknown`].
pub(crate) fn failure(e: RedisError) -> Failure {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
    {
        Failure::Unavailable(anyhow::Error::new(e).context("Redis is unavailable"))
    } else {
        Failure::Unknown(anyhow::Error::new(e).context("Redis command failed"))
    }
}

fn pool_failure(e: PoolError) -> Failure {
    match e {
        PoolError::Backend(e) => failure(e),
        e @ (PoolError::Timeout(_) | PoolError::Closed) => {
            Failure::Unavailable(anyhow!("Redis connection pool: {e}"))
        }
        e => Failure::Unknown(anyhow!("Redis connection pool: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn io_error(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::from(kind))
    }

    #[test]
    fn outages_are_unavailable_and_the_rest_unknown() {
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
        ] {
            assert!(
                matches!(failure(io_error(kind)), Failure::Unavailable(_)),
                "{kind:?}"
            );
        }
        let script_error = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR bad script",
        ));
        assert!(matches!(failure(script_error), Failure::Unknown(_)));
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING"));
        assert!(matches!(failure(loading), Failure::Unavailable(_)));
    }

    #[test]
    fn only_a_closed_connection_is_retried_not_a_slow_one() {
        assert!(is_broken(&io_error(io::ErrorKind::BrokenPipe)));
        assert!(is_broken(&io_error(io::ErrorKind::ConnectionReset)));
        assert!(is_broken(&io_error(io::ErrorKind::UnexpectedEof)));
        assert!(!is_broken(&io_error(io::ErrorKind::TimedOut)));
        assert!(!is_broken(&RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR"
        ))));
    }

    #[test]
    fn an_invalid_url_is_a_configuration_error() {
        assert!(matches!(
            Connection::new("not-a-url", &RedisLockSettings::default()),
            Err(Failure::Unknown(_))
        ));
    }
}
