//! Tuning of the Redis adapters.

use std::time::Duration;

use crate::backoff::SpinBackoff;

/// Tuning of a [`crate::RedisLocks`]. The defaults suit production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLockSettings {
    /// Size of the pool that opens connections (one multiplexed connection
    /// is in use at a time; the pool bounds concurrent reconnections).
    pub pool_size: usize,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on every command's reply.
    pub response_timeout: Duration,
    /// Pacing of `redis-spin` retries (and of `redis-pubsub` retries while
    /// the subscriber connection is down).
    pub spin: SpinBackoff,
    /// The watchdog stops renewing a lease held longer than this (a leaked
    /// or stuck guard then behaves like a crashed holder).
    pub max_hold: Duration,
    /// How long the process keeps trying to clean up after an acquisition
    /// it gave up while Redis did not answer (or a guard dropped without
    /// release): the clean-up runs as soon as Redis answers within this
    /// horizon, and its tombstone lives this long.
    pub cleanup_horizon: Duration,
}

impl Default for RedisLockSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            spin: SpinBackoff::default(),
            max_hold: Duration::from_secs(60),
            cleanup_horizon: Duration::from_secs(60),
        }
    }
}
