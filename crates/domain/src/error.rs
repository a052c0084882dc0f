//! Errors. What can happen to any write is one type, [`Failure`]; each
//! operation adds only its business refusals, and wraps a [`Failure`] in its
//! `Failed` variant (so `?` works on both).

use crate::ids::{ReservationId, SeatNumber};

/// What can go wrong with any read or write, whatever the operation.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The optimistic version check failed, the transaction deadlocked, or a
    /// unique key refused a concurrent twin: the caller may retry.
    #[error("the data changed concurrently; retry")]
    Conflict,
    /// Another request holds the lock past the wait budget.
    #[error("another request holds the lock on this resource; retry later")]
    LockTimeout,
    /// The lock's lease ran out under the holder, or a newer holder already
    /// wrote (fencing token): the write was refused.
    #[error("the lock was lost before the write")]
    LockLost,
    /// Storage, the lock service or the broker cannot be reached, or did
    /// not answer within the request's budget.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or a misconfiguration, with its cause chain.
    #[error(transparent)]
    Unknown(anyhow::Error),
}

impl Failure {
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Failure::Unavailable(cause.into())
    }

    pub fn unknown(cause: impl Into<anyhow::Error>) -> Self {
        Failure::Unknown(cause.into())
    }
}

/// An operation error that may wrap a [`Failure`] (the strategy runner
/// retries conflicts through it).
pub trait OperationError: From<Failure> {
    fn failure(&self) -> Option<&Failure>;

    fn is_conflict(&self) -> bool {
        matches!(self.failure(), Some(Failure::Conflict))
    }
}

macro_rules! operation_error {
    ($($ty:ident),* $(,)?) => {$(
        impl OperationError for $ty {
            fn failure(&self) -> Option<&Failure> {
                match self {
                    $ty::Failed(f) => Some(f),
                    _ => None,
                }
            }
        }
    )*};
}

/// Read-only queries (catalogue, reservations, payments, balance, history).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Unknown (or not the caller's) concert, schedule, reservation, ...
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Holding one or several seats.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no such schedule or seat")]
    SeatNotFound,
    /// Held by someone else, or sold. `yours` names the caller's own live
    /// hold when the caller already holds the (single) seat asked for.
    #[error("seat {} is held or sold", join(seats))]
    SeatUnavailable {
        seats: Vec<SeatNumber>,
        yours: Option<ReservationId>,
    },
    /// The caller already holds the configured maximum of live holds on
    /// this schedule.
    #[error("at most {limit} live holds per user and schedule")]
    HoldLimit { limit: u32 },
    /// The waiting room is on and the caller is not admitted.
    #[error("not admitted by the waiting room")]
    NotAdmitted,
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Charging points.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("balance {balance} + {amount} would exceed the maximum balance {max}")]
    BalanceLimit { balance: u64, amount: u64, max: u64 },
    /// The idempotency key was first used for a different request.
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Using points outside of a payment.
#[derive(Debug, thiserror::Error)]
pub enum UseError {
    #[error("balance {balance} does not cover {needed}")]
    InsufficientPoints { balance: u64, needed: u64 },
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Paying a reservation.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// Unknown reservation, or somebody else's (not revealed).
    #[error("no such reservation")]
    NotFound,
    #[error("the reservation expired before payment")]
    Expired,
    /// Confirmed already (or no longer payable: cancelled, refunded).
    #[error("the reservation is already paid")]
    AlreadyPaid,
    #[error("balance {balance} does not cover {needed}")]
    InsufficientPoints { balance: u64, needed: u64 },
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    #[error("not admitted by the waiting room")]
    NotAdmitted,
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Cancelling a hold.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no such reservation")]
    NotFound,
    /// Confirmed reservations are refunded, not cancelled.
    #[error("the reservation is paid; refund it instead")]
    AlreadyPaid,
    #[error("the hold has expired")]
    Expired,
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Refunding a payment.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no such payment")]
    NotFound,
    /// The show starts sooner than the refund cut-off.
    #[error("refunds close {hours} hours before the show")]
    Closed { hours: u32 },
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Creating catalogue entries.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidValue),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Failed(#[from] Failure),
}

operation_error!(
    QueryError,
    ReserveError,
    ChargeError,
    UseError,
    PayError,
    CancelError,
    RefundError,
    AdminError,
);

fn join(seats: &[SeatNumber]) -> String {
    seats
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wrapped_conflicts_are_retryable() {
        assert!(ReserveError::from(Failure::Conflict).is_conflict());
        assert!(!ReserveError::from(Failure::LockTimeout).is_conflict());
        assert!(
            !ReserveError::SeatUnavailable {
                seats: vec![],
                yours: None
            }
            .is_conflict()
        );
        assert!(ChargeError::Failed(Failure::Conflict).is_conflict());
        assert!(
            !UseError::InsufficientPoints {
                balance: 1,
                needed: 2
            }
            .is_conflict()
        );
        assert!(matches!(
            PayError::from(Failure::LockLost).failure(),
            Some(Failure::LockLost)
        ));
    }

    #[test]
    fn messages_name_the_seats() {
        let e = ReserveError::SeatUnavailable {
            seats: vec![SeatNumber::new(3).unwrap(), SeatNumber::new(9).unwrap()],
            yours: None,
        };
        assert_eq!(e.to_string(), "seat 3, 9 is held or sold");
    }
}
