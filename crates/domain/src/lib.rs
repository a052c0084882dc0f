//! Pure core of the concert reservation service.
//!
//! This crate holds the models and their rules (plain values and pure
//! functions), the domain events, the ports (traits) that adapters
//! implement, and the use cases (services) that drive them. It performs no
//! I/O and depends on no storage, network or runtime crate: adapters depend
//! on it, never the other way round.
//!
//! - [`model`]: seats, reservations, wallets, payments, the catalogue, and
//!   the rules that decide every change (`Seat::hold`, `Wallet::apply`,
//!   `Reservation::check_payable`, `Payment::refund`, ...); the commands
//!   of the write use cases (`model::commands`).
//! - [`events`]: what a change publishes, recorded in the same unit of work;
//!   [`relay`]: publishing the outbox (its ports and one step);
//!   [`consumers`]: what a consumer of the event streams does with an event.
//! - [`ports`]: storage as units of work handing out repositories, plain
//!   reads, the catalogue; [`lock`]: exclusive locks with fencing tokens
//!   (the ports only: the ordering and hand-over machinery lives in
//!   `concert-locking`); [`clock`]: time.
//! - [`protection`]: the protections of the brief (optimistic,
//!   pessimistic, atomic, fenced under a lock); [`control`]: the
//!   per-operation [`Control`] the app chooses from configuration.
//! - [`queue`]: the queue strategy's values and ports (seat requests sent
//!   to the one applier of their partition).
//! - [`services`]: the use cases. Each shows its steps: begin a unit of work
//!   with the protection chosen, load, apply the rule, save, record the
//!   events, commit.
//! - [`error`]: one [`Failure`] for what can happen to any operation, and
//!   one enum of business refusals per operation.

pub mod clock;
pub mod consumers;
pub mod control;
pub mod error;
pub mod events;
pub mod ids;
pub mod lock;
pub mod model;
pub mod ports;
pub mod protection;
pub mod queue;
pub mod relay;
pub mod services;

pub use clock::Clock;
pub use consumers::{EventHandler, ReceivedEvent};
pub use control::{Control, Observer, Operation, Protection, RetryPolicy, Unobserved};
pub use error::{
    AdminError, CancelError, ChargeError, Failure, OperationError, PayError, QueryError,
    RefundError, ReserveError, UseError,
};
pub use events::{Event, EventType, Payload, Stream};
pub use ids::{
    ConcertId, IdempotencyKey, InvalidValue, PaymentId, ReservationId, ScheduleId, SeatId,
    SeatNumber, UserId,
};
pub use lock::{
    DistributedLock, Fence, Fences, HandOver, HeldLock, LockKey, LockOptions, LockSet, Locks,
};
pub use model::catalogue::{
    Concert, NewSchedule, Schedule, ScheduleSummary, SeatStatus, SeatView, Title,
};
pub use model::payment::{NewPayment, Payment, PaymentStatus};
pub use model::room::{RoomEntry, RoomRules, RoomStatus, RoomView};
pub use model::seat::{
    HoldDecision, NewReservation, Reservation, ReservationStatus, Seat, SeatState, SeatTaken,
};
pub use model::wallet::{
    HistoryEntry, MAX_AMOUNT, MAX_BALANCE, NewHistoryEntry, PointBalance, PointChange, PointKind,
    PointRule, Points, Wallet,
};
pub use ports::{
    CatalogueRepository, Claim, IdempotencyRepository, KeyScope, Outbox, PaymentRepository,
    Queries, Repositories, ReservationRepository, SeatRepository, Stored, Transactions, UnitOfWork,
    WaitingRoom, WalletRepository,
};
pub use queue::{
    Applied, Appliers, Delivery, PartitionApplier, QueuedRequest, RequestId, RequestState,
    SeatOutcome, SeatQueue, SeatRequest, Submitted,
};
pub use relay::{
    Backlog, EventPublisher, OutboxEvent, OutboxFeed, OutboxRelay, Published, RelayStep,
};
pub use services::{
    ApplierOptions, CatalogueService, ChargePoints, Controls, PayReservation, PaymentService,
    PointService, Policy, Ports, RequestView, Requested, ReservationService, ReserveSeat,
    ReserveSeats, SeatRequestApplier, Services, UsePoints,
};

#[cfg(any(test, feature = "mock"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "mock"))]
pub use lock::{MockDistributedLock, TestHeldLock};
#[cfg(any(test, feature = "mock"))]
pub use ports::MockWaitingRoom;
#[cfg(any(test, feature = "mock"))]
pub use queue::MockSeatQueue;
#[cfg(any(test, feature = "mock"))]
pub use relay::{MockEventPublisher, MockOutboxFeed};
