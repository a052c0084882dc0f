//! Set-up and inspection helpers for tests, the lab and seeding. They write
//! and read rows directly, outside the domain rules, so they are not part of
//! the service's request paths.

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use concert_domain::{
    ConcertId, Payment, PointKind, Reservation, ReservationId, ScheduleId, Seat, SeatNumber, UserId,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Unsigned};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::pool::Db;
use crate::rows::{NewHistory, NewSeat, PaymentRow, ReservationRow, SeatRow, balance_to_db, to_db};
use crate::schema::{concerts, payments, point_history, reservations, schedules, seats, wallets};

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) async fn insert_concert(
    c: &mut AsyncMysqlConnection,
    title: &str,
) -> anyhow::Result<ConcertId> {
    let row: NewId = diesel::sql_query("INSERT INTO concerts (title) VALUES (?) RETURNING id")
        .bind::<diesel::sql_types::Varchar, _>(title)
        .get_result(c)
        .await
        .context("inserting a concert")?;
    Ok(ConcertId::from(row.id))
}

pub(crate) async fn insert_schedule(
    c: &mut AsyncMysqlConnection,
    concert: ConcertId,
    starts_at: DateTime<Utc>,
    price_of: &(dyn Fn(SeatNumber) -> u64 + Sync),
) -> anyhow::Result<ScheduleId> {
    let row: NewId = diesel::sql_query(
        "INSERT INTO schedules (concert_id, starts_at) VALUES (?, ?) RETURNING id",
    )
    .bind::<Unsigned<BigInt>, _>(concert.get())
    .bind::<diesel::sql_types::Datetime, _>(to_db(starts_at))
    .get_result(c)
    .await
    .context("inserting a schedule")?;
    let new_seats: Vec<NewSeat> = SeatNumber::all()
        .map(|number| NewSeat {
            schedule_id: row.id,
            number: number.get(),
            price: price_of(number),
        })
        .collect();
    diesel::insert_into(seats::table)
        .values(&new_seats)
        .execute(c)
        .await
        .context("inserting the seats of a schedule")?;
    Ok(ScheduleId::from(row.id))
}

/// Creates a concert; returns its id.
pub async fn create_concert(db: &Db, title: &str) -> anyhow::Result<ConcertId> {
    let mut conn = db.get::<anyhow::Error>().await?;
    insert_concert(&mut conn, title).await
}

/// Creates a schedule of `concert` starting at `starts_at` with its 50
/// seats, seat `n` priced `price_of(n)` (must be 1 to `MAX_AMOUNT`), all
/// available, in one transaction; returns its id.
pub async fn create_schedule(
    db: &Db,
    concert: ConcertId,
    starts_at: DateTime<Utc>,
    price_of: impl Fn(SeatNumber) -> u64 + Sync,
) -> anyhow::Result<ScheduleId> {
    let mut conn = db.get::<anyhow::Error>().await?;
    conn.transaction(async |c| insert_schedule(c, concert, starts_at, &price_of).await)
        .await
}

/// Sets `user`'s balance, creating the wallet if needed, and keeps the
/// history consistent: when the balance changes, one history row records
/// the difference (`CHARGE` when it grows, `USE` when it shrinks) with
/// `balance_after` = `balance`, dated now (wall clock). Setting the same
/// balance again writes nothing.
pub async fn set_balance(db: &Db, user: UserId, balance: u64) -> anyhow::Result<()> {
    let target = balance_to_db(balance)?;
    let mut conn = db.get::<anyhow::Error>().await?;
    diesel::insert_or_ignore_into(wallets::table)
        .values(wallets::user_id.eq(user.get()))
        .execute(&mut *conn)
        .await
        .context("creating a wallet")?;
    conn.transaction(async |c| {
        let current: i64 = wallets::table
            .find(user.get())
            .select(wallets::balance)
            .for_update()
            .first(c)
            .await?;
        if current == target {
            return Ok(());
        }
        diesel::update(wallets::table.find(user.get()))
            .set((
                wallets::balance.eq(target),
                wallets::version.eq(wallets::version + 1),
            ))
            .execute(c)
            .await?;
        let (kind, amount) = if target > current {
            (PointKind::Charge, target - current)
        } else {
            (PointKind::Use, current - target)
        };
        diesel::insert_into(point_history::table)
            .values(NewHistory {
                user_id: user.get(),
                kind: kind.as_str(),
                amount: u64::try_from(amount)?,
                balance_after: balance,
                created_at: to_db(Utc::now()),
            })
            .execute(c)
            .await?;
        Ok::<_, anyhow::Error>(())
    })
    .await
    .with_context(|| format!("setting the balance of user {user}"))
}

/// The seat as stored, or `None`.
pub async fn seat(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
) -> anyhow::Result<Option<Seat>> {
    Ok(match seat_row(db, schedule, number).await? {
        Some(row) => Some(row.to_domain()?),
        None => None,
    })
}

async fn seat_row(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
) -> anyhow::Result<Option<SeatRow>> {
    let mut conn = db.get::<anyhow::Error>().await?;
    seats::table
        .filter(seats::schedule_id.eq(schedule.get()))
        .filter(seats::number.eq(number.get()))
        .select(SeatRow::as_select())
        .first(&mut *conn)
        .await
        .optional()
        .context("reading a seat")
}

/// The highest fencing token that wrote the seat (0 if none).
pub async fn seat_fence_token(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
) -> anyhow::Result<u64> {
    seat_row(db, schedule, number)
        .await?
        .map(|row| row.fence_token)
        .ok_or_else(|| anyhow!("no seat {number} in schedule {schedule}"))
}

/// Records `token` on the seat as if a lock holder with that token had
/// written it (for fencing tests).
pub async fn set_seat_fence_token(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
    token: u64,
) -> anyhow::Result<()> {
    let mut conn = db.get::<anyhow::Error>().await?;
    diesel::update(
        seats::table
            .filter(seats::schedule_id.eq(schedule.get()))
            .filter(seats::number.eq(number.get())),
    )
    .set(seats::fence_token.eq(token))
    .execute(&mut *conn)
    .await
    .context("setting a seat's fence token")?;
    Ok(())
}

/// The highest fencing token that wrote the wallet (0 if none or no wallet).
pub async fn wallet_fence_token(db: &Db, user: UserId) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    Ok(wallets::table
        .find(user.get())
        .select(wallets::fence_token)
        .first(&mut *conn)
        .await
        .optional()
        .context("reading a wallet's fence token")?
        .unwrap_or(0))
}

/// Records `token` on the wallet (which must exist), as if a lock holder
/// with that token had written it.
pub async fn set_wallet_fence_token(db: &Db, user: UserId, token: u64) -> anyhow::Result<()> {
    let mut conn = db.get::<anyhow::Error>().await?;
    diesel::update(wallets::table.find(user.get()))
        .set(wallets::fence_token.eq(token))
        .execute(&mut *conn)
        .await
        .context("setting a wallet's fence token")?;
    Ok(())
}

/// Every reservation of the seat, oldest first, with its stored status.
pub async fn reservations_of_seat(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
) -> anyhow::Result<Vec<Reservation>> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let rows: Vec<ReservationRow> = reservations::table
        .filter(reservations::schedule_id.eq(schedule.get()))
        .filter(reservations::seat_number.eq(number.get()))
        .order(reservations::id)
        .select(ReservationRow::as_select())
        .load(&mut *conn)
        .await
        .context("reading reservations of a seat")?;
    rows.iter().map(ReservationRow::to_domain).collect()
}

/// How many live (`HELD` or `CONFIRMED`) reservations the seat has, as
/// stored (a hold past its time still counts until it is expired).
pub async fn live_reservations(
    db: &Db,
    schedule: ScheduleId,
    number: SeatNumber,
) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let n: i64 = reservations::table
        .filter(reservations::schedule_id.eq(schedule.get()))
        .filter(reservations::seat_number.eq(number.get()))
        .filter(reservations::live_seat_id.is_not_null())
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting live reservations")?;
    Ok(count(n))
}

/// How many reservations `user` has, in any status.
pub async fn reservations_of_user(db: &Db, user: UserId) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let n: i64 = reservations::table
        .filter(reservations::user_id.eq(user.get()))
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting reservations")?;
    Ok(count(n))
}

/// The payments of one reservation (0 or 1 by the unique key).
pub async fn payments_of_reservation(
    db: &Db,
    reservation: ReservationId,
) -> anyhow::Result<Vec<Payment>> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let rows: Vec<PaymentRow> = payments::table
        .filter(payments::reservation_id.eq(reservation.get()))
        .select(PaymentRow::as_select())
        .load(&mut *conn)
        .await
        .context("reading payments")?;
    rows.iter().map(PaymentRow::to_domain).collect()
}

/// How many payments exist in all.
pub async fn payment_count(db: &Db) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let n: i64 = payments::table
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting payments")?;
    Ok(count(n))
}

/// How many history rows `user` has.
pub async fn history_count(db: &Db, user: UserId) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let n: i64 = point_history::table
        .filter(point_history::user_id.eq(user.get()))
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting history rows")?;
    Ok(count(n))
}

/// How many seats are `SOLD` without a confirmed reservation that has a
/// payment: must always be 0.
pub async fn sold_seats_without_payment(db: &Db) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let row: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM seats s \
         WHERE s.status = 'SOLD' AND NOT EXISTS ( \
           SELECT 1 FROM reservations r JOIN payments p ON p.reservation_id = r.id \
           WHERE r.seat_id = s.id AND r.status = 'CONFIRMED')",
    )
    .get_result(&mut *conn)
    .await
    .context("checking sold seats")?;
    Ok(count(row.n))
}

/// The number of concerts and schedules stored.
pub async fn catalogue_size(db: &Db) -> anyhow::Result<(u64, u64)> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let concerts: i64 = concerts::table
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting concerts")?;
    let schedules: i64 = schedules::table
        .count()
        .get_result(&mut *conn)
        .await
        .context("counting schedules")?;
    Ok((count(concerts), count(schedules)))
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// The base tables of the database, by name (diesel's own
/// `__diesel_schema_migrations` included).
pub async fn tables(db: &Db) -> anyhow::Result<Vec<String>> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let rows: Vec<TableName> = diesel::sql_query(
        "SELECT CAST(table_name AS CHAR(64)) AS name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .load(&mut *conn)
    .await
    .context("listing tables")?;
    Ok(rows.into_iter().map(|t| t.name).collect())
}

#[derive(QueryableByName)]
struct ProcessId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

/// Kills every other server connection whose current database is the one
/// `db` uses (for tests of lost connections); returns how many. The
/// connection this runs on is spared.
pub async fn kill_other_connections(db: &Db) -> anyhow::Result<u64> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let ids: Vec<ProcessId> = diesel::sql_query(
        "SELECT CAST(id AS UNSIGNED) AS id FROM information_schema.processlist \
         WHERE db = DATABASE() AND id <> CONNECTION_ID()",
    )
    .load(&mut *conn)
    .await
    .context("listing connections")?;
    for ProcessId { id } in &ids {
        // A connection may end on its own in between: ignore "unknown thread".
        let _ = diesel::sql_query(format!("KILL CONNECTION {id}"))
            .execute(&mut *conn)
            .await;
    }
    Ok(ids.len() as u64)
}
