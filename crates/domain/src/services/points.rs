//! Point balance, history, charge and use.

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::{ChargeError, QueryError, UsePointsError};
use crate::ids::{IdempotencyKey, UserId};
use crate::lock::{DistributedLock, LockKey};
use crate::points::{ChangePoints, HistoryEntry, PointBalance, PointChange, Points};
use crate::ports::WalletRepository;
use crate::strategy::{Control, ControlStats};

/// The command: add `amount` to the user's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargePoints {
    pub user: UserId,
    pub amount: Points,
    pub idempotency: Option<IdempotencyKey>,
}

/// The command: take `amount` from the user's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsePoints {
    pub user: UserId,
    pub amount: Points,
}

pub struct PointService<W, L, C> {
    wallets: W,
    clock: C,
    charge: Control<L>,
    spend: Control<L>,
}

impl<W: WalletRepository, L: DistributedLock, C: Clock> PointService<W, L, C> {
    /// `charge` controls top-ups, `spend` controls uses.
    pub fn new(wallets: W, clock: C, charge: Control<L>, spend: Control<L>) -> Self {
        Self {
            wallets,
            clock,
            charge,
            spend,
        }
    }

    pub fn charge_stats(&self) -> Arc<ControlStats> {
        self.charge.stats()
    }

    pub fn use_stats(&self) -> Arc<ControlStats> {
        self.spend.stats()
    }

    /// The balance; 0 for a user never charged.
    #[tracing::instrument(skip(self))]
    pub async fn balance(&self, user: UserId) -> Result<PointBalance, QueryError> {
        Ok(self.wallets.wallet(user).await?.balance())
    }

    /// Every change, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, QueryError> {
        self.wallets.history(user).await
    }

    /// Tops the balance up, never above the maximum balance.
    #[tracing::instrument(skip(self), fields(strategy = %self.charge.strategy()))]
    pub async fn charge(&self, cmd: ChargePoints) -> Result<PointBalance, ChargeError> {
        self.charge
            .run(&self.clock, LockKey::wallet(cmd.user), |mode, fence| {
                let change = ChangePoints {
                    user: cmd.user,
                    change: PointChange::Charge(cmd.amount),
                    now: self.clock.now(),
                    fence,
                    idempotency: cmd.idempotency.clone(),
                };
                self.wallets.charge(change, mode)
            })
            .await
    }

    /// Takes points from the balance, never below zero.
    #[tracing::instrument(skip(self), fields(strategy = %self.spend.strategy()))]
    pub async fn use_points(&self, cmd: UsePoints) -> Result<PointBalance, UsePointsError> {
        self.spend
            .run(&self.clock, LockKey::wallet(cmd.user), |mode, fence| {
                let change = ChangePoints {
                    user: cmd.user,
                    change: PointChange::Use(cmd.amount),
                    now: self.clock.now(),
                    fence,
                    idempotency: None,
                };
                self.wallets.spend(change, mode)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{Fence, LockError, LockGuard, MockDistributedLock};
    use crate::points::{PointKind, Wallet};
    use crate::ports::MockWalletRepository;
    use crate::services::testing::{frozen_clock, t0};
    use crate::strategy::{Strategy, WriteMode};

    fn user() -> UserId {
        UserId::from(3)
    }

    fn pts(v: i64) -> Points {
        Points::new(v).unwrap()
    }

    fn service(
        repo: MockWalletRepository,
        charge: Strategy,
        spend: Strategy,
    ) -> PointService<MockWalletRepository, MockDistributedLock, crate::clock::MockClock> {
        PointService::new(
            repo,
            frozen_clock(),
            Control::new(charge, None).unwrap(),
            Control::new(spend, None).unwrap(),
        )
    }

    #[tokio::test]
    async fn balance_of_a_new_user_is_zero() {
        let mut repo = MockWalletRepository::new();
        repo.expect_wallet().returning(|u| Ok(Wallet::empty(u)));
        let b = service(repo, Strategy::Optimistic, Strategy::Pessimistic)
            .balance(user())
            .await
            .unwrap();
        assert_eq!(
            b,
            PointBalance {
                user: user(),
                balance: 0
            }
        );
    }

    #[tokio::test]
    async fn history_passes_through() {
        let mut repo = MockWalletRepository::new();
        repo.expect_history().returning(|_| {
            Ok(vec![HistoryEntry {
                id: 2,
                kind: PointKind::Use,
                amount: 5,
                balance_after: 0,
                created_at: t0(),
            }])
        });
        let h = service(repo, Strategy::Optimistic, Strategy::Pessimistic)
            .history(user())
            .await
            .unwrap();
        assert_eq!(h.len(), 1);
    }

    #[tokio::test]
    async fn charge_sends_the_change_with_its_key_and_mode() {
        let mut repo = MockWalletRepository::new();
        repo.expect_charge()
            .withf(|c, m| {
                *m == WriteMode::Optimistic
                    && c.change == PointChange::Charge(Points::new(1000).unwrap())
                    && c.idempotency.as_ref().map(IdempotencyKey::as_str) == Some("k1")
                    && c.now == t0()
                    && c.fence.is_none()
            })
            .times(1)
            .returning(|c, _| {
                Ok(PointBalance {
                    user: c.user,
                    balance: 1000,
                })
            });
        let b = service(repo, Strategy::Optimistic, Strategy::Pessimistic)
            .charge(ChargePoints {
                user: user(),
                amount: pts(1000),
                idempotency: Some(IdempotencyKey::new("k1").unwrap()),
            })
            .await
            .unwrap();
        assert_eq!(b.balance, 1000);
    }

    #[tokio::test]
    async fn charge_errors_pass_through() {
        let mut repo = MockWalletRepository::new();
        repo.expect_charge().times(1).returning(|_, _| {
            Err(ChargeError::BalanceLimit {
                balance: 9,
                amount: 2,
                max: 10,
            })
        });
        let err = service(repo, Strategy::Pessimistic, Strategy::Pessimistic)
            .charge(ChargePoints {
                user: user(),
                amount: pts(2),
                idempotency: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ChargeError::BalanceLimit { balance: 9, .. }));
    }

    #[tokio::test]
    async fn optimistic_charge_conflict_is_reported_not_retried() {
        let mut repo = MockWalletRepository::new();
        repo.expect_charge()
            .times(1)
            .returning(|_, _| Err(ChargeError::Conflict));
        let err = service(repo, Strategy::Optimistic, Strategy::Pessimistic)
            .charge(ChargePoints {
                user: user(),
                amount: pts(2),
                idempotency: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ChargeError::Conflict));
    }

    #[tokio::test]
    async fn use_runs_with_the_use_strategy() {
        let mut repo = MockWalletRepository::new();
        repo.expect_spend()
            .withf(|c, m| {
                *m == WriteMode::Atomic && c.change == PointChange::Use(Points::new(500).unwrap())
            })
            .times(1)
            .returning(|c, _| {
                Ok(PointBalance {
                    user: c.user,
                    balance: 99_500,
                })
            });
        let svc = service(repo, Strategy::Optimistic, Strategy::Atomic);
        let b = svc
            .use_points(UsePoints {
                user: user(),
                amount: pts(500),
            })
            .await
            .unwrap();
        assert_eq!(b.balance, 99_500);
        assert_eq!(svc.use_stats().attempts(), 1);
        assert_eq!(svc.charge_stats().attempts(), 0);
    }

    #[tokio::test]
    async fn use_insufficient_points_is_typed() {
        let mut repo = MockWalletRepository::new();
        repo.expect_spend().returning(|_, _| {
            Err(UsePointsError::InsufficientPoints {
                balance: 0,
                needed: 500,
            })
        });
        let err = service(repo, Strategy::Optimistic, Strategy::Pessimistic)
            .use_points(UsePoints {
                user: user(),
                amount: pts(500),
            })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            UsePointsError::InsufficientPoints {
                balance: 0,
                needed: 500
            }
        ));
    }

    #[tokio::test]
    async fn use_under_a_lock_locks_the_wallet() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .withf(|key, _| key.as_str() == "wallet:3")
            .times(1)
            .returning(|key, _| Ok(LockGuard::new(key.clone(), "o", Fence::new(4))));
        lock.expect_release()
            .times(1)
            .returning(|_| Err(LockError::NotHeld));
        let mut repo = MockWalletRepository::new();
        repo.expect_spend()
            .withf(|c, m| {
                *m == WriteMode::Optimistic && c.fence.as_ref().map(Fence::token) == Some(4)
            })
            .times(1)
            .returning(|c, _| {
                Ok(PointBalance {
                    user: c.user,
                    balance: 1,
                })
            });
        let svc = PointService::new(
            repo,
            frozen_clock(),
            Control::new(Strategy::Optimistic, None).unwrap(),
            Control::new(Strategy::Local, Some(lock)).unwrap(),
        );
        let b = svc
            .use_points(UsePoints {
                user: user(),
                amount: pts(1),
            })
            .await
            .unwrap();
        assert_eq!(b.balance, 1);
    }
}
