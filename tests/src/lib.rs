//! Shared helpers for the integration tests: a fresh database per test, a
//! fresh Redis key prefix per test, a controllable clock, test locks, and
//! `spawn_app`.

pub mod app;
pub mod clock;
pub mod db;
pub mod locks;
pub mod queue;
pub mod redis;
