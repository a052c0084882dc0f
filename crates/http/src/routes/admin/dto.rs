//! Bodies of the admin routes: creating concerts and schedules (their
//! answers are the catalogue's bodies).

use chrono::{DateTime, Utc};
use concert_domain::{InvalidValue, Points};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::dto::integral;

/// Body of POST /api/v1/admin/concerts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConcertRequest {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "Spring Gala", min_length = 1, max_length = 200)]
    pub title: String,
}

/// Body of POST /api/v1/admin/concerts/{concertId}/schedules.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateScheduleRequest {
    /// When the show starts (RFC 3339); must be in the future.
    #[schema(example = "2030-05-01T19:00:00Z")]
    pub starts_at: DateTime<Utc>,
    /// The price of seats 1 to 50, in order: exactly 50 integers from 1 to
    /// 1000000.
    #[schema(
        min_items = 50,
        max_items = 50,
        example = json!([
            5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000,
            4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000,
            3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000,
            2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000,
            1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000
        ])
    )]
    #[serde(deserialize_with = "integral::many")]
    pub seat_prices: Vec<i64>,
}

impl CreateScheduleRequest {
    /// The start and the prices; a price outside 1..=1000000 is refused
    /// (the count and the start are the domain's rule).
    pub fn try_into_domain(self) -> Result<(DateTime<Utc>, Vec<Points>), InvalidValue> {
        let prices = self
            .seat_prices
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Points::new(p).map_err(|e| {
                    InvalidValue::new("seatPrices", format!("seat {}: {}", i + 1, e.message))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.starts_at, prices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_prices_are_checked_one_by_one() {
        let request = |prices: Vec<i64>| CreateScheduleRequest {
            starts_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            seat_prices: prices,
        };
        let (_, prices) = request(vec![700; 50]).try_into_domain().unwrap();
        assert_eq!(prices.len(), 50);
        let mut bad = vec![700; 50];
        bad[9] = 0;
        let e = request(bad).try_into_domain().unwrap_err();
        assert_eq!(e.field, "seatPrices");
        assert!(e.message.starts_with("seat 10:"), "{}", e.message);
    }
}
