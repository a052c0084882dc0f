//! Seats and holds: [`MysqlSeats`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use concert_domain::{
    Fence, HoldSeat, QueryError, Reservation, ReservationId, ReservationStatus, ReserveError,
    SeatId, SeatRepository, WriteMode,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, TinyInt, Unsigned};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::error::TxError;
use crate::pool::Db;
use crate::rows::{ReservationRow, SEAT_AVAILABLE, SEAT_HELD, SeatRow, from_db, to_db};
use crate::schema::{reservations, seats};
use crate::wallets::fence_held;

/// [`SeatRepository`] on MySQL.
///
/// Locking: a hold writes the seat row first and the reservation rows
/// after it, like a payment and the sweeper do, so these transactions queue
/// on the seat row instead of deadlocking. The unique index on the live
/// reservation of a seat refuses a second live hold even if the seat row
/// were bypassed; that refusal, a deadlock or a lock wait timeout are
/// reported as `Conflict`.
#[derive(Clone, Debug)]
pub struct MysqlSeats {
    db: Db,
}

impl MysqlSeats {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

const HELD: &str = "HELD";
const EXPIRED: &str = "EXPIRED";

/// How many stale holds the sweeper expires per transaction.
const SWEEP_BATCH: i64 = 500;

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

#[derive(QueryableByName)]
struct HeldRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    seat_id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    price: u64,
}

async fn hold_tx(
    c: &mut AsyncMysqlConnection,
    cmd: &HoldSeat,
    mode: WriteMode,
) -> Result<Reservation, TxError<ReserveError>> {
    let now = to_db(cmd.now);
    let until = to_db(cmd.until);
    let (id, seat, price) = match mode {
        WriteMode::Optimistic | WriteMode::Pessimistic => {
            hold_by_rule(c, cmd, mode, now, until).await?
        }
        WriteMode::Atomic => hold_conditionally(c, cmd, now, until).await?,
    };
    if !fence_held(cmd.fence.as_ref()) {
        return Err(TxError::Refused(ReserveError::LockLost));
    }
    Ok(Reservation {
        id: ReservationId::from(id),
        seat: SeatId::from(seat),
        schedule: cmd.schedule,
        seat_number: cmd.seat,
        user: cmd.user,
        price: crate::rows::points(price).map_err(TxError::Corrupt)?,
        status: ReservationStatus::Held,
        expires_at: from_db(until),
    })
}

/// Optimistic / pessimistic: read the seat (`FOR UPDATE` when
/// pessimistic), let [`concert_domain::Seat::hold`] decide, write it back
/// under the version it was read with. Returns (reservation id, seat id,
/// price).
async fn hold_by_rule(
    c: &mut AsyncMysqlConnection,
    cmd: &HoldSeat,
    mode: WriteMode,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<(u64, u64, u64), TxError<ReserveError>> {
    let query = seats::table
        .filter(seats::schedule_id.eq(cmd.schedule.get()))
        .filter(seats::number.eq(cmd.seat.get()))
        .select(SeatRow::as_select());
    let row = if mode == WriteMode::Pessimistic {
        query.for_update().first(c).await.optional()?
    } else {
        query.first(c).await.optional()?
    };
    let row = row.ok_or(TxError::Refused(ReserveError::SeatNotFound))?;
    if cmd
        .fence
        .as_ref()
        .is_some_and(|f| row.fence_token > f.token())
    {
        return Err(TxError::Refused(ReserveError::LockLost));
    }
    let seat = row.to_domain().map_err(TxError::Corrupt)?;
    let decision = seat
        .hold(cmd.user, cmd.now, cmd.until)
        .map_err(TxError::Refused)?;
    let updated = diesel::update(
        seats::table
            .find(row.id)
            .filter(seats::version.eq(row.version)),
    )
    .set((
        seats::status.eq(SEAT_HELD),
        seats::held_by.eq(Some(cmd.user.get())),
        seats::held_until.eq(Some(until)),
        seats::version.eq(seats::version + 1),
        seats::fence_token.eq(cmd.fence.as_ref().map_or(row.fence_token, Fence::token)),
    ))
    .execute(c)
    .await?;
    if updated == 0 {
        return Err(TxError::Refused(ReserveError::Conflict));
    }
    if decision.replaces_expired_hold {
        diesel::update(
            reservations::table
                .filter(reservations::live_seat_id.eq(row.id))
                .filter(reservations::status.eq(HELD)),
        )
        .set(reservations::status.eq(EXPIRED))
        .execute(c)
        .await?;
    }
    let inserted: NewId = diesel::sql_query(
        "INSERT INTO reservations \
         (seat_id, schedule_id, seat_number, user_id, price, status, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, 'HELD', ?, ?) RETURNING id",
    )
    .bind::<Unsigned<BigInt>, _>(row.id)
    .bind::<Unsigned<BigInt>, _>(row.schedule_id)
    .bind::<Unsigned<TinyInt>, _>(row.number)
    .bind::<Unsigned<BigInt>, _>(cmd.user.get())
    .bind::<Unsigned<BigInt>, _>(row.price)
    .bind::<Datetime, _>(until)
    .bind::<Datetime, _>(now)
    .get_result(c)
    .await?;
    Ok((inserted.id, row.id, row.price))
}

const HOLD_IF_FREE: &str = "UPDATE seats \
     SET status = 'HELD', held_by = ?, held_until = ?, version = version + 1, \
         fence_token = GREATEST(fence_token, ?) \
     WHERE schedule_id = ? AND number = ? \
       AND (status = 'AVAILABLE' OR (status = 'HELD' AND held_until <= ?)) \
       AND fence_token <= ?";
const EXPIRE_REPLACED: &str = "UPDATE reservations SET status = 'EXPIRED' \
     WHERE live_seat_id = (SELECT id FROM seats WHERE schedule_id = ? AND number = ?) \
       AND status = 'HELD'";
const INSERT_FROM_SEAT: &str = "INSERT INTO reservations \
     (seat_id, schedule_id, seat_number, user_id, price, status, expires_at, created_at) \
     SELECT id, schedule_id, number, ?, price, 'HELD', ?, ? \
     FROM seats WHERE schedule_id = ? AND number = ? \
     RETURNING id, seat_id, price";

/// Atomic: one conditional `UPDATE` takes the seat if it is free (or its
/// hold has expired); the replaced hold, if any, is expired and the new
/// reservation is copied from the seat row.
async fn hold_conditionally(
    c: &mut AsyncMysqlConnection,
    cmd: &HoldSeat,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<(u64, u64, u64), TxError<ReserveError>> {
    let schedule = cmd.schedule.get();
    let number = cmd.seat.get();
    let (record, limit) = cmd
        .fence
        .as_ref()
        .map_or((0, u64::MAX), |f| (f.token(), f.token()));
    let updated = diesel::sql_query(HOLD_IF_FREE)
        .bind::<Unsigned<BigInt>, _>(cmd.user.get())
        .bind::<Datetime, _>(until)
        .bind::<Unsigned<BigInt>, _>(record)
        .bind::<Unsigned<BigInt>, _>(schedule)
        .bind::<Unsigned<TinyInt>, _>(number)
        .bind::<Datetime, _>(now)
        .bind::<Unsigned<BigInt>, _>(limit)
        .execute(c)
        .await?;
    if updated == 0 {
        let token: Option<u64> = seats::table
            .filter(seats::schedule_id.eq(schedule))
            .filter(seats::number.eq(number))
            .select(seats::fence_token)
            .first(c)
            .await
            .optional()?;
        return Err(TxError::Refused(match token {
            None => ReserveError::SeatNotFound,
            Some(t) if t > limit => ReserveError::LockLost,
            Some(_) => ReserveError::SeatUnavailable,
        }));
    }
    diesel::sql_query(EXPIRE_REPLACED)
        .bind::<Unsigned<BigInt>, _>(schedule)
        .bind::<Unsigned<TinyInt>, _>(number)
        .execute(c)
        .await?;
    let row: HeldRow = diesel::sql_query(INSERT_FROM_SEAT)
        .bind::<Unsigned<BigInt>, _>(cmd.user.get())
        .bind::<Datetime, _>(until)
        .bind::<Datetime, _>(now)
        .bind::<Unsigned<BigInt>, _>(schedule)
        .bind::<Unsigned<TinyInt>, _>(number)
        .get_result(c)
        .await?;
    Ok((row.id, row.seat_id, row.price))
}

/// One sweeper batch: the oldest stale holds, their seats freed first (seat
/// before reservation, the order every writer uses), then the holds
/// expired. Returns (expired, seen).
async fn expire_batch(
    c: &mut AsyncMysqlConnection,
    now: NaiveDateTime,
) -> Result<(u64, usize), TxError<QueryError>> {
    let stale: Vec<(u64, u64)> = reservations::table
        .filter(reservations::status.eq(HELD))
        .filter(reservations::expires_at.le(now))
        .order(reservations::id)
        .limit(SWEEP_BATCH)
        .select((reservations::id, reservations::seat_id))
        .load(c)
        .await?;
    if stale.is_empty() {
        return Ok((0, 0));
    }
    let mut seat_ids: Vec<u64> = stale.iter().map(|(_, seat)| *seat).collect();
    seat_ids.sort_unstable();
    seat_ids.dedup();
    let ids: Vec<u64> = stale.iter().map(|(id, _)| *id).collect();
    diesel::update(
        seats::table
            .filter(seats::id.eq_any(&seat_ids))
            .filter(seats::status.eq(SEAT_HELD))
            .filter(seats::held_until.le(now)),
    )
    .set((
        seats::status.eq(SEAT_AVAILABLE),
        seats::held_by.eq(None::<u64>),
        seats::held_until.eq(None::<NaiveDateTime>),
        seats::version.eq(seats::version + 1),
    ))
    .execute(c)
    .await?;
    let expired = diesel::update(
        reservations::table
            .filter(reservations::id.eq_any(&ids))
            .filter(reservations::status.eq(HELD))
            .filter(reservations::expires_at.le(now)),
    )
    .set(reservations::status.eq(EXPIRED))
    .execute(c)
    .await?;
    Ok((expired as u64, stale.len()))
}

#[async_trait]
impl SeatRepository for MysqlSeats {
    async fn hold(&self, cmd: HoldSeat, mode: WriteMode) -> Result<Reservation, ReserveError> {
        let mut conn = self.db.get::<ReserveError>().await?;
        let outcome = conn
            .transaction(async |c| hold_tx(c, &cmd, mode).await)
            .await;
        self.db.finish(conn, outcome, "holding a seat")
    }

    async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = async {
            let row = reservations::table
                .find(id.get())
                .select(ReservationRow::as_select())
                .first(&mut *conn)
                .await
                .optional()?;
            row.as_ref()
                .map(ReservationRow::to_domain)
                .transpose()
                .map_err(TxError::Corrupt)
        }
        .await;
        self.db.finish(conn, outcome, "reading a reservation")
    }

    async fn expire_stale(&self, now: DateTime<Utc>) -> Result<u64, QueryError> {
        let now = to_db(now);
        let mut total = 0;
        loop {
            let mut conn = self.db.get::<QueryError>().await?;
            let outcome = conn.transaction(async |c| expire_batch(c, now).await).await;
            let (expired, seen) = self.db.finish(conn, outcome, "expiring stale holds")?;
            total += expired;
            if seen < SWEEP_BATCH as usize {
                return Ok(total);
            }
        }
    }
}
