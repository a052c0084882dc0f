//! [`CatalogueRepository`] on [`MysqlStore`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use concert_domain::{
    CatalogueRepository, Concert, ConcertId, Failure, NewSchedule, Schedule, ScheduleId,
    ScheduleSummary, Seat, SeatStatus, Title,
};
use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Unsigned, Varchar};
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::pool::Session;
use crate::prepared::reuse;
use crate::reservations::NewId;
use crate::rows::{ConcertRow, NewSeatRow, ScheduleRow, SeatRow, as_stored, from_db, to_db};
use crate::schema::{concerts, schedules, seats};
use crate::store::MysqlStore;

/// The concert's schedules starting after `after`, with the seats
/// available at `after` (a hold that ended counts as available).
const SCHEDULES_WITH_AVAILABILITY: &str = "SELECT sc.id, sc.concert_id, sc.starts_at, \
       CAST(COALESCE(SUM(s.status = ? OR (s.status = ? AND s.held_until <= ?)), 0) \
            AS UNSIGNED) AS available \
     FROM schedules sc LEFT JOIN seats s ON s.schedule_id = sc.id \
     WHERE sc.concert_id = ? AND sc.starts_at > ? \
     GROUP BY sc.id, sc.concert_id, sc.starts_at \
     ORDER BY sc.starts_at, sc.id";
const INSERT_CONCERT: &str = "INSERT INTO concerts (title) VALUES (?) RETURNING id";
/// Inserts the schedule only when its concert exists.
const INSERT_SCHEDULE: &str = "INSERT INTO schedules (concert_id, starts_at) \
     SELECT id, ? FROM concerts WHERE id = ? RETURNING id";

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

async fn concert_exists(session: &mut Session, concert: ConcertId) -> Result<bool, Failure> {
    let query = concerts::table.find(concert.get()).select(concerts::id);
    let (c, guard) = session.split()?;
    let found: Option<u64> = guard
        .optional("looking a concert up", reuse(query).get_result(c))
        .await?;
    Ok(found.is_some())
}

#[async_trait]
impl CatalogueRepository for MysqlStore {
    async fn concerts(&self) -> Result<Vec<Concert>, Failure> {
        let query = concerts::table
            .order(concerts::id)
            .select(ConcertRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<ConcertRow> = guard.run("listing concerts", reuse(query).load(c)).await?;
        Ok(rows.into_iter().map(Concert::from).collect())
    }

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, Failure> {
        let query = concerts::table
            .find(id.get())
            .select(ConcertRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: Option<ConcertRow> = guard
            .optional("reading a concert", reuse(query).get_result(c))
            .await?;
        Ok(row.map(Concert::from))
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, Failure> {
        let query = schedules::table
            .find(id.get())
            .select(ScheduleRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: Option<ScheduleRow> = guard
            .optional("reading a schedule", reuse(query).get_result(c))
            .await?;
        Ok(row.map(Schedule::from))
    }

    /// One statement; a second one only when it finds no schedule, to tell
    /// an unknown concert from one without future dates.
    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
        let after = to_db(after);
        let query = diesel::sql_query(SCHEDULES_WITH_AVAILABILITY)
            .bind::<Varchar, _>(SeatStatus::Available.as_str())
            .bind::<Varchar, _>(SeatStatus::Held.as_str())
            .bind::<Datetime, _>(after)
            .bind::<Unsigned<BigInt>, _>(concert.get())
            .bind::<Datetime, _>(after);
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<ScheduleCountRow> =
            guard.run("listing schedules", reuse(query).load(c)).await?;
        if rows.is_empty() && !concert_exists(&mut session, concert).await? {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|row| ScheduleSummary {
                    id: ScheduleId::from(row.id),
                    concert: ConcertId::from(row.concert_id),
                    starts_at: from_db(row.starts_at),
                    available_seats: u32::try_from(row.available).unwrap_or(u32::MAX),
                })
                .collect(),
        ))
    }

    async fn seats(&self, schedule: ScheduleId) -> Result<Option<Vec<Seat>>, Failure> {
        let context = "listing seats";
        let query = seats::table
            .filter(seats::schedule_id.eq(schedule.get()))
            .order(seats::number)
            .select(SeatRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<SeatRow> = guard.run(context, reuse(query).load(c)).await?;
        if rows.is_empty() {
            let query = schedules::table.find(schedule.get()).select(schedules::id);
            let found: Option<u64> = guard
                .optional("looking a schedule up", reuse(query).get_result(c))
                .await?;
            if found.is_none() {
                return Ok(None);
            }
        }
        rows.iter()
            .map(SeatRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map(Some)
            .map_err(|e| corrupt(e, context))
    }

    async fn create_concert(&self, title: &Title) -> Result<Concert, Failure> {
        let query = diesel::sql_query(INSERT_CONCERT).bind::<Varchar, _>(title.as_str());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: NewId = guard
            .run("creating a concert", reuse(query).get_result(c))
            .await?;
        Ok(Concert {
            id: ConcertId::from(row.id),
            title: title.as_str().to_owned(),
        })
    }

    /// One transaction: the schedule (only if the concert exists), then its
    /// seats in one multi-row insert.
    async fn create_schedule(&self, new: &NewSchedule) -> Result<Option<Schedule>, Failure> {
        let mut session = self.session().await?;
        session.begin().await?;
        let created = insert_schedule(&mut session, new).await;
        match created {
            Ok(Some(schedule)) => {
                session.commit(None).await?;
                Ok(Some(schedule))
            }
            other => {
                session.rollback().await;
                other
            }
        }
    }
}

async fn insert_schedule(
    session: &mut Session,
    new: &NewSchedule,
) -> Result<Option<Schedule>, Failure> {
    let query = diesel::sql_query(INSERT_SCHEDULE)
        .bind::<Datetime, _>(to_db(new.starts_at))
        .bind::<Unsigned<BigInt>, _>(new.concert.get());
    let (c, guard) = session.split()?;
    let Some(row): Option<NewId> = guard
        .optional("creating a schedule", reuse(query).get_result(c))
        .await?
    else {
        return Ok(None);
    };
    let seats: Vec<NewSeatRow> = new
        .seats()
        .map(|(number, price)| NewSeatRow {
            schedule_id: row.id,
            number: number.get(),
            price: price.get(),
            status: SeatStatus::Available.as_str(),
        })
        .collect();
    let query = diesel::insert_into(seats::table).values(seats);
    guard
        .run("creating the seats of a schedule", reuse(query).execute(c))
        .await?;
    Ok(Some(Schedule {
        id: ScheduleId::from(row.id),
        concert: new.concert,
        starts_at: as_stored(new.starts_at),
    }))
}
