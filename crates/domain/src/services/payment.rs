//! Paying a held seat with points.

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::PayError;
use crate::ids::{IdempotencyKey, ReservationId, UserId};
use crate::lock::{DistributedLock, LockKey};
use crate::payment::{PayReservation, Payment};
use crate::ports::PaymentRepository;
use crate::strategy::{Control, ControlStats};

pub struct PaymentService<P, L, C> {
    payments: P,
    clock: C,
    control: Control<L>,
}

impl<P: PaymentRepository, L: DistributedLock, C: Clock> PaymentService<P, L, C> {
    /// `control` protects the payer's wallet (the point-use strategy).
    pub fn new(payments: P, clock: C, control: Control<L>) -> Self {
        Self {
            payments,
            clock,
            control,
        }
    }

    pub fn stats(&self) -> Arc<ControlStats> {
        self.control.stats()
    }

    /// Pays the user's held reservation from their points: balance down,
    /// reservation confirmed, seat sold, payment recorded, all or nothing.
    #[tracing::instrument(skip(self), fields(strategy = %self.control.strategy()))]
    pub async fn pay(
        &self,
        user: UserId,
        reservation: ReservationId,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Payment, PayError> {
        self.control
            .run(&self.clock, LockKey::wallet(user), |mode, fence| {
                let cmd = PayReservation {
                    user,
                    reservation,
                    now: self.clock.now(),
                    fence,
                    idempotency: idempotency.clone(),
                };
                self.payments.pay(cmd, mode)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PaymentId;
    use crate::lock::{Fence, LockError, LockGuard, MockDistributedLock};
    use crate::points::Points;
    use crate::ports::MockPaymentRepository;
    use crate::services::testing::{frozen_clock, t0};
    use crate::strategy::{Strategy, WriteMode};

    fn paid(cmd: &PayReservation) -> Payment {
        Payment {
            id: PaymentId::from(1),
            reservation: cmd.reservation,
            user: cmd.user,
            amount: Points::new(500).unwrap(),
            paid_at: cmd.now,
        }
    }

    fn service(
        repo: MockPaymentRepository,
        strategy: Strategy,
        lock: Option<MockDistributedLock>,
    ) -> PaymentService<MockPaymentRepository, MockDistributedLock, crate::clock::MockClock> {
        PaymentService::new(repo, frozen_clock(), Control::new(strategy, lock).unwrap())
    }

    #[tokio::test]
    async fn pays_with_the_use_strategy_mode_and_key() {
        let mut repo = MockPaymentRepository::new();
        repo.expect_pay()
            .withf(|c, m| {
                *m == WriteMode::Pessimistic
                    && c.user.get() == 4
                    && c.reservation.get() == 9
                    && c.now == t0()
                    && c.idempotency.as_ref().map(IdempotencyKey::as_str) == Some("pay-9")
            })
            .times(1)
            .returning(|c, _| Ok(paid(&c)));
        let p = service(repo, Strategy::Pessimistic, None)
            .pay(
                UserId::from(4),
                ReservationId::from(9),
                Some(IdempotencyKey::new("pay-9").unwrap()),
            )
            .await
            .unwrap();
        assert_eq!((p.reservation.get(), p.paid_at), (9, t0()));
    }

    #[tokio::test]
    async fn every_refusal_reaches_the_caller() {
        let cases: [fn() -> PayError; 6] = [
            || PayError::NotFound,
            || PayError::Expired,
            || PayError::AlreadyPaid,
            || PayError::InsufficientPoints {
                balance: 100,
                needed: 500,
            },
            || PayError::Conflict,
            || PayError::LockLost,
        ];
        for make in cases {
            let mut repo = MockPaymentRepository::new();
            repo.expect_pay()
                .times(1)
                .returning(move |_, _| Err(make()));
            let err = service(repo, Strategy::Optimistic, None)
                .pay(UserId::from(4), ReservationId::from(9), None)
                .await
                .unwrap_err();
            assert_eq!(err, make());
        }
    }

    #[tokio::test]
    async fn under_a_lock_the_wallet_is_locked_and_fenced() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .withf(|key, _| key.as_str() == "wallet:4")
            .times(1)
            .returning(|key, _| Ok(LockGuard::new(key.clone(), "o", Fence::new(8))));
        lock.expect_release().times(1).returning(|_| Ok(()));
        let mut repo = MockPaymentRepository::new();
        repo.expect_pay()
            .withf(|c, m| {
                *m == WriteMode::Optimistic && c.fence.as_ref().map(Fence::token) == Some(8)
            })
            .times(1)
            .returning(|c, _| Ok(paid(&c)));
        assert!(
            service(repo, Strategy::RedisSpin, Some(lock))
                .pay(UserId::from(4), ReservationId::from(9), None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn lock_unavailable_is_unavailable() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .returning(|_, _| Err(LockError::Unavailable(anyhow::anyhow!("redis down"))));
        let mut repo = MockPaymentRepository::new();
        repo.expect_pay().never();
        let err = service(repo, Strategy::RedisPubSub, Some(lock))
            .pay(UserId::from(4), ReservationId::from(9), None)
            .await
            .unwrap_err();
        assert!(matches!(err, PayError::Unavailable(_)));
    }
}
