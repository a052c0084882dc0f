//! Payment of a held seat with points.

use chrono::{DateTime, Utc};

use crate::ids::{IdempotencyKey, PaymentId, ReservationId, UserId};
use crate::lock::Fence;
use crate::points::Points;

/// A completed payment: the reservation it confirmed and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub reservation: ReservationId,
    pub user: UserId,
    pub amount: Points,
    pub paid_at: DateTime<Utc>,
}

/// The command a payment repository carries out in one transaction:
/// load the reservation and check [`crate::Reservation::check_payable`],
/// apply `PointChange::Use(price)` to the payer's wallet
/// ([`crate::Wallet::apply`]), append the history entry, confirm the
/// reservation, mark the seat sold, insert the payment. Any refusal rolls
/// everything back.
#[derive(Debug, Clone)]
pub struct PayReservation {
    pub user: UserId,
    pub reservation: ReservationId,
    pub now: DateTime<Utc>,
    /// Present when the wallet write runs under a distributed lock.
    pub fence: Option<Fence>,
    /// A repeat with the same key and user returns the first payment.
    pub idempotency: Option<IdempotencyKey>,
}
