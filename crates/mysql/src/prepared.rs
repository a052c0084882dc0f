//! Prepared statements reused per connection.
//!
//! diesel-async keeps a cache of prepared statements per connection, but
//! diesel marks raw SQL (`sql_query`), every `UPDATE`, upserts, `IN` lists
//! and batch inserts as unsafe to cache, and an uncached statement costs a
//! `PREPARE` round trip on every call. [`reuse`] marks a statement as safe:
//! the cache is then keyed by its SQL text and bind types, so each distinct
//! statement is prepared once per connection. Only statements whose SQL
//! text comes from a bounded set may use it (every statement of this crate
//! is a constant, or has a short list of at most [`REUSE_MAX_LIST`] values);
//! longer lists are prepared for their call only ([`reuse_for`]).

use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// The longest `IN (...)` list or multi-row insert whose statement is kept
/// prepared: one statement per length up to this, per connection.
pub(crate) const REUSE_MAX_LIST: usize = 8;

/// A statement that is prepared once per connection, or on every call.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<Q> {
    query: Q,
    reuse: bool,
}

/// Prepares `query` once per connection and reuses the statement.
pub(crate) fn reuse<Q>(query: Q) -> Prepared<Q> {
    Prepared { query, reuse: true }
}

/// Reuses the statement of a `query` built for `len` values (an `IN` list,
/// rows of an insert) only when `len` is small, so the cache stays bounded.
pub(crate) fn reuse_for<Q>(query: Q, len: usize) -> Prepared<Q> {
    Prepared {
        query,
        reuse: len <= REUSE_MAX_LIST,
    }
}

impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, backend: &Mysql) -> QueryResult<bool> {
        if self.reuse {
            Ok(true)
        } else {
            self.query.is_safe_to_cache_prepared(backend)
        }
    }
}

/// No static id: the cache is keyed by the SQL text.
impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
