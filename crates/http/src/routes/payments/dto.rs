//! Bodies of the payment routes: paying, reading, refunding.

use chrono::{DateTime, Utc};
use concert_domain::{InvalidValue, Payment, PaymentStatus, ReservationId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dto::integral;

/// Body of POST /api/v1/payments.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    /// The held reservation to pay.
    #[schema(example = 31, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub reservation_id: i64,
}

impl PayRequest {
    /// The reservation id; refuses a non-positive one.
    pub fn try_into_domain(self) -> Result<ReservationId, InvalidValue> {
        ReservationId::new(self.reservation_id)
    }
}

/// A payment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = PaymentStatus)]
pub enum PaymentStatusDto {
    Paid,
    Refunded,
}

impl From<PaymentStatus> for PaymentStatusDto {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Paid => Self::Paid,
            PaymentStatus::Refunded => Self::Refunded,
        }
    }
}

/// A payment of a reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Payment)]
pub struct PaymentResponse {
    #[schema(example = 4)]
    pub id: u64,
    #[schema(example = 31)]
    pub reservation_id: u64,
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 5000)]
    pub amount: u64,
    #[schema(example = "2030-03-17T17:47:10Z")]
    pub paid_at: DateTime<Utc>,
    pub status: PaymentStatusDto,
}

impl From<Payment> for PaymentResponse {
    fn from(p: Payment) -> Self {
        Self {
            id: p.id.get(),
            reservation_id: p.reservation.get(),
            user_id: p.user.get(),
            amount: p.amount.get(),
            paid_at: p.paid_at,
            status: p.status.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_ids_must_be_positive() {
        let pay = |reservation_id| PayRequest { reservation_id }.try_into_domain();
        assert_eq!(pay(9).unwrap().get(), 9);
        assert!(pay(0).is_err());
        assert!(pay(-9).is_err());
    }
}
