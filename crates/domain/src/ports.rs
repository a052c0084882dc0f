//! Outbound ports: what the use cases need from storage. Each method's doc
//! names what it MUST return in which case; the adapters' integration tests
//! hold them to it.
//!
//! Writes happen inside a [`UnitOfWork`], begun by [`Transactions::begin`]
//! with the [`Protection`] the operation's control chose: one transaction on
//! one connection, handing out the repositories. A use case loads, applies
//! its pure rule, saves, records its events, and commits; any error rolls
//! everything back. Reads that change nothing go through [`Queries`] and
//! [`CatalogueRepository`].
//!
//! Lock order, which every unit of work follows so that concurrent units
//! queue instead of deadlocking: the user's hold counter, then seats (by
//! number), then reservations, then payments, then the wallet.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Failure;
use crate::events::Event;
use crate::ids::{
    ConcertId, IdempotencyKey, PaymentId, ReservationId, ScheduleId, SeatId, SeatNumber, UserId,
};
use crate::model::catalogue::{Concert, NewSchedule, Schedule, ScheduleSummary, Title};
use crate::model::payment::{NewPayment, Payment, PaymentStatus};
use crate::model::room::RoomView;
use crate::model::seat::{NewReservation, Reservation, ReservationStatus, Seat};
use crate::model::wallet::{HistoryEntry, NewHistoryEntry, PointChange, Wallet};
use crate::protection::Protection;

/// Opens units of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Transactions: Send + Sync {
    /// Begins a unit of work protected by `protection`.
    ///
    /// MUST return [`Failure::Unavailable`] when storage cannot be reached.
    async fn begin(&self, protection: Protection) -> Result<Box<dyn UnitOfWork>, Failure>;
}

/// One transaction on one connection. Every repository it hands out works
/// inside it; nothing is visible to others before [`UnitOfWork::commit`].
/// Dropped without commit, it rolls back.
///
/// Every repository method MAY return [`Failure::Unavailable`] (storage
/// unreachable or too slow) and [`Failure::Conflict`] (a deadlock or lock
/// wait timeout); the unit is then unusable and must be rolled back.
#[async_trait]
pub trait UnitOfWork: Send {
    /// Every repository of the unit, as one value: an adapter implements
    /// this one accessor (usually `self`); the six below are views of it.
    /// A decorator forwards it and overrides only the view it changes.
    fn repositories(&mut self) -> &mut dyn Repositories;

    fn seats(&mut self) -> &mut dyn SeatRepository {
        self.repositories()
    }
    fn reservations(&mut self) -> &mut dyn ReservationRepository {
        self.repositories()
    }
    fn wallets(&mut self) -> &mut dyn WalletRepository {
        self.repositories()
    }
    fn payments(&mut self) -> &mut dyn PaymentRepository {
        self.repositories()
    }
    fn idempotency(&mut self) -> &mut dyn IdempotencyRepository {
        self.repositories()
    }
    fn outbox(&mut self) -> &mut dyn Outbox {
        self.repositories()
    }

    /// Applies the writes the unit still holds back (a wallet saved with
    /// [`WalletRepository::save_at_commit`], appended history, recorded
    /// events), with the checks [`UnitOfWork::commit`] would make, without
    /// ending the transaction. From then on storage itself keeps the rows
    /// the unit wrote locked until it commits or rolls back: a later writer
    /// of those rows waits for that, and its version check then refuses
    /// what it decided from this unit's writes if they were rolled back.
    /// Nothing but [`UnitOfWork::commit`] or [`UnitOfWork::rollback`] may
    /// follow.
    ///
    /// Returns what commit's checks would ([`Failure::Conflict`],
    /// [`Failure::LockLost`], also for a lost fence); the caller then rolls
    /// back.
    async fn write(&mut self) -> Result<(), Failure>;

    /// Makes every write of the unit durable at once.
    ///
    /// Unless [`UnitOfWork::write`] ran (which made these checks then):
    /// under [`Protection::Fenced`], MUST return [`Failure::LockLost`] and
    /// commit nothing when any of the fences is lost. A wallet written with
    /// [`WalletRepository::save_at_commit`] is checked here: MUST return
    /// [`Failure::Conflict`] (another version was stored) or
    /// [`Failure::LockLost`] (a newer fencing token wrote it) and commit
    /// nothing.
    async fn commit(self: Box<Self>) -> Result<(), Failure>;

    /// Discards every write. Never fails: a unit that cannot be rolled back
    /// is discarded with its connection.
    async fn rollback(self: Box<Self>);
}

/// The repositories one unit of work hands out, all implemented by one
/// value (every type that implements the six is one).
pub trait Repositories:
    SeatRepository
    + ReservationRepository
    + WalletRepository
    + PaymentRepository
    + IdempotencyRepository
    + Outbox
{
}

impl<T> Repositories for T where
    T: SeatRepository
        + ReservationRepository
        + WalletRepository
        + PaymentRepository
        + IdempotencyRepository
        + Outbox
{
}

/// Seats, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SeatRepository: Send {
    /// The given seats of `schedule` that exist, by ascending number (the
    /// numbers need not be sorted). Under [`Protection::Pessimistic`] they
    /// stay locked until the unit ends, taken in that order.
    ///
    /// Under [`Protection::Fenced`], MUST return [`Failure::LockLost`] when
    /// the fence of a seat's lock key is lost or a newer token already
    /// wrote that seat: a stale holder decides nothing.
    async fn find(
        &mut self,
        schedule: ScheduleId,
        numbers: &[SeatNumber],
    ) -> Result<Vec<Seat>, Failure>;

    /// The seat, locked until the unit ends whatever the protection: the
    /// seat is the anchor that serializes every change of its reservations
    /// and payments.
    async fn lock(&mut self, id: SeatId) -> Result<Option<Seat>, Failure>;

    /// Writes `seat`, whose `version` is one more than the version read.
    ///
    /// MUST return [`Failure::Conflict`] when the stored version is not
    /// `seat.version - 1` (someone wrote it since); under
    /// [`Protection::Fenced`] with a fence for this seat's lock key, MUST
    /// return [`Failure::LockLost`] when a newer token already wrote the
    /// seat, and record the token otherwise.
    async fn save(&mut self, seat: &Seat) -> Result<(), Failure>;

    /// [`Protection::Atomic`]: holds the seat for `user` until `until` with
    /// one conditional write, if it is available or its hold ended at or
    /// before `now`. True if it was written, false if the seat is taken or
    /// does not exist.
    async fn hold_if_free(
        &mut self,
        schedule: ScheduleId,
        number: SeatNumber,
        user: UserId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, Failure>;

    /// Frees those of `seats` that are still held by a hold that ended at or
    /// before `now`; returns how many it freed.
    async fn release_expired(
        &mut self,
        seats: &[SeatId],
        now: DateTime<Utc>,
    ) -> Result<u64, Failure>;
}

/// Reservations, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ReservationRepository: Send {
    /// The reservation as last committed (or as written in this unit).
    async fn find(&mut self, id: ReservationId) -> Result<Option<Reservation>, Failure>;

    /// The seat's reservation with status `HELD` (expired or not), if any.
    async fn held_for_seat(&mut self, seat: SeatId) -> Result<Option<Reservation>, Failure>;

    /// Records a new `HELD` reservation and returns it with its id.
    ///
    /// MUST return [`Failure::Conflict`] when the seat already has a live
    /// (`HELD` or `CONFIRMED`) reservation: storage itself refuses a second.
    async fn insert(&mut self, new: &NewReservation) -> Result<Reservation, Failure>;

    /// Writes `reservation`'s status.
    ///
    /// MUST return [`Failure::Conflict`] when the stored status is not
    /// `expected`.
    async fn save(
        &mut self,
        reservation: &Reservation,
        expected: ReservationStatus,
    ) -> Result<(), Failure>;

    /// Serializes the holds of `user` on `schedule` (a later unit asking the
    /// same waits until this one ends) and returns how many of them are live
    /// (`HELD`, ending after `now`).
    async fn lock_holds_of(
        &mut self,
        user: UserId,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u32, Failure>;

    /// Up to `limit` reservations still `HELD` whose hold ended at or
    /// before `now`, oldest first.
    async fn stale(&mut self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Reservation>, Failure>;

    /// Marks those of `ids` that are still `HELD` and ended at or before
    /// `now` as `EXPIRED`; returns the ids it marked.
    async fn expire(
        &mut self,
        ids: &[ReservationId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservationId>, Failure>;
}

/// Point wallets and their history, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait WalletRepository: Send {
    /// The user's wallet, or `None` for a user never charged. Under
    /// [`Protection::Pessimistic`] it stays locked until the unit ends.
    async fn find(&mut self, user: UserId) -> Result<Option<Wallet>, Failure>;

    /// Creates an empty wallet for `user` unless one exists. Concurrent
    /// creators of one wallet queue; none fails because of the other.
    async fn create(&mut self, user: UserId) -> Result<(), Failure>;

    /// Writes `wallet`, whose `version` is one more than the version read.
    ///
    /// MUST return [`Failure::Conflict`] when the stored version is not
    /// `wallet.version - 1`; under [`Protection::Fenced`] with a fence for
    /// the wallet's lock key, MUST return [`Failure::LockLost`] when a newer
    /// token already wrote the wallet, and record the token otherwise.
    async fn save(&mut self, wallet: &Wallet) -> Result<(), Failure>;

    /// [`WalletRepository::save`], done together with the unit's commit,
    /// so that a contended wallet is held for the shortest time: the checks
    /// of `save` then fail [`UnitOfWork::commit`] instead (nothing is
    /// committed). For the last write of a unit: nothing in the unit reads
    /// the wallet after it. By default, `save` at once.
    async fn save_at_commit(&mut self, wallet: &Wallet) -> Result<(), Failure> {
        self.save(wallet).await
    }

    /// Appends one history line.
    async fn append(&mut self, entry: &NewHistoryEntry) -> Result<(), Failure>;

    /// [`Protection::Atomic`]: applies `change` to the stored balance with
    /// one conditional write (a charge only up to
    /// [`crate::model::wallet::MAX_BALANCE`], a use only if the balance
    /// covers it, a refund always) and appends its history line. Returns
    /// the balance after, or `None` when the wallet does not exist or the
    /// condition failed (nothing written).
    async fn change_atomically(
        &mut self,
        user: UserId,
        change: PointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, Failure>;
}

/// Payments, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PaymentRepository: Send {
    /// Records a `PAID` payment and returns it with its id.
    ///
    /// MUST return [`Failure::Conflict`] when the reservation already has a
    /// payment.
    async fn insert(&mut self, new: &NewPayment) -> Result<Payment, Failure>;

    async fn find(&mut self, id: PaymentId) -> Result<Option<Payment>, Failure>;

    /// Writes `payment`'s status.
    ///
    /// MUST return [`Failure::Conflict`] when the stored status is not
    /// `expected`.
    async fn save(&mut self, payment: &Payment, expected: PaymentStatus) -> Result<(), Failure>;
}

/// Which operation an idempotency key belongs to: the keys of a charge and
/// of a payment never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScope {
    Charge,
    Payment,
}

/// The result stored under an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Balance(u64),
    Payment(PaymentId),
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: go ahead, then [`IdempotencyRepository::complete`].
    New,
    /// An earlier request with this key and the same request committed
    /// this result.
    Done(Stored),
    /// An earlier request used this key for a different request.
    Mismatch,
}

/// Client idempotency keys, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait IdempotencyRepository: Send {
    /// Claims `key` of `user` in `scope` for the request described by
    /// `request`. A concurrent claim of the same key waits until this unit
    /// ends; if it rolls back, the key is free again.
    async fn claim(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        request: &str,
    ) -> Result<Claim, Failure>;

    /// Stores the result of the request that claimed `key`.
    async fn complete(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        result: Stored,
    ) -> Result<(), Failure>;
}

/// The transactional outbox, inside a unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Outbox: Send {
    /// Records `events` (in order) to be published once the unit commits;
    /// each gets a unique event id. Nothing is recorded if the unit rolls
    /// back.
    async fn record(&mut self, events: &[Event]) -> Result<(), Failure>;
}

/// Reads that change nothing, outside any unit of work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Queries: Send + Sync {
    async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, Failure>;

    /// Every reservation of `user`, newest first.
    async fn reservations_of(&self, user: UserId) -> Result<Vec<Reservation>, Failure>;

    /// The wallet, or `None` for a user never charged.
    async fn wallet(&self, user: UserId) -> Result<Option<Wallet>, Failure>;

    /// The user's history, newest first.
    async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, Failure>;

    async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, Failure>;
}

/// Concerts, schedules and seat maps.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CatalogueRepository: Send + Sync {
    /// Every concert, by id.
    async fn concerts(&self) -> Result<Vec<Concert>, Failure>;

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, Failure>;

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, Failure>;

    /// The concert's schedules starting after `after`, by start time, each
    /// with its number of seats available at `after` (expired holds count
    /// as available). `None` for an unknown concert.
    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure>;

    /// The schedule's seats by number; `None` for an unknown schedule.
    async fn seats(&self, schedule: ScheduleId) -> Result<Option<Vec<Seat>>, Failure>;

    async fn create_concert(&self, title: &Title) -> Result<Concert, Failure>;

    /// Creates the schedule and its seats in one transaction; `None` for an
    /// unknown concert.
    async fn create_schedule(&self, schedule: &NewSchedule) -> Result<Option<Schedule>, Failure>;
}

/// The waiting rooms of on-sales, one per concert, under the rules the
/// adapter was built with ([`crate::model::room::RoomRules`]).
///
/// Every method is one atomic step, also across many instances sharing the
/// room: the number of admitted users of a concert never exceeds the
/// configured limit, waiting users are admitted in order of first entry
/// (one position each, so a user who keeps polling only ever moves
/// forward), and freed places are given to the next waiting users within
/// the same step that frees them (no scheduler is needed). Admissions
/// lapse at their end, and waiting entries not seen (entered or polled)
/// for the idle time lose their place, as of the `now` of any later step;
/// such an entry is never admitted. A room's time never goes backwards: a
/// `now` older than one it has already seen (another instance's clock, a
/// slower request) counts as the latest seen. A sold-out room admits
/// nobody; its waiting users keep their places in case seats come back.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait WaitingRoom: Send + Sync {
    /// Enters `user`: a first entry (or one whose place or admission was
    /// lost) joins the end of the line; a waiting user keeps the place and
    /// is marked seen; an admitted user stays admitted until the same end.
    /// Then admits while places are free, and returns where the user
    /// stands: `Admitted`, `Waiting` (position 1 is next), or `SoldOut`
    /// for a waiting user of a sold-out room.
    async fn enter(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<RoomView, Failure>;

    /// Like [`WaitingRoom::enter`] without entering: `None` when the user
    /// has no entry (never entered, left, idled out, admission ended or
    /// released).
    async fn poll(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomView>, Failure>;

    /// Removes the user, waiting or admitted (nothing when neither), and
    /// admits the next.
    async fn leave(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure>;

    /// True while the user's admission lasts (its end is after `now`).
    async fn is_admitted(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<bool, Failure>;

    /// Ends the user's admission if admitted (a waiting entry stays), and
    /// admits the next.
    async fn release(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure>;

    /// Marks the concert sold out (waiting users see it, nobody more is
    /// admitted) or on sale again (the next step admits as usual).
    async fn set_sold_out(&self, concert: ConcertId, sold_out: bool) -> Result<(), Failure>;

    /// How many users wait (seen within the idle time) and how many are
    /// admitted (admission not ended) at `now`.
    async fn sizes(&self, concert: ConcertId, now: DateTime<Utc>) -> Result<(u64, u64), Failure>;
}
