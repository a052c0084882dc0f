//! MySQL/MariaDB adapter: the domain's storage ports on diesel-async.
//!
//! - [`MysqlStore`]: `Transactions` (a unit of work is one transaction on
//!   one pooled connection, handing out every repository), `Queries` and
//!   `CatalogueRepository`. The unit applies the protection it was begun
//!   with (version checks on every save, `FOR UPDATE` reads when
//!   pessimistic, fencing tokens when fenced, single conditional statements
//!   for the atomic methods); the use cases decide every business step.
//! - [`Db`]: the connection pool ([`PoolOptions`], [`PoolStatus`]).
//! - [`DatabaseUrl`]: a database URL, parsed once.
//! - [`audit`]: the invariants of the stored data, checked on a live
//!   database (`app audit`).
//! - [`run_migrations`] and friends: database creation and the migrations
//!   of `migrations/`, embedded in the binary.
//!
//! Requires MariaDB 10.5+ (`INSERT ... RETURNING`, `max_statement_time`);
//! developed on 10.11. Diesel stays inside this crate: no diesel type
//! appears in a public signature. Errors are translated in one place
//! (`error.rs`): unreachable, killed or too slow is
//! [`concert_domain::Failure::Unavailable`]; deadlocks, lock wait timeouts
//! and unique-key races are `Conflict`; anything else, and a row that does
//! not convert, is `Unknown` with its context. Nothing here panics on a
//! database answer. Every statement is prepared once per connection and
//! reused.

pub mod audit;
mod catalogue;
mod commit;
mod error;
pub mod gauges;
mod idempotency;
mod memo;
mod migrate;
mod outbox;
mod outbox_feed;
mod payments;
mod pool;
mod prepared;
mod queries;
mod reservations;
mod rows;
mod schema;
mod seats;
mod store;
mod url;
mod wallets;

pub use audit::{Invariant, Violation, audit};
pub use migrate::{
    create_database_if_missing, drop_database, revert_all_migrations, run_migrations,
};
pub use pool::{Db, PoolOptions, PoolStatus};
pub use store::MysqlStore;
pub use url::DatabaseUrl;
