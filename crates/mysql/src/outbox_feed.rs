//! [`OutboxFeed`] on [`MysqlStore`]: the outbox as the relay reads, marks
//! and prunes it. One statement each, outside any unit of work.
//!
//! Positions are the `outbox.id` AUTO_INCREMENT values. A unit writes its
//! events with its `COMMIT` while it still holds the row of the aggregate
//! they describe, so a later unit of the same aggregate inserts (and gets
//! its id) only after the earlier one committed: per aggregate, ids are in
//! commit order. Across aggregates a lower id may commit after a higher
//! one; the relay therefore never skips ahead by id: it reads whatever is
//! unpublished (`published_at IS NULL`, by id, on the
//! `ix_outbox_unpublished` index) and marks exactly the ids it published.
//!
//! Why a lease and not `SELECT ... FOR UPDATE SKIP LOCKED` (MariaDB 10.6+):
//! rows skipped because another relay has them locked break the "prefix"
//! property the order relies on: relay B could publish event 7 of a
//! reservation while relay A still holds its event 6. The relay runs under
//! one lease at a time (see `concert_domain::relay`), so these statements
//! need no row locks, and the minimum stays MariaDB 10.5.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use concert_domain::{Backlog, EventType, Failure, OutboxEvent, OutboxFeed, Stream};
use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Nullable, Text, Unsigned};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use crate::error::corrupt;
use crate::prepared::reuse;
use crate::rows::{from_db, to_db};
use crate::schema::outbox;
use crate::store::MysqlStore;

const UNPUBLISHED: &str = "SELECT id, event_id, stream, event_type, aggregate, payload, \
     created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?";
const BACKLOG: &str = "SELECT \
     (SELECT CAST(COUNT(*) AS UNSIGNED) FROM outbox WHERE published_at IS NULL) AS unpublished, \
     (SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL) AS oldest, \
     (SELECT MAX(published_at) FROM outbox) AS last_published";
const RETAINED: &str = "SELECT CAST(COUNT(*) AS UNSIGNED) AS n FROM outbox \
     WHERE published_at IS NOT NULL";
const PRUNE: &str = "DELETE FROM outbox WHERE published_at < ? LIMIT ?";
/// Rows per statement when marking events unpublished again (a statement
/// stays well within the statement time limit).
const REPUBLISH_BATCH: u64 = 5_000;
const REPUBLISH_ALL: &str =
    "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL LIMIT ?";
const REPUBLISH_SINCE: &str =
    "UPDATE outbox SET published_at = NULL WHERE published_at >= ? LIMIT ?";

#[derive(QueryableByName)]
struct UnpublishedRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    stream: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    aggregate: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Datetime)]
    created_at: NaiveDateTime,
}

impl UnpublishedRow {
    fn to_domain(&self) -> anyhow::Result<OutboxEvent> {
        Ok(OutboxEvent {
            position: self.id,
            id: self.event_id.clone(),
            stream: self.stream.parse::<Stream>()?,
            kind: self.event_type.parse::<EventType>()?,
            aggregate: self.aggregate.clone(),
            payload: self.payload.clone(),
            created_at: from_db(self.created_at),
        })
    }
}

#[derive(QueryableByName)]
struct BacklogRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    unpublished: u64,
    #[diesel(sql_type = Nullable<Datetime>)]
    oldest: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Datetime>)]
    last_published: Option<NaiveDateTime>,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    n: u64,
}

/// The `UPDATE` that marks `positions` published at `at` (only those still
/// unpublished). Positions are integers and the time is formatted here, so
/// the statement is built as text and sent in one round trip.
fn mark_statement(positions: &[u64], at: DateTime<Utc>) -> String {
    let mut sql = String::with_capacity(96 + positions.len() * 12);
    sql.push_str("UPDATE outbox SET published_at = '");
    sql.push_str(&to_db(at).format("%Y-%m-%d %H:%M:%S%.6f").to_string());
    sql.push_str("' WHERE published_at IS NULL AND id IN (");
    for (i, position) in positions.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&position.to_string());
    }
    sql.push(')');
    sql
}

#[async_trait]
impl OutboxFeed for MysqlStore {
    async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxEvent>, Failure> {
        let context = "reading unpublished events";
        let query =
            diesel::sql_query(UNPUBLISHED).bind::<Unsigned<BigInt>, _>(u64::from(limit.max(1)));
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<UnpublishedRow> = guard.run(context, reuse(query).load(c)).await?;
        rows.iter()
            .map(UnpublishedRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| corrupt(e, context))
    }

    /// One round trip (text protocol: the statement differs per batch, a
    /// prepared one would cost a second), so it returns how many it was
    /// asked to mark.
    async fn mark_published(&self, positions: &[u64], at: DateTime<Utc>) -> Result<u64, Failure> {
        if positions.is_empty() {
            return Ok(0);
        }
        let sql = mark_statement(positions, at);
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        guard
            .run("marking events published", c.batch_execute(&sql))
            .await?;
        Ok(positions.len() as u64)
    }

    async fn any_published(&self) -> Result<bool, Failure> {
        let query = outbox::table
            .filter(outbox::published_at.is_not_null())
            .select(outbox::id)
            .limit(1);
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let found: Option<u64> = guard
            .optional("looking for published events", reuse(query).get_result(c))
            .await?;
        Ok(found.is_some())
    }

    async fn republish(&self, since: Option<DateTime<Utc>>) -> Result<u64, Failure> {
        let mut session = self.session().await?;
        let mut total = 0;
        loop {
            let (c, guard) = session.split()?;
            let context = "marking events unpublished again";
            let changed = match since {
                None => {
                    let query = diesel::sql_query(REPUBLISH_ALL)
                        .bind::<Unsigned<BigInt>, _>(REPUBLISH_BATCH);
                    guard.run(context, reuse(query).execute(c)).await?
                }
                Some(since) => {
                    let query = diesel::sql_query(REPUBLISH_SINCE)
                        .bind::<Datetime, _>(to_db(since))
                        .bind::<Unsigned<BigInt>, _>(REPUBLISH_BATCH);
                    guard.run(context, reuse(query).execute(c)).await?
                }
            } as u64;
            total += changed;
            if changed < REPUBLISH_BATCH {
                return Ok(total);
            }
        }
    }

    async fn prune(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, Failure> {
        let query = diesel::sql_query(PRUNE)
            .bind::<Datetime, _>(to_db(before))
            .bind::<Unsigned<BigInt>, _>(u64::from(limit.max(1)));
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let pruned = guard
            .run("pruning published events", reuse(query).execute(c))
            .await?;
        Ok(pruned as u64)
    }

    async fn backlog(&self) -> Result<Backlog, Failure> {
        let query = diesel::sql_query(BACKLOG);
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: BacklogRow = guard
            .run("measuring the outbox backlog", reuse(query).get_result(c))
            .await?;
        Ok(Backlog {
            unpublished: row.unpublished,
            oldest_unpublished: row.oldest.map(from_db),
            last_published: row.last_published.map(from_db),
        })
    }

    async fn retained(&self) -> Result<u64, Failure> {
        let query = diesel::sql_query(RETAINED);
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: CountRow = guard
            .run("counting published events", reuse(query).get_result(c))
            .await?;
        Ok(row.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_statement_names_exactly_the_published_ids() {
        let at = DateTime::from_timestamp(1_900_000_000, 123_456_789).unwrap();
        assert_eq!(
            mark_statement(&[3, 5, 40], at),
            "UPDATE outbox SET published_at = '2030-03-17 17:46:40.123456' \
             WHERE published_at IS NULL AND id IN (3,5,40)"
        );
    }
}
