//! The lock machinery every lock adapter of the workspace shares, so that
//! the lease rules exist once (the in-process lock and the Redis locks, the
//! queue's partition leases, build on it), and the ordering of a unit of
//! work's locks. Not an adapter: it talks to no lock service, it depends on
//! the domain only, and adapters may depend on it.
//!
//! - [`ordered`]: the domain's `Locks` port over any `DistributedLock`
//!   ([`Ordered`]: keys sorted and de-duplicated, one wait budget, the
//!   pass-on of a lock that a request of this process waits for);
//! - [`lease`]: the keep-alive of a held lock (watchdog, lost-lease flag,
//!   release on drop, maximum hold time), owner tokens;
//! - [`guard`]: the one guard type of the lock adapters, over their
//!   [`guard::GuardOps`];
//! - [`waiters`]: the registry of waiting acquisitions (wake one per
//!   release, hand-over to a given waiter, resync);
//! - [`stats`]: the counters the lab reads.

pub mod guard;
pub mod lease;
pub mod ordered;
pub mod stats;
pub mod waiters;

pub use ordered::Ordered;
pub use stats::{LockCounters, LockStats};
