//! Shared helpers for the integration tests: a fresh database per test, a
//! fresh Redis key prefix per test, a controllable clock, test locks,
//! `spawn_app`, and instances sharing one deployment (`events`).

pub mod app;
pub mod clock;
pub mod db;
pub mod events;
pub mod locks;
pub mod redis;
