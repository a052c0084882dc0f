//! One error enum per operation: business variants the caller can act on,
//! plus `Unavailable` (storage or lock service unreachable) and `Unknown`
//! (any other infrastructure failure, with its cause chain).

use crate::lock::LockError;
use crate::points::PointRule;

/// Read-only queries (catalogue, reservation lookup, balance, history).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Holding a seat.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no such seat")]
    SeatNotFound,
    #[error("the seat is held by someone else or sold")]
    SeatUnavailable,
    /// The optimistic version check failed: someone wrote the seat between
    /// our read and our write. The caller may retry.
    #[error("the seat changed concurrently; retry")]
    Conflict,
    #[error("another request holds the lock on this seat")]
    LockTimeout,
    /// The lock's lease ran out under us, or a newer lock holder already
    /// wrote this seat (fencing token): the write was refused.
    #[error("the lock on this seat was lost before the write")]
    LockLost,
    #[error("storage or lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Charging points.
#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("balance {balance} + {amount} would exceed the maximum balance {max}")]
    BalanceLimit { balance: u64, amount: u64, max: u64 },
    #[error("the wallet changed concurrently; retry")]
    Conflict,
    #[error("another request holds the lock on this wallet")]
    LockTimeout,
    #[error("the lock on this wallet was lost before the write")]
    LockLost,
    #[error("storage or lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Using points (outside of a payment).
#[derive(Debug, thiserror::Error)]
pub enum UsePointsError {
    #[error("balance {balance} does not cover {needed}")]
    InsufficientPoints { balance: u64, needed: u64 },
    #[error("the wallet changed concurrently; retry")]
    Conflict,
    #[error("another request holds the lock on this wallet")]
    LockTimeout,
    #[error("the lock on this wallet was lost before the write")]
    LockLost,
    #[error("storage or lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Paying a reservation.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// Unknown reservation, or somebody else's (not revealed).
    #[error("no such reservation")]
    NotFound,
    #[error("the reservation expired before payment")]
    Expired,
    #[error("the reservation is already paid")]
    AlreadyPaid,
    #[error("balance {balance} does not cover {needed}")]
    InsufficientPoints { balance: u64, needed: u64 },
    #[error("the wallet or reservation changed concurrently; retry")]
    Conflict,
    #[error("another request holds the lock on this wallet")]
    LockTimeout,
    #[error("the lock on this wallet was lost before the write")]
    LockLost,
    #[error("storage or lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

impl PartialEq for PayError {
    /// Business variants compare by value; infrastructure variants never
    /// compare equal (their causes are opaque).
    fn eq(&self, other: &Self) -> bool {
        use PayError::*;
        match (self, other) {
            (NotFound, NotFound)
            | (Expired, Expired)
            | (AlreadyPaid, AlreadyPaid)
            | (Conflict, Conflict)
            | (LockTimeout, LockTimeout)
            | (LockLost, LockLost) => true,
            (
                InsufficientPoints { balance, needed },
                InsufficientPoints {
                    balance: b,
                    needed: n,
                },
            ) => balance == b && needed == n,
            _ => false,
        }
    }
}

/// The shared shape of every write operation's error, so that the strategy
/// runner can retry conflicts and turn lock failures into each operation's
/// own variants.
pub trait OperationError: From<LockError> + std::error::Error + Send + 'static {
    /// An optimistic conflict the caller may retry.
    fn is_conflict(&self) -> bool;
}

macro_rules! operation_error {
    ($ty:ident) => {
        impl From<LockError> for $ty {
            fn from(e: LockError) -> Self {
                match e {
                    LockError::Timeout => $ty::LockTimeout,
                    LockError::NotHeld => $ty::LockLost,
                    LockError::Unavailable(cause) => $ty::Unavailable(cause),
                    LockError::Unknown(cause) => $ty::Unknown(cause),
                }
            }
        }

        impl OperationError for $ty {
            fn is_conflict(&self) -> bool {
                matches!(self, $ty::Conflict)
            }
        }
    };
}

operation_error!(ReserveError);
operation_error!(ChargeError);
operation_error!(UsePointsError);
operation_error!(PayError);

impl From<PointRule> for ChargeError {
    fn from(rule: PointRule) -> Self {
        match rule {
            PointRule::BalanceLimit {
                balance,
                amount,
                max,
            } => ChargeError::BalanceLimit {
                balance,
                amount,
                max,
            },
            PointRule::Insufficient { .. } => {
                ChargeError::Unknown(anyhow::anyhow!("a charge cannot be insufficient: {rule}"))
            }
        }
    }
}

impl From<PointRule> for UsePointsError {
    fn from(rule: PointRule) -> Self {
        match rule {
            PointRule::Insufficient { balance, needed } => {
                UsePointsError::InsufficientPoints { balance, needed }
            }
            PointRule::BalanceLimit { .. } => {
                UsePointsError::Unknown(anyhow::anyhow!("a use cannot exceed the limit: {rule}"))
            }
        }
    }
}

impl From<PointRule> for PayError {
    fn from(rule: PointRule) -> Self {
        match rule {
            PointRule::Insufficient { balance, needed } => {
                PayError::InsufficientPoints { balance, needed }
            }
            PointRule::BalanceLimit { .. } => {
                PayError::Unknown(anyhow::anyhow!("a payment cannot exceed the limit: {rule}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_errors_become_operation_variants() {
        assert!(matches!(
            ReserveError::from(LockError::Timeout),
            ReserveError::LockTimeout
        ));
        assert!(matches!(
            ChargeError::from(LockError::NotHeld),
            ChargeError::LockLost
        ));
        assert!(matches!(
            UsePointsError::from(LockError::Unavailable(anyhow::anyhow!("down"))),
            UsePointsError::Unavailable(_)
        ));
        assert!(matches!(
            PayError::from(LockError::Unknown(anyhow::anyhow!("odd"))),
            PayError::Unknown(_)
        ));
    }

    #[test]
    fn only_conflicts_are_retryable() {
        assert!(ReserveError::Conflict.is_conflict());
        assert!(!ReserveError::SeatUnavailable.is_conflict());
        assert!(ChargeError::Conflict.is_conflict());
        assert!(!UsePointsError::LockTimeout.is_conflict());
        assert!(PayError::Conflict.is_conflict());
    }

    #[test]
    fn point_rules_map_to_the_operation() {
        let insufficient = PointRule::Insufficient {
            balance: 3,
            needed: 5,
        };
        assert_eq!(
            PayError::from(insufficient),
            PayError::InsufficientPoints {
                balance: 3,
                needed: 5
            }
        );
        assert!(matches!(
            UsePointsError::from(insufficient),
            UsePointsError::InsufficientPoints {
                balance: 3,
                needed: 5
            }
        ));
        let limit = PointRule::BalanceLimit {
            balance: 1,
            amount: 2,
            max: 2,
        };
        assert!(matches!(
            ChargeError::from(limit),
            ChargeError::BalanceLimit { .. }
        ));
        assert!(matches!(
            ChargeError::from(insufficient),
            ChargeError::Unknown(_)
        ));
        assert_ne!(
            PayError::Unavailable(anyhow::anyhow!("x")),
            PayError::Unavailable(anyhow::anyhow!("x"))
        );
    }
}
