//! The point wallet: balance, its rules, and the append-only history.

use chrono::{DateTime, Utc};

use crate::ids::{IdempotencyKey, InvalidValue, UserId};
use crate::lock::Fence;

/// Largest amount one request may charge, use or price a seat at.
pub const MAX_AMOUNT: u64 = 1_000_000;
/// Largest balance a wallet may hold.
pub const MAX_BALANCE: u64 = 10_000_000;

/// A positive amount of points, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Points(u64);

impl Points {
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        u64::try_from(value)
            .ok()
            .filter(|v| (1..=MAX_AMOUNT).contains(v))
            .map(Self)
            .ok_or_else(|| {
                InvalidValue::new("amount", format!("must be between 1 and {MAX_AMOUNT}"))
            })
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// One change to a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointChange {
    Charge(Points),
    Use(Points),
}

impl PointChange {
    pub fn kind(self) -> PointKind {
        match self {
            PointChange::Charge(_) => PointKind::Charge,
            PointChange::Use(_) => PointKind::Use,
        }
    }

    pub fn amount(self) -> Points {
        match self {
            PointChange::Charge(p) | PointChange::Use(p) => p,
        }
    }
}

/// Why a wallet refuses a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointRule {
    #[error("balance {balance} + {amount} would exceed the maximum balance {max}")]
    BalanceLimit { balance: u64, amount: u64, max: u64 },
    #[error("balance {balance} does not cover {needed}")]
    Insufficient { balance: u64, needed: u64 },
}

/// A user's point wallet. A user never charged has an empty one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wallet {
    pub user: UserId,
    pub balance: u64,
    /// Bumped by every write: the optimistic check compares it.
    pub version: u64,
}

impl Wallet {
    pub fn empty(user: UserId) -> Self {
        Self {
            user,
            balance: 0,
            version: 0,
        }
    }

    /// The rule for every balance change: a charge never takes the balance
    /// above [`MAX_BALANCE`], a use never below zero. Returns the wallet as
    /// it must be written (version bumped).
    pub fn apply(&self, change: PointChange) -> Result<Wallet, PointRule> {
        let balance = match change {
            PointChange::Charge(amount) => self
                .balance
                .checked_add(amount.get())
                .filter(|b| *b <= MAX_BALANCE)
                .ok_or(PointRule::BalanceLimit {
                    balance: self.balance,
                    amount: amount.get(),
                    max: MAX_BALANCE,
                })?,
            PointChange::Use(amount) => {
                self.balance
                    .checked_sub(amount.get())
                    .ok_or(PointRule::Insufficient {
                        balance: self.balance,
                        needed: amount.get(),
                    })?
            }
        };
        Ok(Wallet {
            balance,
            version: self.version + 1,
            ..*self
        })
    }

    pub fn balance(&self) -> PointBalance {
        PointBalance {
            user: self.user,
            balance: self.balance,
        }
    }
}

/// What a client sees of a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointBalance {
    pub user: UserId,
    pub balance: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointKind {
    Charge,
    Use,
}

impl PointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Charge => "CHARGE",
            PointKind::Use => "USE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "CHARGE" => Some(PointKind::Charge),
            "USE" => Some(PointKind::Use),
            _ => None,
        }
    }
}

/// One line of the append-only point history. `balance_after` is the
/// wallet's balance right after this change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: u64,
    pub kind: PointKind,
    pub amount: u64,
    pub balance_after: u64,
    pub created_at: DateTime<Utc>,
}

/// The command a wallet repository carries out in one transaction:
/// load the wallet, [`Wallet::apply`] the change, write the wallet and one
/// history entry.
#[derive(Debug, Clone)]
pub struct ChangePoints {
    pub user: UserId,
    pub change: PointChange,
    pub now: DateTime<Utc>,
    /// Present when the change runs under a distributed lock.
    pub fence: Option<Fence>,
    /// Present when the client sent an `Idempotency-Key` (charges only).
    pub idempotency: Option<IdempotencyKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::new(7).unwrap()
    }

    fn pts(v: i64) -> Points {
        Points::new(v).unwrap()
    }

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert!(Points::new(0).is_err());
        assert!(Points::new(-500).is_err());
        assert_eq!(Points::new(1).map(Points::get), Ok(1));
        assert_eq!(
            Points::new(MAX_AMOUNT as i64).map(Points::get),
            Ok(MAX_AMOUNT)
        );
        assert!(Points::new(MAX_AMOUNT as i64 + 1).is_err());
        assert!(Points::new(i64::MAX).is_err());
    }

    #[test]
    fn charge_adds_and_bumps_version() {
        let w = Wallet {
            user: user(),
            balance: 100,
            version: 3,
        };
        let after = w.apply(PointChange::Charge(pts(50))).unwrap();
        assert_eq!(after.balance, 150);
        assert_eq!(after.version, 4);
        assert_eq!(after.user, user());
    }

    #[test]
    fn charge_never_exceeds_the_maximum_balance() {
        let w = Wallet {
            user: user(),
            balance: MAX_BALANCE - 10,
            version: 0,
        };
        assert_eq!(
            w.apply(PointChange::Charge(pts(10))).unwrap().balance,
            MAX_BALANCE
        );
        assert_eq!(
            w.apply(PointChange::Charge(pts(11))),
            Err(PointRule::BalanceLimit {
                balance: MAX_BALANCE - 10,
                amount: 11,
                max: MAX_BALANCE
            })
        );
    }

    #[test]
    fn use_never_goes_below_zero() {
        let w = Wallet {
            user: user(),
            balance: 500,
            version: 9,
        };
        let after = w.apply(PointChange::Use(pts(500))).unwrap();
        assert_eq!((after.balance, after.version), (0, 10));
        assert_eq!(
            after.apply(PointChange::Use(pts(1))),
            Err(PointRule::Insufficient {
                balance: 0,
                needed: 1
            })
        );
    }

    #[test]
    fn empty_wallet_has_nothing_to_use() {
        let w = Wallet::empty(user());
        assert_eq!(w.balance().balance, 0);
        assert!(matches!(
            w.apply(PointChange::Use(pts(1))),
            Err(PointRule::Insufficient { .. })
        ));
    }

    #[test]
    fn kinds_round_trip() {
        for k in [PointKind::Charge, PointKind::Use] {
            assert_eq!(PointKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PointKind::parse("GIFT"), None);
        assert_eq!(PointChange::Use(pts(5)).kind(), PointKind::Use);
        assert_eq!(PointChange::Charge(pts(5)).amount(), pts(5));
    }
}
