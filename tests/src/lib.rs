//! Shared helpers for the integration tests: a fresh database per test, a
//! fresh Redis key prefix per test, a controllable clock, test locks,
//! `spawn_app`, instances sharing one deployment (`events`), and the audit
//! every concurrency test ends with.

pub mod app;
pub mod audit;
pub mod calls;
pub mod clock;
pub mod db;
pub mod events;
pub mod locks;
pub mod prometheus;
pub mod queue;
pub mod redis;
