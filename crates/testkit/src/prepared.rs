//! Prepared statements reused per connection, as the MySQL adapter reuses
//! them (see its `prepared.rs`): diesel marks raw SQL and `UPDATE`s unsafe
//! to cache, which would cost a `PREPARE` round trip per statement; the raw
//! baselines must pay what the adapter pays, no more. The cache is keyed by
//! the SQL text, and every statement here is a constant.

use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// `query`, prepared once per connection and reused.
#[derive(Debug, Clone)]
pub(crate) struct Reused<Q>(pub(crate) Q);

impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for Reused<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Mysql) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Reused<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Reused<Q> {
    type SqlType = Q::SqlType;
}
