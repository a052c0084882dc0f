//! Concerts, schedules and seat maps: [`MysqlCatalogue`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use concert_domain::{
    CatalogueRepository, Concert, ConcertId, QueryError, ScheduleId, ScheduleSummary, Seat,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Unsigned};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use crate::error::TxError;
use crate::pool::Db;
use crate::rows::{ConcertRow, SeatRow, from_db, to_db};
use crate::schema::{concerts, schedules, seats};

/// [`CatalogueRepository`] on MySQL (plain reads, no transaction).
#[derive(Clone, Debug)]
pub struct MysqlCatalogue {
    db: Db,
}

impl MysqlCatalogue {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(QueryableByName)]
struct ScheduleCountRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    concert_id: u64,
    #[diesel(sql_type = Datetime)]
    starts_at: NaiveDateTime,
    #[diesel(sql_type = Unsigned<BigInt>)]
    available: u64,
}

/// Future schedules with the seats bookable at `after` (an expired hold
/// counts as available).
const SCHEDULES_WITH_AVAILABILITY: &str = "SELECT sc.id, sc.concert_id, sc.starts_at, \
       CAST(COALESCE(SUM(s.status = 'AVAILABLE' OR (s.status = 'HELD' AND s.held_until <= ?)), 0) \
            AS UNSIGNED) AS available \
     FROM schedules sc LEFT JOIN seats s ON s.schedule_id = sc.id \
     WHERE sc.concert_id = ? AND sc.starts_at > ? \
     GROUP BY sc.id, sc.concert_id, sc.starts_at \
     ORDER BY sc.starts_at, sc.id";

async fn schedules_of(
    c: &mut AsyncMysqlConnection,
    concert: ConcertId,
    after: NaiveDateTime,
) -> Result<Vec<ScheduleSummary>, TxError<QueryError>> {
    let rows: Vec<ScheduleCountRow> = diesel::sql_query(SCHEDULES_WITH_AVAILABILITY)
        .bind::<Datetime, _>(after)
        .bind::<Unsigned<BigInt>, _>(concert.get())
        .bind::<Datetime, _>(after)
        .load(c)
        .await?;
    if rows.is_empty() {
        let exists: Option<u64> = concerts::table
            .find(concert.get())
            .select(concerts::id)
            .first(c)
            .await
            .optional()?;
        if exists.is_none() {
            return Err(TxError::Refused(QueryError::NotFound("concert")));
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| ScheduleSummary {
            id: ScheduleId::from(row.id),
            concert: ConcertId::from(row.concert_id),
            starts_at: from_db(row.starts_at),
            available_seats: u32::try_from(row.available).unwrap_or(u32::MAX),
        })
        .collect())
}

async fn seats_of(
    c: &mut AsyncMysqlConnection,
    schedule: ScheduleId,
) -> Result<Vec<Seat>, TxError<QueryError>> {
    let rows: Vec<SeatRow> = seats::table
        .filter(seats::schedule_id.eq(schedule.get()))
        .order(seats::number)
        .select(SeatRow::as_select())
        .load(c)
        .await?;
    if rows.is_empty() {
        let exists: Option<u64> = schedules::table
            .find(schedule.get())
            .select(schedules::id)
            .first(c)
            .await
            .optional()?;
        if exists.is_none() {
            return Err(TxError::Refused(QueryError::NotFound("schedule")));
        }
    }
    rows.iter()
        .map(SeatRow::to_domain)
        .collect::<anyhow::Result<_>>()
        .map_err(TxError::Corrupt)
}

#[async_trait]
impl CatalogueRepository for MysqlCatalogue {
    async fn concerts(&self) -> Result<Vec<Concert>, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = concerts::table
            .order(concerts::id)
            .select(ConcertRow::as_select())
            .load(&mut *conn)
            .await
            .map(|rows| rows.into_iter().map(Concert::from).collect())
            .map_err(TxError::Db);
        self.db.finish(conn, outcome, "listing concerts")
    }

    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Vec<ScheduleSummary>, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = schedules_of(&mut conn, concert, to_db(after)).await;
        self.db.finish(conn, outcome, "listing schedules")
    }

    async fn seats(&self, schedule: ScheduleId) -> Result<Vec<Seat>, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = seats_of(&mut conn, schedule).await;
        self.db.finish(conn, outcome, "listing seats")
    }
}
