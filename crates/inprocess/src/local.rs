//! The in-process lock (`local`): the lock port's whole contract inside one
//! process, for a single instance without Redis.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use concert_domain::{DistributedLock, Failure, Fence, HeldLock, LockKey, LockOptions};
use tokio::time::Instant;

use concert_locking::guard::{Guard, GuardOps, Release};
use concert_locking::lease::{Lease, LeaseOps, later, owner_token};
use concert_locking::stats::{LockCounters, LockStats};
use concert_locking::waiters::Waiters;

/// An in-process lock per key, with leases, watchdog, fencing tokens,
/// wake-one FIFO waiting and the counters of the Redis locks. Exclusive for
/// one process only. Cheap to clone (shared state).
///
/// Fencing tokens come from one counter for all keys, seeded with the wall
/// clock in microseconds and never lower than it: they strictly increase per
/// key, also across restarts of the process (storage keeps the last token it
/// accepted, so a counter restarting at 1 would refuse every write).
#[derive(Clone)]
pub struct LocalLock {
    inner: Arc<LocalInner>,
}

/// The shared state (public only as the parameter of [`LocalHeld`]).
pub struct LocalInner {
    holders: Mutex<HashMap<LockKey, Holder>>,
    last_token: AtomicU64,
    waiters: Arc<Waiters>,
    counters: Arc<LockCounters>,
    max_hold: Duration,
}

struct Holder {
    owner: String,
    until: Instant,
}

impl fmt::Debug for LocalLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLock")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for LocalLock {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLock {
    /// A lock with no key held; the watchdog renews for at most 60 s.
    pub fn new() -> Self {
        Self::with_max_hold(Duration::from_secs(60))
    }

    /// A lock whose watchdog stops renewing a lease held longer than
    /// `max_hold`.
    pub fn with_max_hold(max_hold: Duration) -> Self {
        let counters = Arc::new(LockCounters::default());
        Self {
            inner: Arc::new(LocalInner {
                holders: Mutex::new(HashMap::new()),
                last_token: AtomicU64::new(now_micros()),
                waiters: Arc::new(Waiters::new(counters.clone())),
                counters,
                max_hold,
            }),
        }
    }

    /// The counters since this lock was created.
    pub fn stats(&self) -> LockStats {
        self.inner.counters.snapshot()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl LocalInner {
    fn holders(&self) -> MutexGuard<'_, HashMap<LockKey, Holder>> {
        // Every critical section is a lookup plus an insert or remove: a
        // panic cannot leave the map half-updated.
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_token(&self) -> u64 {
        let floor = now_micros();
        let previous = self
            .last_token
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(last.saturating_add(1).max(floor))
            })
            .unwrap_or_else(|last| last);
        previous.saturating_add(1).max(floor)
    }

    /// Removes the lock if `owner` holds it and its lease has not run out;
    /// wakes one waiter whenever the key became free.
    fn release_now(&self, key: &LockKey, owner: &str) -> bool {
        let mut holders = self.holders();
        let Some(holder) = holders.get(key) else {
            return false;
        };
        let expired = holder.until <= Instant::now();
        let released = holder.owner == owner && !expired;
        if released || expired {
            holders.remove(key);
            drop(holders);
            self.waiters.released(key.as_str());
        }
        released
    }
}

#[async_trait]
impl LeaseOps for LocalInner {
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure> {
        let mut holders = self.holders();
        let now = Instant::now();
        Ok(match holders.get_mut(key) {
            Some(holder) if holder.owner == owner && holder.until > now => {
                holder.until = later(now, lease);
                true
            }
            _ => false,
        })
    }

    fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
        self.release_now(&key, &owner);
    }

    fn counters(&self) -> &LockCounters {
        &self.counters
    }
}

#[async_trait]
impl DistributedLock for LocalLock {
    /// Waits in FIFO order, woken one at a time by releases, each wait also
    /// bounded by the holder's remaining lease and the budget.
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        let inner = &self.inner;
        let owner = owner_token();
        let deadline = later(Instant::now(), options.wait);
        let ticket = inner.waiters.register(key.as_str(), &owner);
        loop {
            inner.counters.attempt();
            let holder_left = {
                let mut holders = inner.holders();
                let now = Instant::now();
                match holders.get(key) {
                    Some(holder) if holder.until > now => holder.until - now,
                    _ => {
                        holders.insert(
                            key.clone(),
                            Holder {
                                owner: owner.clone(),
                                until: later(now, options.lease),
                            },
                        );
                        let token = inner.next_token();
                        drop(holders);
                        ticket.done();
                        return Ok(Box::new(LocalHeld::start(
                            inner.clone(),
                            Lease {
                                key: key.clone(),
                                owner,
                                fence: Fence::new(token),
                                lease: options.lease,
                                watchdog: options.watchdog,
                                started: now,
                                max_hold: inner.max_hold,
                            },
                        )));
                    }
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::LockTimeout);
            }
            inner.counters.wait();
            ticket.rearm();
            let pause = (deadline - now).min(holder_left + Duration::from_millis(1));
            ticket.wait(pause).await;
        }
    }
}

/// One acquisition of a [`LocalLock`].
pub type LocalHeld = Guard<LocalInner>;

#[async_trait]
impl GuardOps for LocalInner {
    const NAME: &'static str = "LocalHeld";

    async fn release(self: &Arc<Self>, key: &LockKey, owner: &str, _: &Fence) -> Release {
        Release::Answered(if self.release_now(key, owner) {
            Ok(())
        } else {
            Err(Failure::LockLost)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(lease_ms: u64, wait_ms: u64) -> LockOptions {
        LockOptions {
            lease: Duration::from_millis(lease_ms),
            wait: Duration::from_millis(wait_ms),
            watchdog: false,
        }
    }

    #[tokio::test]
    async fn tokens_grow_per_key_and_start_from_the_clock() {
        let lock = LocalLock::new();
        let key = LockKey::new("seat:1:1");
        let before = now_micros();
        let a = lock.acquire(&key, options(1000, 0)).await.unwrap();
        let first = a.fence().token();
        assert!(first >= before);
        a.release().await.unwrap();
        let b = lock.acquire(&key, options(1000, 0)).await.unwrap();
        assert!(b.fence().token() > first);
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_held_key_times_out_and_other_keys_are_free() {
        let lock = LocalLock::new();
        let held = lock
            .acquire(&LockKey::new("a"), options(10_000, 0))
            .await
            .unwrap();
        assert!(matches!(
            lock.acquire(&LockKey::new("a"), options(10_000, 30)).await,
            Err(Failure::LockTimeout)
        ));
        let other = lock
            .acquire(&LockKey::new("b"), options(10_000, 0))
            .await
            .unwrap();
        other.release().await.unwrap();
        held.release().await.unwrap();
        let stats = lock.stats();
        assert_eq!((stats.attempts, stats.waits), (4, 1), "{stats:?}");
    }

    #[tokio::test]
    async fn unbounded_durations_do_not_overflow() {
        let lock = LocalLock::new();
        let unbounded = LockOptions {
            lease: Duration::MAX,
            wait: Duration::MAX,
            watchdog: true,
        };
        let guard = lock.acquire(&LockKey::new("k"), unbounded).await.unwrap();
        guard.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_guard_is_released_at_once() {
        let lock = LocalLock::new();
        let key = LockKey::new("k");
        drop(lock.acquire(&key, options(60_000, 0)).await.unwrap());
        let again = lock.acquire(&key, options(60_000, 0)).await.unwrap();
        again.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_release_wakes_the_next_waiter() {
        let lock = LocalLock::new();
        let key = LockKey::new("k");
        let holder = lock.acquire(&key, options(60_000, 0)).await.unwrap();
        let waiter = {
            let (lock, key) = (lock.clone(), key.clone());
            tokio::spawn(async move { lock.acquire(&key, options(60_000, 30_000)).await })
        };
        while lock.stats().waits < 1 {
            tokio::task::yield_now().await;
        }
        holder.release().await.unwrap();
        let next = waiter.await.unwrap().unwrap();
        next.release().await.unwrap();
        let stats = lock.stats();
        assert_eq!((stats.attempts, stats.wakeups), (3, 1), "{stats:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaked_guard_is_renewed_only_up_to_the_maximum_hold() {
        let lock = LocalLock::with_max_hold(Duration::from_millis(400));
        let key = LockKey::new("k");
        let watched = LockOptions {
            watchdog: true,
            ..options(300, 0)
        };
        let leaked = lock.acquire(&key, watched).await.unwrap();
        let fence = leaked.fence().clone();
        std::mem::forget(leaked);
        // renewed at 100, 200 and 300 ms; not at 400 (the maximum hold):
        // the last lease ends at 600 ms
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert!(!fence.is_lost(), "renewed while within the maximum hold");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(fence.is_lost());
        let next = lock.acquire(&key, options(60_000, 0)).await.unwrap();
        next.release().await.unwrap();
        assert_eq!(lock.stats().lost, 1);
    }

    #[tokio::test]
    async fn an_expired_lease_is_lost_and_does_not_free_the_next_holder() {
        let lock = LocalLock::new();
        let key = LockKey::new("k");
        let stale = lock.acquire(&key, options(20, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(stale.fence().is_lost());
        let next = lock.acquire(&key, options(60_000, 0)).await.unwrap();
        assert!(matches!(stale.release().await, Err(Failure::LockLost)));
        // still held by the next holder
        assert!(matches!(
            lock.acquire(&key, options(60_000, 0)).await,
            Err(Failure::LockTimeout)
        ));
        next.release().await.unwrap();
        assert_eq!(lock.stats().lost, 1);
    }
}
