//! Use cases. Each service method reads as the business: begin a unit of
//! work with the protection its control chose, load, apply the pure rule,
//! save, record the events, commit. The services hold their ports as
//! `Arc<dyn Port>`: the app picks adapters at run time, and tests pass
//! mocks or the real adapters the same way.

pub mod catalogue;
pub mod payment;
pub mod points;
pub mod queued;
pub mod reservation;
pub mod waiting_room;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::control::{Control, Protection};
use crate::error::Failure;
use crate::ids::{IdempotencyKey, UserId};
use crate::model::room::RoomRules;
use crate::ports::{
    CatalogueRepository, Claim, KeyScope, Queries, Transactions, UnitOfWork, WaitingRoom,
};

pub use crate::model::commands::{
    ChargePoints, PayReservation, ReserveSeat, ReserveSeats, UsePoints,
};
pub use catalogue::CatalogueService;
pub use payment::PaymentService;
pub use points::PointService;
pub use queued::{ApplierOptions, SeatRequestApplier};
pub use reservation::{RequestView, Requested, ReservationService};
pub use waiting_room::WaitingRoomService;

/// The outbound ports every use case draws from.
#[derive(Clone)]
pub struct Ports {
    pub transactions: Arc<dyn Transactions>,
    pub queries: Arc<dyn Queries>,
    pub catalogue: Arc<dyn CatalogueRepository>,
    pub clock: Arc<dyn Clock>,
}

/// The concurrency control of each contended operation.
#[derive(Debug, Clone)]
pub struct Controls {
    /// Seat holds (single and batch).
    pub seats: Control,
    /// Point charges.
    pub charge: Control,
    /// Point uses: payments, point uses and refunds (they all write the
    /// payer's wallet).
    pub spend: Control,
}

/// The business settings of the use cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a hold lasts.
    pub hold: Duration,
    /// Live holds one user may have on one schedule (0: no limit).
    pub max_holds_per_user: u32,
    /// Seats one batch hold may ask for.
    pub max_seats_per_request: usize,
    /// Refunds close this long before the show starts.
    pub refund_cutoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(300),
            max_holds_per_user: 0,
            max_seats_per_request: 4,
            refund_cutoff: Duration::from_secs(24 * 3600),
        }
    }
}

/// Every use case, wired over one set of ports.
#[derive(Clone)]
pub struct Services {
    pub catalogue: CatalogueService,
    pub reservations: ReservationService,
    pub points: PointService,
    pub payments: PaymentService,
    /// Present when the waiting room is on.
    pub waiting_room: Option<WaitingRoomService>,
}

impl Services {
    pub fn new(ports: Ports, controls: Controls, policy: Policy) -> Self {
        Self {
            catalogue: CatalogueService::new(ports.clone()),
            reservations: ReservationService::new(ports.clone(), controls.seats, policy),
            points: PointService::new(ports.clone(), controls.charge, controls.spend.clone()),
            payments: PaymentService::new(ports, controls.spend, policy),
            waiting_room: None,
        }
    }

    /// Turns the waiting room on: reservation and payment then need the
    /// caller to be admitted to the concert's room.
    pub fn with_waiting_room(self, room: Arc<dyn WaitingRoom>, rules: RoomRules) -> Self {
        let catalogue = self.catalogue.ports().catalogue.clone();
        self.with_waiting_room_over(room, rules, catalogue)
    }

    /// [`Services::with_waiting_room`], the room reading seats through
    /// `catalogue`: storage itself where the use cases' catalogue is a
    /// cache, so that "sold out" is decided on the committed truth and
    /// never on a stale copy.
    pub fn with_waiting_room_over(
        mut self,
        room: Arc<dyn WaitingRoom>,
        rules: RoomRules,
        catalogue: Arc<dyn CatalogueRepository>,
    ) -> Self {
        let ports = Ports {
            catalogue,
            ..self.catalogue.ports().clone()
        };
        let service = WaitingRoomService::new(ports, room, rules);
        self.catalogue = self.catalogue.with_room(service.clone());
        self.reservations = self.reservations.with_room(service.clone());
        self.payments = self.payments.with_room(service.clone());
        self.waiting_room = Some(service);
        self
    }
}

/// Begins a unit of work under `protection` and, for a request that
/// carries an idempotency `key`, claims it as the unit's first write (its
/// row then serializes every retry of the request). Answers the claim:
/// [`Claim::New`] also for a request without a key. A claim that fails
/// rolls the unit back.
pub(crate) async fn begin_claimed(
    ports: &Ports,
    protection: &Protection,
    user: UserId,
    scope: KeyScope,
    key: Option<&IdempotencyKey>,
    request: impl FnOnce() -> String,
) -> Result<(Box<dyn UnitOfWork>, Claim), Failure> {
    let mut uow = ports.transactions.begin(protection.clone()).await?;
    let Some(key) = key else {
        return Ok((uow, Claim::New));
    };
    match uow.idempotency().claim(user, scope, key, &request()).await {
        Ok(claim) => Ok((uow, claim)),
        Err(e) => {
            uow.rollback().await;
            Err(e)
        }
    }
}

/// Ends a unit of work begun under `protection`: commits on success, rolls
/// back on failure.
///
/// Under locks that another request of this process waits for
/// ([`Fences::waited_for_here`]), a successful unit is ended in three
/// steps: its writes are applied and checked ([`UnitOfWork::write`]), the
/// locks are handed over ([`Fences::hand_over`]), and only then is it
/// committed. The next holder's critical section then overlaps this
/// commit's durable flush instead of waiting for it, and storage, which
/// holds the written rows until the commit, orders the next holder's writes
/// after it.
///
/// [`Fences::waited_for_here`]: crate::lock::Fences::waited_for_here
/// [`Fences::hand_over`]: crate::lock::Fences::hand_over
pub(crate) async fn finish<T, E: From<Failure>>(
    mut uow: Box<dyn UnitOfWork>,
    protection: &Protection,
    outcome: Result<T, E>,
) -> Result<T, E> {
    match outcome {
        Ok(value) => {
            if let Some(fences) = protection.fences().filter(|f| f.waited_for_here()) {
                if let Err(e) = uow.write().await {
                    uow.rollback().await;
                    return Err(e.into());
                }
                fences.hand_over().await;
            }
            uow.commit().await?;
            Ok(value)
        }
        Err(e) => {
            uow.rollback().await;
            Err(e)
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
