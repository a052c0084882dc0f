//! Lock adapters for the domain's [`DistributedLock`] port, and the system
//! clock.
//!
//! - [`RedisLocks`] / [`RedisLock`]: Redis locks in three kinds
//!   (`redis-simple`, `redis-spin`, `redis-pubsub`) sharing one connection
//!   pool, one subscriber connection per process, and one set of counters.
//! - [`LocalLock`]: the same contract inside one process, for a single
//!   instance without Redis (`local`).
//! - [`Queued`]: a process-local queue in front of a shared lock, so that
//!   only one request per process and key contends in Redis.
//!
//! Every adapter guarantees: mutual exclusion per key while the lease lasts;
//! a random owner token per acquisition, and a release that never deletes
//! another owner's lock (it answers [`LockError::NotHeld`] instead); a
//! fencing token that strictly increases per key; a lease watchdog that
//! renews every third of the lease and flags the guard's [`Fence`] as lost
//! when it cannot; a guard dropped without release is released in the
//! background, while a leaked guard (`std::mem::forget`) behaves like a
//! crashed holder. See `docs/locking.md`.
//!
//! [`DistributedLock`]: concert_domain::DistributedLock
//! [`LockError::NotHeld`]: concert_domain::LockError::NotHeld
//! [`Fence`]: concert_domain::Fence

mod backoff;
pub mod clock;
mod keys;
mod lease;
mod local;
mod queued;
mod redis_lock;
mod stats;
mod waiters;

pub use backoff::SpinBackoff;
pub use clock::SystemClock;
pub use local::LocalLock;
pub use queued::Queued;
pub use redis_lock::{RedisLock, RedisLockSettings, RedisLocks};
pub use stats::LockStats;
pub use waiters::WakePolicy;
