//! Pure core of the concert reservation service.
//!
//! This crate holds the models, the business rules as plain functions, the
//! ports (traits) that adapters implement, and the use cases (services) that
//! drive them. It performs no I/O and depends on no database, network or
//! runtime crate: adapters depend on it, never the other way round.
//!
//! How a decision meets a transaction: a service hands a repository a
//! *command* (for example [`HoldSeat`] or [`ChangePoints`]) and a
//! [`WriteMode`]; the repository loads the aggregate inside its transaction,
//! asks the aggregate's pure rule (`Seat::hold`, `Wallet::apply`,
//! `Reservation::check_payable`) for the decision, and writes it with the
//! locking the mode names. The rules live here; the SQL lives in the adapter.

pub mod catalogue;
pub mod clock;
pub mod error;
pub mod ids;
pub mod lock;
pub mod payment;
pub mod points;
pub mod ports;
pub mod seat;
pub mod services;
pub mod strategy;

pub use catalogue::{Concert, ScheduleSummary, SeatStatus, SeatView};
pub use clock::Clock;
pub use error::{ChargeError, PayError, QueryError, ReserveError, UsePointsError};
pub use ids::{
    ConcertId, IdempotencyKey, InvalidValue, PaymentId, ReservationId, ScheduleId, SeatId,
    SeatNumber, UserId,
};
pub use lock::{DistributedLock, Fence, LockError, LockGuard, LockKey, LockOptions, with_lock};
pub use payment::{PayReservation, Payment};
pub use points::{
    ChangePoints, HistoryEntry, MAX_AMOUNT, MAX_BALANCE, PointBalance, PointChange, PointKind,
    PointRule, Points, Wallet,
};
pub use ports::{CatalogueRepository, PaymentRepository, SeatRepository, WalletRepository};
pub use seat::{HoldDecision, HoldSeat, Reservation, ReservationStatus, Seat, SeatState};
pub use services::{
    catalogue::CatalogueService,
    payment::PaymentService,
    points::{ChargePoints, PointService, UsePoints},
    reservation::{ReservationService, ReserveSeat},
};
pub use strategy::{
    Control, ControlStats, LockKind, RetryPolicy, Strategy, UnknownStrategy, WriteMode,
};

#[cfg(any(test, feature = "mock"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "mock"))]
pub use lock::MockDistributedLock;
#[cfg(any(test, feature = "mock"))]
pub use ports::{
    MockCatalogueRepository, MockPaymentRepository, MockSeatRepository, MockWalletRepository,
};
