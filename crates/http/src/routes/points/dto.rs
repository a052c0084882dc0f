//! Bodies of the point routes: balance, charge, history.

use chrono::{DateTime, Utc};
use concert_domain::{HistoryEntry, InvalidValue, PointBalance, PointKind, Points};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dto::integral;

/// Body of POST /api/v1/points/charge.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// Points to add, 1 to 1000000.
    #[schema(example = 10000, minimum = 1, maximum = 1000000)]
    #[serde(deserialize_with = "integral::one")]
    pub amount: i64,
}

impl ChargeRequest {
    /// The amount; refuses `<= 0` and anything above `MAX_AMOUNT`.
    pub fn try_into_domain(self) -> Result<Points, InvalidValue> {
        Points::new(self.amount)
    }
}

/// A point balance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Balance)]
pub struct BalanceResponse {
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 15000)]
    pub balance: u64,
}

impl From<PointBalance> for BalanceResponse {
    fn from(b: PointBalance) -> Self {
        Self {
            user_id: b.user.get(),
            balance: b.balance,
        }
    }
}

/// The kind of a point change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = PointKind)]
pub enum PointKindDto {
    Charge,
    Use,
    Refund,
}

impl From<PointKind> for PointKindDto {
    fn from(k: PointKind) -> Self {
        match k {
            PointKind::Charge => Self::Charge,
            PointKind::Use => Self::Use,
            PointKind::Refund => Self::Refund,
        }
    }
}

/// One line of the point history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = HistoryEntry)]
pub struct HistoryEntryResponse {
    #[schema(example = 12)]
    pub id: u64,
    pub kind: PointKindDto,
    #[schema(example = 5000)]
    pub amount: u64,
    /// The balance right after this change.
    #[schema(example = 10000)]
    pub balance_after: u64,
    #[schema(example = "2030-03-17T17:46:40Z")]
    pub created_at: DateTime<Utc>,
}

impl From<HistoryEntry> for HistoryEntryResponse {
    fn from(h: HistoryEntry) -> Self {
        Self {
            id: h.id,
            kind: h.kind.into(),
            amount: h.amount,
            balance_after: h.balance_after,
            created_at: h.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concert_domain::MAX_AMOUNT;

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        let charge = |amount| ChargeRequest { amount }.try_into_domain();
        assert_eq!(charge(500).unwrap().get(), 500);
        assert_eq!(charge(MAX_AMOUNT as i64).unwrap().get(), MAX_AMOUNT);
        assert!(charge(0).is_err());
        assert!(charge(-500).is_err());
        assert!(charge(MAX_AMOUNT as i64 + 1).is_err());
        assert!(charge(i64::MAX).is_err());
    }
}
