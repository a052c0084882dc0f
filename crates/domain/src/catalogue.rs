//! The concert catalogue: what is on, when, and which seats are free.

use chrono::{DateTime, Utc};

use crate::ids::{ConcertId, ScheduleId, SeatNumber};
use crate::points::Points;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
}

/// A dated performance of a concert, with how many seats are bookable now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSummary {
    pub id: ScheduleId,
    pub concert: ConcertId,
    pub starts_at: DateTime<Utc>,
    pub available_seats: u32,
}

/// A seat's status as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

impl SeatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatStatus::Available => "AVAILABLE",
            SeatStatus::Held => "HELD",
            SeatStatus::Sold => "SOLD",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "AVAILABLE" => Some(SeatStatus::Available),
            "HELD" => Some(SeatStatus::Held),
            "SOLD" => Some(SeatStatus::Sold),
            _ => None,
        }
    }
}

/// One line of a schedule's seat map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatView {
    pub number: SeatNumber,
    pub price: Points,
    pub status: SeatStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [SeatStatus::Available, SeatStatus::Held, SeatStatus::Sold] {
            assert_eq!(SeatStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SeatStatus::parse("FREE"), None);
    }
}
