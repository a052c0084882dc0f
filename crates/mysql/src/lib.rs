//! MySQL/MariaDB adapter: the domain's repository ports on diesel-async,
//! the schema, the embedded migrations, and helpers for set-up.
//!
//! - [`Db`]: the connection pool ([`PoolOptions`]), shared by every
//!   repository.
//! - [`MysqlCatalogue`], [`MysqlSeats`], [`MysqlWallets`], [`MysqlPayments`]:
//!   the ports `CatalogueRepository`, `SeatRepository`, `WalletRepository`
//!   and `PaymentRepository`. Each write is one transaction that loads,
//!   lets the domain rule decide, and writes with the locking its
//!   `WriteMode` names; the domain never sees SQL and this crate never
//!   decides a business rule the domain has a function for.
//! - [`run_migrations`] and friends: database creation and the migrations of
//!   `migrations/`, embedded in the binary.
//! - [`admin`]: set-up and inspection helpers; [`raw`]: the lab's plain-SQL
//!   baselines; [`seed_demo`]: the demo catalogue.
//!
//! Requires MariaDB 10.5+ (`INSERT ... RETURNING`); developed on 10.11.
//! Diesel stays inside this crate: no diesel type appears in a public
//! signature. Errors: pool timeouts and lost connections are `Unavailable`;
//! deadlocks, lock wait timeouts and unique-key races are `Conflict`;
//! anything else is `Unknown` with its context. Nothing here panics on a
//! database answer.

pub mod admin;
mod catalogue;
mod error;
mod idempotency;
mod migrate;
mod payments;
mod pool;
pub mod raw;
mod rows;
mod schema;
mod seats;
mod seed;
mod wallets;

pub use catalogue::MysqlCatalogue;
pub use migrate::{
    create_database_if_missing, drop_database, revert_all_migrations, run_migrations,
};
pub use payments::MysqlPayments;
pub use pool::{Db, PoolOptions};
pub use seats::MysqlSeats;
pub use seed::{DEMO_CONCERTS, DEMO_SCHEDULES, SeedReport, demo_price, seed_demo};
pub use wallets::MysqlWallets;
