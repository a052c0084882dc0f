//! Payments: [`MysqlPayments`].

use anyhow::anyhow;
use async_trait::async_trait;
use concert_domain::{
    PayError, PayReservation, Payment, PaymentId, PaymentRepository, PointChange, WriteMode,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Unsigned};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::error::TxError;
use crate::idempotency::{self, Outcome, Scope};
use crate::pool::Db;
use crate::rows::{PaymentRow, ReservationRow, SEAT_HELD, SEAT_SOLD, from_db, to_db};
use crate::schema::{payments, reservations, seats};
use crate::wallets::{WalletStop, change_wallet, fence_held};

/// [`PaymentRepository`] on MySQL.
///
/// One transaction per payment, in this order: (idempotency key), read the
/// reservation and check it with `Reservation::check_payable`, sell the
/// seat with a conditional `UPDATE` that only matches while the seat is
/// still held by this reservation (this locks the seat row first, as a
/// hold does), confirm the reservation, take the price from the wallet in
/// the requested [`WriteMode`] (see the wallet repository), append the
/// history row, insert the payment, commit. Any refusal rolls the whole
/// transaction back.
#[derive(Clone, Debug)]
pub struct MysqlPayments {
    db: Db,
}

impl MysqlPayments {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

async fn pay_tx(
    c: &mut AsyncMysqlConnection,
    cmd: &PayReservation,
    mode: WriteMode,
) -> Result<Payment, TxError<PayError>> {
    let now = to_db(cmd.now);
    if let Some(key) = &cmd.idempotency
        && let Some(first) = idempotency::claim(c, cmd.user, Scope::Payment, key, now).await?
    {
        let id = first.payment_id.ok_or_else(|| {
            TxError::Corrupt(anyhow!("payment key of user {} has no payment", cmd.user))
        })?;
        let row: PaymentRow = payments::table
            .find(id)
            .select(PaymentRow::as_select())
            .first(c)
            .await?;
        return row.to_domain().map_err(TxError::Corrupt);
    }

    let row = load_reservation(c, cmd).await?;
    let reservation = row.to_domain().map_err(TxError::Corrupt)?;
    reservation
        .check_payable(cmd.user, cmd.now)
        .map_err(TxError::Refused)?;

    let sold = diesel::update(
        seats::table
            .find(row.seat_id)
            .filter(seats::status.eq(SEAT_HELD))
            .filter(seats::held_by.eq(row.user_id))
            .filter(seats::held_until.eq(row.expires_at))
            .filter(seats::held_until.gt(now)),
    )
    .set((
        seats::status.eq(SEAT_SOLD),
        seats::version.eq(seats::version + 1),
    ))
    .execute(c)
    .await?;
    if sold == 0 {
        // Changed since the read (paid, expired or replaced concurrently):
        // the fresh row says which.
        let fresh = load_reservation(c, cmd).await?;
        fresh
            .to_domain()
            .map_err(TxError::Corrupt)?
            .check_payable(cmd.user, cmd.now)
            .map_err(TxError::Refused)?;
        return Err(TxError::Refused(PayError::Conflict));
    }
    let confirmed = diesel::update(
        reservations::table
            .find(row.id)
            .filter(reservations::status.eq("HELD")),
    )
    .set(reservations::status.eq("CONFIRMED"))
    .execute(c)
    .await?;
    if confirmed == 0 {
        return Err(TxError::Refused(PayError::Conflict));
    }

    let price = reservation.price;
    change_wallet(
        c,
        cmd.user,
        PointChange::Use(price),
        now,
        mode,
        cmd.fence.as_ref(),
        false,
    )
    .await
    .map_err(|e| {
        e.map_refused(|stop| match stop {
            WalletStop::Missing => PayError::InsufficientPoints {
                balance: 0,
                needed: price.get(),
            },
            WalletStop::Rule(rule) => PayError::from(rule),
            WalletStop::Conflict => PayError::Conflict,
            WalletStop::LockLost => PayError::LockLost,
        })
    })?;

    let payment: NewId = diesel::sql_query(
        "INSERT INTO payments (reservation_id, user_id, amount, paid_at) \
         VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind::<Unsigned<BigInt>, _>(row.id)
    .bind::<Unsigned<BigInt>, _>(cmd.user.get())
    .bind::<Unsigned<BigInt>, _>(price.get())
    .bind::<Datetime, _>(now)
    .get_result(c)
    .await?;
    if let Some(key) = &cmd.idempotency {
        idempotency::record(
            c,
            cmd.user,
            Scope::Payment,
            key,
            Outcome::Payment(payment.id),
        )
        .await?;
    }
    if !fence_held(cmd.fence.as_ref()) {
        return Err(TxError::Refused(PayError::LockLost));
    }
    Ok(Payment {
        id: PaymentId::from(payment.id),
        reservation: cmd.reservation,
        user: cmd.user,
        amount: price,
        paid_at: from_db(now),
    })
}

/// The reservation, or `NotFound` when it does not exist or is not the
/// payer's (nothing about another user's reservation is revealed).
async fn load_reservation(
    c: &mut AsyncMysqlConnection,
    cmd: &PayReservation,
) -> Result<ReservationRow, TxError<PayError>> {
    reservations::table
        .find(cmd.reservation.get())
        .select(ReservationRow::as_select())
        .first(c)
        .await
        .optional()?
        .filter(|row| row.user_id == cmd.user.get())
        .ok_or(TxError::Refused(PayError::NotFound))
}

#[async_trait]
impl PaymentRepository for MysqlPayments {
    async fn pay(&self, cmd: PayReservation, mode: WriteMode) -> Result<Payment, PayError> {
        let mut conn = self.db.get::<PayError>().await?;
        let outcome = conn
            .transaction(async |c| pay_tx(c, &cmd, mode).await)
            .await;
        self.db.finish(conn, outcome, "paying a reservation")
    }
}
