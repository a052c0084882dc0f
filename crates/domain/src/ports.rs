//! Outbound ports: what the use cases need from storage. Each method's doc
//! names the error it MUST return in which case; the adapters' integration
//! tests hold them to it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::catalogue::{Concert, ScheduleSummary};
use crate::error::{ChargeError, PayError, QueryError, ReserveError, UsePointsError};
use crate::ids::{ConcertId, ReservationId, ScheduleId, UserId};
use crate::payment::{PayReservation, Payment};
use crate::points::{ChangePoints, HistoryEntry, PointBalance, Wallet};
use crate::seat::{HoldSeat, Reservation, Seat};
use crate::strategy::WriteMode;

/// Concerts, schedules and seat maps (read-only).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CatalogueRepository: Send + Sync {
    /// Every concert, by id.
    async fn concerts(&self) -> Result<Vec<Concert>, QueryError>;

    /// The concert's schedules starting after `after`, by start time, each
    /// with its number of seats available at `after` (expired holds count
    /// as available). MUST return `QueryError::NotFound` for an unknown
    /// concert (a known one with no future schedule gives an empty list).
    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Vec<ScheduleSummary>, QueryError>;

    /// The schedule's seats by number. MUST return `QueryError::NotFound`
    /// for an unknown schedule.
    async fn seats(&self, schedule: ScheduleId) -> Result<Vec<Seat>, QueryError>;
}

/// Seats and the reservations (holds) on them.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SeatRepository: Send + Sync {
    /// In one transaction: load the seat, decide with [`Seat::hold`], write
    /// the seat (version bumped; fence token recorded when `cmd.fence` is
    /// set), mark a replaced expired reservation `EXPIRED`, insert the new
    /// `HELD` reservation, commit.
    ///
    /// MUST return: `SeatNotFound` for an unknown schedule or seat;
    /// `SeatUnavailable` when the rule refuses (including, in `Atomic` mode,
    /// when the conditional update matches no row of an existing seat);
    /// `Conflict` in `Optimistic` mode when the version changed since the
    /// read (and for a deadlock or a duplicate live reservation);
    /// `LockLost` when the fence is lost or lower than the last token that
    /// wrote this seat; `Unavailable` when the database cannot be reached.
    /// On any error nothing is written.
    async fn hold(&self, cmd: HoldSeat, mode: WriteMode) -> Result<Reservation, ReserveError>;

    /// The reservation as stored, or `None`.
    async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, QueryError>;

    /// Marks holds that expired at or before `now` as expired and frees
    /// their seats; returns how many reservations it expired. Correctness
    /// never depends on it: the hold and payment rules already treat an
    /// expired hold as expired.
    async fn expire_stale(&self, now: DateTime<Utc>) -> Result<u64, QueryError>;
}

/// Point wallets and their history.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait WalletRepository: Send + Sync {
    /// The wallet, or an empty one for a user never charged.
    async fn wallet(&self, user: UserId) -> Result<Wallet, QueryError>;

    /// The user's history, newest first.
    async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, QueryError>;

    /// In one transaction: load (creating an empty wallet if needed), decide
    /// with [`Wallet::apply`], write the wallet and one history entry whose
    /// `balance_after` is the new balance, commit. With an idempotency key
    /// already used by this user for a charge, change nothing and return the
    /// balance that first charge answered.
    ///
    /// MUST return: `BalanceLimit` when the rule refuses; `Conflict` in
    /// `Optimistic` mode when the version changed; `LockLost` when the fence
    /// is lost or stale; `Unavailable` when the database cannot be reached.
    async fn charge(&self, cmd: ChangePoints, mode: WriteMode)
    -> Result<PointBalance, ChargeError>;

    /// Like [`WalletRepository::charge`] for a use. MUST return
    /// `InsufficientPoints` when the balance (0 for a missing wallet) does
    /// not cover the amount, and the same infrastructure variants.
    async fn spend(
        &self,
        cmd: ChangePoints,
        mode: WriteMode,
    ) -> Result<PointBalance, UsePointsError>;
}

/// Payments.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PaymentRepository: Send + Sync {
    /// Carries out [`PayReservation`] in one transaction; `mode` protects the
    /// wallet. With an idempotency key this user already paid with, change
    /// nothing and return that first payment.
    ///
    /// MUST return: `NotFound` for an unknown reservation or one of another
    /// user; `AlreadyPaid`, `Expired`, `InsufficientPoints` as the rules
    /// decide; `Conflict` when the wallet version changed (`Optimistic`) or
    /// the transaction deadlocked; `LockLost` for a lost or stale fence;
    /// `Unavailable` when the database cannot be reached. On any error
    /// nothing is written.
    async fn pay(&self, cmd: PayReservation, mode: WriteMode) -> Result<Payment, PayError>;
}

/// Forwarding impls so a service can hold `Arc<dyn Port>` (adapters chosen
/// at run time) as well as a concrete adapter.
mod forward {
    use std::sync::Arc;

    use super::*;

    #[async_trait]
    impl<T: CatalogueRepository + ?Sized> CatalogueRepository for Arc<T> {
        async fn concerts(&self) -> Result<Vec<Concert>, QueryError> {
            (**self).concerts().await
        }
        async fn schedules(
            &self,
            concert: ConcertId,
            after: DateTime<Utc>,
        ) -> Result<Vec<ScheduleSummary>, QueryError> {
            (**self).schedules(concert, after).await
        }
        async fn seats(&self, schedule: ScheduleId) -> Result<Vec<Seat>, QueryError> {
            (**self).seats(schedule).await
        }
    }

    #[async_trait]
    impl<T: SeatRepository + ?Sized> SeatRepository for Arc<T> {
        async fn hold(&self, cmd: HoldSeat, mode: WriteMode) -> Result<Reservation, ReserveError> {
            (**self).hold(cmd, mode).await
        }
        async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, QueryError> {
            (**self).reservation(id).await
        }
        async fn expire_stale(&self, now: DateTime<Utc>) -> Result<u64, QueryError> {
            (**self).expire_stale(now).await
        }
    }

    #[async_trait]
    impl<T: WalletRepository + ?Sized> WalletRepository for Arc<T> {
        async fn wallet(&self, user: UserId) -> Result<Wallet, QueryError> {
            (**self).wallet(user).await
        }
        async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, QueryError> {
            (**self).history(user).await
        }
        async fn charge(
            &self,
            cmd: ChangePoints,
            mode: WriteMode,
        ) -> Result<PointBalance, ChargeError> {
            (**self).charge(cmd, mode).await
        }
        async fn spend(
            &self,
            cmd: ChangePoints,
            mode: WriteMode,
        ) -> Result<PointBalance, UsePointsError> {
            (**self).spend(cmd, mode).await
        }
    }

    #[async_trait]
    impl<T: PaymentRepository + ?Sized> PaymentRepository for Arc<T> {
        async fn pay(&self, cmd: PayReservation, mode: WriteMode) -> Result<Payment, PayError> {
            (**self).pay(cmd, mode).await
        }
    }
}
