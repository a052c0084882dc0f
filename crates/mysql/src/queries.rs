//! [`Queries`] on [`MysqlStore`]: one statement each on a pooled
//! connection, outside any transaction.

use async_trait::async_trait;
use concert_domain::{
    Failure, HistoryEntry, Payment, PaymentId, Queries, Reservation, ReservationId, UserId, Wallet,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::prepared::reuse;
use crate::rows::{HistoryRow, PaymentRow, ReservationRow, WalletRow};
use crate::schema::{payments, point_history, reservations, wallets};
use crate::store::MysqlStore;

#[async_trait]
impl Queries for MysqlStore {
    async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, Failure> {
        let context = "reading a reservation";
        let query = reservations::table
            .find(id.get())
            .select(ReservationRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: Option<ReservationRow> =
            guard.optional(context, reuse(query).get_result(c)).await?;
        row.as_ref()
            .map(ReservationRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, context))
    }

    async fn reservations_of(&self, user: UserId) -> Result<Vec<Reservation>, Failure> {
        let context = "reading the reservations of a user";
        let query = reservations::table
            .filter(reservations::user_id.eq(user.get()))
            .order(reservations::id.desc())
            .select(ReservationRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<ReservationRow> = guard.run(context, reuse(query).load(c)).await?;
        rows.iter()
            .map(ReservationRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| corrupt(e, context))
    }

    async fn wallet(&self, user: UserId) -> Result<Option<Wallet>, Failure> {
        let context = "reading a wallet";
        let query = wallets::table
            .find(user.get())
            .select(WalletRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: Option<WalletRow> = guard.optional(context, reuse(query).get_result(c)).await?;
        row.as_ref()
            .map(WalletRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, context))
    }

    async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, Failure> {
        let context = "reading point history";
        let query = point_history::table
            .filter(point_history::user_id.eq(user.get()))
            .order(point_history::id.desc())
            .select(HistoryRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let rows: Vec<HistoryRow> = guard.run(context, reuse(query).load(c)).await?;
        rows.iter()
            .map(HistoryRow::to_domain)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| corrupt(e, context))
    }

    async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, Failure> {
        let context = "reading a payment";
        let query = payments::table
            .find(id.get())
            .select(PaymentRow::as_select());
        let mut session = self.session().await?;
        let (c, guard) = session.split()?;
        let row: Option<PaymentRow> = guard.optional(context, reuse(query).get_result(c)).await?;
        row.as_ref()
            .map(PaymentRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, context))
    }
}
