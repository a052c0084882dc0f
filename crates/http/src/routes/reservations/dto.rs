//! Bodies of the reservation routes: holding seats, listing and reading
//! reservations.

use chrono::{DateTime, Utc};
use concert_domain::{
    InvalidValue, Reservation, ReservationStatus, ReserveSeat, ReserveSeats, ScheduleId,
    SeatNumber, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dto::{filter, integral};

/// Body of POST /api/v1/reservations.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    /// The schedule (dated performance).
    #[schema(example = 3, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub schedule_id: i64,
    /// The seat number, 1 to 50.
    #[schema(example = 7, minimum = 1, maximum = 50)]
    #[serde(deserialize_with = "integral::one")]
    pub seat_number: i64,
}

impl ReserveRequest {
    /// The command for `user`; refuses a non-positive schedule id and a seat
    /// number outside 1..=50.
    pub fn try_into_domain(self, user: UserId) -> Result<ReserveSeat, InvalidValue> {
        Ok(ReserveSeat {
            user,
            schedule: ScheduleId::new(self.schedule_id)?,
            seat: SeatNumber::new(self.seat_number)?,
        })
    }
}

/// Body of POST /api/v1/reservations/batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveBatchRequest {
    /// The schedule (dated performance).
    #[schema(example = 3, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub schedule_id: i64,
    /// Distinct seat numbers (1 to 50), at least one and at most the
    /// configured maximum per request (4 by default).
    #[schema(example = json!([7, 8]), min_items = 1)]
    #[serde(deserialize_with = "integral::many")]
    pub seat_numbers: Vec<i64>,
}

impl ReserveBatchRequest {
    /// The command for `user`: 1 to `max` distinct valid seats.
    pub fn try_into_domain(self, user: UserId, max: usize) -> Result<ReserveSeats, InvalidValue> {
        let seats = self
            .seat_numbers
            .into_iter()
            .map(|n| SeatNumber::new(n).map_err(|e| InvalidValue::new("seatNumbers", e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        ReserveSeats::new(user, ScheduleId::new(self.schedule_id)?, seats, max)
    }
}

/// `?status=` of the caller's reservations.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReservationsQuery {
    /// Only reservations with this status (as it is now: a hold past its
    /// time is EXPIRED).
    #[param(value_type = Option<ReservationStatusDto>, example = "HELD")]
    pub status: Option<String>,
}

impl ReservationsQuery {
    /// The status filter, if any; refuses an unknown status
    /// (case-insensitive).
    pub fn try_into_domain(self) -> Result<Option<ReservationStatus>, InvalidValue> {
        filter::status(self.status)
    }
}

/// A reservation's status: HELD until paid (CONFIRMED), let go
/// (CANCELLED), run out (EXPIRED) or refunded after payment (REFUNDED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = ReservationStatus)]
pub enum ReservationStatusDto {
    Held,
    Confirmed,
    Expired,
    Cancelled,
    Refunded,
}

impl From<ReservationStatus> for ReservationStatusDto {
    fn from(s: ReservationStatus) -> Self {
        match s {
            ReservationStatus::Held => Self::Held,
            ReservationStatus::Confirmed => Self::Confirmed,
            ReservationStatus::Expired => Self::Expired,
            ReservationStatus::Cancelled => Self::Cancelled,
            ReservationStatus::Refunded => Self::Refunded,
        }
    }
}

/// A seat reservation (a hold, and what became of it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Reservation)]
pub struct ReservationResponse {
    #[schema(example = 31)]
    pub id: u64,
    #[schema(example = 3)]
    pub schedule_id: u64,
    #[schema(example = 7)]
    pub seat_number: u8,
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 5000)]
    pub price: u64,
    pub status: ReservationStatusDto,
    /// When the hold ends unless paid: set while the status is HELD, null
    /// otherwise.
    #[schema(example = "2030-03-17T17:51:40Z", required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<Reservation> for ReservationResponse {
    fn from(r: Reservation) -> Self {
        let held = r.status == ReservationStatus::Held;
        Self {
            id: r.id.get(),
            schedule_id: r.schedule.get(),
            seat_number: r.seat_number.get(),
            user_id: r.user.get(),
            price: r.price.get(),
            status: r.status.into(),
            expires_at: held.then_some(r.expires_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn reserve(schedule_id: i64, seat_number: i64) -> Result<ReserveSeat, InvalidValue> {
        ReserveRequest {
            schedule_id,
            seat_number,
        }
        .try_into_domain(UserId::from(3))
    }

    #[test]
    fn seat_numbers_must_be_one_to_fifty() {
        let ok = reserve(2, 7).unwrap();
        assert_eq!((ok.user.get(), ok.schedule.get(), ok.seat.get()), (3, 2, 7));
        assert!(reserve(2, 1).is_ok());
        assert!(reserve(2, 50).is_ok());
        assert_eq!(reserve(2, 0).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(2, 51).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(2, -1).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(0, 7).unwrap_err().field, "scheduleId");
    }

    #[test]
    fn batches_are_one_to_max_distinct_valid_seats() {
        let batch = |seats: &[i64]| {
            ReserveBatchRequest {
                schedule_id: 2,
                seat_numbers: seats.to_vec(),
            }
            .try_into_domain(UserId::from(3), 4)
        };
        let ok = batch(&[9, 2]).unwrap();
        let numbers: Vec<_> = ok.seats().iter().map(|s| s.get()).collect();
        assert_eq!(numbers, [2, 9]);
        for bad in [&[][..], &[1, 2, 3, 4, 5], &[1, 1], &[0], &[51]] {
            assert_eq!(batch(bad).unwrap_err().field, "seatNumbers", "{bad:?}");
        }
    }

    #[test]
    fn reservation_status_filter() {
        let q = |status: Option<&str>| {
            ReservationsQuery {
                status: status.map(str::to_owned),
            }
            .try_into_domain()
        };
        assert_eq!(q(None), Ok(None));
        for status in ReservationStatus::ALL {
            assert_eq!(q(Some(status.as_str())), Ok(Some(status)));
        }
        assert_eq!(q(Some("held")), Ok(Some(ReservationStatus::Held)));
        assert!(q(Some("PAID")).is_err());
        assert!(q(Some("")).is_err());
    }
}
