//! Seats and reservations (holds), with the rules that decide them.

use chrono::{DateTime, Utc};

use crate::catalogue::SeatStatus;
use crate::error::{PayError, ReserveError};
use crate::ids::{ReservationId, ScheduleId, SeatId, SeatNumber, UserId};
use crate::lock::Fence;
use crate::points::Points;

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
/// an expired hold (and its reservation) is being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldDecision {
    pub seat: Seat,
    pub replaces_expired_hold: bool,
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
    /// be held by `user` until `until`. Anything else is
    /// [`ReserveError::SeatUnavailable`], including a seat the same user
    /// already holds.
    pub fn hold(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HoldDecision, ReserveError> {
        let replaces_expired_hold = match self.state {
            SeatState::Available => false,
            SeatState::Held { until: held, .. } if held <= now => true,
            SeatState::Held { .. } | SeatState::Sold => return Err(ReserveError::SeatUnavailable),
        };
        Ok(HoldDecision {
            seat: Seat {
                state: SeatState::Held { by: user, until },
                version: self.version + 1,
                ..self.clone()
            },
            replaces_expired_hold,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationStatus {
    Held,
    Confirmed,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "HELD",
            ReservationStatus::Confirmed => "CONFIRMED",
            ReservationStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "HELD" => Some(ReservationStatus::Held),
            "CONFIRMED" => Some(ReservationStatus::Confirmed),
            "EXPIRED" => Some(ReservationStatus::Expired),
            _ => None,
        }
    }
}

/// A user's hold on a seat, confirmed by payment or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub seat: SeatId,
    pub schedule: ScheduleId,
    pub seat_number: SeatNumber,
    pub user: UserId,
    pub price: Points,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
}

impl Reservation {
    /// The status a client sees at `now`: a hold past its time is expired
    /// even before the sweeper writes it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if self.expires_at <= now => ReservationStatus::Expired,
            status => status,
        }
    }

    /// The payment rule: only the owner may pay (anyone else is told it
    /// does not exist), a confirmed reservation is already paid, an expired
    /// one can no longer be paid.
    pub fn check_payable(&self, payer: UserId, now: DateTime<Utc>) -> Result<(), PayError> {
        if self.user != payer {
            return Err(PayError::NotFound);
        }
        match self.status_at(now) {
            ReservationStatus::Held => Ok(()),
            ReservationStatus::Confirmed => Err(PayError::AlreadyPaid),
            ReservationStatus::Expired => Err(PayError::Expired),
        }
    }

    /// Whether `viewer` may see this reservation.
    pub fn is_visible_to(&self, viewer: UserId) -> bool {
        self.user == viewer
    }
}

/// The command a seat repository carries out in one transaction: load the
/// seat, [`Seat::hold`] it, write the seat, expire the replaced reservation
/// if any, insert the new reservation.
#[derive(Debug, Clone)]
pub struct HoldSeat {
    pub user: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatNumber,
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Present when the hold runs under a distributed lock: storage refuses
    /// the write if a newer token has already written this seat.
    pub fence: Option<Fence>,
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
    }

    #[test]
    fn live_hold_and_sold_seat_are_unavailable() {
        let until = t0() + Duration::minutes(5);
        let held = seat(SeatState::Held {
            by: user(1),
            until: t0() + Duration::seconds(1),
        });
        assert!(matches!(
            held.hold(user(2), t0(), until),
            Err(ReserveError::SeatUnavailable)
        ));
        // the holder itself cannot hold it twice either
        assert!(matches!(
            held.hold(user(1), t0(), until),
            Err(ReserveError::SeatUnavailable)
        ));
        assert!(matches!(
            seat(SeatState::Sold).hold(user(2), t0(), until),
            Err(ReserveError::SeatUnavailable)
        ));
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
    fn owner_pays_a_live_hold() {
        let r = reservation(ReservationStatus::Held, t0() + Duration::seconds(1));
        assert_eq!(r.check_payable(user(1), t0()), Ok(()));
        assert!(r.is_visible_to(user(1)));
        assert!(!r.is_visible_to(user(2)));
    }

    #[test]
    fn someone_elses_reservation_is_not_found() {
        let r = reservation(ReservationStatus::Held, t0() + Duration::seconds(1));
        assert_eq!(r.check_payable(user(2), t0()), Err(PayError::NotFound));
        // even when it is paid or expired: nothing about it is revealed
        let paid = reservation(ReservationStatus::Confirmed, t0());
        assert_eq!(paid.check_payable(user(2), t0()), Err(PayError::NotFound));
    }

    #[test]
    fn confirmed_is_already_paid_and_expired_is_expired() {
        let paid = reservation(ReservationStatus::Confirmed, t0() - Duration::hours(1));
        assert_eq!(
            paid.check_payable(user(1), t0()),
            Err(PayError::AlreadyPaid)
        );
        assert_eq!(paid.status_at(t0()), ReservationStatus::Confirmed);

        let lapsed = reservation(ReservationStatus::Held, t0());
        assert_eq!(lapsed.status_at(t0()), ReservationStatus::Expired);
        assert_eq!(lapsed.check_payable(user(1), t0()), Err(PayError::Expired));

        let swept = reservation(ReservationStatus::Expired, t0() + Duration::hours(1));
        assert_eq!(swept.check_payable(user(1), t0()), Err(PayError::Expired));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ReservationStatus::Held,
            ReservationStatus::Confirmed,
            ReservationStatus::Expired,
        ] {
            assert_eq!(ReservationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ReservationStatus::parse("held"), None);
    }
}
