//! The commands of the write use cases: what a caller asks for, as plain
//! values (validated where a rule applies to the request itself). The
//! services run them; the queue carries seat requests to their applier.

use crate::ids::{IdempotencyKey, InvalidValue, ReservationId, ScheduleId, SeatNumber, UserId};
use crate::model::wallet::Points;

/// The command: `user` wants `seat` of `schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveSeat {
    pub user: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatNumber,
}

/// The command: `user` wants all of `seats` of `schedule`, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveSeats {
    pub user: UserId,
    pub schedule: ScheduleId,
    seats: Vec<SeatNumber>,
}

impl ReserveSeats {
    /// 1 to `max` distinct seats, kept in ascending order.
    pub fn new(
        user: UserId,
        schedule: ScheduleId,
        mut seats: Vec<SeatNumber>,
        max: usize,
    ) -> Result<Self, InvalidValue> {
        let asked = seats.len();
        seats.sort();
        seats.dedup();
        if asked == 0 || asked > max {
            return Err(InvalidValue::new(
                "seatNumbers",
                format!("must list 1 to {max} seats"),
            ));
        }
        if seats.len() != asked {
            return Err(InvalidValue::new("seatNumbers", "must not repeat a seat"));
        }
        Ok(Self {
            user,
            schedule,
            seats,
        })
    }

    pub fn seats(&self) -> &[SeatNumber] {
        &self.seats
    }
}

/// The command: add `amount` to the user's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargePoints {
    pub user: UserId,
    pub amount: Points,
    pub idempotency: Option<IdempotencyKey>,
}

/// The command: take `amount` from the user's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsePoints {
    pub user: UserId,
    pub amount: Points,
}

/// The command: `user` pays `reservation` with points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayReservation {
    pub user: UserId,
    pub reservation: ReservationId,
    pub idempotency: Option<IdempotencyKey>,
}
