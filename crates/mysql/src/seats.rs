//! [`SeatRepository`] on a unit of work.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use concert_domain::{
    Failure, LockKey, ScheduleId, Seat, SeatId, SeatNumber, SeatRepository, SeatStatus, UserId,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Nullable, TinyInt, Unsigned, Varchar};
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::prepared::{reuse, reuse_for};
use crate::rows::{SeatRow, seat_state_to_db, to_db};
use crate::schema::seats;
use crate::store::MysqlUnit;

/// The seat written under the version it was read with.
const SAVE: &str = "UPDATE seats SET status = ?, held_by = ?, held_until = ?, version = ? \
     WHERE id = ? AND version = ?";
/// The same under a fence: refused when a newer token wrote the seat; the
/// token is recorded.
const SAVE_FENCED: &str = "UPDATE seats \
     SET status = ?, held_by = ?, held_until = ?, version = ?, fence_token = ? \
     WHERE id = ? AND version = ? AND fence_token <= ?";
/// The atomic hold: one conditional write that takes the seat if it is
/// available or its hold ended.
const HOLD_IF_FREE: &str = "UPDATE seats \
     SET status = ?, held_by = ?, held_until = ?, version = version + 1 \
     WHERE schedule_id = ? AND number = ? \
       AND (status = ? OR (status = ? AND held_until <= ?))";

#[async_trait]
impl SeatRepository for MysqlUnit {
    /// `SELECT ... WHERE schedule_id = ? AND number IN (...) ORDER BY
    /// number`, `FOR UPDATE` when pessimistic (InnoDB locks them in that
    /// order).
    async fn find(
        &mut self,
        schedule: ScheduleId,
        numbers: &[SeatNumber],
    ) -> Result<Vec<Seat>, Failure> {
        let mut numbers: Vec<u8> = numbers.iter().map(|n| n.get()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let len = numbers.len();
        let query = seats::table
            .filter(seats::schedule_id.eq(schedule.get()))
            .filter(seats::number.eq_any(numbers))
            .order(seats::number)
            .select(SeatRow::as_select());
        let lock = self.pessimistic();
        let (c, guard) = self.session.split()?;
        let rows: Vec<SeatRow> = if lock {
            guard
                .run("locking seats", reuse_for(query.for_update(), len).load(c))
                .await?
        } else {
            guard
                .run("reading seats", reuse_for(query, len).load(c))
                .await?
        };
        let seats: Vec<Seat> = rows
            .iter()
            .map(SeatRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| corrupt(e, "reading seats"))?;
        // A fenced holder learns at its first read that it lost its lock
        // (its lease ran out, or a newer token already wrote the seat),
        // before it decides anything from data it no longer owns.
        for (seat, row) in seats.iter().zip(&rows) {
            if let Some(fence) = self.fence(&LockKey::seat(seat.schedule, seat.number))
                && (fence.is_lost() || row.fence_token > fence.token())
            {
                return Err(Failure::LockLost);
            }
        }
        Ok(seats)
    }

    /// `SELECT ... WHERE id = ? FOR UPDATE`.
    async fn lock(&mut self, id: SeatId) -> Result<Option<Seat>, Failure> {
        let query = seats::table
            .find(id.get())
            .select(SeatRow::as_select())
            .for_update();
        let (c, guard) = self.session.split()?;
        let row: Option<SeatRow> = guard
            .optional("locking a seat", reuse(query).get_result(c))
            .await?;
        row.as_ref()
            .map(SeatRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, "locking a seat"))
    }

    async fn save(&mut self, seat: &Seat) -> Result<(), Failure> {
        let read = seat.version.checked_sub(1).ok_or(Failure::Conflict)?;
        let (status, held_by, held_until) = seat_state_to_db(seat.state);
        let fence = self
            .fence(&LockKey::seat(seat.schedule, seat.number))
            .map(|f| f.token());
        let (c, guard) = self.session.split()?;
        let written = match fence {
            None => {
                let query = diesel::sql_query(SAVE)
                    .bind::<Varchar, _>(status)
                    .bind::<Nullable<Unsigned<BigInt>>, _>(held_by)
                    .bind::<Nullable<Datetime>, _>(held_until)
                    .bind::<Unsigned<BigInt>, _>(seat.version)
                    .bind::<Unsigned<BigInt>, _>(seat.id.get())
                    .bind::<Unsigned<BigInt>, _>(read);
                guard.run("writing a seat", reuse(query).execute(c)).await?
            }
            Some(token) => {
                let query = diesel::sql_query(SAVE_FENCED)
                    .bind::<Varchar, _>(status)
                    .bind::<Nullable<Unsigned<BigInt>>, _>(held_by)
                    .bind::<Nullable<Datetime>, _>(held_until)
                    .bind::<Unsigned<BigInt>, _>(seat.version)
                    .bind::<Unsigned<BigInt>, _>(token)
                    .bind::<Unsigned<BigInt>, _>(seat.id.get())
                    .bind::<Unsigned<BigInt>, _>(read)
                    .bind::<Unsigned<BigInt>, _>(token);
                guard.run("writing a seat", reuse(query).execute(c)).await?
            }
        };
        if written == 1 {
            return Ok(());
        }
        let Some(token) = fence else {
            return Err(Failure::Conflict);
        };
        // Refused: a newer token, or only a newer version?
        let query = seats::table.find(seat.id.get()).select(seats::fence_token);
        let stored: Option<u64> = guard
            .optional("reading a seat's fence", reuse(query).get_result(c))
            .await?;
        match stored {
            Some(stored) if stored > token => Err(Failure::LockLost),
            _ => Err(Failure::Conflict),
        }
    }

    async fn hold_if_free(
        &mut self,
        schedule: ScheduleId,
        number: SeatNumber,
        user: UserId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let query = diesel::sql_query(HOLD_IF_FREE)
            .bind::<Varchar, _>(SeatStatus::Held.as_str())
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<Datetime, _>(to_db(until))
            .bind::<Unsigned<BigInt>, _>(schedule.get())
            .bind::<Unsigned<TinyInt>, _>(number.get())
            .bind::<Varchar, _>(SeatStatus::Available.as_str())
            .bind::<Varchar, _>(SeatStatus::Held.as_str())
            .bind::<Datetime, _>(to_db(now));
        let (c, guard) = self.session.split()?;
        let written = guard
            .run("holding a free seat", reuse(query).execute(c))
            .await?;
        Ok(written == 1)
    }

    async fn release_expired(
        &mut self,
        seats: &[SeatId],
        now: DateTime<Utc>,
    ) -> Result<u64, Failure> {
        if seats.is_empty() {
            return Ok(0);
        }
        let ids: Vec<u64> = seats.iter().map(|s| s.get()).collect();
        let len = ids.len();
        let query = diesel::update(
            seats::table
                .filter(seats::id.eq_any(ids))
                .filter(seats::status.eq(SeatStatus::Held.as_str()))
                .filter(seats::held_until.le(to_db(now))),
        )
        .set((
            seats::status.eq(SeatStatus::Available.as_str()),
            seats::held_by.eq(None::<u64>),
            seats::held_until.eq(None::<NaiveDateTime>),
            seats::version.eq(seats::version + 1),
        ));
        let (c, guard) = self.session.split()?;
        let freed = guard
            .run(
                "freeing seats of ended holds",
                reuse_for(query, len).execute(c),
            )
            .await?;
        Ok(freed as u64)
    }
}
