//! The use cases over the in-memory store (no server), and their
//! helpers: a clock the test moves, and the services over a fresh store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use concert_domain::clock::Clock;
use concert_domain::control::{Control, Protection};
use concert_domain::error::Failure;
use concert_domain::ports::{Transactions, UnitOfWork};
use concert_domain::services::{Controls, Policy, Ports, Services};
use concert_domain::{LockOptions, MockDistributedLock, RetryPolicy};
use concert_locking::Ordered;
use concert_memory::MemoryStore;

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

/// A log that a test's locks and units of work write to.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Units of work over `inner` that log how they end (`write`, `commit`,
/// `rollback`) to `log`, next to what a test lock logs (`acquire <key>`,
/// `release <key>`).
pub struct Logged<T> {
    pub inner: T,
    pub log: Log,
}

#[async_trait]
impl<T: Transactions> Transactions for Logged<T> {
    async fn begin(&self, protection: Protection) -> Result<Box<dyn UnitOfWork>, Failure> {
        Ok(Box::new(LoggedUnit {
            inner: self.inner.begin(protection).await?,
            log: self.log.clone(),
        }))
    }
}

struct LoggedUnit {
    inner: Box<dyn UnitOfWork>,
    log: Log,
}

impl LoggedUnit {
    fn note(&self, what: &str) {
        self.log.lock().unwrap().push(what.to_owned());
    }
}

#[async_trait]
impl UnitOfWork for LoggedUnit {
    fn repositories(&mut self) -> &mut dyn concert_domain::Repositories {
        self.inner.repositories()
    }
    async fn write(&mut self) -> Result<(), Failure> {
        self.note("write");
        self.inner.write().await
    }
    async fn commit(self: Box<Self>) -> Result<(), Failure> {
        self.note("commit");
        self.inner.commit().await
    }
    async fn rollback(self: Box<Self>) {
        self.note("rollback");
        self.inner.rollback().await
    }
}

/// The services over a fresh in-memory store whose units log how they end
/// to `log`, every operation under `control`.
pub fn logged_services(control: Control, log: Log) -> (Services, MemoryStore) {
    let store = MemoryStore::new();
    let clock = TestClock::new();
    let ports = Ports {
        transactions: Arc::new(Logged {
            inner: store.clone(),
            log,
        }),
        ..store.ports(Arc::new(clock))
    };
    let services = Services::new(ports, controls(control), Policy::default());
    (services, store)
}

mod catalogue;
mod payment;
mod points;
mod queued;
mod reservation;
mod waiting_room;

/// One control of every kind (the lock a mock that grants every key).
pub fn every_control() -> Vec<Control> {
    let lock = Arc::new(MockDistributedLock::granting(1, Arc::default()));
    vec![
        Control::optimistic("optimistic"),
        Control::pessimistic("pessimistic"),
        Control::atomic("atomic"),
        Control::retrying("optimistic-retry", RetryPolicy::default()),
        Control::locked(
            "local",
            Arc::new(Ordered::plain(lock)),
            LockOptions::default(),
        ),
    ]
}
