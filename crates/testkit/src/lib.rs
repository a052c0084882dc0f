//! Test and lab support, never shipped. Not an adapter: adapters may use
//! it as a dev-dependency; without its `mysql` feature it depends on no
//! other crate of the workspace.
//!
//! - [`TestDatabase`]: a fresh, migrated `test_<uuid>` database, dropped
//!   when the value is dropped.
//! - [`Sql`]: set-up and inspection of a database with direct SQL, outside
//!   the domain rules and the adapter under test (it reads rows with its
//!   own queries, so it is an independent witness of what the adapter
//!   wrote), and the lab's raw SQL baselines ([`Sql::use_conditional`],
//!   [`Sql::use_for_update`]).
//! - [`servers`]: a `redis-server` and a `mariadbd` of one's own on free
//!   ports, to pause, kill and restart in fault tests.

#[cfg(feature = "mysql")]
mod database;
#[cfg(feature = "mysql")]
mod prepared;
pub mod servers;
#[cfg(feature = "mysql")]
mod sql;

#[cfg(feature = "mysql")]
pub use database::{TestDatabase, server_url};
pub use servers::{OwnMariadb, OwnRedis, free_port};
#[cfg(feature = "mysql")]
pub use sql::{OutboxEvent, Sql};
