//! A fresh MariaDB database per test, and the domain services over it.
//!
//! [`TestDb::new`] creates `test_<uuid>` (see `concert_testkit::TestDatabase`:
//! the server of `TEST_DATABASE_URL`, else `DATABASE_URL`, else local),
//! migrates it, and opens a small pool for the adapter under test and a
//! separate one for direct SQL inspection ([`TestDb::sql`]). Dropping the
//! [`TestDb`] closes both and drops the database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concert_domain::{
    Clock, ConcertId, Control, Controls, Policy, ScheduleId, SeatNumber, Services,
};
use concert_mysql::{DatabaseUrl, Db, MysqlStore, PoolOptions};
use concert_testkit::{Sql, TestDatabase};

/// The lock-free strategies' configuration names, from the app's registry.
pub fn lock_free() -> impl Iterator<Item = &'static str> {
    concert_app::strategies::lock_free().map(|s| s.as_str())
}

/// What the app's registry builds strategies from: a fresh local lock, the
/// given Redis locks and RedLock, no seat queue.
pub fn adapters(
    redis: Option<concert_redis::RedisLocks>,
    redlock: Option<concert_redis::RedLock>,
) -> concert_app::Adapters {
    concert_app::Adapters {
        local: concert_inprocess::LocalLock::new(),
        redis,
        redlock,
        relay: true,
        lock_options: concert_domain::LockOptions::default(),
        queue: None,
    }
}

/// The control a lock-free strategy name stands for (as the app's registry
/// builds it).
pub fn control(name: &str) -> Control {
    concert_app::StrategyName::named(name)
        .build(&adapters(None, None))
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

/// `seats` controlling seat holds, the point operations under the app's
/// default strategies.
pub fn with_default_points(seats: Control) -> Controls {
    let defaults = concert_app::Strategies::default();
    Controls {
        seats,
        charge: control(defaults.charge.as_str()),
        spend: control(defaults.spend.as_str()),
    }
}

/// One test's own database.
pub struct TestDb {
    /// `mysql://.../test_<uuid>`.
    pub url: DatabaseUrl,
    /// A pool of up to 20 connections on it, for the adapter under test.
    pub db: Db,
    /// Direct SQL set-up and inspection.
    pub sql: Sql,
    database: TestDatabase,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.database.name())
            .finish()
    }
}

impl TestDb {
    /// Creates and migrates a fresh database. Panics (failing the test)
    /// with a hint when the server does not answer.
    pub async fn new() -> TestDb {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let url = database.url().clone();
        let db = Db::connect(
            &url,
            PoolOptions {
                max_size: 20,
                wait_timeout: Duration::from_secs(30),
                ..PoolOptions::default()
            },
        )
        .await
        .expect("pool for the test database");
        let sql = Sql::connect(url.as_str())
            .await
            .expect("SQL pool for the test database");
        TestDb {
            url,
            db,
            sql,
            database,
        }
    }

    /// The database name (`test_<uuid>`).
    pub fn name(&self) -> &str {
        self.database.name()
    }

    /// The storage adapter over this database.
    pub fn store(&self) -> MysqlStore {
        MysqlStore::new(self.db.clone())
    }

    /// The use cases over this database, every operation under the
    /// lock-free strategy `strategy`, the default policy (5-minute holds).
    pub fn services<C: Clock + 'static>(&self, strategy: &str, clock: C) -> Services {
        self.services_with(strategy, strategy, strategy, clock)
    }

    /// Like [`TestDb::services`] with a strategy per operation: seat holds,
    /// point charges, point uses (which also protects payments).
    pub fn services_with<C: Clock + 'static>(
        &self,
        seats: &str,
        charge: &str,
        spend: &str,
        clock: C,
    ) -> Services {
        self.services_over(
            Controls {
                seats: control(seats),
                charge: control(charge),
                spend: control(spend),
            },
            Policy::default(),
            clock,
        )
    }

    /// The use cases with `seats` controlling seat holds (the other
    /// operations optimistic / pessimistic, as configured by default).
    pub fn seat_services<C: Clock + 'static>(&self, seats: Control, clock: C) -> Services {
        self.services_over(with_default_points(seats), Policy::default(), clock)
    }

    /// The use cases with explicit controls and policy.
    pub fn services_over<C: Clock + 'static>(
        &self,
        controls: Controls,
        policy: Policy,
        clock: C,
    ) -> Services {
        let store = self.store();
        let ports = concert_domain::Ports {
            transactions: Arc::new(store.clone()),
            queries: Arc::new(store.clone()),
            catalogue: Arc::new(store),
            clock: Arc::new(clock),
        };
        Services::new(ports, controls, policy)
    }

    /// A concert with one schedule starting at `starts_at`, every seat
    /// priced `price`.
    pub async fn schedule_at(
        &self,
        starts_at: DateTime<Utc>,
        price: u64,
    ) -> (ConcertId, ScheduleId) {
        let concert = self
            .sql
            .create_concert("Test concert")
            .await
            .expect("concert created");
        let schedule = self
            .sql
            .create_schedule(concert, starts_at, |_: SeatNumber| price)
            .await
            .expect("schedule created");
        (concert, schedule)
    }

    /// A schedule 30 days ahead, every seat priced `price`.
    pub async fn schedule(&self, price: u64) -> ScheduleId {
        self.schedule_at(Utc::now() + chrono::Duration::days(30), price)
            .await
            .1
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Close the pools before `database` drops the database.
        self.db.close();
        self.sql.close();
    }
}

/// Runs `n` tasks that all start at once (a barrier releases them
/// together) and returns their outputs in task order. `make(i)` builds
/// task `i`'s future.
pub async fn concurrently<T, F, Fut>(n: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = make(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut outputs = Vec::with_capacity(n);
    for task in tasks {
        outputs.push(task.await.expect("task panicked"));
    }
    outputs
}
