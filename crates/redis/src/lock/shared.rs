//! What the handles, guards and background tasks of one [`RedisLocks`]
//! share: [`Inner`] (held by every handle and guard) and [`Core`] (the
//! operations, also held by the clean-up worker).
//!
//! [`RedisLocks`]: super::RedisLocks

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use concert_domain::{Failure, LockKey};
use concert_locking::lease::LeaseOps;
use concert_locking::stats::LockCounters;
use concert_locking::waiters::Waiters;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::keys::{Keys, Prefix};
use crate::lock::cleanup::{Cleaner, Cleanup, Job};
use crate::lock::scripts::{self, Attempt, Queue, Released};
use crate::lock::subscriber::Subscriber;
use crate::settings::RedisLockSettings;

/// What the handles and guards hold (public only as the parameter of
/// [`super::RedisHeld`]).
pub struct Inner {
    pub(crate) core: Arc<Core>,
    pub(crate) subscriber: Subscriber,
    pub(crate) cleaner: JoinHandle<()>,
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

impl Core {
    pub fn new(url: &str, prefix: &str, settings: RedisLockSettings) -> Result<Self, Failure> {
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

impl Cleaner for Arc<Core> {
    fn jobs(&self) -> &Cleanup {
        &self.cleanup
    }

    async fn clean(&self, job: &Job) -> Result<(), Failure> {
        self.leave(&job.keys, &job.owner, job.tombstone).await?;
        self.counters.cleanup();
        Ok(())
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn extend(&self, key: &LockKey, owner: &str, lease: Duration) -> Result<bool, Failure> {
        let core = &self.core;
        let call = crate::scripts::extend(&core.prefix.keys(key).lock, owner, lease);
        let extended: i64 = core.conn.invoke(&crate::scripts::EXTEND, &call).await?;
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
