//! [`Guard`]: the one guard type of every lock adapter built on
//! [`crate::lease`] (the in-process lock, the Redis locks, the RedLock).
//!
//! A guard is the key, the fence, the owner token, the [`KeepAlive`] and
//! the adapter's shared state (an `Arc` of its [`GuardOps`]). It
//! implements [`HeldLock`] once for all of them; what differs, the explicit
//! release itself, is the adapter's [`GuardOps::release`]. The rules around
//! it are the guard's:
//!
//! - the watchdog stops before the release is sent;
//! - the release-on-drop stays armed until the lock service has answered,
//!   so a release that is cancelled half-way, or that gets no answer
//!   ([`Release::Unanswered`]), is retried in the background by
//!   [`LeaseOps::release_detached`];
//! - once it answered ([`Release::Answered`]) the release-on-drop is
//!   disarmed and the guard's release returns the answer.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use concert_domain::{Failure, Fence, HeldLock, LockKey};

use crate::lease::{KeepAlive, Lease, LeaseOps};

/// How an adapter's explicit release ended.
#[derive(Debug)]
pub enum Release {
    /// The lock service answered: `Ok` when the lock was this owner's and is
    /// released, else the failure to report (typically
    /// [`Failure::LockLost`]). The release-on-drop is disarmed.
    Answered(Result<(), Failure>),
    /// No answer (the lock service is unreachable, the reply is unreadable):
    /// the release-on-drop stays armed and releases in the background; the
    /// guard's release reports this failure.
    Unanswered(Failure),
}

/// The adapter side of a [`Guard`].
#[async_trait]
pub trait GuardOps: LeaseOps + Sized {
    /// The guard's name in its `Debug` output (`RedisHeld`, ...).
    const NAME: &'static str;

    /// Releases `owner`'s lock on `key` (the watchdog has stopped). `fence`
    /// tells whether the holder already knows the lease is lost.
    async fn release(self: &Arc<Self>, key: &LockKey, owner: &str, fence: &Fence) -> Release;
}

/// One acquisition of an adapter `O`: the key, the owner token, the fence
/// and the keep-alive (see the module docs).
pub struct Guard<O: GuardOps> {
    key: LockKey,
    fence: Fence,
    owner: String,
    keepalive: KeepAlive,
    ops: Arc<O>,
}

impl<O: GuardOps> Guard<O> {
    /// The guard of the acquisition `lease` describes; starts its
    /// keep-alive (inside a tokio runtime).
    pub fn start(ops: Arc<O>, lease: Lease) -> Self {
        let (key, fence, owner) = (lease.key.clone(), lease.fence.clone(), lease.owner.clone());
        let keepalive = KeepAlive::start(ops.clone(), lease);
        Self {
            key,
            fence,
            owner,
            keepalive,
            ops,
        }
    }
}

impl<O: GuardOps> fmt::Debug for Guard<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(O::NAME)
            .field("key", &self.key)
            .field("fence", &self.fence.token())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<O: GuardOps> HeldLock for Guard<O> {
    fn key(&self) -> &LockKey {
        &self.key
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    async fn release(self: Box<Self>) -> Result<(), Failure> {
        let Guard {
            key,
            fence,
            owner,
            keepalive,
            ops,
        } = *self;
        keepalive.stop();
        match ops.release(&key, &owner, &fence).await {
            Release::Answered(answer) => {
                keepalive.disarm();
                answer
            }
            // dropped armed: released in the background
            Release::Unanswered(failure) => Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LockCounters;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::time::Instant;

    /// An adapter whose release answers `answer` (or does not answer), and
    /// which logs its background releases.
    struct Scripted {
        answer: Mutex<Option<Release>>,
        detached: Mutex<Vec<String>>,
        counters: LockCounters,
    }

    #[async_trait]
    impl LeaseOps for Scripted {
        async fn extend(&self, _: &LockKey, _: &str, _: Duration) -> Result<bool, Failure> {
            Ok(true)
        }

        fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
            self.detached.lock().unwrap().push(format!("{key} {owner}"));
        }

        fn counters(&self) -> &LockCounters {
            &self.counters
        }
    }

    #[async_trait]
    impl GuardOps for Scripted {
        const NAME: &'static str = "ScriptedHeld";

        async fn release(self: &Arc<Self>, _: &LockKey, _: &str, _: &Fence) -> Release {
            self.answer.lock().unwrap().take().unwrap()
        }
    }

    fn guard(answer: Release) -> (Arc<Scripted>, Box<dyn HeldLock>) {
        let ops = Arc::new(Scripted {
            answer: Mutex::new(Some(answer)),
            detached: Mutex::default(),
            counters: LockCounters::default(),
        });
        let lease = Lease {
            key: LockKey::new("k"),
            owner: "me".into(),
            fence: Fence::new(7),
            lease: Duration::from_secs(60),
            watchdog: true,
            started: Instant::now(),
            max_hold: Duration::from_secs(60),
        };
        (ops.clone(), Box::new(Guard::start(ops, lease)))
    }

    #[tokio::test]
    async fn an_answered_release_disarms_and_returns_the_answer() {
        let (ops, held) = guard(Release::Answered(Ok(())));
        assert_eq!((held.key().as_str(), held.fence().token()), ("k", 7));
        assert!(format!("{held:?}").starts_with("ScriptedHeld"));
        held.release().await.unwrap();
        let (ops2, held) = guard(Release::Answered(Err(Failure::LockLost)));
        assert!(matches!(held.release().await, Err(Failure::LockLost)));
        assert!(ops.detached.lock().unwrap().is_empty());
        assert!(ops2.detached.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unanswered_release_or_a_drop_releases_in_the_background() {
        let down = Failure::unavailable(anyhow::anyhow!("down"));
        let (ops, held) = guard(Release::Unanswered(down));
        assert!(matches!(held.release().await, Err(Failure::Unavailable(_))));
        assert_eq!(*ops.detached.lock().unwrap(), ["k me"]);
        let (ops, held) = guard(Release::Answered(Ok(())));
        drop(held);
        assert_eq!(*ops.detached.lock().unwrap(), ["k me"]);
    }
}
