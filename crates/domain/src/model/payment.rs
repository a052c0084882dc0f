//! Payments of held seats with points, and their refunds.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::error::RefundError;
use crate::ids::{InvalidValue, PaymentId, ReservationId, UserId};
use crate::model::wallet::Points;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Paid,
    Refunded,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 2] = [PaymentStatus::Paid, PaymentStatus::Refunded];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "PAID",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| InvalidValue::new("status", "must be PAID or REFUNDED"))
    }
}

/// A payment: the reservation it confirmed and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub reservation: ReservationId,
    pub user: UserId,
    pub amount: Points,
    pub paid_at: DateTime<Utc>,
    pub status: PaymentStatus,
}

/// A payment to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub reservation: ReservationId,
    pub user: UserId,
    pub amount: Points,
    pub paid_at: DateTime<Utc>,
}

impl Payment {
    /// Whether `viewer` may see this payment.
    pub fn is_visible_to(&self, viewer: UserId) -> bool {
        self.user == viewer
    }

    /// The refund rule: only the payer may refund (anyone else is told it
    /// does not exist); a refunded payment stays as it is (`Ok(None)`); a
    /// refund is refused once the show starts within `cutoff` of `now`.
    pub fn refund(
        &self,
        by: UserId,
        now: DateTime<Utc>,
        show_starts: DateTime<Utc>,
        cutoff: chrono::Duration,
    ) -> Result<Option<Payment>, RefundError> {
        if self.user != by {
            return Err(RefundError::NotFound);
        }
        if self.status == PaymentStatus::Refunded {
            return Ok(None);
        }
        if show_starts - now < cutoff {
            return Err(RefundError::Closed {
                hours: u32::try_from(cutoff.num_hours()).unwrap_or(u32::MAX),
            });
        }
        Ok(Some(Payment {
            status: PaymentStatus::Refunded,
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    fn paid() -> Payment {
        Payment {
            id: PaymentId::from(1),
            reservation: ReservationId::from(2),
            user: UserId::from(3),
            amount: Points::new(500).unwrap(),
            paid_at: t0(),
            status: PaymentStatus::Paid,
        }
    }

    #[test]
    fn the_payer_refunds_before_the_cutoff_once() {
        let day = Duration::hours(24);
        let show = t0() + Duration::hours(48);
        let refunded = paid()
            .refund(UserId::from(3), t0(), show, day)
            .unwrap()
            .unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(
            refunded.refund(UserId::from(3), t0(), show, day).unwrap(),
            None
        );
        // exactly at the cut-off is still allowed, a second later is not
        assert!(
            paid()
                .refund(UserId::from(3), show - day, show, day)
                .is_ok()
        );
        assert!(matches!(
            paid().refund(
                UserId::from(3),
                show - day + Duration::seconds(1),
                show,
                day
            ),
            Err(RefundError::Closed { hours: 24 })
        ));
        assert!(matches!(
            paid().refund(UserId::from(4), t0(), show, day),
            Err(RefundError::NotFound)
        ));
    }

    #[test]
    fn statuses_round_trip() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(s));
        }
        assert!("paid".parse::<PaymentStatus>().is_err());
    }
}
