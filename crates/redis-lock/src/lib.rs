//! Runtime adapters for coordination: the lock port over Redis (simple,
//! spin, pub/sub) with lease watchdog and fencing tokens, an in-process lock
//! for single-instance deployments, and the system clock.

pub mod clock;

pub use clock::SystemClock;
