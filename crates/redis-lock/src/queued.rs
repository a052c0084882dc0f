//! [`Queued`]: a process-local queue in front of a shared lock.
//!
//! When many requests of one process want the same key (a crowd on one
//! seat, one user's concurrent payments), only the head of the local queue
//! talks to Redis: the others wait on an in-process lock and are handed the
//! turn by a local wake-up instead of a failed Redis attempt, a pub/sub
//! message and another attempt. Across processes nothing changes: each
//! process's head contends in Redis as before, so the lock is exactly as
//! exclusive as the shared lock alone.
//!
//! The local stage is a [`LocalLock`] with the same options, so it keeps
//! the contract: its lease runs out for a leaked guard, its watchdog renews
//! while the guard lives, a dropped guard is released in the background.
//! The fencing token and the lost flag are the shared lock's.

use std::any::Any;

use async_trait::async_trait;
use concert_domain::{DistributedLock, LockError, LockGuard, LockKey, LockOptions};
use tokio::time::Instant;

use crate::local::LocalLock;

/// A [`DistributedLock`] that queues locally on `local` before acquiring
/// `shared`.
#[derive(Debug, Clone)]
pub struct Queued<L> {
    local: LocalLock,
    shared: L,
}

impl<L> Queued<L> {
    pub fn new(local: LocalLock, shared: L) -> Self {
        Self { local, shared }
    }

    /// The shared lock behind the queue.
    pub fn shared(&self) -> &L {
        &self.shared
    }
}

/// What the returned guard keeps alive: the shared lock's own keep-alive and
/// the local turn.
struct Turn {
    shared: Option<Box<dyn Any + Send + Sync>>,
    local: LockGuard,
}

#[async_trait]
impl<L: DistributedLock> DistributedLock for Queued<L> {
    async fn acquire(&self, key: &LockKey, options: LockOptions) -> Result<LockGuard, LockError> {
        let started = Instant::now();
        let local = self.local.acquire(key, options).await?;
        let remaining = options.wait.saturating_sub(started.elapsed());
        let shared = self
            .shared
            .acquire(
                key,
                LockOptions {
                    wait: remaining,
                    ..options
                },
            )
            .await;
        match shared {
            Ok(mut guard) => {
                let turn = Turn {
                    shared: guard.take_keepalive(),
                    local,
                };
                Ok(guard.with_keepalive(Box::new(turn)))
            }
            Err(e) => {
                let _ = self.local.release(local).await;
                Err(e)
            }
        }
    }

    async fn release(&self, mut guard: LockGuard) -> Result<(), LockError> {
        let turn = guard
            .take_keepalive()
            .and_then(|keep| keep.downcast::<Turn>().ok());
        let local = match turn {
            Some(turn) => {
                let Turn { shared, local } = *turn;
                if let Some(shared) = shared {
                    guard = guard.with_keepalive(shared);
                }
                Some(local)
            }
            None => None,
        };
        // shared first: the next local waiter's shared attempt then succeeds
        let released = self.shared.release(guard).await;
        if let Some(local) = local
            && let Err(e) = self.local.release(local).await
        {
            tracing::debug!(error = %e, "local turn already expired");
        }
        released
    }
}
