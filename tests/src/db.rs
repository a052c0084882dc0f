//! A fresh MariaDB database per test, and the domain services over it.
//!
//! [`TestDb::new`] creates `test_<uuid>` on the server of
//! `TEST_DATABASE_URL` (else `DATABASE_URL`, else
//! `mysql://root@127.0.0.1:3306`), migrates it, and opens a small pool.
//! Dropping the [`TestDb`] closes the pool and drops the database, on a
//! thread of its own (Drop cannot await, and may run outside any runtime).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concert_domain::services::reservation::DEFAULT_HOLD;
use concert_domain::{
    CatalogueService, Clock, ConcertId, Control, DistributedLock, PaymentService, PointService,
    ReservationService, ScheduleId, SeatNumber, Strategy,
};
use concert_mysql::{
    Db, MysqlCatalogue, MysqlPayments, MysqlSeats, MysqlWallets, PoolOptions, admin,
};

/// The lock type the services are built with. Only lock-free strategies
/// are used over MySQL here, so no lock is ever passed.
pub type Lock = Arc<dyn DistributedLock>;

/// The server part of the test database URL, without a database name.
pub fn server_url() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main.to_owned(), Some(query.to_owned())),
        None => (url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let host_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    let mut server = main[..host_end].to_owned();
    if let Some(query) = query {
        server.push_str("/?");
        server.push_str(&query);
    }
    server
}

fn database_url(name: &str) -> String {
    join_url(&server_url(), name)
}

/// `server` (as [`server_url`] returns it) with the database `name`.
fn join_url(server: &str, name: &str) -> String {
    match server.split_once("/?") {
        Some((host, query)) => format!("{host}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// One test's own database: created and migrated by [`TestDb::new`],
/// dropped when the value is dropped.
pub struct TestDb {
    /// `mysql://.../test_<uuid>`.
    pub url: String,
    /// A pool of up to 20 connections on it.
    pub db: Db,
    name: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

impl TestDb {
    /// Creates and migrates a fresh database. Panics (failing the test)
    /// with a hint when the server does not answer.
    pub async fn new() -> TestDb {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let url = database_url(&name);
        concert_mysql::run_migrations(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the test database {name} ({e:#}); is MariaDB running? \
                 try `make services`, or set TEST_DATABASE_URL"
                )
            });
        let db = Db::connect(
            &url,
            PoolOptions {
                max_size: 20,
                wait_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("pool for the test database");
        TestDb { url, db, name }
    }

    /// The database name (`test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The four services over this database, every operation under
    /// `strategy` (lock-free strategies only), the default 5-minute hold.
    pub fn services<C: Clock + Clone>(&self, strategy: Strategy, clock: C) -> Services<C> {
        self.services_with(strategy, strategy, strategy, clock)
    }

    /// Like [`TestDb::services`] with a strategy per operation: seat holds,
    /// point charges, point uses (which also protects payments).
    pub fn services_with<C: Clock + Clone>(
        &self,
        seats: Strategy,
        charge: Strategy,
        spend: Strategy,
        clock: C,
    ) -> Services<C> {
        let control = |s: Strategy| {
            Control::<Lock>::new(s, None)
                .unwrap_or_else(|e| panic!("{e}: TestDb services are lock-free"))
        };
        Services {
            catalogue: CatalogueService::new(MysqlCatalogue::new(self.db.clone()), clock.clone()),
            reservations: ReservationService::new(
                MysqlSeats::new(self.db.clone()),
                clock.clone(),
                control(seats),
                DEFAULT_HOLD,
            ),
            points: PointService::new(
                MysqlWallets::new(self.db.clone()),
                clock.clone(),
                control(charge),
                control(spend),
            ),
            payments: PaymentService::new(
                MysqlPayments::new(self.db.clone()),
                clock,
                control(spend),
            ),
        }
    }

    /// A concert with one schedule starting at `starts_at`, every seat
    /// priced `price`.
    pub async fn schedule_at(
        &self,
        starts_at: DateTime<Utc>,
        price: u64,
    ) -> (ConcertId, ScheduleId) {
        let concert = admin::create_concert(&self.db, "Test concert")
            .await
            .expect("concert created");
        let schedule = admin::create_schedule(&self.db, concert, starts_at, |_: SeatNumber| price)
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
        self.db.close();
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            runtime.block_on(concert_mysql::drop_database(&url))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// The domain services over MySQL, as the app wires them.
pub struct Services<C> {
    pub catalogue: CatalogueService<MysqlCatalogue, C>,
    pub reservations: ReservationService<MysqlSeats, Lock, C>,
    pub points: PointService<MysqlWallets, Lock, C>,
    pub payments: PaymentService<MysqlPayments, Lock, C>,
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
