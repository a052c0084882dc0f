//! The point wallet: balance, its rules, and the append-only history.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{InvalidValue, UserId};

/// Largest amount one request may charge, use or price a seat at.
pub const MAX_AMOUNT: u64 = 1_000_000;
/// Largest balance a charge may reach.
pub const MAX_BALANCE: u64 = 10_000_000;

/// A positive amount of points, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
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

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One change to a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointChange {
    /// A top-up: never above [`MAX_BALANCE`].
    Charge(Points),
    /// A use (a payment): never below zero.
    Use(Points),
    /// A refunded payment's price coming back: always accepted (the points
    /// were the user's), even above [`MAX_BALANCE`].
    Refund(Points),
}

impl PointChange {
    pub fn kind(self) -> PointKind {
        match self {
            PointChange::Charge(_) => PointKind::Charge,
            PointChange::Use(_) => PointKind::Use,
            PointChange::Refund(_) => PointKind::Refund,
        }
    }

    pub fn amount(self) -> Points {
        match self {
            PointChange::Charge(p) | PointChange::Use(p) | PointChange::Refund(p) => p,
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
        let amount = change.amount().get();
        let balance = match change {
            PointChange::Charge(_) => self
                .balance
                .checked_add(amount)
                .filter(|b| *b <= MAX_BALANCE)
                .ok_or(PointRule::BalanceLimit {
                    balance: self.balance,
                    amount,
                    max: MAX_BALANCE,
                })?,
            PointChange::Use(_) => {
                self.balance
                    .checked_sub(amount)
                    .ok_or(PointRule::Insufficient {
                        balance: self.balance,
                        needed: amount,
                    })?
            }
            PointChange::Refund(_) => self.balance.saturating_add(amount),
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
    Refund,
}

impl PointKind {
    pub const ALL: [PointKind; 3] = [PointKind::Charge, PointKind::Use, PointKind::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Charge => "CHARGE",
            PointKind::Use => "USE",
            PointKind::Refund => "REFUND",
        }
    }
}

impl fmt::Display for PointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PointKind {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PointKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| InvalidValue::new("kind", "must be CHARGE, USE or REFUND"))
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

/// A history line to append, for the change that took the wallet to
/// `balance_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewHistoryEntry {
    pub user: UserId,
    pub change: PointChange,
    pub balance_after: u64,
    pub at: DateTime<Utc>,
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
    }

    #[test]
    fn charge_adds_up_to_the_maximum_balance() {
        let w = Wallet::empty(user())
            .apply(PointChange::Charge(pts(500)))
            .unwrap();
        assert_eq!((w.balance, w.version), (500, 1));
        let full = Wallet {
            balance: MAX_BALANCE - 10,
            ..w
        };
        assert_eq!(
            full.apply(PointChange::Charge(pts(10))).unwrap().balance,
            MAX_BALANCE
        );
        assert_eq!(
            full.apply(PointChange::Charge(pts(11))),
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
            balance: 1000,
            ..Wallet::empty(user())
        };
        assert_eq!(w.apply(PointChange::Use(pts(1000))).unwrap().balance, 0);
        assert_eq!(
            w.apply(PointChange::Use(pts(1001))),
            Err(PointRule::Insufficient {
                balance: 1000,
                needed: 1001
            })
        );
        assert_eq!(
            Wallet::empty(user()).apply(PointChange::Use(pts(1))),
            Err(PointRule::Insufficient {
                balance: 0,
                needed: 1
            })
        );
    }

    #[test]
    fn a_refund_always_comes_back() {
        let w = Wallet {
            balance: MAX_BALANCE,
            version: 4,
            ..Wallet::empty(user())
        };
        let back = w.apply(PointChange::Refund(pts(500))).unwrap();
        assert_eq!((back.balance, back.version), (MAX_BALANCE + 500, 5));
    }

    #[test]
    fn kinds_round_trip() {
        for k in PointKind::ALL {
            assert_eq!(k.as_str().parse::<PointKind>(), Ok(k));
        }
        assert!("GIFT".parse::<PointKind>().is_err());
        assert_eq!(PointChange::Refund(pts(1)).kind(), PointKind::Refund);
    }
}
