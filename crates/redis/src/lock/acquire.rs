//! [`RedisLock`]: the acquire policies (`redis-simple`, `redis-spin`,
//! `redis-pubsub`) and [`RedisHeld`], the guard they hand out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use concert_domain::{DistributedLock, Failure, Fence, HeldLock, LockKey, LockOptions};
use concert_locking::guard::{Guard, GuardOps, Release};
use concert_locking::lease::{Lease, later, owner_token};
use concert_locking::stats::LockStats;
use concert_locking::waiters::Wake;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::lock::scripts::{Attempt, Queue, Released};
use crate::lock::shared::Inner;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Simple,
    Spin,
    PubSub,
}

/// One kind of Redis lock (see [`crate::RedisLocks::simple`], `spin`,
/// `pubsub`); implements [`DistributedLock`]:
///
/// - simple: one attempt; if the key is taken, [`Failure::LockTimeout`] at
///   once (the wait budget is not used).
/// - spin: retries with exponential backoff and full jitter, each sleep
///   also bounded by the holder's remaining lease and the budget.
/// - pub/sub: the first attempt that finds the key taken also joins the
///   key's waiter queue in Redis (the process's one subscription is
///   already active). The releaser then hands the lock straight to the
///   first waiter whose budget has not run out, in its release script: the
///   waiter owns the lock, with its own lease and a new fencing token, as
///   soon as the message reaches it, without another round trip. A waiter
///   also retries when woken by a plain release (one per release), when the
///   holder's remaining lease has passed (a lost message costs latency,
///   never liveness), and, while the subscriber is down, by backoff polling.
///   When its budget runs out it leaves the queue in one last attempt (and
///   takes the lock if it was handed over just then).
///
/// Every kind: a random owner token per acquisition; the guard's fencing
/// token is greater than every earlier acquisition's of the key; the lease
/// is renewed every third of it while the guard lives (with `watchdog`); a
/// guard dropped without release is released in the background; an
/// acquisition that gives up after a timeout or a dropped connection (its
/// attempt may still be applied when Redis resumes), or is cancelled, is
/// cleaned up in the background as soon as Redis answers. An attempt whose
/// connection turned out closed is retried once on a new connection.
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<Inner>,
    policy: Policy,
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("policy", &self.policy)
            .field("prefix", &self.inner.core.prefix)
            .finish()
    }
}

/// An acquisition that may have left a trace in Redis (an attempt in
/// flight, a place in the queue): dropped while armed (an error, a
/// cancellation), it hands the clean-up to the background worker.
struct InDoubt<'a> {
    inner: &'a Inner,
    keys: &'a Keys,
    owner: &'a str,
    armed: bool,
}

impl Drop for InDoubt<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.core.abandon(self.keys, self.owner);
        }
    }
}

impl RedisLock {
    pub(crate) fn new(inner: Arc<Inner>, policy: Policy) -> Self {
        Self { inner, policy }
    }

    /// The counters shared by every handle of the same `RedisLocks`.
    pub fn stats(&self) -> LockStats {
        self.inner.core.counters.snapshot()
    }

    fn held(
        &self,
        key: &LockKey,
        owner: String,
        token: u64,
        options: LockOptions,
        started: Instant,
    ) -> Box<dyn HeldLock> {
        Box::new(RedisHeld::start(
            self.inner.clone(),
            Lease {
                key: key.clone(),
                owner,
                fence: Fence::new(token),
                lease: options.lease,
                watchdog: options.watchdog,
                started,
                max_hold: self.inner.core.settings.max_hold,
            },
        ))
    }

    /// How long a waiter sleeps before its next attempt.
    fn pause(&self, retry: u32, remaining: Duration, holder_lease: Option<Duration>) -> Duration {
        let core = &self.inner.core;
        let mut pause = remaining;
        if let Some(lease) = holder_lease {
            pause = pause.min(lease + Duration::from_millis(1));
        }
        let polling = self.policy == Policy::Spin || !self.inner.subscriber_up();
        if polling {
            pause = pause.min(core.settings.spin.delay(retry));
        }
        pause
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    async fn acquire(
        &self,
        key: &LockKey,
        options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        let core = &self.inner.core;
        let keys = core.prefix.keys(key);
        let owner = owner_token();
        let deadline = later(Instant::now(), options.wait);
        let ticket =
            (self.policy == Policy::PubSub).then(|| core.waiters.register(&keys.channel, &owner));
        let mut doubt = InDoubt {
            inner: &self.inner,
            keys: &keys,
            owner: &owner,
            armed: false,
        };
        let mut queued = false;
        let mut retry = 0u32;
        loop {
            let sent = Instant::now();
            let budget = deadline.saturating_duration_since(sent);
            let queue = match self.policy {
                Policy::PubSub if !budget.is_zero() => Queue::Join,
                Policy::PubSub => Queue::Leave,
                Policy::Simple | Policy::Spin => Queue::Never,
            };
            // Until its reply, the attempt may be applied at any time.
            doubt.armed = true;
            let (attempt, reached) = core
                .attempt(&keys, &owner, options.lease, queue, budget)
                .await;
            let attempt = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    doubt.armed = queued || reached;
                    return Err(e);
                }
            };
            let holder_lease = match attempt {
                Attempt::Acquired(token) => {
                    doubt.armed = false;
                    drop(doubt);
                    if let Some(ticket) = ticket {
                        ticket.done();
                    }
                    return Ok(self.held(key, owner, token, options, sent));
                }
                Attempt::Abandoned => {
                    return Err(Failure::unknown(anyhow!(
                        "lock acquisition on {key} found its own tombstone"
                    )));
                }
                Attempt::Held(holder_lease) => holder_lease,
            };
            queued = queue == Queue::Join;
            doubt.armed = queued;
            let now = Instant::now();
            if self.policy == Policy::Simple || (!queued && now >= deadline) {
                return Err(Failure::LockTimeout);
            }
            if now >= deadline {
                // the budget ran out during the attempt: leave the queue in
                // one last attempt
                continue;
            }
            retry = retry.saturating_add(1);
            core.counters.wait();
            let pause = self.pause(retry, deadline - now, holder_lease);
            let wake = match &ticket {
                None => {
                    tokio::time::sleep(pause).await;
                    Wake::TimedOut
                }
                Some(ticket) => {
                    ticket.rearm();
                    ticket.wait(pause).await
                }
            };
            if let Wake::Handed(token) = wake {
                // The hand-over happened after the attempt sent at `sent`
                // had found the lock held by another: the lease started
                // later than `sent`.
                doubt.armed = false;
                drop(doubt);
                if let Some(ticket) = ticket {
                    ticket.done();
                }
                return Ok(self.held(key, owner, token, options, sent));
            }
        }
    }
}

/// One acquisition of a [`RedisLock`]: the key, the owner token, the fence
/// and the keep-alive.
pub type RedisHeld = Guard<Inner>;

#[async_trait]
impl GuardOps for Inner {
    const NAME: &'static str = "RedisHeld";

    /// Compare-and-release in one round trip, handing the lock to the next
    /// waiter if one is queued. A release that fails (Redis unreachable)
    /// is retried in the background.
    async fn release(self: &Arc<Self>, key: &LockKey, owner: &str, _: &Fence) -> Release {
        match self.core.release(&self.core.prefix.keys(key), owner).await {
            Ok(Released::NotHeld) => Release::Answered(Err(Failure::LockLost)),
            Ok(Released::Freed | Released::HandedOver) => Release::Answered(Ok(())),
            Err(e) => Release::Unanswered(e),
        }
    }
}
