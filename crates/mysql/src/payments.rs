//! [`PaymentRepository`] on a unit of work.

use async_trait::async_trait;
use concert_domain::{Failure, NewPayment, Payment, PaymentId, PaymentRepository, PaymentStatus};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Unsigned, Varchar};
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::prepared::reuse;
use crate::reservations::NewId;
use crate::rows::{PaymentRow, as_stored, to_db};
use crate::schema::payments;
use crate::store::MysqlUnit;

const INSERT: &str = "INSERT INTO payments (reservation_id, user_id, amount, paid_at, status) \
     VALUES (?, ?, ?, ?, ?) RETURNING id";
/// Compare-and-set of the status.
const SAVE: &str = "UPDATE payments SET status = ? WHERE id = ? AND status = ?";

#[async_trait]
impl PaymentRepository for MysqlUnit {
    /// `INSERT ... RETURNING id`; the unique key on the reservation refuses
    /// a second payment (a conflict).
    async fn insert(&mut self, new: &NewPayment) -> Result<Payment, Failure> {
        let query = diesel::sql_query(INSERT)
            .bind::<Unsigned<BigInt>, _>(new.reservation.get())
            .bind::<Unsigned<BigInt>, _>(new.user.get())
            .bind::<Unsigned<BigInt>, _>(new.amount.get())
            .bind::<Datetime, _>(to_db(new.paid_at))
            .bind::<Varchar, _>(PaymentStatus::Paid.as_str());
        let (c, guard) = self.session.split()?;
        let row: NewId = guard
            .run("recording a payment", reuse(query).get_result(c))
            .await?;
        Ok(Payment {
            id: PaymentId::from(row.id),
            reservation: new.reservation,
            user: new.user,
            amount: new.amount,
            paid_at: as_stored(new.paid_at),
            status: PaymentStatus::Paid,
        })
    }

    async fn find(&mut self, id: PaymentId) -> Result<Option<Payment>, Failure> {
        let query = payments::table
            .find(id.get())
            .select(PaymentRow::as_select());
        let (c, guard) = self.session.split()?;
        let row: Option<PaymentRow> = guard
            .optional("reading a payment", reuse(query).get_result(c))
            .await?;
        row.as_ref()
            .map(PaymentRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, "reading a payment"))
    }

    async fn save(&mut self, payment: &Payment, expected: PaymentStatus) -> Result<(), Failure> {
        let query = diesel::sql_query(SAVE)
            .bind::<Varchar, _>(payment.status.as_str())
            .bind::<Unsigned<BigInt>, _>(payment.id.get())
            .bind::<Varchar, _>(expected.as_str());
        let (c, guard) = self.session.split()?;
        let written = guard
            .run("writing a payment", reuse(query).execute(c))
            .await?;
        if written == 1 {
            Ok(())
        } else {
            Err(Failure::Conflict)
        }
    }
}
