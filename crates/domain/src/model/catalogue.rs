//! The concert catalogue: what is on, when, and which seats are free.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::ids::{ConcertId, InvalidValue, ScheduleId, SeatNumber};
use crate::model::wallet::Points;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concert {
    pub id: ConcertId,
    pub title: String,
}

/// A concert title: 1 to 200 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 200;

    pub fn new(value: &str) -> Result<Self, InvalidValue> {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.chars().count() > Self::MAX_CHARS {
            return Err(InvalidValue::new(
                "title",
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A dated performance of a concert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: ScheduleId,
    pub concert: ConcertId,
    pub starts_at: DateTime<Utc>,
}

/// A dated performance of a concert, with how many seats are bookable now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSummary {
    pub id: ScheduleId,
    pub concert: ConcertId,
    pub starts_at: DateTime<Utc>,
    pub available_seats: u32,
}

/// A new schedule: a start in the future and one price per seat, for seats
/// 1 to [`SeatNumber::MAX`] in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub concert: ConcertId,
    pub starts_at: DateTime<Utc>,
    prices: Vec<Points>,
}

impl NewSchedule {
    /// The rule for a schedule an operator may create at `now`.
    pub fn new(
        concert: ConcertId,
        starts_at: DateTime<Utc>,
        prices: Vec<Points>,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidValue> {
        if starts_at <= now {
            return Err(InvalidValue::new("startsAt", "must be in the future"));
        }
        if prices.len() != usize::from(SeatNumber::MAX) {
            return Err(InvalidValue::new(
                "seatPrices",
                format!("must list exactly {} prices", SeatNumber::MAX),
            ));
        }
        Ok(Self {
            concert,
            starts_at,
            prices,
        })
    }

    /// Each seat with its price, by number.
    pub fn seats(&self) -> impl Iterator<Item = (SeatNumber, Points)> + '_ {
        SeatNumber::all().zip(self.prices.iter().copied())
    }
}

/// A seat's status as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

impl SeatStatus {
    pub const ALL: [SeatStatus; 3] = [SeatStatus::Available, SeatStatus::Held, SeatStatus::Sold];

    pub fn as_str(self) -> &'static str {
        match self {
            SeatStatus::Available => "AVAILABLE",
            SeatStatus::Held => "HELD",
            SeatStatus::Sold => "SOLD",
        }
    }
}

impl fmt::Display for SeatStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SeatStatus {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SeatStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| InvalidValue::new("status", "must be AVAILABLE, HELD or SOLD"))
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

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    #[test]
    fn statuses_round_trip() {
        for s in SeatStatus::ALL {
            assert_eq!(s.as_str().parse::<SeatStatus>(), Ok(s));
        }
        assert!("FREE".parse::<SeatStatus>().is_err());
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(Title::new("  Night  ").unwrap().as_str(), "Night");
        assert!(Title::new("   ").is_err());
        assert!(Title::new(&"x".repeat(200)).is_ok());
        assert!(Title::new(&"x".repeat(201)).is_err());
    }

    #[test]
    fn a_new_schedule_is_in_the_future_with_fifty_prices() {
        let prices = |n: usize| vec![Points::new(10).unwrap(); n];
        let later = t0() + chrono::Duration::days(1);
        let ok = NewSchedule::new(ConcertId::from(1), later, prices(50), t0()).unwrap();
        assert_eq!(ok.seats().count(), 50);
        assert_eq!(ok.seats().last().unwrap().0.get(), 50);
        assert_eq!(
            NewSchedule::new(ConcertId::from(1), t0(), prices(50), t0())
                .unwrap_err()
                .field,
            "startsAt"
        );
        assert_eq!(
            NewSchedule::new(ConcertId::from(1), later, prices(49), t0())
                .unwrap_err()
                .field,
            "seatPrices"
        );
    }
}
