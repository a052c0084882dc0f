//! Bodies of the catalogue routes: concerts, schedules, seats.

use chrono::{DateTime, Utc};
use concert_domain::{Concert, InvalidValue, ScheduleSummary, SeatStatus, SeatView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::dto::filter;

/// `?status=` of a seat map.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeatsQuery {
    /// Only seats with this status.
    #[param(value_type = Option<SeatStatusDto>, example = "AVAILABLE")]
    pub status: Option<String>,
}

impl SeatsQuery {
    /// The status filter, if any; refuses an unknown status
    /// (case-insensitive).
    pub fn try_into_domain(self) -> Result<Option<SeatStatus>, InvalidValue> {
        filter::status(self.status)
    }
}

/// A concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Concert)]
pub struct ConcertResponse {
    #[schema(example = 1)]
    pub id: u64,
    #[schema(example = "Spring Gala")]
    pub title: String,
}

impl From<Concert> for ConcertResponse {
    fn from(c: Concert) -> Self {
        Self {
            id: c.id.get(),
            title: c.title,
        }
    }
}

/// A dated performance of a concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Schedule)]
pub struct ScheduleResponse {
    #[schema(example = 3)]
    pub id: u64,
    #[schema(example = 1)]
    pub concert_id: u64,
    #[schema(example = "2030-05-01T19:00:00Z")]
    pub starts_at: DateTime<Utc>,
    /// Seats bookable now (ended holds count as available).
    #[schema(example = 48)]
    pub available_seats: u32,
}

impl From<ScheduleSummary> for ScheduleResponse {
    fn from(s: ScheduleSummary) -> Self {
        Self {
            id: s.id.get(),
            concert_id: s.concert.get(),
            starts_at: s.starts_at,
            available_seats: s.available_seats,
        }
    }
}

/// A seat's status as a client sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = SeatStatus)]
pub enum SeatStatusDto {
    Available,
    Held,
    Sold,
}

impl From<SeatStatus> for SeatStatusDto {
    fn from(s: SeatStatus) -> Self {
        match s {
            SeatStatus::Available => Self::Available,
            SeatStatus::Held => Self::Held,
            SeatStatus::Sold => Self::Sold,
        }
    }
}

/// One seat of a schedule's seat map.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Seat)]
pub struct SeatResponse {
    #[schema(example = 7)]
    pub number: u8,
    #[schema(example = 5000)]
    pub price: u64,
    pub status: SeatStatusDto,
}

impl From<SeatView> for SeatResponse {
    fn from(s: SeatView) -> Self {
        Self {
            number: s.number.get(),
            price: s.price.get(),
            status: s.status.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_status_filter() {
        let q = |status: Option<&str>| {
            SeatsQuery {
                status: status.map(str::to_owned),
            }
            .try_into_domain()
        };
        assert_eq!(q(None), Ok(None));
        assert_eq!(q(Some("AVAILABLE")), Ok(Some(SeatStatus::Available)));
        assert_eq!(q(Some("sold")), Ok(Some(SeatStatus::Sold)));
        assert!(q(Some("FREE")).is_err());
        assert!(q(Some("")).is_err());
    }
}
