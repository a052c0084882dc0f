//! Seats and reservations (holds), with the rules that decide them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::error::{CancelError, PayError};
use crate::ids::{InvalidValue, ReservationId, ScheduleId, SeatId, SeatNumber, UserId};
use crate::model::catalogue::SeatStatus;
use crate::model::wallet::Points;

/// Where a seat stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    Available,
    /// Held for `by` until `until`; a hold whose time has passed counts as
    /// available (see [`Seat::status_at`]).
    Held {
        by: UserId,
        until: DateTime<Utc>,
    },
    Sold,
}

/// One numbered seat of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: SeatId,
    pub schedule: ScheduleId,
    pub number: SeatNumber,
    pub price: Points,
    pub state: SeatState,
    /// Bumped by every write: the optimistic check compares it.
    pub version: u64,
}

/// What [`Seat::hold`] decided: the seat as it must be written, and whether
/// an expired hold (whose reservation must be expired too) is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldDecision {
    pub seat: Seat,
    pub replaces_expired_hold: bool,
}

/// Why a seat cannot be held: it is sold, or held (by `holder`) and the hold
/// has not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatTaken {
    pub holder: Option<UserId>,
}

impl Seat {
    /// What a client sees at `now`: an expired hold is available.
    pub fn status_at(&self, now: DateTime<Utc>) -> SeatStatus {
        match self.state {
            SeatState::Available => SeatStatus::Available,
            SeatState::Held { until, .. } if until <= now => SeatStatus::Available,
            SeatState::Held { .. } => SeatStatus::Held,
            SeatState::Sold => SeatStatus::Sold,
        }
    }

    /// The hold rule: an available seat, or one whose hold has expired, may
    /// be held by `user` until `until`. A live hold (the user's own
    /// included) or a sale refuses.
    pub fn hold(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HoldDecision, SeatTaken> {
        let replaces_expired_hold = match self.state {
            SeatState::Available => false,
            SeatState::Held { until: held, .. } if held <= now => true,
            SeatState::Held { by, .. } => return Err(SeatTaken { holder: Some(by) }),
            SeatState::Sold => return Err(SeatTaken { holder: None }),
        };
        Ok(HoldDecision {
            seat: self.written(SeatState::Held { by: user, until }),
            replaces_expired_hold,
        })
    }

    /// The sale rule: the seat is sold to the payer of `reservation` only
    /// while it is still held by that reservation (same holder, same end of
    /// hold) at `now`. `None` when it is not: the seat moved on.
    pub fn sell(&self, reservation: &Reservation, now: DateTime<Utc>) -> Option<Seat> {
        match self.state {
            SeatState::Held { by, until }
                if by == reservation.user && until == reservation.expires_at && until > now =>
            {
                Some(self.written(SeatState::Sold))
            }
            _ => None,
        }
    }

    /// The seat freed (cancelled hold, refund, expiry): available again.
    pub fn release(&self) -> Seat {
        self.written(SeatState::Available)
    }

    fn written(&self, state: SeatState) -> Seat {
        Seat {
            state,
            version: self.version + 1,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationStatus {
    /// Holding the seat until `expires_at`.
    Held,
    /// Paid: the seat is sold.
    Confirmed,
    /// The hold ran out unpaid.
    Expired,
    /// The holder let the seat go.
    Cancelled,
    /// Paid, then refunded: the seat is free again.
    Refunded,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 5] = [
        ReservationStatus::Held,
        ReservationStatus::Confirmed,
        ReservationStatus::Expired,
        ReservationStatus::Cancelled,
        ReservationStatus::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "HELD",
            ReservationStatus::Confirmed => "CONFIRMED",
            ReservationStatus::Expired => "EXPIRED",
            ReservationStatus::Cancelled => "CANCELLED",
            ReservationStatus::Refunded => "REFUNDED",
        }
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReservationStatus {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReservationStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "status",
                    "must be HELD, CONFIRMED, EXPIRED, CANCELLED or REFUNDED",
                )
            })
    }
}

/// A user's hold on a seat, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub seat: SeatId,
    pub schedule: ScheduleId,
    pub seat_number: SeatNumber,
    pub user: UserId,
    pub price: Points,
    pub status: ReservationStatus,
    /// When the hold ends (meaningful while `Held`).
    pub expires_at: DateTime<Utc>,
}

/// A hold to record for a seat just written as held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    pub seat: SeatId,
    pub schedule: ScheduleId,
    pub seat_number: SeatNumber,
    pub user: UserId,
    pub price: Points,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl NewReservation {
    /// The reservation for `seat`, just held by `user` at `now` until `until`.
    pub fn for_seat(seat: &Seat, user: UserId, now: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        Self {
            seat: seat.id,
            schedule: seat.schedule,
            seat_number: seat.number,
            user,
            price: seat.price,
            expires_at: until,
            created_at: now,
        }
    }
}

impl Reservation {
    /// The status a client sees at `now`: a hold past its time is expired
    /// even before anything writes it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if self.expires_at <= now => ReservationStatus::Expired,
            status => status,
        }
    }

    /// True while the reservation holds or owns its seat.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.status_at(now),
            ReservationStatus::Held | ReservationStatus::Confirmed
        )
    }

    /// Whether `viewer` may see this reservation.
    pub fn is_visible_to(&self, viewer: UserId) -> bool {
        self.user == viewer
    }

    /// The payment rule: only the owner may pay (anyone else is told it
    /// does not exist), a confirmed (or refunded, or cancelled) reservation
    /// cannot be paid again, an expired one can no longer be paid.
    pub fn check_payable(&self, payer: UserId, now: DateTime<Utc>) -> Result<(), PayError> {
        if self.user != payer {
            return Err(PayError::NotFound);
        }
        match self.status_at(now) {
            ReservationStatus::Held => Ok(()),
            ReservationStatus::Confirmed
            | ReservationStatus::Refunded
            | ReservationStatus::Cancelled => Err(PayError::AlreadyPaid),
            ReservationStatus::Expired => Err(PayError::Expired),
        }
    }

    /// The reservation paid.
    pub fn confirm(&self) -> Reservation {
        self.with_status(ReservationStatus::Confirmed)
    }

    /// The cancel rule: the owner may cancel a live hold. Cancelling a
    /// cancelled reservation again changes nothing (`Ok(None)`); a paid one
    /// is refunded instead; an expired hold is gone already.
    pub fn cancel(
        &self,
        by: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<Reservation>, CancelError> {
        if self.user != by {
            return Err(CancelError::NotFound);
        }
        match self.status_at(now) {
            ReservationStatus::Held => Ok(Some(self.with_status(ReservationStatus::Cancelled))),
            ReservationStatus::Cancelled => Ok(None),
            ReservationStatus::Confirmed | ReservationStatus::Refunded => {
                Err(CancelError::AlreadyPaid)
            }
            ReservationStatus::Expired => Err(CancelError::Expired),
        }
    }

    /// The hold, run out unpaid.
    pub fn expire(&self) -> Reservation {
        self.with_status(ReservationStatus::Expired)
    }

    /// The paid reservation, refunded.
    pub fn refund(&self) -> Reservation {
        self.with_status(ReservationStatus::Refunded)
    }

    fn with_status(&self, status: ReservationStatus) -> Reservation {
        Reservation {
            status,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }

    fn seat(state: SeatState) -> Seat {
        Seat {
            id: SeatId::from(11),
            schedule: ScheduleId::from(3),
            number: SeatNumber::new(7).unwrap(),
            price: Points::new(500).unwrap(),
            state,
            version: 4,
        }
    }

    fn reservation(status: ReservationStatus, expires_at: DateTime<Utc>) -> Reservation {
        Reservation {
            id: ReservationId::from(1),
            seat: SeatId::from(11),
            schedule: ScheduleId::from(3),
            seat_number: SeatNumber::new(7).unwrap(),
            user: user(1),
            price: Points::new(500).unwrap(),
            status,
            expires_at,
        }
    }

    #[test]
    fn available_seat_is_held_with_a_new_version() {
        let until = t0() + Duration::minutes(5);
        let d = seat(SeatState::Available)
            .hold(user(2), t0(), until)
            .unwrap();
        assert_eq!(d.seat.state, SeatState::Held { by: user(2), until });
        assert_eq!(d.seat.version, 5);
        assert!(!d.replaces_expired_hold);
        assert_eq!(d.seat.status_at(t0()), SeatStatus::Held);
        let r = NewReservation::for_seat(&d.seat, user(2), t0(), until);
        assert_eq!((r.price.get(), r.seat_number.get()), (500, 7));
    }

    #[test]
    fn live_hold_and_sold_seat_are_taken() {
        let until = t0() + Duration::minutes(5);
        let held = seat(SeatState::Held {
            by: user(1),
            until: t0() + Duration::seconds(1),
        });
        assert_eq!(
            held.hold(user(2), t0(), until),
            Err(SeatTaken {
                holder: Some(user(1))
            })
        );
        // the holder cannot hold it twice either
        assert_eq!(
            held.hold(user(1), t0(), until),
            Err(SeatTaken {
                holder: Some(user(1))
            })
        );
        assert_eq!(
            seat(SeatState::Sold).hold(user(2), t0(), until),
            Err(SeatTaken { holder: None })
        );
    }

    #[test]
    fn expired_hold_counts_as_available() {
        let expired = seat(SeatState::Held {
            by: user(1),
            until: t0(),
        });
        assert_eq!(expired.status_at(t0()), SeatStatus::Available);
        assert_eq!(
            expired.status_at(t0() - Duration::seconds(1)),
            SeatStatus::Held
        );
        let d = expired
            .hold(user(2), t0(), t0() + Duration::minutes(5))
            .unwrap();
        assert!(d.replaces_expired_hold);
        assert_eq!(seat(SeatState::Sold).status_at(t0()), SeatStatus::Sold);
    }

    #[test]
    fn a_seat_is_sold_only_while_held_by_the_reservation() {
        let until = t0() + Duration::minutes(5);
        let r = reservation(ReservationStatus::Held, until);
        let held = seat(SeatState::Held { by: user(1), until });
        let sold = held.sell(&r, t0()).unwrap();
        assert_eq!((sold.state, sold.version), (SeatState::Sold, 5));
        // past the hold, by another holder, or another hold of the same user
        assert!(held.sell(&r, until).is_none());
        assert!(
            seat(SeatState::Held { by: user(2), until })
                .sell(&r, t0())
                .is_none()
        );
        assert!(
            seat(SeatState::Held {
                by: user(1),
                until: until + Duration::seconds(1)
            })
            .sell(&r, t0())
            .is_none()
        );
        assert!(seat(SeatState::Sold).sell(&r, t0()).is_none());
        let freed = held.release();
        assert_eq!((freed.state, freed.version), (SeatState::Available, 5));
    }

    #[test]
    fn owner_pays_a_live_hold() {
        let r = reservation(ReservationStatus::Held, t0() + Duration::seconds(1));
        assert!(r.check_payable(user(1), t0()).is_ok());
        assert!(r.is_visible_to(user(1)));
        assert!(!r.is_visible_to(user(2)));
        assert!(r.is_live_at(t0()));
        assert_eq!(r.confirm().status, ReservationStatus::Confirmed);
    }

    #[test]
    fn someone_elses_reservation_is_not_found() {
        let r = reservation(ReservationStatus::Held, t0() + Duration::seconds(1));
        assert!(matches!(
            r.check_payable(user(2), t0()),
            Err(PayError::NotFound)
        ));
        // even when it is paid or expired: nothing about it is revealed
        let paid = reservation(ReservationStatus::Confirmed, t0());
        assert!(matches!(
            paid.check_payable(user(2), t0()),
            Err(PayError::NotFound)
        ));
        assert!(matches!(
            paid.cancel(user(2), t0()),
            Err(CancelError::NotFound)
        ));
    }

    #[test]
    fn confirmed_is_already_paid_and_expired_is_expired() {
        let paid = reservation(ReservationStatus::Confirmed, t0() - Duration::hours(1));
        assert!(matches!(
            paid.check_payable(user(1), t0()),
            Err(PayError::AlreadyPaid)
        ));
        assert_eq!(paid.status_at(t0()), ReservationStatus::Confirmed);
        assert!(paid.is_live_at(t0()));

        let lapsed = reservation(ReservationStatus::Held, t0());
        assert_eq!(lapsed.status_at(t0()), ReservationStatus::Expired);
        assert!(!lapsed.is_live_at(t0()));
        assert!(matches!(
            lapsed.check_payable(user(1), t0()),
            Err(PayError::Expired)
        ));

        let swept = reservation(ReservationStatus::Expired, t0() + Duration::hours(1));
        assert!(matches!(
            swept.check_payable(user(1), t0()),
            Err(PayError::Expired)
        ));
        for status in [ReservationStatus::Cancelled, ReservationStatus::Refunded] {
            assert!(matches!(
                reservation(status, t0() + Duration::hours(1)).check_payable(user(1), t0()),
                Err(PayError::AlreadyPaid)
            ));
        }
    }

    #[test]
    fn cancel_frees_a_live_hold_once() {
        let live = reservation(ReservationStatus::Held, t0() + Duration::minutes(1));
        let cancelled = live.cancel(user(1), t0()).unwrap().unwrap();
        assert_eq!(cancelled.status, ReservationStatus::Cancelled);
        assert_eq!(cancelled.cancel(user(1), t0()).unwrap(), None);
        assert!(matches!(
            reservation(ReservationStatus::Confirmed, t0()).cancel(user(1), t0()),
            Err(CancelError::AlreadyPaid)
        ));
        assert!(matches!(
            reservation(ReservationStatus::Held, t0()).cancel(user(1), t0()),
            Err(CancelError::Expired)
        ));
        assert_eq!(live.expire().status, ReservationStatus::Expired);
        assert_eq!(live.confirm().refund().status, ReservationStatus::Refunded);
    }

    #[test]
    fn statuses_round_trip() {
        for s in ReservationStatus::ALL {
            assert_eq!(s.as_str().parse::<ReservationStatus>(), Ok(s));
        }
        assert!("held".parse::<ReservationStatus>().is_err());
    }
}
