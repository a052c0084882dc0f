//! [`RedLock`]: one lock over N independent Redis masters (`redis-redlock`).
//!
//! The algorithm of the Redis documentation ("Distributed locks with
//! Redis"), with a fencing token:
//!
//! 1. take the time `t0`, then send one attempt to every master at once:
//!    `SET lock owner NX PX lease`, and when it is taken, `INCR` the key's
//!    fence counter on that master (seeded from the master's `TIME` in µs
//!    when missing, like the single-instance lock);
//! 2. the lock is held when a majority (`N/2 + 1`) granted it and the
//!    validity `lease - (now - t0) - drift` is still positive, where
//!    `drift = lease / 100 + 2 ms` allows for the masters' clocks running at
//!    slightly different rates;
//! 3. the fencing token is the largest counter among the granting masters,
//!    and before the acquisition returns it is written back as a floor
//!    (`fence = max(fence, token)`) on a majority. Two majorities always
//!    share a master, so the next acquisition's `INCR` meets a counter that
//!    is at least this token on one of them: tokens grow with every
//!    acquisition, which is what storage's fence check needs;
//! 4. an attempt that fails (no majority, or no validity left, or no floor
//!    written on a majority) releases whatever it took, on every master,
//!    and retries after a jittered backoff within the wait budget. When so
//!    many masters fail to answer that no majority is possible, the
//!    acquisition fails at once with [`Failure::Unavailable`] (503), not
//!    after the whole budget.
//!
//! Renewals (the watchdog) and releases are compare-and-extend and
//! compare-and-delete on every master; a renewal holds when a majority
//! renewed, a release reports [`Failure::LockLost`] unless a majority still
//! had the lock. Each call to one master is bounded by a short timeout so a
//! dead master costs little.
//!
//! Where it is and is not safe (see `docs/locking.md`): the mutual
//! exclusion rests on timing assumptions (bounded clock drift, no pause of
//! a holder longer than its lease, no master losing its keys on restart
//! within a lease); the fencing token is what keeps storage safe when they
//! fail, and it stays monotonic across a master's restart because missing
//! counters are re-seeded from the master's clock.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use concert_domain::{DistributedLock, Failure, Fence, HeldLock, LockKey, LockOptions};
use concert_locking::guard::{Guard, GuardOps, Release};
use concert_locking::lease::{Lease, LeaseOps, later, owner_token};
use concert_locking::stats::{LockCounters, LockStats};
use deadpool_redis::redis::Script;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::keys::{Keys, Prefix};
use crate::scripts::{Call, DELETE, EXTEND, KEEP, NEXT_FENCE, delete, extend, millis};
use crate::settings::RedisLockSettings;

/// KEYS: lock, fence. ARGV: owner, lease ms, keep s. `{1, token}` when this
/// owner holds the lock (taken now, or by an earlier copy of this call),
/// else `{0, holder's PTTL}`.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NEXT_FENCE}{}",
        r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return {1, tonumber(redis.call('GET', KEYS[2]) or next_fence(KEYS[2], ARGV[3]))}
end
if holder then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, next_fence(KEYS[2], ARGV[3])}
"
    ))
});

/// KEYS: fence. ARGV: token, keep s. Raises the counter to `token` unless
/// it is already there or beyond. Returns 1.
static FLOOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// The longest one call to one master may take.
const MAX_CALL: Duration = Duration::from_millis(200);

/// The clock drift allowance of an acquisition with `lease`.
fn drift(lease: Duration) -> Duration {
    lease / 100 + Duration::from_millis(2)
}

/// A lock over N independent Redis masters. Cheap to clone.
#[derive(Clone)]
pub struct RedLock {
    inner: Arc<Inner>,
}

/// The masters and what every acquisition shares (public only as the
/// parameter of [`RedLockHeld`]).
pub struct Inner {
    masters: Vec<Connection>,
    prefix: Prefix,
    settings: RedisLockSettings,
    counters: LockCounters,
}

impl fmt::Debug for RedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedLock")
            .field("masters", &self.inner.masters.len())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// What one master answered to one call.
enum Answer<T> {
    Ok(T),
    /// No answer in time, or the master is unreachable.
    Down,
}

impl RedLock {
    /// Configures the masters; nothing is opened until the first command.
    /// Fails for fewer than three URLs, an invalid URL, or a prefix with
    /// `{` or `}`.
    pub fn new(
        urls: &[String],
        prefix: &str,
        settings: RedisLockSettings,
    ) -> Result<Self, Failure> {
        if urls.len() < 3 {
            return Err(Failure::unknown(anyhow!(
                "redis-redlock needs at least 3 independent Redis masters, got {}",
                urls.len()
            )));
        }
        let masters = urls
            .iter()
            .map(|url| Connection::new(url, &settings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                masters,
                prefix: Prefix::new(prefix)?,
                settings,
                counters: LockCounters::default(),
            }),
        })
    }

    /// How many masters must agree.
    pub fn quorum(&self) -> usize {
        self.inner.quorum()
    }

    pub fn stats(&self) -> LockStats {
        self.inner.counters.snapshot()
    }

    /// Deletes every key of this prefix on every master that answers;
    /// returns how many it deleted.
    pub async fn purge(&self) -> Result<u64, Failure> {
        let pattern = self.inner.prefix.key_pattern();
        let mut deleted = 0;
        for master in &self.inner.masters {
            deleted += master.delete_matching(&pattern).await?;
        }
        Ok(deleted)
    }

    /// Succeeds when a majority of the masters answer `PING`.
    pub async fn ping(&self) -> Result<(), Failure> {
        let answers = self
            .inner
            .each(MAX_CALL, |conn| async move { conn.ping().await })
            .await;
        let up = answers
            .iter()
            .filter(|a| matches!(a, Answer::Ok(())))
            .count();
        if up >= self.quorum() {
            Ok(())
        } else {
            Err(Failure::unavailable(anyhow!(
                "only {up} of {} Redis masters answer (need {})",
                self.inner.masters.len(),
                self.quorum()
            )))
        }
    }
}

impl Inner {
    fn quorum(&self) -> usize {
        self.masters.len() / 2 + 1
    }

    /// Runs `op` on every master at once, each bounded by `limit`.
    async fn each<'a, T, F, Fut>(&'a self, limit: Duration, op: F) -> Vec<Answer<T>>
    where
        F: Fn(&'a Connection) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'a,
    {
        let calls = self.masters.iter().map(|conn| {
            let call = op(conn);
            async move {
                match tokio::time::timeout(limit, call).await {
                    Ok(Ok(value)) => Answer::Ok(value),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "a Redis master did not answer");
                        Answer::Down
                    }
                    Err(_) => Answer::Down,
                }
            }
        });
        join_all(calls).await
    }

    /// Compare-and-delete on every master; how many deleted the lock.
    async fn release_all(&self, keys: &Keys, owner: &str) -> (usize, usize) {
        let call = delete(&keys.lock, owner);
        let answers = self
            .each(self.call_limit(None), |conn| {
                let call = &call;
                async move { conn.invoke::<i64>(&DELETE, call).await }
            })
            .await;
        let deleted = answers
            .iter()
            .filter(|a| matches!(a, Answer::Ok(1)))
            .count();
        let down = answers.iter().filter(|a| matches!(a, Answer::Down)).count();
        (deleted, down)
    }

    /// Compare-and-delete on the masters `which` only (best effort).
    async fn release_on(&self, keys: &Keys, owner: &str, which: &[usize]) {
        let call = delete(&keys.lock, owner);
        let limit = self.call_limit(None);
        join_all(which.iter().map(|&i| {
            let call = &call;
            let conn = &self.masters[i];
            async move {
                let _ = tokio::time::timeout(limit, conn.invoke::<i64>(&DELETE, call)).await;
            }
        }))
        .await;
    }

    fn call_limit(&self, lease: Option<Duration>) -> Duration {
        let mut limit = self.settings.response_timeout.min(MAX_CALL);
        if let Some(lease) = lease {
            limit = limit.min((lease / 4).max(Duration::from_millis(5)));
        }
        limit
    }
}

/// Awaits every future, concurrently, in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut handles: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[async_trait]
impl LeaseOps for Inner {
    /// Compare-and-extend on every master: renewed when a majority renewed;
    /// lost when so many masters say "not held" that no majority can have
    /// it; otherwise (masters down) an error, which the watchdog retries.
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure> {
        let call = extend(&self.prefix.keys(key).lock, owner, lease);
        let answers = self
            .each(self.call_limit(Some(lease)), |conn| {
                let call = &call;
                async move { conn.invoke::<i64>(&EXTEND, call).await }
            })
            .await;
        let renewed = answers
            .iter()
            .filter(|a| matches!(a, Answer::Ok(1)))
            .count();
        let refused = answers
            .iter()
            .filter(|a| matches!(a, Answer::Ok(0)))
            .count();
        if renewed >= self.quorum() {
            Ok(true)
        } else if refused > self.masters.len() - self.quorum() {
            Ok(false)
        } else {
            Err(Failure::unavailable(anyhow!(
                "{renewed} of {} Redis masters renewed the lease on {key}",
                self.masters.len()
            )))
        }
    }

    fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
        tokio::spawn(async move {
            let keys = self.prefix.keys(&key);
            let deadline = Instant::now() + self.settings.cleanup_horizon;
            let mut retry = 0;
            loop {
                let (_, down) = self.release_all(&keys, &owner).await;
                if down == 0 || Instant::now() >= deadline {
                    self.counters.cleanup();
                    return;
                }
                retry += 1;
                tokio::time::sleep(self.settings.spin.delay(retry)).await;
            }
        });
    }

    fn counters(&self) -> &LockCounters {
        &self.counters
    }
}

#[async_trait]
impl DistributedLock for RedLock {
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        let inner = &self.inner;
        let keys = inner.prefix.keys(key);
        let deadline = later(Instant::now(), options.wait);
        let n = inner.masters.len();
        let quorum = inner.quorum();
        let limit = inner.call_limit(Some(options.lease));
        let mut retry = 0u32;
        loop {
            inner.counters.attempt();
            let owner = owner_token();
            let started = Instant::now();
            let call = Call {
                keys: vec![keys.lock.clone(), keys.fence.clone()],
                args: vec![
                    owner.clone(),
                    millis(options.lease).to_string(),
                    KEEP.as_secs().to_string(),
                ],
            };
            let answers = inner
                .each(limit, |conn| {
                    let call = &call;
                    async move { conn.invoke::<(i64, u64)>(&ACQUIRE, call).await }
                })
                .await;
            let tokens: Vec<u64> = answers
                .iter()
                .filter_map(|a| match a {
                    Answer::Ok((1, token)) => Some(*token),
                    _ => None,
                })
                .collect();
            let down = answers.iter().filter(|a| matches!(a, Answer::Down)).count();
            let holder_lease = answers
                .iter()
                .filter_map(|a| match a {
                    Answer::Ok((0, pttl)) => Some(Duration::from_millis(*pttl)),
                    _ => None,
                })
                .min();
            let validity = options
                .lease
                .checked_sub(started.elapsed() + drift(options.lease));
            if let (true, Some(validity), Some(token)) = (
                tokens.len() >= quorum,
                validity,
                tokens.iter().max().copied(),
            ) {
                let floor = Call {
                    keys: vec![keys.fence.clone()],
                    args: vec![token.to_string(), KEEP.as_secs().to_string()],
                };
                let floors = inner
                    .each(limit, |conn| {
                        let floor = &floor;
                        async move { conn.invoke::<i64>(&FLOOR, floor).await }
                    })
                    .await;
                let floored = floors.iter().filter(|a| matches!(a, Answer::Ok(1))).count();
                if floored >= quorum && started.elapsed() < validity {
                    return Ok(Box::new(RedLockHeld::start(
                        inner.clone(),
                        Lease {
                            key: key.clone(),
                            owner,
                            fence: Fence::new(token),
                            // The holder's view of the lease ends before
                            // any master's, drift included.
                            lease: options.lease.saturating_sub(drift(options.lease)),
                            watchdog: options.watchdog,
                            started,
                            max_hold: inner.settings.max_hold,
                        },
                    )));
                }
            }
            // Not acquired: give back what this attempt took, on the
            // masters that granted it. A master that did not answer may or
            // may not have applied the attempt; it is not asked again (it
            // would cost another timeout per attempt, and a crowd's retries
            // would pile up on a dead master): what it may hold lapses with
            // the lease.
            let granted: Vec<usize> = answers
                .iter()
                .enumerate()
                .filter_map(|(i, a)| matches!(a, Answer::Ok((1, _))).then_some(i))
                .collect();
            if !granted.is_empty() {
                inner.release_on(&keys, &owner, &granted).await;
            }
            if down > n - quorum {
                return Err(Failure::unavailable(anyhow!(
                    "{down} of {n} Redis masters did not answer: no majority for {key}"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::LockTimeout);
            }
            retry = retry.saturating_add(1);
            inner.counters.wait();
            let mut pause = inner.settings.spin.delay(retry).min(deadline - now);
            if let Some(lease) = holder_lease {
                pause = pause.min(lease + Duration::from_millis(1));
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// One acquisition of a [`RedLock`].
pub type RedLockHeld = Guard<Inner>;

#[async_trait]
impl GuardOps for Inner {
    const NAME: &'static str = "RedLockHeld";

    /// Compare-and-delete on every master. [`Failure::LockLost`] unless a
    /// majority still had the lock; masters that did not answer are
    /// released in the background.
    async fn release(self: &Arc<Self>, key: &LockKey, owner: &str, fence: &Fence) -> Release {
        let (deleted, down) = self.release_all(&self.prefix.keys(key), owner).await;
        if down > 0 {
            self.clone().release_detached(key.clone(), owner.to_owned());
        }
        Release::Answered(if deleted >= self.quorum() && !fence.is_lost() {
            Ok(())
        } else if deleted + down >= self.quorum() && !fence.is_lost() {
            // Masters down: whether the lock was still held is unknown.
            Err(Failure::unavailable(anyhow!(
                "only {deleted} of {} Redis masters confirmed the release",
                self.masters.len()
            )))
        } else {
            Err(Failure::LockLost)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drift_allowance_is_a_hundredth_plus_two_milliseconds() {
        assert_eq!(drift(Duration::from_secs(10)), Duration::from_millis(102));
        assert_eq!(drift(Duration::ZERO), Duration::from_millis(2));
    }

    #[test]
    fn fewer_than_three_masters_are_refused() {
        let urls = vec!["redis://127.0.0.1:6379".to_owned(); 2];
        assert!(matches!(
            RedLock::new(&urls, "p", RedisLockSettings::default()),
            Err(Failure::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn join_all_keeps_the_order() {
        let out = join_all((0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            i
        }))
        .await;
        assert_eq!(out, [0, 1, 2, 3, 4]);
    }
}
