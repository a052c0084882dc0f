//! Diesel row structs and their conversions into domain values. Rows only
//! come from this crate's own writes, so a row that fails to convert is a
//! bug or a hand edit, reported as an `Unknown` error, never a panic.

use anyhow::{Context, anyhow};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use concert_domain::{
    Concert, ConcertId, HistoryEntry, Payment, PaymentId, PointKind, Points, Reservation,
    ReservationId, ReservationStatus, ScheduleId, Seat, SeatId, SeatNumber, SeatState, UserId,
    Wallet,
};
use diesel::prelude::*;

use crate::schema::{
    concerts, idempotency_keys, payments, point_history, reservations, seats, wallets,
};

/// A domain time as stored: UTC, microsecond precision (`DATETIME(6)`).
pub(crate) fn to_db(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(6)
}

/// A stored time back in the domain.
pub(crate) fn from_db(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

pub(crate) fn points(value: u64) -> anyhow::Result<Points> {
    i64::try_from(value)
        .ok()
        .and_then(|v| Points::new(v).ok())
        .ok_or_else(|| anyhow!("stored amount {value} is out of range"))
}

/// A balance as a signed column value (the column is `BIGINT`).
pub(crate) fn balance_to_db(balance: u64) -> anyhow::Result<i64> {
    i64::try_from(balance).map_err(|_| anyhow!("balance {balance} does not fit the column"))
}

pub(crate) const SEAT_AVAILABLE: &str = "AVAILABLE";
pub(crate) const SEAT_HELD: &str = "HELD";
pub(crate) const SEAT_SOLD: &str = "SOLD";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = concerts, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct ConcertRow {
    pub id: u64,
    pub title: String,
}

impl From<ConcertRow> for Concert {
    fn from(row: ConcertRow) -> Self {
        Concert {
            id: ConcertId::from(row.id),
            title: row.title,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = seats, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct SeatRow {
    pub id: u64,
    pub schedule_id: u64,
    pub number: u8,
    pub price: u64,
    pub status: String,
    pub held_by: Option<u64>,
    pub held_until: Option<NaiveDateTime>,
    pub version: u64,
    pub fence_token: u64,
}

impl SeatRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<Seat> {
        let state = match self.status.as_str() {
            SEAT_AVAILABLE => SeatState::Available,
            SEAT_HELD => SeatState::Held {
                by: UserId::from(
                    self.held_by
                        .with_context(|| format!("held seat {} has no holder", self.id))?,
                ),
                until: from_db(
                    self.held_until
                        .with_context(|| format!("held seat {} has no end time", self.id))?,
                ),
            },
            SEAT_SOLD => SeatState::Sold,
            other => return Err(anyhow!("seat {} has unknown status {other:?}", self.id)),
        };
        Ok(Seat {
            id: SeatId::from(self.id),
            schedule: ScheduleId::from(self.schedule_id),
            number: SeatNumber::new(i64::from(self.number))
                .with_context(|| format!("seat {} has number {}", self.id, self.number))?,
            price: points(self.price).with_context(|| format!("price of seat {}", self.id))?,
            state,
            version: self.version,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = seats, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct NewSeat {
    pub schedule_id: u64,
    pub number: u8,
    pub price: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = reservations, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct ReservationRow {
    pub id: u64,
    pub seat_id: u64,
    pub schedule_id: u64,
    pub seat_number: u8,
    pub user_id: u64,
    pub price: u64,
    pub status: String,
    pub expires_at: NaiveDateTime,
}

impl ReservationRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<Reservation> {
        Ok(Reservation {
            id: ReservationId::from(self.id),
            seat: SeatId::from(self.seat_id),
            schedule: ScheduleId::from(self.schedule_id),
            seat_number: SeatNumber::new(i64::from(self.seat_number)).with_context(|| {
                format!(
                    "reservation {} has seat number {}",
                    self.id, self.seat_number
                )
            })?,
            user: UserId::from(self.user_id),
            price: points(self.price)
                .with_context(|| format!("price of reservation {}", self.id))?,
            status: ReservationStatus::parse(&self.status).with_context(|| {
                format!(
                    "reservation {} has unknown status {:?}",
                    self.id, self.status
                )
            })?,
            expires_at: from_db(self.expires_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = wallets, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct WalletRow {
    pub user_id: u64,
    pub balance: i64,
    pub version: u64,
    pub fence_token: u64,
}

impl WalletRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<Wallet> {
        Ok(Wallet {
            user: UserId::from(self.user_id),
            balance: u64::try_from(self.balance).map_err(|_| {
                anyhow!(
                    "wallet {} has negative balance {}",
                    self.user_id,
                    self.balance
                )
            })?,
            version: self.version,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = point_history, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct HistoryRow {
    pub id: u64,
    pub kind: String,
    pub amount: u64,
    pub balance_after: u64,
    pub created_at: NaiveDateTime,
}

impl HistoryRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<HistoryEntry> {
        Ok(HistoryEntry {
            id: self.id,
            kind: PointKind::parse(&self.kind).with_context(|| {
                format!("history entry {} has unknown kind {:?}", self.id, self.kind)
            })?,
            amount: self.amount,
            balance_after: self.balance_after,
            created_at: from_db(self.created_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = point_history, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct NewHistory<'a> {
    pub user_id: u64,
    pub kind: &'a str,
    pub amount: u64,
    pub balance_after: u64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = payments, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct PaymentRow {
    pub id: u64,
    pub reservation_id: u64,
    pub user_id: u64,
    pub amount: u64,
    pub paid_at: NaiveDateTime,
}

impl PaymentRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<Payment> {
        Ok(Payment {
            id: PaymentId::from(self.id),
            reservation: ReservationId::from(self.reservation_id),
            user: UserId::from(self.user_id),
            amount: points(self.amount)
                .with_context(|| format!("amount of payment {}", self.id))?,
            paid_at: from_db(self.paid_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct IdempotencyRow {
    pub result_balance: Option<u64>,
    pub payment_id: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn seat_row(status: &str) -> SeatRow {
        SeatRow {
            id: 9,
            schedule_id: 2,
            number: 7,
            price: 500,
            status: status.to_owned(),
            held_by: None,
            held_until: None,
            version: 3,
            fence_token: 0,
        }
    }

    #[test]
    fn times_are_stored_in_microseconds_utc() {
        let now = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(to_db(now), t("2030-01-02 03:04:05.123456"));
        let stored = from_db(to_db(now));
        assert_eq!(stored, from_db(t("2030-01-02 03:04:05.123456")));
        assert_eq!(from_db(to_db(stored)), stored);
    }

    #[test]
    fn seat_rows_convert_by_status() {
        let seat = seat_row("AVAILABLE").to_domain().unwrap();
        assert_eq!(seat.state, SeatState::Available);
        assert_eq!(
            (seat.id.get(), seat.number.get(), seat.price.get()),
            (9, 7, 500)
        );
        assert_eq!(seat.version, 3);

        let until = t("2030-01-01 00:00:00");
        let held = SeatRow {
            held_by: Some(4),
            held_until: Some(until),
            ..seat_row("HELD")
        };
        assert_eq!(
            held.to_domain().unwrap().state,
            SeatState::Held {
                by: UserId::from(4),
                until: from_db(until)
            }
        );
        assert_eq!(seat_row("SOLD").to_domain().unwrap().state, SeatState::Sold);
    }

    #[test]
    fn broken_seat_rows_are_errors_not_panics() {
        assert!(seat_row("HELD").to_domain().is_err());
        assert!(seat_row("LOST").to_domain().is_err());
        assert!(
            SeatRow {
                number: 51,
                ..seat_row("AVAILABLE")
            }
            .to_domain()
            .is_err()
        );
        assert!(
            SeatRow {
                price: 0,
                ..seat_row("AVAILABLE")
            }
            .to_domain()
            .is_err()
        );
    }

    #[test]
    fn reservation_wallet_history_payment_rows_convert() {
        let r = ReservationRow {
            id: 1,
            seat_id: 9,
            schedule_id: 2,
            seat_number: 7,
            user_id: 5,
            price: 500,
            status: "CONFIRMED".into(),
            expires_at: t("2030-01-01 00:00:00"),
        };
        let d = r.to_domain().unwrap();
        assert_eq!(d.status, ReservationStatus::Confirmed);
        assert_eq!((d.user.get(), d.seat.get(), d.price.get()), (5, 9, 500));
        assert!(
            ReservationRow {
                status: "PAID".into(),
                ..r
            }
            .to_domain()
            .is_err()
        );

        let w = WalletRow {
            user_id: 5,
            balance: 100,
            version: 2,
            fence_token: 0,
        };
        assert_eq!(
            w.to_domain().unwrap(),
            Wallet {
                user: UserId::from(5),
                balance: 100,
                version: 2
            }
        );
        assert!(WalletRow { balance: -1, ..w }.to_domain().is_err());

        let h = HistoryRow {
            id: 3,
            kind: "USE".into(),
            amount: 500,
            balance_after: 99_500,
            created_at: t("2030-01-01 00:00:00"),
        };
        assert_eq!(h.to_domain().unwrap().kind, PointKind::Use);
        assert!(
            HistoryRow {
                kind: "GIFT".into(),
                ..h
            }
            .to_domain()
            .is_err()
        );

        let p = PaymentRow {
            id: 8,
            reservation_id: 1,
            user_id: 5,
            amount: 500,
            paid_at: t("2030-01-01 00:00:00"),
        };
        assert_eq!(p.to_domain().unwrap().amount.get(), 500);
    }

    #[test]
    fn balances_fit_the_signed_column() {
        assert_eq!(balance_to_db(7).unwrap(), 7);
        assert!(balance_to_db(u64::MAX).is_err());
        assert!(points(0).is_err());
        assert!(points(u64::MAX).is_err());
    }
}
