//! The strategy registry: every configuration name (`APP_SEAT_STRATEGY`,
//! `APP_CHARGE_STRATEGY`, `APP_USE_STRATEGY`) and how to build its
//! [`Control`] from the adapters this instance has.
//!
//! Adding a strategy is one adapter (a lock, or a protection the storage
//! adapter offers) plus one row here: the app, its tests and the lab take
//! their strategy lists from [`REGISTRY`]. README.md names it too (a test
//! here checks that).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use concert_domain::{Control, DistributedLock, LockOptions, RetryPolicy, SeatQueue};
use concert_inprocess::{LocalLock, Relay};
use concert_redis::{RedLock, RedisLocks};

/// What a strategy may be built from.
pub struct Adapters {
    /// The process's in-process lock (`local`).
    pub local: LocalLock,
    /// Redis, when a configured strategy needs it.
    pub redis: Option<RedisLocks>,
    /// The RedLock masters, when `APP_REDLOCK_URLS` names them.
    pub redlock: Option<RedLock>,
    /// Put the in-process relay in front of the waiting locks (false when
    /// `APP_LOCK_LOCAL_QUEUE=false`).
    pub relay: bool,
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

    /// `lock` behind this process's local relay, if configured: one local
    /// request per key at a time acquires `lock`, and a release hands it to
    /// the next local request in memory (bounded streaks).
    fn relayed(&self, lock: Arc<dyn DistributedLock>) -> Arc<dyn DistributedLock> {
        if self.relay {
            Arc::new(Relay::new(lock))
        } else {
            lock
        }
    }

    fn queued(&self, name: &str) -> anyhow::Result<Control> {
        let q = self
            .queue
            .as_ref()
            .context("the queue strategy is configured but the seat queue is not set up")?;
        Ok(Control::queued(name, q.queue.clone(), q.reply))
    }

    fn locked(&self, name: &str, lock: Arc<dyn DistributedLock>) -> Control {
        Control::locked(name, lock, self.lock_options)
    }
}

/// One registered strategy.
pub struct Strategy {
    pub name: &'static str,
    /// One line for `--help` and docs.
    pub summary: &'static str,
    /// A contended operation waits (or retries) for its turn; false: it
    /// is refused at once (`concurrent-update`, `lock-timeout`).
    pub waits: bool,
    /// What serializes the strategy's writers.
    pub kind: Kind,
}

/// What serializes a strategy's writers, and how its [`Control`] is built.
pub enum Kind {
    /// A protection the storage adapter offers: no lock, no server.
    Storage(fn(&str) -> Control),
    /// A fenced lock held around the operation.
    Lock {
        /// Where the lock lives.
        at: LockAt,
        /// The lock adapter.
        lock: fn(&Adapters) -> anyhow::Result<Arc<dyn DistributedLock>>,
    },
    /// Seat holds through the seat queue (seat reservation only).
    Queue,
}

/// Where a lock strategy's lock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAt {
    /// In this process (`local`).
    Process,
    /// The Redis of `REDIS_URL`.
    Redis,
    /// The RedLock masters of `APP_REDLOCK_URLS`.
    RedLock,
}

/// Every strategy, in the order the docs list them.
pub static REGISTRY: &[Strategy] = &[
    Strategy {
        name: "optimistic",
        summary: "version check; a conflict is answered 409 concurrent-update",
        waits: false,
        kind: Kind::Storage(Control::optimistic),
    },
    Strategy {
        name: "optimistic-retry",
        summary: "version check, conflicts retried with jittered backoff",
        waits: true,
        kind: Kind::Storage(|name| Control::retrying(name, RetryPolicy::default())),
    },
    Strategy {
        name: "pessimistic",
        summary: "rows locked on read (SELECT ... FOR UPDATE); others wait",
        waits: true,
        kind: Kind::Storage(Control::pessimistic),
    },
    Strategy {
        name: "atomic",
        summary: "one conditional UPDATE that encodes the rule",
        waits: true,
        kind: Kind::Storage(Control::atomic),
    },
    Strategy {
        name: "local",
        summary: "in-process lock, fenced (one instance only)",
        waits: true,
        kind: Kind::Lock {
            at: LockAt::Process,
            lock: |a| Ok(Arc::new(a.local.clone())),
        },
    },
    Strategy {
        name: "redis-simple",
        summary: "Redis SET NX PX; fails at once when taken",
        waits: false,
        kind: Kind::Lock {
            at: LockAt::Redis,
            lock: |a| Ok(Arc::new(a.redis()?.simple())),
        },
    },
    Strategy {
        name: "redis-spin",
        summary: "Redis lock retried with jittered backoff",
        waits: true,
        kind: Kind::Lock {
            at: LockAt::Redis,
            lock: |a| Ok(Arc::new(a.redis()?.spin())),
        },
    },
    Strategy {
        name: "redis-pubsub",
        summary: "Redis lock, handed over by the release to the next waiter",
        waits: true,
        kind: Kind::Lock {
            at: LockAt::Redis,
            lock: |a| Ok(Arc::new(a.redis()?.pubsub())),
        },
    },
    Strategy {
        name: "redis-redlock",
        summary: "RedLock over APP_REDLOCK_URLS (a majority of N masters), fenced",
        waits: true,
        kind: Kind::Lock {
            at: LockAt::RedLock,
            lock: |a| Ok(Arc::new(a.redlock()?.clone())),
        },
    },
    Strategy {
        name: QUEUE,
        summary: "seat holds only: queued per schedule partition (Redis Streams), applied in \
                  arrival order by the one fenced holder of the partition's lease; no lock",
        waits: true,
        kind: Kind::Queue,
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
        matches!(
            self.0.kind,
            Kind::Lock {
                at: LockAt::Redis,
                ..
            } | Kind::Queue
        )
    }

    /// True for a strategy that applies to seat reservation only
    /// (`queue`).
    pub fn seats_only(&self) -> bool {
        matches!(self.0.kind, Kind::Queue)
    }

    /// True when a contended operation waits (or retries) for its turn
    /// rather than being refused at once.
    pub fn waits(&self) -> bool {
        self.0.waits
    }

    /// True for a protection the storage adapter offers (no lock, no
    /// server).
    pub fn lock_free(&self) -> bool {
        matches!(self.0.kind, Kind::Storage(_))
    }

    /// Where the strategy's lock lives; `None` for a strategy without one.
    pub fn lock_at(&self) -> Option<LockAt> {
        match self.0.kind {
            Kind::Lock { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The strategy's lock adapter over `adapters` (not behind the relay);
    /// `None` for a strategy without one.
    pub fn lock(&self, adapters: &Adapters) -> Option<anyhow::Result<Arc<dyn DistributedLock>>> {
        match self.0.kind {
            Kind::Lock { lock, .. } => Some(lock(adapters)),
            _ => None,
        }
    }

    /// The strategy's control over `adapters`.
    pub fn build(&self, adapters: &Adapters) -> anyhow::Result<Control> {
        let name = self.0.name;
        match self.0.kind {
            Kind::Storage(control) => Ok(control(name)),
            Kind::Lock { lock, .. } => {
                // a lock that fails at once gains nothing from the relay
                let lock = lock(adapters)?;
                let lock = if self.0.waits {
                    adapters.relayed(lock)
                } else {
                    lock
                };
                Ok(adapters.locked(name, lock))
            }
            Kind::Queue => adapters.queued(name),
        }
        .with_context(|| format!("building strategy {name}"))
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

/// Every registered strategy, in [`REGISTRY`] order.
pub fn all() -> impl Iterator<Item = StrategyName> {
    REGISTRY.iter().map(StrategyName)
}

/// The lock-free strategies (protections the storage adapter offers).
pub fn lock_free() -> impl Iterator<Item = StrategyName> {
    all().filter(StrategyName::lock_free)
}

/// The strategies that hold a lock.
pub fn locks() -> impl Iterator<Item = StrategyName> {
    all().filter(|s| s.lock_at().is_some())
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
    fn the_readme_lists_every_strategy_and_the_relayed_ones() {
        let readme = include_str!("../../../README.md");
        let values = readme
            .split("Strategy values:")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("README.md has a \"Strategy values:\" paragraph");
        for s in all() {
            assert!(values.contains(&format!("`{s}`")), "README.md: {s}");
        }
        let relay = readme
            .lines()
            .find(|line| line.starts_with("| `APP_LOCK_LOCAL_QUEUE`"))
            .expect("README.md documents APP_LOCK_LOCAL_QUEUE");
        for s in locks() {
            let listed = relay.contains(&format!("`{s}`"));
            assert_eq!(listed, s.waits(), "README.md, APP_LOCK_LOCAL_QUEUE: {s}");
        }
    }

    #[test]
    fn lock_free_strategies_build_without_redis() {
        let adapters = Adapters {
            local: LocalLock::new(),
            redis: None,
            redlock: None,
            relay: true,
            lock_options: LockOptions::default(),
            queue: None,
        };
        for s in all() {
            let built = s.build(&adapters);
            let needs_servers = s.needs_redis() || s.lock_at() == Some(LockAt::RedLock);
            assert_eq!(built.is_ok(), !needs_servers, "{s}");
            if let Ok(control) = built {
                assert_eq!(control.name(), s.as_str());
            }
        }
    }
}
