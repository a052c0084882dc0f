//! The lease machinery every lock adapter of this workspace shares: what
//! lives as long as a held lock.
//!
//! An adapter implements [`LeaseOps`] (compare-and-extend, release without
//! waiting, its counters); each of its guards holds one [`KeepAlive`] (the
//! adapters' guards are all [`crate::guard::Guard`], which starts it). The
//! keep-alive then guarantees, for every adapter alike:
//!
//! - with the watchdog on, the lease is renewed every third of it while the
//!   guard lives, for at most the adapter's maximum hold time;
//! - the guard's [`Fence`] is flagged lost (and `lost` counted) as soon as
//!   the holder learns that the lease is gone: a renewal found the lock
//!   taken or deleted, renewals failed until the lease ran out, or (without
//!   the watchdog) the lease ran out;
//! - a guard dropped without an explicit release is released in the
//!   background ([`LeaseOps::release_detached`]);
//! - a leaked guard (`std::mem::forget`) behaves like a crashed holder: its
//!   watchdog stops renewing after the maximum hold time and the lease runs
//!   out.
//!
//! Times are measured on the holder's monotonic clock from `started`, an
//! instant taken *before* the acquisition request was sent, so the holder's
//! view of the lease's end is never later than the lock service's.
//!
//! The in-process lock (`concert-inprocess`) and the Redis locks
//! (`concert-redis`) both build on this module.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use concert_domain::{Failure, Fence, LockKey};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::LockCounters;

/// The lease operations an adapter offers its keep-alive.
#[async_trait]
pub trait LeaseOps: Send + Sync + 'static {
    /// Compare-and-extend: sets the lease of `key` to `lease` from now if
    /// `owner` still holds it. `Ok(false)` when the lock is gone or taken;
    /// `Err` when the lock service could not answer (the watchdog retries).
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure>;

    /// Releases `key` if `owner` still holds it, without making the caller
    /// wait for the outcome (a guard dropped without release). Must never
    /// release another owner's lock.
    fn release_detached(self: Arc<Self>, key: LockKey, owner: String);

    fn counters(&self) -> &LockCounters;
}

/// `from + after`, saturating at a far future instead of overflowing (a
/// caller may pass `Duration::MAX` as a budget or a lease).
pub fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A random owner token: 128 bits as 32 lower-case hex digits. One per
/// acquisition, never reused.
pub fn owner_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// What a keep-alive needs to know about one acquisition.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: LockKey,
    /// The acquisition's owner token.
    pub owner: String,
    /// The fence handed to the holder; flagged lost by the keep-alive.
    pub fence: Fence,
    pub lease: Duration,
    /// Renew every third of the lease while held.
    pub watchdog: bool,
    /// No later than the moment the lock service started the lease (taken
    /// before the request that acquired it was sent).
    pub started: Instant,
    /// The watchdog stops renewing a lock held longer than this.
    pub max_hold: Duration,
}

/// The keep-alive an adapter keeps inside each of its guards. Dropping it
/// stops the watchdog; dropping it while still armed (the guard was
/// dropped, not released) releases the lock in the background.
pub struct KeepAlive {
    task: JoinHandle<()>,
    release_on_drop: Option<(Arc<dyn LeaseOps>, LockKey, String)>,
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlive")
            .field("running", &!self.task.is_finished())
            .field("armed", &self.release_on_drop.is_some())
            .finish()
    }
}

impl KeepAlive {
    /// Starts the watchdog (or, without it, the timer that flags the lease
    /// lost when it runs out) for one acquisition. Must be called inside a
    /// tokio runtime.
    pub fn start(ops: Arc<dyn LeaseOps>, lease: Lease) -> Self {
        let Lease {
            key,
            owner,
            fence,
            lease,
            watchdog,
            started,
            max_hold,
        } = lease;
        let task_ops = ops.clone();
        let task_key = key.clone();
        let task_owner = owner.clone();
        let task = tokio::spawn(async move {
            if watchdog {
                renew_until_lost(&*task_ops, &task_key, &task_owner, lease, started, max_hold)
                    .await;
            } else {
                tokio::time::sleep_until(later(started, lease)).await;
            }
            fence.mark_lost();
            task_ops.counters().lost();
            tracing::debug!(key = %task_key, "lock lease lost while the guard was held");
        });
        Self {
            task,
            release_on_drop: Some((ops, key, owner)),
        }
    }

    /// Stops the watchdog (an explicit release is starting). The
    /// release-on-drop stays armed until [`KeepAlive::disarm`], so a
    /// release that is cancelled half-way still releases in the background.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// The explicit release has answered: drop without releasing again.
    pub fn disarm(mut self) {
        self.release_on_drop = None;
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
        if let Some((ops, key, owner)) = self.release_on_drop.take() {
            tracing::debug!(%key, "lock guard dropped without release: releasing in the background");
            ops.release_detached(key, owner);
        }
    }
}

/// Renews every third of the lease; returns when the lease is lost: a
/// renewal found the lock gone, renewals failed until the lease ran out, or
/// the maximum hold time passed and the last lease ran out.
async fn renew_until_lost(
    ops: &dyn LeaseOps,
    key: &LockKey,
    owner: &str,
    lease: Duration,
    started: Instant,
    max_hold: Duration,
) {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut valid_until = later(started, lease);
    let mut next = later(started, every);
    loop {
        tokio::time::sleep_until(next.min(valid_until)).await;
        let now = Instant::now();
        if now >= valid_until {
            return;
        }
        if now.duration_since(started) >= max_hold {
            tracing::warn!(%key, ?max_hold, "lock held past the maximum hold time: renewals stop");
            tokio::time::sleep_until(valid_until).await;
            return;
        }
        match ops.extend(key, owner, lease).await {
            Ok(true) => {
                ops.counters().renewal();
                // `now` was taken before the request: never later than the
                // service's own renewal time.
                valid_until = later(now, lease);
                next = later(now, every);
            }
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(%key, error = %e, "lease renewal failed; retrying");
                next = Instant::now() + (every / 4).max(Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A lease service that answers from a script and logs detached
    /// releases.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<Vec<Result<bool, ()>>>,
        released: Mutex<Vec<String>>,
        counters: LockCounters,
    }

    #[async_trait]
    impl LeaseOps for Scripted {
        async fn extend(&self, _: &LockKey, _: &str, _: Duration) -> Result<bool, Failure> {
            let next = self.answers.lock().unwrap().pop().unwrap_or(Ok(true));
            next.map_err(|()| Failure::unavailable(anyhow::anyhow!("down")))
        }

        fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
            self.released.lock().unwrap().push(format!("{key} {owner}"));
        }

        fn counters(&self) -> &LockCounters {
            &self.counters
        }
    }

    fn lease(fence: &Fence, watchdog: bool, lease_ms: u64, max_hold_ms: u64) -> Lease {
        Lease {
            key: LockKey::new("k"),
            owner: "me".into(),
            fence: fence.clone(),
            lease: Duration::from_millis(lease_ms),
            watchdog,
            started: Instant::now(),
            max_hold: Duration::from_millis(max_hold_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_lease_until_max_hold() {
        let ops = Arc::new(Scripted::default());
        let fence = Fence::new(1);
        let keep = KeepAlive::start(ops.clone(), lease(&fence, true, 300, 1_000));
        tokio::time::sleep(Duration::from_millis(950)).await;
        assert!(!fence.is_lost());
        let renewals = ops.counters.snapshot().renewals;
        assert!((9..=10).contains(&renewals), "{renewals}");
        // past max_hold the renewals stop and the last lease runs out
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(fence.is_lost());
        assert_eq!(ops.counters.snapshot().lost, 1);
        keep.disarm();
        assert!(ops.released.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_finds_the_lock_gone_flags_the_fence() {
        let ops = Arc::new(Scripted::default());
        ops.answers.lock().unwrap().push(Ok(false));
        let fence = Fence::new(1);
        let _keep = KeepAlive::start(ops.clone(), lease(&fence, true, 300, 60_000));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(fence.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_are_retried_until_the_lease_runs_out() {
        let ops = Arc::new(Scripted::default());
        ops.answers.lock().unwrap().extend([Err(()); 50]);
        let fence = Fence::new(1);
        let _keep = KeepAlive::start(ops.clone(), lease(&fence, true, 300, 60_000));
        tokio::time::sleep(Duration::from_millis(290)).await;
        assert!(!fence.is_lost());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(fence.is_lost());
        assert_eq!(ops.counters.snapshot().renewals, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_watchdog_the_fence_is_lost_when_the_lease_ends() {
        let ops = Arc::new(Scripted::default());
        let fence = Fence::new(1);
        let _keep = KeepAlive::start(ops.clone(), lease(&fence, false, 300, 60_000));
        tokio::time::sleep(Duration::from_millis(299)).await;
        assert!(!fence.is_lost());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(fence.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_an_armed_keepalive_releases_in_the_background() {
        let ops = Arc::new(Scripted::default());
        let fence = Fence::new(1);
        let keep = KeepAlive::start(ops.clone(), lease(&fence, true, 300, 60_000));
        keep.stop();
        drop(keep);
        assert_eq!(*ops.released.lock().unwrap(), ["k me"]);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(
            !fence.is_lost(),
            "a stopped watchdog does not flag the fence"
        );
    }

    #[test]
    fn owner_tokens_are_distinct_hex_and_later_saturates() {
        let (a, b) = (owner_token(), owner_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
