//! [`RedisLocks`]: the Redis lock adapters of one process, and what their
//! handles, guards and background tasks share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use concert_domain::Failure;
use concert_locking::stats::LockStats;
use tokio::time::Instant;

use crate::lock::acquire::{Policy, RedisLock};
use crate::lock::cleanup;
use crate::lock::shared::{Core, Inner};
use crate::lock::subscriber::Subscriber;
use crate::settings::RedisLockSettings;

/// The Redis lock adapters of one process: one command connection, one
/// subscriber connection and its dispatcher, one clean-up worker, the key
/// prefix and the counters, shared by every handle ([`RedisLocks::simple`],
/// [`RedisLocks::spin`], [`RedisLocks::pubsub`]). Cheap to clone; the
/// background tasks stop when the last clone, handle and guard are gone.
#[derive(Clone)]
pub struct RedisLocks {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocks")
            .field("prefix", &self.inner.core.prefix)
            .field("subscribed", &self.is_subscribed())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Connects and subscribes now. Fails promptly (within the connect and
    /// response timeouts) with [`Failure::Unavailable`] when Redis does not
    /// answer, and with [`Failure::Unknown`] for an invalid URL or a prefix
    /// containing `{` or `}`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        settings: RedisLockSettings,
    ) -> Result<RedisLocks, Failure> {
        let core = Core::new(url, prefix, settings)?;
        core.conn.ping().await?;
        let subscriber = Subscriber::connect(
            url,
            core.prefix.release_pattern(),
            core.waiters.clone(),
            settings,
        )
        .await?;
        Ok(Self::assemble(core, subscriber))
    }

    /// Like [`RedisLocks::connect`] but without contacting Redis: the
    /// command connection opens on first use and the subscriber connects
    /// (and reconnects) in the background. Fails only for an invalid URL or
    /// prefix. Lock calls made while Redis is down fail with
    /// [`Failure::Unavailable`].
    pub async fn connect_lazy(
        url: &str,
        prefix: &str,
        settings: RedisLockSettings,
    ) -> Result<RedisLocks, Failure> {
        let core = Core::new(url, prefix, settings)?;
        let subscriber = Subscriber::lazy(
            url,
            core.prefix.release_pattern(),
            core.waiters.clone(),
            settings,
        )?;
        Ok(Self::assemble(core, subscriber))
    }

    fn assemble(core: Core, subscriber: Subscriber) -> RedisLocks {
        let core = Arc::new(core);
        let cleaner = tokio::spawn(cleanup::run(core.clone()));
        RedisLocks {
            inner: Arc::new(Inner {
                core,
                subscriber,
                cleaner,
            }),
        }
    }

    /// `redis-simple`: one attempt; a taken key fails at once with
    /// [`Failure::LockTimeout`].
    pub fn simple(&self) -> RedisLock {
        RedisLock::new(self.inner.clone(), Policy::Simple)
    }

    /// `redis-spin`: retries with jittered exponential backoff.
    pub fn spin(&self) -> RedisLock {
        RedisLock::new(self.inner.clone(), Policy::Spin)
    }

    /// `redis-pubsub`: waits in the key's queue and is handed the lock by
    /// the releaser.
    pub fn pubsub(&self) -> RedisLock {
        RedisLock::new(self.inner.clone(), Policy::PubSub)
    }

    /// The counters of every handle of this instance since it was created.
    pub fn stats(&self) -> LockStats {
        self.inner.core.counters.snapshot()
    }

    /// True while the subscriber connection is up and subscribed (while it
    /// is down, pub/sub waiters fall back to backoff polling).
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscriber.is_subscribed()
    }

    /// Waits (at most `max`) until the background clean-up has no job
    /// queued or running, so that a [`Self::purge`] after it is not
    /// followed by a late release or tombstone; true when it settled.
    pub async fn settle(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        while !self.inner.core.cleanup.is_idle() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Deletes every key under this prefix (locks, fence counters, queues,
    /// tombstones) and returns how many it deleted. For tests and for
    /// retiring a prefix: never while its locks are in use (holders would
    /// lose their locks and fences could go backwards).
    pub async fn purge(&self) -> Result<u64, Failure> {
        let core = &self.inner.core;
        core.conn.delete_matching(&core.prefix.key_pattern()).await
    }

    /// One `PING` over the command connection, bounded by the response
    /// timeout (for readiness checks).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.inner
            .core
            .conn
            .ping()
            .await
            .map_err(anyhow::Error::from)
    }

    /// The key prefix.
    pub fn prefix(&self) -> String {
        self.inner.core.prefix.to_string()
    }
}
