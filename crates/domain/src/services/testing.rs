//! Helpers for the use cases' unit tests: a clock the test moves, and the
//! services over an in-memory store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::control::Control;
use crate::memory::MemoryStore;
use crate::services::{Controls, Policy, Services};

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).expect("valid timestamp")
}

/// A clock at `t0()` that only moves when told; sleeps return at once.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(t0())))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    async fn sleep(&self, _: Duration) {}
}

/// Every control the same.
pub fn controls(control: Control) -> Controls {
    Controls {
        seats: control.clone(),
        charge: control.clone(),
        spend: control,
    }
}

/// The services over a fresh in-memory store, every operation under
/// `control`.
pub fn services(control: Control, policy: Policy) -> (Services, MemoryStore, TestClock) {
    let store = MemoryStore::new();
    let clock = TestClock::new();
    let services = Services::new(
        store.ports(Arc::new(clock.clone())),
        controls(control),
        policy,
    );
    (services, store, clock)
}
