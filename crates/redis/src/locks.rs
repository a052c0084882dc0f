//! [`RedisLocks`]: the Redis lock adapters of one process, and what their
//! handles, guards and background tasks share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use concert_domain::{Failure, LockKey};
use concert_locking::lease::LeaseOps;
use concert_locking::stats::{LockCounters, LockStats};
use concert_locking::waiters::Waiters;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cleanup::{self, Cleanup, Job};
use crate::connection::Connection;
use crate::keys::{Keys, Prefix};
use crate::lock::{Policy, RedisLock};
use crate::scripts::{self, Attempt, Queue, Released};
use crate::settings::RedisLockSettings;
use crate::subscriber::Subscriber;

/// The Redis lock adapters of one process: one command connection, one
/// subscriber connection and its dispatcher, one clean-up worker, the key
/// prefix and the counters, shared by every handle ([`RedisLocks::simple`],
/// [`RedisLocks::spin`], [`RedisLocks::pubsub`]). Cheap to clone; the
/// background tasks stop when the last clone, handle and guard are gone.
#[derive(Clone)]
pub struct RedisLocks {
    pub(crate) inner: Arc<Inner>,
}

/// What the handles and guards hold.
pub(crate) struct Inner {
    pub core: Arc<Core>,
    subscriber: Subscriber,
    cleaner: JoinHandle<()>,
}

impl Inner {
    /// True while the subscriber connection is up and subscribed.
    pub fn subscriber_up(&self) -> bool {
        self.subscriber.is_subscribed()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cleaner.abort();
    }
}

/// What the operations and the background tasks share.
pub(crate) struct Core {
    pub conn: Connection,
    pub prefix: Prefix,
    pub counters: Arc<LockCounters>,
    pub waiters: Arc<Waiters>,
    pub cleanup: Cleanup,
    pub settings: RedisLockSettings,
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

impl Core {
    fn new(url: &str, prefix: &str, settings: RedisLockSettings) -> Result<Self, Failure> {
        let prefix = Prefix::new(prefix)?;
        let conn = Connection::new(url, &settings)?;
        let counters = Arc::new(LockCounters::default());
        Ok(Self {
            conn,
            prefix,
            waiters: Arc::new(Waiters::new(counters.clone())),
            counters,
            cleanup: Cleanup::default(),
            settings,
        })
    }

    /// One acquire attempt (counted); also tells whether a failed attempt
    /// may have reached Redis.
    pub async fn attempt(
        &self,
        keys: &Keys,
        owner: &str,
        lease: Duration,
        queue: Queue,
        wait: Duration,
    ) -> (Result<Attempt, Failure>, bool) {
        self.counters.attempt();
        let call = scripts::acquire(keys, owner, lease, queue, wait);
        let (reply, sent) = self.conn.invoke_noting(&scripts::ACQUIRE, &call).await;
        (reply.and_then(Attempt::from_reply), sent)
    }

    /// Compare-and-release (or hand-over).
    pub async fn release(&self, keys: &Keys, owner: &str) -> Result<Released, Failure> {
        let call = scripts::release(keys, owner);
        let released = Released::from_reply(self.conn.invoke(&scripts::RELEASE, &call).await?)?;
        if released == Released::HandedOver {
            self.counters.handover();
        }
        Ok(released)
    }

    /// Leaves the queue (with a tombstone if given) and releases the lock if
    /// `owner` holds it.
    pub async fn leave(
        &self,
        keys: &Keys,
        owner: &str,
        tombstone: Option<Duration>,
    ) -> Result<Released, Failure> {
        let call = scripts::leave(keys, owner, tombstone);
        let released = Released::from_reply(self.conn.invoke(&scripts::LEAVE, &call).await?)?;
        if released == Released::HandedOver {
            self.counters.handover();
        }
        Ok(released)
    }

    /// Hands an acquisition that was given up in doubt to the clean-up
    /// worker.
    pub fn abandon(&self, keys: &Keys, owner: &str) {
        let horizon = self.settings.cleanup_horizon;
        self.cleanup.push(Job {
            keys: keys.clone(),
            owner: owner.to_owned(),
            tombstone: Some(horizon),
            until: concert_locking::lease::later(Instant::now(), horizon),
        });
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure> {
        let core = &self.core;
        let call = scripts::extend(&core.prefix.keys(key), owner, lease);
        let extended: i64 = core.conn.invoke(&scripts::EXTEND, &call).await?;
        Ok(extended == 1)
    }

    /// Queued for the clean-up worker, which retries until Redis answers.
    fn release_detached(self: Arc<Self>, key: LockKey, owner: String) {
        let core = &self.core;
        core.cleanup.push(Job {
            keys: core.prefix.keys(&key),
            owner,
            tombstone: None,
            until: concert_locking::lease::later(Instant::now(), core.settings.cleanup_horizon),
        });
    }

    fn counters(&self) -> &LockCounters {
        &self.core.counters
    }
}
