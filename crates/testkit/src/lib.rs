//! Test and lab support, never shipped.
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

mod database;
mod prepared;
pub mod servers;
mod sql;

pub use database::{TestDatabase, server_url};
pub use servers::{OwnMariadb, OwnRedis, free_port};
pub use sql::{OutboxEvent, Sql};
