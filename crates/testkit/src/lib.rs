//! Test and lab support, never shipped.
//!
//! - [`TestDatabase`]: a fresh, migrated `test_<uuid>` database, dropped
//!   when the value is dropped.
//! - [`Sql`]: set-up and inspection of a database with direct SQL, outside
//!   the domain rules and the adapter under test (it reads rows with its
//!   own queries, so it is an independent witness of what the adapter
//!   wrote), and the lab's raw SQL baselines ([`Sql::use_conditional`],
//!   [`Sql::use_for_update`]).
//! - [`RedisServer`]: a `redis-server` of one's own on a free port, to
//!   kill and restart, or to count commands without anyone else's.

mod database;
mod prepared;
mod redis_server;
mod sql;

pub use database::{TestDatabase, server_url};
pub use redis_server::RedisServer;
pub use sql::{OutboxEvent, Sql};
