//! Domain events: what a use case changed, recorded in the same unit of work
//! as the change (the outbox) and published from there to the event streams.
//!
//! Three streams, each event type belonging to one:
//!
//! | stream | types |
//! |---|---|
//! | `reservations` | `SeatHeld`, `HoldExpired`, `HoldCancelled`, `ReservationConfirmed`, `ReservationRefunded` |
//! | `points` | `PointsCharged`, `PointsUsed`, `PointsRefunded` |
//! | `payments` | `PaymentCompleted`, `PaymentRefunded` |
//!
//! Every payload carries `occurredAt` and the ids involved. Events of one
//! reservation (reservations and payments streams) and of one user's wallet
//! (points stream) are recorded in commit order: a unit of work records its
//! events last, after it has written (and so locked) the aggregate.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{InvalidValue, PaymentId, ReservationId, ScheduleId, SeatNumber, UserId};
use crate::model::payment::Payment;
use crate::model::seat::Reservation;
use crate::model::wallet::{PointChange, Points};

/// An event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Reservations,
    Points,
    Payments,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Reservations, Stream::Points, Stream::Payments];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Reservations => "reservations",
            Stream::Points => "points",
            Stream::Payments => "payments",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stream {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stream::ALL
            .into_iter()
            .find(|stream| stream.as_str() == s)
            .ok_or_else(|| InvalidValue::new("stream", "must be reservations, points or payments"))
    }
}

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    SeatHeld,
    HoldExpired,
    HoldCancelled,
    ReservationConfirmed,
    ReservationRefunded,
    PointsCharged,
    PointsUsed,
    PointsRefunded,
    PaymentCompleted,
    PaymentRefunded,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::SeatHeld,
        EventType::HoldExpired,
        EventType::HoldCancelled,
        EventType::ReservationConfirmed,
        EventType::ReservationRefunded,
        EventType::PointsCharged,
        EventType::PointsUsed,
        EventType::PointsRefunded,
        EventType::PaymentCompleted,
        EventType::PaymentRefunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SeatHeld => "SeatHeld",
            EventType::HoldExpired => "HoldExpired",
            EventType::HoldCancelled => "HoldCancelled",
            EventType::ReservationConfirmed => "ReservationConfirmed",
            EventType::ReservationRefunded => "ReservationRefunded",
            EventType::PointsCharged => "PointsCharged",
            EventType::PointsUsed => "PointsUsed",
            EventType::PointsRefunded => "PointsRefunded",
            EventType::PaymentCompleted => "PaymentCompleted",
            EventType::PaymentRefunded => "PaymentRefunded",
        }
    }

    pub fn stream(self) -> Stream {
        match self {
            EventType::SeatHeld
            | EventType::HoldExpired
            | EventType::HoldCancelled
            | EventType::ReservationConfirmed
            | EventType::ReservationRefunded => Stream::Reservations,
            EventType::PointsCharged | EventType::PointsUsed | EventType::PointsRefunded => {
                Stream::Points
            }
            EventType::PaymentCompleted | EventType::PaymentRefunded => Stream::Payments,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| InvalidValue::new("type", format!("unknown event type {s:?}")))
    }
}

/// What an event says, serialized as its JSON payload (camelCase; absent
/// fields are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<ReservationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<ScheduleId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat_number: Option<SeatNumber>,
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// Points moved (payments, point changes) or the seat's price (holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Points>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
}

/// One domain event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub payload: Payload,
}

impl Event {
    pub fn stream(&self) -> Stream {
        self.kind.stream()
    }

    /// The aggregate whose events are ordered: `reservation:<id>` for the
    /// reservations and payments streams, `user:<id>` for points.
    pub fn aggregate(&self) -> String {
        match (self.stream(), self.payload.reservation_id) {
            (Stream::Points, _) | (_, None) => format!("user:{}", self.payload.user_id),
            (_, Some(r)) => format!("reservation:{r}"),
        }
    }

    fn of_reservation(kind: EventType, r: &Reservation, at: DateTime<Utc>) -> Event {
        Event {
            kind,
            payload: Payload {
                reservation_id: Some(r.id),
                schedule_id: Some(r.schedule),
                seat_number: Some(r.seat_number),
                user_id: r.user,
                payment_id: None,
                amount: None,
                balance_after: None,
                expires_at: None,
                occurred_at: at,
            },
        }
    }

    /// A seat was held: `amount` is its price, `expiresAt` the end of hold.
    pub fn seat_held(r: &Reservation, at: DateTime<Utc>) -> Event {
        let mut e = Self::of_reservation(EventType::SeatHeld, r, at);
        e.payload.amount = Some(r.price);
        e.payload.expires_at = Some(r.expires_at);
        e
    }

    /// A hold ran out unpaid (taken over by a new hold, or swept).
    pub fn hold_expired(r: &Reservation, at: DateTime<Utc>) -> Event {
        Self::of_reservation(EventType::HoldExpired, r, at)
    }

    pub fn hold_cancelled(r: &Reservation, at: DateTime<Utc>) -> Event {
        Self::of_reservation(EventType::HoldCancelled, r, at)
    }

    pub fn reservation_confirmed(r: &Reservation, p: &Payment) -> Event {
        let mut e = Self::of_reservation(EventType::ReservationConfirmed, r, p.paid_at);
        e.payload.payment_id = Some(p.id);
        e.payload.amount = Some(p.amount);
        e
    }

    pub fn reservation_refunded(r: &Reservation, p: &Payment, at: DateTime<Utc>) -> Event {
        let mut e = Self::of_reservation(EventType::ReservationRefunded, r, at);
        e.payload.payment_id = Some(p.id);
        e.payload.amount = Some(p.amount);
        e
    }

    /// A wallet changed to `balance_after`; `payment` names the payment a
    /// use paid for or a refund gave back.
    pub fn points(
        user: UserId,
        change: PointChange,
        balance_after: u64,
        payment: Option<PaymentId>,
        at: DateTime<Utc>,
    ) -> Event {
        let kind = match change {
            PointChange::Charge(_) => EventType::PointsCharged,
            PointChange::Use(_) => EventType::PointsUsed,
            PointChange::Refund(_) => EventType::PointsRefunded,
        };
        Event {
            kind,
            payload: Payload {
                reservation_id: None,
                schedule_id: None,
                seat_number: None,
                user_id: user,
                payment_id: payment,
                amount: Some(change.amount()),
                balance_after: Some(balance_after),
                expires_at: None,
                occurred_at: at,
            },
        }
    }

    fn of_payment(kind: EventType, p: &Payment, r: &Reservation, at: DateTime<Utc>) -> Event {
        let mut e = Self::of_reservation(kind, r, at);
        e.payload.payment_id = Some(p.id);
        e.payload.amount = Some(p.amount);
        e
    }

    pub fn payment_completed(p: &Payment, r: &Reservation) -> Event {
        Self::of_payment(EventType::PaymentCompleted, p, r, p.paid_at)
    }

    pub fn payment_refunded(p: &Payment, r: &Reservation, at: DateTime<Utc>) -> Event {
        Self::of_payment(EventType::PaymentRefunded, p, r, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeatId;
    use crate::model::payment::PaymentStatus;
    use crate::model::seat::ReservationStatus;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn reservation() -> Reservation {
        Reservation {
            id: ReservationId::from(12),
            seat: SeatId::from(70),
            schedule: ScheduleId::from(3),
            seat_number: SeatNumber::new(7).unwrap(),
            user: UserId::from(5),
            price: Points::new(500).unwrap(),
            status: ReservationStatus::Held,
            expires_at: t0() + chrono::Duration::minutes(5),
        }
    }

    #[test]
    fn every_type_has_one_stream_and_a_name_that_parses() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        for s in Stream::ALL {
            assert_eq!(s.as_str().parse::<Stream>(), Ok(s));
        }
        let by_stream = |s| EventType::ALL.iter().filter(|t| t.stream() == s).count();
        assert_eq!(by_stream(Stream::Reservations), 5);
        assert_eq!(by_stream(Stream::Points), 3);
        assert_eq!(by_stream(Stream::Payments), 2);
    }

    #[test]
    fn payloads_carry_the_ids_involved() {
        let r = reservation();
        let held = Event::seat_held(&r, t0());
        assert_eq!(held.stream(), Stream::Reservations);
        assert_eq!(held.aggregate(), "reservation:12");
        assert_eq!(held.payload.amount.map(Points::get), Some(500));
        assert_eq!(held.payload.expires_at, Some(r.expires_at));

        let p = Payment {
            id: PaymentId::from(9),
            reservation: r.id,
            user: r.user,
            amount: r.price,
            paid_at: t0(),
            status: PaymentStatus::Paid,
        };
        let done = Event::payment_completed(&p, &r);
        assert_eq!(
            (done.payload.payment_id, done.payload.reservation_id),
            (Some(p.id), Some(r.id))
        );
        assert_eq!(done.aggregate(), "reservation:12");
        let used = Event::points(r.user, PointChange::Use(r.price), 99_500, Some(p.id), t0());
        assert_eq!(used.kind, EventType::PointsUsed);
        assert_eq!(used.aggregate(), "user:5");
        assert_eq!(used.payload.balance_after, Some(99_500));
    }
}
