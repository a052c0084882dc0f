//! Concurrency strategies, chosen per operation by configuration, and the
//! runner that applies one to a repository call.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::OperationError;
use crate::lock::{DistributedLock, Fence, LockKey, LockOptions, with_lock};

/// How a repository protects one load -> decide -> save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteMode {
    /// Plain read with `version`; the write checks the version is unchanged
    /// and bumps it. A mismatch is a conflict error, never a silent success.
    Optimistic,
    /// `SELECT ... FOR UPDATE`: others wait for the row until commit.
    Pessimistic,
    /// One conditional `UPDATE` that encodes the rule in its `WHERE`.
    Atomic,
}

/// Which lock adapter a lock-based strategy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// In-process lock: correct for a single instance only.
    Local,
    /// Redis `SET NX PX`; fail at once if taken.
    RedisSimple,
    /// Redis, retried with jittered exponential backoff within the budget.
    RedisSpin,
    /// Redis, waiters sleep until the holder's release is published.
    RedisPubSub,
}

/// A concurrency strategy, as named in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    Optimistic,
    OptimisticRetry,
    Pessimistic,
    Atomic,
    Local,
    RedisSimple,
    RedisSpin,
    RedisPubSub,
}

impl Strategy {
    pub const ALL: [Strategy; 8] = [
        Strategy::Optimistic,
        Strategy::OptimisticRetry,
        Strategy::Pessimistic,
        Strategy::Atomic,
        Strategy::Local,
        Strategy::RedisSimple,
        Strategy::RedisSpin,
        Strategy::RedisPubSub,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Optimistic => "optimistic",
            Strategy::OptimisticRetry => "optimistic-retry",
            Strategy::Pessimistic => "pessimistic",
            Strategy::Atomic => "atomic",
            Strategy::Local => "local",
            Strategy::RedisSimple => "redis-simple",
            Strategy::RedisSpin => "redis-spin",
            Strategy::RedisPubSub => "redis-pubsub",
        }
    }

    /// The lock a lock-based strategy takes before the transaction.
    pub fn lock_kind(self) -> Option<LockKind> {
        match self {
            Strategy::Local => Some(LockKind::Local),
            Strategy::RedisSimple => Some(LockKind::RedisSimple),
            Strategy::RedisSpin => Some(LockKind::RedisSpin),
            Strategy::RedisPubSub => Some(LockKind::RedisPubSub),
            _ => None,
        }
    }

    pub fn uses_redis(self) -> bool {
        matches!(
            self.lock_kind(),
            Some(LockKind::RedisSimple | LockKind::RedisSpin | LockKind::RedisPubSub)
        )
    }

    /// The repository mode. Lock-based strategies keep the optimistic
    /// version check as a second line of defence.
    pub fn write_mode(self) -> WriteMode {
        match self {
            Strategy::Pessimistic => WriteMode::Pessimistic,
            Strategy::Atomic => WriteMode::Atomic,
            _ => WriteMode::Optimistic,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is not one of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {given:?}; valid strategies: {}", Strategy::ALL.map(Strategy::as_str).join(", "))]
pub struct UnknownStrategy {
    pub given: String,
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s.trim())
            .ok_or_else(|| UnknownStrategy {
                given: s.to_owned(),
            })
    }
}

/// Bounded retries with exponential backoff and full jitter, for
/// `optimistic-retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff ceiling; it doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1_000,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(32),
        }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `retry` (1-based): uniform in
    /// `[0, min(max, base * 2^(retry-1))]`, so contenders spread out instead
    /// of colliding again in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Counters the lab reads: how many repository attempts ran and how many of
/// them were optimistic conflicts that got retried.
#[derive(Debug, Default)]
pub struct ControlStats {
    attempts: AtomicU64,
    retries: AtomicU64,
}

impl ControlStats {
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// One operation's concurrency control: its strategy and, for lock-based
/// strategies, the lock adapter and its options.
#[derive(Debug)]
pub struct Control<L> {
    strategy: Strategy,
    lock: Option<L>,
    lock_options: LockOptions,
    retry: RetryPolicy,
    stats: Arc<ControlStats>,
}

/// A lock-based strategy was configured without a lock adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strategy {0} needs a lock adapter")]
pub struct MissingLock(pub Strategy);

impl<L: DistributedLock> Control<L> {
    /// `lock` must be given for lock-based strategies; it is ignored (and may
    /// be `None`) for the others.
    pub fn new(strategy: Strategy, lock: Option<L>) -> Result<Self, MissingLock> {
        if strategy.lock_kind().is_some() && lock.is_none() {
            return Err(MissingLock(strategy));
        }
        Ok(Self {
            strategy,
            lock: lock.filter(|_| strategy.lock_kind().is_some()),
            lock_options: LockOptions::default(),
            retry: RetryPolicy::default(),
            stats: Arc::default(),
        })
    }

    pub fn with_lock_options(mut self, options: LockOptions) -> Self {
        self.lock_options = options;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn stats(&self) -> Arc<ControlStats> {
        self.stats.clone()
    }

    /// Runs one repository call under this strategy. `op` is called with the
    /// write mode (and, under a lock, the fence) and must carry out a whole
    /// transaction; it may be called again for `optimistic-retry`.
    pub async fn run<T, E, F, Fut>(&self, clock: &dyn Clock, key: LockKey, op: F) -> Result<T, E>
    where
        E: OperationError,
        F: Fn(WriteMode, Option<Fence>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mode = self.strategy.write_mode();
        match (&self.lock, self.strategy) {
            (Some(lock), _) => {
                with_lock(lock, &key, self.lock_options, |fence| {
                    self.stats.attempts.fetch_add(1, Ordering::Relaxed);
                    op(mode, Some(fence))
                })
                .await
            }
            (None, Strategy::OptimisticRetry) => {
                let mut attempt = 1;
                loop {
                    self.stats.attempts.fetch_add(1, Ordering::Relaxed);
                    match op(mode, None).await {
                        Err(e) if e.is_conflict() && attempt < self.retry.max_attempts => {
                            self.stats.retries.fetch_add(1, Ordering::Relaxed);
                            clock.sleep(self.retry.backoff(attempt)).await;
                            attempt += 1;
                        }
                        outcome => return outcome,
                    }
                }
            }
            (None, _) => {
                self.stats.attempts.fetch_add(1, Ordering::Relaxed);
                op(mode, None).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MockClock;
    use crate::error::ReserveError;
    use crate::lock::{LockError, LockGuard, MockDistributedLock};
    use std::sync::Mutex;

    #[test]
    fn names_round_trip_and_unknown_lists_valid_ones() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        let err = "redlock".parse::<Strategy>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"redlock\""), "{message}");
        for s in Strategy::ALL {
            assert!(message.contains(s.as_str()), "{message}");
        }
    }

    #[test]
    fn modes_and_locks_per_strategy() {
        assert_eq!(Strategy::Pessimistic.write_mode(), WriteMode::Pessimistic);
        assert_eq!(Strategy::Atomic.write_mode(), WriteMode::Atomic);
        for s in [
            Strategy::Optimistic,
            Strategy::OptimisticRetry,
            Strategy::Local,
            Strategy::RedisSimple,
            Strategy::RedisSpin,
            Strategy::RedisPubSub,
        ] {
            assert_eq!(s.write_mode(), WriteMode::Optimistic, "{s}");
        }
        assert_eq!(Strategy::Local.lock_kind(), Some(LockKind::Local));
        assert_eq!(
            Strategy::RedisPubSub.lock_kind(),
            Some(LockKind::RedisPubSub)
        );
        assert_eq!(Strategy::Atomic.lock_kind(), None);
        assert!(Strategy::RedisSpin.uses_redis());
        assert!(!Strategy::Local.uses_redis());
    }

    #[test]
    fn lock_based_strategies_need_a_lock() {
        let missing = Control::<MockDistributedLock>::new(Strategy::RedisPubSub, None);
        assert_eq!(missing.unwrap_err(), MissingLock(Strategy::RedisPubSub));
        assert!(Control::<MockDistributedLock>::new(Strategy::Pessimistic, None).is_ok());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            let ceiling = Duration::from_millis(1)
                .saturating_mul(1 << (retry - 1).min(16))
                .min(policy.max_backoff);
            assert!(policy.backoff(retry) <= ceiling);
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(10)).collect();
        assert!(samples.len() > 1, "backoff must be jittered");
    }

    fn no_sleep_clock() -> MockClock {
        let mut clock = MockClock::new();
        clock.expect_sleep().returning(|_| ());
        clock
    }

    #[tokio::test]
    async fn plain_strategies_call_once_with_their_mode() {
        for (strategy, mode) in [
            (Strategy::Optimistic, WriteMode::Optimistic),
            (Strategy::Pessimistic, WriteMode::Pessimistic),
            (Strategy::Atomic, WriteMode::Atomic),
        ] {
            let control = Control::<MockDistributedLock>::new(strategy, None).unwrap();
            let calls = Mutex::new(Vec::new());
            let out: Result<(), ReserveError> = control
                .run(&no_sleep_clock(), LockKey::new("k"), |m, fence| {
                    calls.lock().unwrap().push((m, fence.is_none()));
                    async { Err(ReserveError::Conflict) }
                })
                .await;
            assert!(matches!(out, Err(ReserveError::Conflict)));
            assert_eq!(*calls.lock().unwrap(), [(mode, true)]);
            assert_eq!(
                (control.stats().attempts(), control.stats().retries()),
                (1, 0)
            );
        }
    }

    #[tokio::test]
    async fn optimistic_retry_retries_conflicts_only() {
        let control = Control::<MockDistributedLock>::new(Strategy::OptimisticRetry, None).unwrap();
        let calls = AtomicU64::new(0);
        let out: Result<u64, ReserveError> = control
            .run(&no_sleep_clock(), LockKey::new("k"), |_, _| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < 4 {
                        Err(ReserveError::Conflict)
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 4);
        assert_eq!(
            (control.stats().attempts(), control.stats().retries()),
            (4, 3)
        );

        let out: Result<(), ReserveError> = control
            .run(&no_sleep_clock(), LockKey::new("k"), |_, _| async {
                Err(ReserveError::SeatUnavailable)
            })
            .await;
        assert!(matches!(out, Err(ReserveError::SeatUnavailable)));
        assert_eq!(control.stats().attempts(), 5);
    }

    #[tokio::test]
    async fn optimistic_retry_gives_up_after_max_attempts() {
        let control = Control::<MockDistributedLock>::new(Strategy::OptimisticRetry, None)
            .unwrap()
            .with_retry(RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            });
        let mut clock = MockClock::new();
        clock.expect_sleep().times(2).returning(|_| ());
        let out: Result<(), ReserveError> = control
            .run(&clock, LockKey::new("k"), |_, _| async {
                Err(ReserveError::Conflict)
            })
            .await;
        assert!(matches!(out, Err(ReserveError::Conflict)));
        assert_eq!(control.stats().attempts(), 3);
    }

    #[tokio::test]
    async fn lock_strategies_run_optimistic_under_the_lock_with_its_fence() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .withf(|key, _| key.as_str() == "seat:1:2")
            .times(1)
            .returning(|key, _| Ok(LockGuard::new(key.clone(), "me", Fence::new(77))));
        lock.expect_release().times(1).returning(|_| Ok(()));
        let control = Control::new(Strategy::RedisPubSub, Some(lock)).unwrap();
        let out: Result<(WriteMode, u64), ReserveError> =
            control
                .run(
                    &no_sleep_clock(),
                    LockKey::new("seat:1:2"),
                    |mode, fence| async move {
                        Ok((mode, fence.map(|f| f.token()).unwrap_or_default()))
                    },
                )
                .await;
        assert_eq!(out.unwrap(), (WriteMode::Optimistic, 77));
    }

    #[tokio::test]
    async fn lock_timeout_becomes_the_operation_error() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .returning(|_, _| Err(LockError::Timeout));
        let control = Control::new(Strategy::RedisSimple, Some(lock)).unwrap();
        let out: Result<(), ReserveError> = control
            .run(&no_sleep_clock(), LockKey::new("k"), |_, _| async {
                Ok(())
            })
            .await;
        assert!(matches!(out, Err(ReserveError::LockTimeout)));
        assert_eq!(control.stats().attempts(), 0);
    }
}
