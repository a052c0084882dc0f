//! Rows as stored and their conversions to and from domain values. Statuses
//! and kinds convert with the domain's own names (`as_str` / `FromStr`).
//! Rows only come from this crate's own writes, so a row that fails to
//! convert is a bug or a hand edit, reported as an error (the callers make
//! it [`concert_domain::Failure::Unknown`]), never a panic.

use anyhow::{Context, anyhow};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use concert_domain::{
    Concert, ConcertId, Event, HistoryEntry, Payment, PaymentId, PaymentStatus, PointKind, Points,
    Reservation, ReservationId, ReservationStatus, Schedule, ScheduleId, Seat, SeatId, SeatNumber,
    SeatState, SeatStatus, UserId, Wallet,
};
use diesel::prelude::*;

use crate::schema::{
    concerts, idempotency_keys, payments, point_history, reservations, schedules, seats, wallets,
};

/// A domain time as stored: UTC, microsecond precision (`DATETIME(6)`).
pub(crate) fn to_db(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(6)
}

/// A stored time back in the domain.
pub(crate) fn from_db(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// A domain time as it reads back once stored (microseconds).
pub(crate) fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    from_db(to_db(t))
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
#[diesel(table_name = schedules, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct ScheduleRow {
    pub id: u64,
    pub concert_id: u64,
    pub starts_at: NaiveDateTime,
}

impl From<ScheduleRow> for Schedule {
    fn from(row: ScheduleRow) -> Self {
        Schedule {
            id: ScheduleId::from(row.id),
            concert: ConcertId::from(row.concert_id),
            starts_at: from_db(row.starts_at),
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
    /// The newest fencing token that wrote the seat (0: none yet).
    pub fence_token: u64,
}

impl SeatRow {
    pub(crate) fn to_domain(&self) -> anyhow::Result<Seat> {
        let status: SeatStatus = self
            .status
            .parse()
            .with_context(|| format!("seat {} has status {:?}", self.id, self.status))?;
        let state = match status {
            SeatStatus::Available => SeatState::Available,
            SeatStatus::Held => SeatState::Held {
                by: UserId::from(
                    self.held_by
                        .with_context(|| format!("held seat {} has no holder", self.id))?,
                ),
                until: from_db(
                    self.held_until
                        .with_context(|| format!("held seat {} has no end time", self.id))?,
                ),
            },
            SeatStatus::Sold => SeatState::Sold,
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

/// A seat state as its columns: `status`, `held_by`, `held_until`.
pub(crate) fn seat_state_to_db(
    state: SeatState,
) -> (&'static str, Option<u64>, Option<NaiveDateTime>) {
    match state {
        SeatState::Available => (SeatStatus::Available.as_str(), None, None),
        SeatState::Held { by, until } => (
            SeatStatus::Held.as_str(),
            Some(by.get()),
            Some(to_db(until)),
        ),
        SeatState::Sold => (SeatStatus::Sold.as_str(), None, None),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = seats, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct NewSeatRow {
    pub schedule_id: u64,
    pub number: u8,
    pub price: u64,
    pub status: &'static str,
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
            status: self
                .status
                .parse::<ReservationStatus>()
                .with_context(|| format!("reservation {} has status {:?}", self.id, self.status))?,
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
            kind: self
                .kind
                .parse::<PointKind>()
                .with_context(|| format!("history entry {} has kind {:?}", self.id, self.kind))?,
            amount: self.amount,
            balance_after: self.balance_after,
            created_at: from_db(self.created_at),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = payments, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct PaymentRow {
    pub id: u64,
    pub reservation_id: u64,
    pub user_id: u64,
    pub amount: u64,
    pub paid_at: NaiveDateTime,
    pub status: String,
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
            status: self
                .status
                .parse::<PaymentStatus>()
                .with_context(|| format!("payment {} has status {:?}", self.id, self.status))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::mysql::Mysql))]
pub(crate) struct IdempotencyRow {
    pub request: Option<String>,
    pub result_balance: Option<u64>,
    pub payment_id: Option<u64>,
}

/// An outbox row to write (see `outbox.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOutboxRow {
    pub event_id: String,
    pub stream: &'static str,
    pub event_type: &'static str,
    pub aggregate: String,
    pub payload: String,
    pub created_at: NaiveDateTime,
}

impl NewOutboxRow {
    /// The row of `event`, under a fresh UUID v4; its payload is the JSON
    /// of the event's payload, its time the time the event occurred.
    pub(crate) fn of(event: &Event) -> anyhow::Result<Self> {
        Ok(Self {
            event_id: uuid::Uuid::new_v4().to_string(),
            stream: event.stream().as_str(),
            event_type: event.kind.as_str(),
            aggregate: event.aggregate(),
            payload: serde_json::to_string(&event.payload)
                .with_context(|| format!("serializing a {} event", event.kind))?,
            created_at: to_db(event.payload.occurred_at),
        })
    }
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

    fn reservation_row(status: &str) -> ReservationRow {
        ReservationRow {
            id: 1,
            seat_id: 9,
            schedule_id: 2,
            seat_number: 7,
            user_id: 5,
            price: 500,
            status: status.into(),
            expires_at: t("2030-01-01 00:00:00"),
        }
    }

    #[test]
    fn times_are_stored_in_microseconds_utc() {
        let now = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(to_db(now), t("2030-01-02 03:04:05.123456"));
        let stored = as_stored(now);
        assert_eq!(stored, from_db(t("2030-01-02 03:04:05.123456")));
        assert_eq!(as_stored(stored), stored);
    }

    #[test]
    fn seat_rows_convert_by_status_both_ways() {
        let seat = seat_row("AVAILABLE").to_domain().unwrap();
        assert_eq!(seat.state, SeatState::Available);
        assert_eq!(
            (seat.id.get(), seat.number.get(), seat.price.get()),
            (9, 7, 500)
        );
        assert_eq!(seat.version, 3);
        assert_eq!(seat_state_to_db(seat.state), ("AVAILABLE", None, None));

        let until = t("2030-01-01 00:00:00");
        let held = SeatRow {
            held_by: Some(4),
            held_until: Some(until),
            ..seat_row("HELD")
        }
        .to_domain()
        .unwrap();
        assert_eq!(
            held.state,
            SeatState::Held {
                by: UserId::from(4),
                until: from_db(until)
            }
        );
        assert_eq!(seat_state_to_db(held.state), ("HELD", Some(4), Some(until)));
        let sold = seat_row("SOLD").to_domain().unwrap();
        assert_eq!(sold.state, SeatState::Sold);
        assert_eq!(seat_state_to_db(sold.state), ("SOLD", None, None));
    }

    #[test]
    fn broken_rows_are_errors_not_panics() {
        assert!(seat_row("HELD").to_domain().is_err());
        assert!(seat_row("held").to_domain().is_err());
        assert!(seat_row("LOST").to_domain().is_err());
        for broken in [
            SeatRow {
                number: 51,
                ..seat_row("AVAILABLE")
            },
            SeatRow {
                number: 0,
                ..seat_row("AVAILABLE")
            },
            SeatRow {
                price: 0,
                ..seat_row("AVAILABLE")
            },
            SeatRow {
                held_by: Some(1),
                ..seat_row("HELD")
            },
        ] {
            assert!(broken.to_domain().is_err(), "{broken:?}");
        }
        assert!(reservation_row("PAID").to_domain().is_err());
        assert!(
            ReservationRow {
                seat_number: 99,
                ..reservation_row("HELD")
            }
            .to_domain()
            .is_err()
        );
    }

    #[test]
    fn reservations_convert_every_status() {
        for status in ReservationStatus::ALL {
            let r = reservation_row(status.as_str()).to_domain().unwrap();
            assert_eq!(r.status, status);
            assert_eq!((r.user.get(), r.seat.get(), r.price.get()), (5, 9, 500));
            assert_eq!(r.seat_number.get(), 7);
        }
    }

    #[test]
    fn wallets_history_and_payments_convert() {
        let w = WalletRow {
            user_id: 5,
            balance: 100,
            version: 2,
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
        for kind in PointKind::ALL {
            let row = HistoryRow {
                kind: kind.as_str().into(),
                ..h.clone()
            };
            assert_eq!(row.to_domain().unwrap().kind, kind);
        }
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
            status: "PAID".into(),
        };
        let paid = p.to_domain().unwrap();
        assert_eq!((paid.amount.get(), paid.status), (500, PaymentStatus::Paid));
        let refunded = PaymentRow {
            status: "REFUNDED".into(),
            ..p.clone()
        };
        assert_eq!(
            refunded.to_domain().unwrap().status,
            PaymentStatus::Refunded
        );
        assert!(
            PaymentRow {
                status: "VOID".into(),
                ..p.clone()
            }
            .to_domain()
            .is_err()
        );
        assert!(PaymentRow { amount: 0, ..p }.to_domain().is_err());
    }

    #[test]
    fn balances_fit_the_signed_column() {
        assert_eq!(balance_to_db(7).unwrap(), 7);
        assert!(balance_to_db(u64::MAX).is_err());
        assert!(points(0).is_err());
        assert!(points(u64::MAX).is_err());
    }

    #[test]
    fn an_event_becomes_an_outbox_row_with_its_json_payload() {
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = Event::points(
            UserId::from(5),
            concert_domain::PointChange::Use(Points::new(500).unwrap()),
            99_500,
            Some(PaymentId::from(3)),
            at,
        );
        let a = NewOutboxRow::of(&event).unwrap();
        let b = NewOutboxRow::of(&event).unwrap();
        assert_ne!(a.event_id, b.event_id);
        assert_eq!(a.event_id.len(), 36);
        assert_eq!(
            (a.stream, a.event_type, a.aggregate.as_str()),
            ("points", "PointsUsed", "user:5")
        );
        assert_eq!(a.payload, serde_json::to_string(&event.payload).unwrap());
        assert_eq!(a.created_at, to_db(at));
    }
}
