//! Holding a seat, and looking a reservation up.

use std::time::Duration;

use crate::clock::Clock;
use crate::error::{QueryError, ReserveError};
use crate::ids::{ReservationId, ScheduleId, SeatNumber, UserId};
use crate::lock::{DistributedLock, LockKey};
use crate::ports::SeatRepository;
use crate::seat::{HoldSeat, Reservation};
use crate::strategy::{Control, ControlStats};

/// Default hold: five minutes.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(300);

/// The command: `user` wants `seat` of `schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveSeat {
    pub user: UserId,
    pub schedule: ScheduleId,
    pub seat: SeatNumber,
}

pub struct ReservationService<S, L, C> {
    seats: S,
    clock: C,
    control: Control<L>,
    hold: chrono::Duration,
}

impl<S: SeatRepository, L: DistributedLock, C: Clock> ReservationService<S, L, C> {
    pub fn new(seats: S, clock: C, control: Control<L>, hold: Duration) -> Self {
        Self {
            seats,
            clock,
            control,
            hold: chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX),
        }
    }

    pub fn stats(&self) -> std::sync::Arc<ControlStats> {
        self.control.stats()
    }

    /// Holds the seat for the user until now + the hold duration, under the
    /// configured strategy. Exactly one of many concurrent callers wins; the
    /// others get `SeatUnavailable`, `Conflict` or `LockTimeout`.
    #[tracing::instrument(skip(self), fields(strategy = %self.control.strategy()))]
    pub async fn reserve(&self, cmd: ReserveSeat) -> Result<Reservation, ReserveError> {
        let key = LockKey::seat(cmd.schedule, cmd.seat);
        self.control
            .run(&self.clock, key, |mode, fence| {
                let now = self.clock.now();
                let hold = HoldSeat {
                    user: cmd.user,
                    schedule: cmd.schedule,
                    seat: cmd.seat,
                    now,
                    until: now + self.hold,
                    fence,
                };
                self.seats.hold(hold, mode)
            })
            .await
    }

    /// The reservation as its owner sees it now. Another user's reservation
    /// is `NotFound`, exactly like a missing one.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, user: UserId, id: ReservationId) -> Result<Reservation, QueryError> {
        let reservation = self
            .seats
            .reservation(id)
            .await?
            .filter(|r| r.is_visible_to(user))
            .ok_or(QueryError::NotFound("reservation"))?;
        let status = reservation.status_at(self.clock.now());
        Ok(Reservation {
            status,
            ..reservation
        })
    }

    /// Expires stale holds (the sweeper's job). Returns how many.
    pub async fn expire_stale(&self) -> Result<u64, QueryError> {
        self.seats.expire_stale(self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SeatId;
    use crate::lock::{Fence, LockError, LockGuard, MockDistributedLock};
    use crate::points::Points;
    use crate::ports::MockSeatRepository;
    use crate::seat::ReservationStatus;
    use crate::services::testing::{frozen_clock, t0};
    use crate::strategy::{Strategy, WriteMode};

    fn cmd() -> ReserveSeat {
        ReserveSeat {
            user: UserId::from(5),
            schedule: ScheduleId::from(2),
            seat: SeatNumber::new(7).unwrap(),
        }
    }

    fn held(cmd: &HoldSeat) -> Reservation {
        Reservation {
            id: ReservationId::from(100),
            seat: SeatId::from(70),
            schedule: cmd.schedule,
            seat_number: cmd.seat,
            user: cmd.user,
            price: Points::new(500).unwrap(),
            status: ReservationStatus::Held,
            expires_at: cmd.until,
        }
    }

    fn service(
        repo: MockSeatRepository,
        strategy: Strategy,
        lock: Option<MockDistributedLock>,
    ) -> ReservationService<MockSeatRepository, MockDistributedLock, crate::clock::MockClock> {
        ReservationService::new(
            repo,
            frozen_clock(),
            Control::new(strategy, lock).unwrap(),
            DEFAULT_HOLD,
        )
    }

    #[tokio::test]
    async fn reserve_holds_for_the_configured_time_with_the_strategy_mode() {
        for (strategy, mode) in [
            (Strategy::Optimistic, WriteMode::Optimistic),
            (Strategy::Pessimistic, WriteMode::Pessimistic),
            (Strategy::Atomic, WriteMode::Atomic),
        ] {
            let mut repo = MockSeatRepository::new();
            repo.expect_hold()
                .withf(move |h, m| {
                    *m == mode
                        && h.now == t0()
                        && h.until == t0() + chrono::Duration::seconds(300)
                        && h.fence.is_none()
                        && h.user.get() == 5
                        && h.seat.get() == 7
                })
                .times(1)
                .returning(|h, _| Ok(held(&h)));
            let r = service(repo, strategy, None).reserve(cmd()).await.unwrap();
            assert_eq!(r.status, ReservationStatus::Held);
            assert_eq!(r.expires_at, t0() + chrono::Duration::minutes(5));
        }
    }

    #[tokio::test]
    async fn business_refusals_pass_through_untouched() {
        for make in [
            || ReserveError::SeatUnavailable,
            || ReserveError::SeatNotFound,
            || ReserveError::Conflict,
            || ReserveError::Unavailable(anyhow::anyhow!("db down")),
        ] {
            let mut repo = MockSeatRepository::new();
            repo.expect_hold()
                .times(1)
                .returning(move |_, _| Err(make()));
            let err = service(repo, Strategy::Optimistic, None)
                .reserve(cmd())
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), make().to_string());
        }
    }

    #[tokio::test]
    async fn optimistic_retry_retries_a_conflict_then_reports_unavailable() {
        let mut repo = MockSeatRepository::new();
        let mut seq = mockall::Sequence::new();
        repo.expect_hold()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(ReserveError::Conflict));
        repo.expect_hold()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Err(ReserveError::SeatUnavailable));
        let svc = service(repo, Strategy::OptimisticRetry, None);
        assert!(matches!(
            svc.reserve(cmd()).await,
            Err(ReserveError::SeatUnavailable)
        ));
        assert_eq!(svc.stats().retries(), 1);
    }

    #[tokio::test]
    async fn lock_strategies_lock_the_seat_and_pass_the_fence() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .withf(|key, _| key.as_str() == "seat:2:7")
            .times(1)
            .returning(|key, _| Ok(LockGuard::new(key.clone(), "o", Fence::new(12))));
        lock.expect_release().times(1).returning(|_| Ok(()));
        let mut repo = MockSeatRepository::new();
        repo.expect_hold()
            .withf(|h, m| {
                *m == WriteMode::Optimistic && h.fence.as_ref().map(Fence::token) == Some(12)
            })
            .times(1)
            .returning(|h, _| Ok(held(&h)));
        let r = service(repo, Strategy::RedisPubSub, Some(lock))
            .reserve(cmd())
            .await
            .unwrap();
        assert_eq!(r.id.get(), 100);
    }

    #[tokio::test]
    async fn lock_timeout_never_touches_storage() {
        let mut lock = MockDistributedLock::new();
        lock.expect_acquire()
            .returning(|_, _| Err(LockError::Timeout));
        let mut repo = MockSeatRepository::new();
        repo.expect_hold().never();
        assert!(matches!(
            service(repo, Strategy::RedisSimple, Some(lock))
                .reserve(cmd())
                .await,
            Err(ReserveError::LockTimeout)
        ));
    }

    #[tokio::test]
    async fn get_shows_own_reservation_with_current_status() {
        let mut repo = MockSeatRepository::new();
        repo.expect_reservation().returning(|id| {
            let until = t0();
            let mut r = held(&HoldSeat {
                user: UserId::from(5),
                schedule: ScheduleId::from(2),
                seat: SeatNumber::new(7).unwrap(),
                now: until,
                until,
                fence: None,
            });
            r.id = id;
            Ok(Some(r))
        });
        let svc = service(repo, Strategy::Atomic, None);
        let own = svc
            .get(UserId::from(5), ReservationId::from(3))
            .await
            .unwrap();
        assert_eq!(own.id.get(), 3);
        // held until t0 and it is t0: expired
        assert_eq!(own.status, ReservationStatus::Expired);
        assert!(matches!(
            svc.get(UserId::from(6), ReservationId::from(3)).await,
            Err(QueryError::NotFound("reservation"))
        ));
    }

    #[tokio::test]
    async fn get_missing_is_not_found() {
        let mut repo = MockSeatRepository::new();
        repo.expect_reservation().returning(|_| Ok(None));
        let svc = service(repo, Strategy::Atomic, None);
        assert!(matches!(
            svc.get(UserId::from(5), ReservationId::from(3)).await,
            Err(QueryError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn sweeper_expires_as_of_now() {
        let mut repo = MockSeatRepository::new();
        repo.expect_expire_stale()
            .withf(|now| *now == t0())
            .times(1)
            .returning(|_| Ok(4));
        assert_eq!(
            service(repo, Strategy::Atomic, None)
                .expire_stale()
                .await
                .unwrap(),
            4
        );
    }
}
