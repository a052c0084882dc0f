//! Redis adapters: the domain's lock port ([`DistributedLock`]) in three
//! kinds over one connection, one subscriber and one set of counters per
//! process ([`RedisLocks`] and its handles `simple()`, `spin()`,
//! `pubsub()`) and over N independent masters ([`RedLock`],
//! `redis-redlock`); the waiting room port ([`RedisWaitingRoom`], one Lua
//! script per step, see `docs/waiting-room.md`); the event streams
//! ([`streams`]: the relay's publisher, a consumer runtime on consumer
//! groups, tail and status); and the queue strategy's seat queue on Redis
//! Streams with its fenced partition consumers ([`RedisQueue`],
//! [`Consumers`], see `docs/queue.md`).
//!
//! Every lock guarantees: mutual exclusion per key while the lease lasts;
//! a random owner token per acquisition, and a release that never deletes
//! another owner's lock (it answers [`Failure::LockLost`] instead); a
//! fencing token that strictly increases per key; a lease watchdog that
//! renews every third of the lease and flags the guard's [`Fence`] as lost
//! when it cannot; a guard dropped without release is released in the
//! background, while a leaked guard (`std::mem::forget`) behaves like a
//! crashed holder. The lease machinery and the guard type are those of
//! [`concert_locking::lease`] and [`concert_locking::guard`], shared with
//! the in-process lock. See `docs/locking.md`.
//!
//! Modules by job: `keys` (key layout), `scripts` (what every script call
//! shares), `connection` (the shared command connection and the
//! translation of Redis errors), `pubsub` (what the pub/sub listeners
//! share), `lock` (the single-master locks, see its
//! module docs), `redlock`, `room`, `streams`, `queue`.
//!
//! [`DistributedLock`]: concert_domain::DistributedLock
//! [`Failure::LockLost`]: concert_domain::Failure::LockLost
//! [`Fence`]: concert_domain::Fence

mod backoff;
mod connection;
mod keys;
mod lock;
mod pubsub;
mod queue;
mod redlock;
mod room;
mod scripts;
mod settings;
pub mod streams;

pub use backoff::SpinBackoff;
pub use concert_locking::LockStats;
pub use lock::{RedisHeld, RedisLock, RedisLocks};
pub use queue::{Consumers, QueueSettings, RedisQueue};
pub use redlock::{RedLock, RedLockHeld};
pub use room::{ROOM_KEEP, RedisWaitingRoom};
pub use settings::RedisLockSettings;
pub use streams::{RedisStreams, StreamSettings};

#[cfg(test)]
mod tests;
