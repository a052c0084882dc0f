//! The strategy registry: every configuration name (`APP_SEAT_STRATEGY`,
//! `APP_CHARGE_STRATEGY`, `APP_USE_STRATEGY`) and how to build its
//! [`Control`] from the adapters this instance has.
//!
//! Adding a strategy is one adapter (a lock, or a protection the storage
//! adapter offers) plus one line here.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use concert_domain::{Control, DistributedLock, LockOptions, Locks, RetryPolicy, SeatQueue};
use concert_inprocess::{KeyQueue, LocalLock};
use concert_locking::Ordered;
use concert_redis::{RedLock, RedisLocks};

/// What a strategy may be built from.
pub struct Adapters {
    /// The process's in-process lock (`local`).
    pub local: LocalLock,
    /// Redis, when a configured strategy needs it.
    pub redis: Option<RedisLocks>,
    /// The RedLock masters, when `APP_REDLOCK_URLS` names them.
    pub redlock: Option<RedLock>,
    /// Put the in-process key queue in front of the waiting locks (false
    /// when `APP_LOCK_LOCAL_QUEUE=false`).
    pub local_queue: bool,
    pub lock_options: LockOptions,
    /// The seat queue (`queue`), when seat holds are configured to use it.
    pub queue: Option<QueueAdapter>,
}

/// The seat queue and how long a request waits for its outcome.
#[derive(Clone)]
pub struct QueueAdapter {
    pub queue: Arc<dyn SeatQueue>,
    /// `APP_QUEUE_REPLY_MS`
    pub reply: Duration,
}

impl Adapters {
    fn redis(&self) -> anyhow::Result<&RedisLocks> {
        self.redis
            .as_ref()
            .context("a Redis strategy is configured but Redis is not set up")
    }

    fn redlock(&self) -> anyhow::Result<&RedLock> {
        self.redlock.as_ref().context(
            "redis-redlock needs APP_REDLOCK_URLS: the URLs of 3 (or 5) independent Redis masters",
        )
    }

    /// `lock` behind this process's local key queue, if configured: one local
    /// request per key at a time acquires `lock`, and a release hands it to
    /// the next local request in memory (bounded streaks), or passes it on
    /// before the holder's commit.
    fn queued_locally<L: DistributedLock + 'static>(&self, lock: L) -> Arc<dyn Locks> {
        if self.local_queue {
            Arc::new(Ordered::new(KeyQueue::new(lock)))
        } else {
            Arc::new(Ordered::plain(lock))
        }
    }

    fn queued(&self, name: &str) -> anyhow::Result<Control> {
        let q = self
            .queue
            .as_ref()
            .context("the queue strategy is configured but the seat queue is not set up")?;
        Ok(Control::queued(name, q.queue.clone(), q.reply))
    }

    fn locked(&self, name: &str, locks: Arc<dyn Locks>) -> Control {
        Control::locked(name, locks, self.lock_options)
    }
}

/// One registered strategy.
pub struct Strategy {
    pub name: &'static str,
    /// One line for `--help` and docs.
    pub summary: &'static str,
    pub needs_redis: bool,
    build: fn(&Adapters, &'static str) -> anyhow::Result<Control>,
}

/// Every strategy, in the order the docs list them.
pub static REGISTRY: &[Strategy] = &[
    Strategy {
        name: "optimistic",
        summary: "version check; a conflict is answered 409 concurrent-update",
        needs_redis: false,
        build: |_, name| Ok(Control::optimistic(name)),
    },
    Strategy {
        name: "optimistic-retry",
        summary: "version check, conflicts retried with jittered backoff",
        needs_redis: false,
        build: |_, name| Ok(Control::retrying(name, RetryPolicy::default())),
    },
    Strategy {
        name: "pessimistic",
        summary: "rows locked on read (SELECT ... FOR UPDATE); others wait",
        needs_redis: false,
        build: |_, name| Ok(Control::pessimistic(name)),
    },
    Strategy {
        name: "atomic",
        summary: "one conditional UPDATE that encodes the rule",
        needs_redis: false,
        build: |_, name| Ok(Control::atomic(name)),
    },
    Strategy {
        name: "local",
        summary: "in-process lock, fenced (one instance only)",
        needs_redis: false,
        build: |a, name| Ok(a.locked(name, a.queued_locally(a.local.clone()))),
    },
    Strategy {
        name: "redis-simple",
        summary: "Redis SET NX PX; fails at once when taken",
        needs_redis: true,
        build: |a, name| Ok(a.locked(name, Arc::new(Ordered::plain(a.redis()?.simple())))),
    },
    Strategy {
        name: "redis-spin",
        summary: "Redis lock retried with jittered backoff",
        needs_redis: true,
        build: |a, name| Ok(a.locked(name, a.queued_locally(a.redis()?.spin()))),
    },
    Strategy {
        name: "redis-pubsub",
        summary: "Redis lock, handed over by the release to the next waiter",
        needs_redis: true,
        build: |a, name| Ok(a.locked(name, a.queued_locally(a.redis()?.pubsub()))),
    },
    Strategy {
        name: "redis-redlock",
        summary: "RedLock over APP_REDLOCK_URLS (a majority of N masters), fenced",
        needs_redis: false,
        build: |a, name| Ok(a.locked(name, a.queued_locally(a.redlock()?.clone()))),
    },
    Strategy {
        name: QUEUE,
        summary: "seat holds only: queued per schedule partition (Redis Streams), applied in \
                  arrival order by the one fenced holder of the partition's lease; no lock",
        needs_redis: true,
        build: |a, name| a.queued(name),
    },
];

/// The strategy that serializes seat holds through a queue; it applies to
/// seat reservation only.
pub const QUEUE: &str = "queue";

/// A validated strategy name: one of [`REGISTRY`].
#[derive(Clone, Copy)]
pub struct StrategyName(&'static Strategy);

impl StrategyName {
    /// A registered name; panics on an unknown one (for defaults and tests).
    pub fn named(name: &str) -> Self {
        name.parse()
            .unwrap_or_else(|e| panic!("{e}: not a registered strategy"))
    }

    pub fn as_str(&self) -> &'static str {
        self.0.name
    }

    pub fn needs_redis(&self) -> bool {
        self.0.needs_redis
    }

    /// True for a strategy that applies to seat reservation only
    /// (`queue`).
    pub fn seats_only(&self) -> bool {
        self.0.name == QUEUE
    }

    /// The strategy's control over `adapters`.
    pub fn build(&self, adapters: &Adapters) -> anyhow::Result<Control> {
        (self.0.build)(adapters, self.0.name)
            .with_context(|| format!("building strategy {}", self.0.name))
    }
}

impl PartialEq for StrategyName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for StrategyName {}

impl fmt::Debug for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrategyName({})", self.0.name)
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A name that is not in [`REGISTRY`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {given:?}; valid strategies: {}", names().join(", "))]
pub struct UnknownStrategy {
    pub given: String,
}

/// Every registered name.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|s| s.name).collect()
}

impl FromStr for StrategyName {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        REGISTRY
            .iter()
            .find(|strategy| strategy.name == s.trim())
            .map(StrategyName)
            .ok_or_else(|| UnknownStrategy {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for s in REGISTRY {
            assert!(seen.insert(s.name), "{} twice", s.name);
            assert_eq!(s.name.parse::<StrategyName>().unwrap().as_str(), s.name);
        }
        let err = "redlock".parse::<StrategyName>().unwrap_err().to_string();
        assert!(err.contains("\"redlock\""), "{err}");
        for s in REGISTRY {
            assert!(err.contains(s.name), "{err}");
        }
    }

    #[test]
    fn lock_free_strategies_build_without_redis() {
        let adapters = Adapters {
            local: LocalLock::new(),
            redis: None,
            redlock: None,
            local_queue: true,
            lock_options: LockOptions::default(),
            queue: None,
        };
        for s in REGISTRY {
            let built = StrategyName(s).build(&adapters);
            let needs_servers = s.needs_redis || s.name == "redis-redlock";
            assert_eq!(built.is_ok(), !needs_servers, "{}", s.name);
            if let Ok(control) = built {
                assert_eq!(control.name(), s.name);
            }
        }
    }
}
