//! The single-master Redis locks: [`RedisLocks`] and its handles
//! (`redis-simple`, `redis-spin`, `redis-pubsub`).
//!
//! Modules, each depending only on those listed after it: `locks` (the
//! public [`RedisLocks`]: connecting, the handles, purge and settle),
//! `acquire` (the acquire policies, and the release of the guard
//! [`RedisHeld`], a `concert_locking::guard::Guard`), `shared` (what
//! handles, guards and background tasks share, and the operations),
//! `cleanup` (the background clean-up after failures), `subscriber` (the
//! pub/sub connection and its dispatcher), `scripts` (the lock's Lua
//! scripts, their arguments and replies).

mod acquire;
mod cleanup;
mod locks;
pub(crate) mod scripts;
pub(crate) mod shared;
mod subscriber;

pub use acquire::{RedisHeld, RedisLock};
pub use locks::RedisLocks;
