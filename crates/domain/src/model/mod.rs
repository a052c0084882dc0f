//! The aggregates and their rules, as plain values and pure functions.

pub mod catalogue;
pub mod commands;
pub mod payment;
pub mod room;
pub mod seat;
pub mod wallet;
