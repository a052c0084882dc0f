//! [`ReservationRepository`] on a unit of work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    Failure, NewReservation, Reservation, ReservationId, ReservationRepository, ReservationStatus,
    ScheduleId, SeatId, UserId,
};
use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, TinyInt, Unsigned, Varchar};
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::prepared::{reuse, reuse_for};
use crate::rows::{ReservationRow, as_stored, to_db};
use crate::schema::reservations;
use crate::store::MysqlUnit;

const INSERT: &str = "INSERT INTO reservations \
     (seat_id, schedule_id, seat_number, user_id, price, status, expires_at, created_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id";
/// Compare-and-set of the status.
const SAVE: &str = "UPDATE reservations SET status = ? WHERE id = ? AND status = ?";
/// Takes the write lock of the (user, schedule) row, creating it if needed:
/// `ON DUPLICATE KEY UPDATE` locks an existing row exclusively (`INSERT
/// IGNORE` would take a shared lock, and two waiters upgrading shared locks
/// deadlock each other).
const LOCK_HOLDS: &str = "INSERT INTO hold_locks (user_id, schedule_id) VALUES (?, ?) \
     ON DUPLICATE KEY UPDATE user_id = user_id";

#[derive(QueryableByName)]
pub(crate) struct NewId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    pub(crate) id: u64,
}

#[async_trait]
impl ReservationRepository for MysqlUnit {
    async fn find(&mut self, id: ReservationId) -> Result<Option<Reservation>, Failure> {
        let query = reservations::table
            .find(id.get())
            .select(ReservationRow::as_select());
        let (c, guard) = self.session.split()?;
        let row: Option<ReservationRow> = guard
            .optional("reading a reservation", reuse(query).get_result(c))
            .await?;
        convert(row.as_ref(), "reading a reservation")
    }

    async fn held_for_seat(&mut self, seat: SeatId) -> Result<Option<Reservation>, Failure> {
        let query = reservations::table
            .filter(reservations::live_seat_id.eq(seat.get()))
            .filter(reservations::status.eq(ReservationStatus::Held.as_str()))
            .select(ReservationRow::as_select())
            .limit(1);
        let (c, guard) = self.session.split()?;
        let row: Option<ReservationRow> = guard
            .optional("reading the hold of a seat", reuse(query).get_result(c))
            .await?;
        convert(row.as_ref(), "reading the hold of a seat")
    }

    /// `INSERT ... RETURNING id`; the unique index on the live seat refuses
    /// a second live reservation (a conflict).
    async fn insert(&mut self, new: &NewReservation) -> Result<Reservation, Failure> {
        let query = diesel::sql_query(INSERT)
            .bind::<Unsigned<BigInt>, _>(new.seat.get())
            .bind::<Unsigned<BigInt>, _>(new.schedule.get())
            .bind::<Unsigned<TinyInt>, _>(new.seat_number.get())
            .bind::<Unsigned<BigInt>, _>(new.user.get())
            .bind::<Unsigned<BigInt>, _>(new.price.get())
            .bind::<Varchar, _>(ReservationStatus::Held.as_str())
            .bind::<Datetime, _>(to_db(new.expires_at))
            .bind::<Datetime, _>(to_db(new.created_at));
        let (c, guard) = self.session.split()?;
        let row: NewId = guard
            .run("recording a reservation", reuse(query).get_result(c))
            .await?;
        Ok(Reservation {
            id: ReservationId::from(row.id),
            seat: new.seat,
            schedule: new.schedule,
            seat_number: new.seat_number,
            user: new.user,
            price: new.price,
            status: ReservationStatus::Held,
            expires_at: as_stored(new.expires_at),
        })
    }

    async fn save(
        &mut self,
        reservation: &Reservation,
        expected: ReservationStatus,
    ) -> Result<(), Failure> {
        let query = diesel::sql_query(SAVE)
            .bind::<Varchar, _>(reservation.status.as_str())
            .bind::<Unsigned<BigInt>, _>(reservation.id.get())
            .bind::<Varchar, _>(expected.as_str());
        let (c, guard) = self.session.split()?;
        let written = guard
            .run("writing a reservation", reuse(query).execute(c))
            .await?;
        if written == 1 {
            Ok(())
        } else {
            Err(Failure::Conflict)
        }
    }

    /// Locks the (user, schedule) row of `hold_locks`, then counts the
    /// user's `HELD` reservations of the schedule ending after `now`.
    async fn lock_holds_of(
        &mut self,
        user: UserId,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u32, Failure> {
        let lock = diesel::sql_query(LOCK_HOLDS)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<Unsigned<BigInt>, _>(schedule.get());
        let count = reservations::table
            .filter(reservations::user_id.eq(user.get()))
            .filter(reservations::schedule_id.eq(schedule.get()))
            .filter(reservations::status.eq(ReservationStatus::Held.as_str()))
            .filter(reservations::expires_at.gt(to_db(now)))
            .count();
        let (c, guard) = self.session.split()?;
        guard
            .run("locking the holds of a user", reuse(lock).execute(c))
            .await?;
        let live: i64 = guard
            .run("counting the holds of a user", reuse(count).get_result(c))
            .await?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX))
    }

    async fn stale(&mut self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Reservation>, Failure> {
        let query = reservations::table
            .filter(reservations::status.eq(ReservationStatus::Held.as_str()))
            .filter(reservations::expires_at.le(to_db(now)))
            .order((reservations::expires_at, reservations::id))
            .limit(i64::from(limit))
            .select(ReservationRow::as_select());
        let (c, guard) = self.session.split()?;
        let rows: Vec<ReservationRow> = guard
            .run("reading ended holds", reuse(query).load(c))
            .await?;
        rows.iter()
            .map(ReservationRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| corrupt(e, "reading ended holds"))
    }

    /// Locks those of `ids` still `HELD` and ended, then marks them
    /// `EXPIRED`.
    async fn expire(
        &mut self,
        ids: &[ReservationId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservationId>, Failure> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = ids.iter().map(|id| id.get()).collect();
        let len = ids.len();
        let ended = reservations::table
            .filter(reservations::id.eq_any(ids))
            .filter(reservations::status.eq(ReservationStatus::Held.as_str()))
            .filter(reservations::expires_at.le(to_db(now)))
            .order(reservations::id)
            .select(reservations::id)
            .for_update();
        let (c, guard) = self.session.split()?;
        let ended: Vec<u64> = guard
            .run("locking ended holds", reuse_for(ended, len).load(c))
            .await?;
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        let len = ended.len();
        let update = diesel::update(reservations::table.filter(reservations::id.eq_any(&ended)))
            .set(reservations::status.eq(ReservationStatus::Expired.as_str()));
        guard
            .run("expiring ended holds", reuse_for(update, len).execute(c))
            .await?;
        Ok(ended.into_iter().map(ReservationId::from).collect())
    }
}

fn convert(
    row: Option<&ReservationRow>,
    context: &'static str,
) -> Result<Option<Reservation>, Failure> {
    row.map(ReservationRow::to_domain)
        .transpose()
        .map_err(|e| corrupt(e, context))
}
