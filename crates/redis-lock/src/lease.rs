//! What lives as long as a guard: the lease watchdog (or, without it, the
//! timer that flags the lease as lost when it runs out) and the
//! release-on-drop hook. Shared by the Redis and the local adapter.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use concert_domain::{LockError, LockGuard, LockKey};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::Counters;

/// The lease operations an adapter offers its keep-alive.
#[async_trait]
pub(crate) trait LeaseOps: Send + Sync + 'static {
    /// Compare-and-extend: sets the lease of `key` to `lease` from now if
    /// `owner` still holds it. `Ok(false)` when the lock is gone or taken.
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, LockError>;

    /// Releases `key` if `owner` still holds it, without waiting for the
    /// outcome (a guard dropped without release).
    fn release_detached(self: Arc<Self>, key: LockKey, owner: String);

    fn counters(&self) -> &Counters;
}

/// `from + after`, saturating at a far future instead of overflowing (a
/// caller may pass `Duration::MAX` as a budget or lease).
pub(crate) fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A random owner token (128 bits, hex).
pub(crate) fn owner_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The keep-alive an adapter attaches to each guard. Dropping it stops the
/// watchdog; dropping it while still armed (the guard was dropped, not
/// released) releases the lock in the background. A guard that is leaked
/// (`std::mem::forget`) never drops it: the lock then behaves like one whose
/// holder crashed (without watchdog the lease runs out; with the watchdog,
/// renewals stop after the adapter's maximum hold time).
pub(crate) struct KeepAlive {
    task: JoinHandle<()>,
    release_on_drop: Option<(Arc<dyn LeaseOps>, LockKey, String)>,
}

impl KeepAlive {
    /// Starts the watchdog (or the lost-lease timer) for a lock acquired at
    /// `started` (taken before the acquisition request was sent, so the
    /// local view of the lease end is never later than the server's).
    pub fn start(
        ops: Arc<dyn LeaseOps>,
        guard: &LockGuard,
        lease: Duration,
        watchdog: bool,
        started: Instant,
        max_hold: Duration,
    ) -> Self {
        let key = guard.key().clone();
        let owner = guard.owner().to_owned();
        let fence = guard.fence().clone();
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

    /// Attaches `self` to `guard`.
    pub fn attach(self, guard: LockGuard) -> LockGuard {
        guard.with_keepalive(Box::new(self))
    }

    /// Takes the keep-alive off a guard being released explicitly and stops
    /// its watchdog; the release-on-drop stays armed until
    /// [`KeepAlive::disarm`].
    pub fn take(guard: &mut LockGuard) -> Option<KeepAlive> {
        let keepalive = *guard.take_keepalive()?.downcast::<KeepAlive>().ok()?;
        keepalive.task.abort();
        Some(keepalive)
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
