//! Holding seats, looking reservations up, cancelling holds, and expiring
//! stale ones.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::control::{Control, Operation, Protection};
use crate::error::{CancelError, Failure, QueryError, ReserveError};
use crate::events::Event;
use crate::ids::{ReservationId, ScheduleId, SeatNumber, UserId};
use crate::lock::LockKey;
use crate::model::commands::{ReserveSeat, ReserveSeats};
use crate::model::seat::{NewReservation, Reservation, ReservationStatus, Seat, SeatState};
use crate::ports::UnitOfWork;
use crate::queue::{QueuedRequest, RequestId, SeatOutcome, SeatRequest, Submitted};
use crate::services::{Policy, Ports, WaitingRoomService, chrono_duration, finish};

/// What a seat request came to: answered, or (under the queue strategy,
/// when the outcome was not ready within the reply budget) still queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested<T> {
    Done(T),
    Queued(RequestId),
}

/// A queued request as its owner sees it.
#[derive(Debug)]
pub struct RequestView {
    pub id: RequestId,
    /// A batch request (its outcome lists one reservation per seat).
    pub many: bool,
    /// `None` while still queued.
    pub outcome: Option<SeatOutcome>,
}

/// Seat holds and their lifecycle.
#[derive(Clone)]
pub struct ReservationService {
    ports: Ports,
    control: Control,
    policy: Policy,
    room: Option<WaitingRoomService>,
    /// Schedules known to exist (a schedule is never deleted): under a
    /// lock, a hold of an unknown one is refused before any lock is taken.
    known: Arc<Mutex<HashSet<ScheduleId>>>,
}

/// Holds taken in one unit of work, and the events they make.
struct Held {
    reservations: Vec<Reservation>,
    events: Vec<Event>,
}

impl ReservationService {
    pub fn new(ports: Ports, control: Control, policy: Policy) -> Self {
        Self {
            ports,
            control,
            policy,
            room: None,
            known: Arc::default(),
        }
    }

    pub(crate) fn with_room(mut self, room: WaitingRoomService) -> Self {
        self.room = Some(room);
        self
    }

    /// The limits batch holds are validated against.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Holds one seat for the user until now + the hold time. Exactly one
    /// of many concurrent callers wins; the others get `SeatUnavailable` (or,
    /// by strategy, a retryable conflict or lock timeout). Under the queue
    /// strategy it waits for the outcome up to the reply budget, and a
    /// request still queued then is `Unavailable` (use
    /// [`ReservationService::request`] to get its id instead).
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn reserve(&self, cmd: ReserveSeat) -> Result<Reservation, ReserveError> {
        let mut held = answered(self.hold(SeatRequest::One(cmd)).await?)?;
        held.pop().ok_or_else(|| {
            Failure::unknown(anyhow::anyhow!("a hold returned no reservation")).into()
        })
    }

    /// Holds every seat of the command or none, in seat order (under the
    /// queue strategy, like [`ReservationService::reserve`]).
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn reserve_many(&self, cmd: ReserveSeats) -> Result<Vec<Reservation>, ReserveError> {
        answered(self.hold(SeatRequest::Many(cmd)).await?)
    }

    /// Like [`ReservationService::reserve`], but a request still queued
    /// after the reply budget answers [`Requested::Queued`] with its id,
    /// for [`ReservationService::request_state`].
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn request(&self, cmd: ReserveSeat) -> Result<Requested<Reservation>, ReserveError> {
        match self.hold(SeatRequest::One(cmd)).await? {
            Requested::Done(mut held) => held.pop().map(Requested::Done).ok_or_else(|| {
                Failure::unknown(anyhow::anyhow!("a hold returned no reservation")).into()
            }),
            Requested::Queued(id) => Ok(Requested::Queued(id)),
        }
    }

    /// Like [`ReservationService::reserve_many`], with
    /// [`Requested::Queued`] as [`ReservationService::request`].
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn request_many(
        &self,
        cmd: ReserveSeats,
    ) -> Result<Requested<Vec<Reservation>>, ReserveError> {
        self.hold(SeatRequest::Many(cmd)).await
    }

    /// A request answered [`Requested::Queued`], as its owner sees it.
    /// Somebody else's request, an unknown or expired one, and any id
    /// when seat holds are not queued, is `NotFound`.
    #[tracing::instrument(skip(self))]
    pub async fn request_state(
        &self,
        user: UserId,
        id: &RequestId,
    ) -> Result<RequestView, QueryError> {
        let not_found = QueryError::NotFound("reservation request");
        let Some((queue, _)) = self.control.queue() else {
            return Err(not_found);
        };
        match queue.state(id).await? {
            Some(state) if state.owner == user => Ok(RequestView {
                id: id.clone(),
                many: state.many,
                outcome: state.outcome,
            }),
            _ => Err(not_found),
        }
    }

    async fn hold(
        &self,
        request: SeatRequest,
    ) -> Result<Requested<Vec<Reservation>>, ReserveError> {
        let (user, schedule) = (request.user(), request.schedule());
        if let Some(room) = &self.room
            && !room.admits(user, schedule).await?
        {
            return Err(ReserveError::NotAdmitted);
        }
        if let Some((queue, reply)) = self.control.queue() {
            let queued = QueuedRequest {
                id: RequestId::generate(),
                request,
                submitted_at: self.ports.clock.now(),
            };
            return match queue.submit(&queued, reply).await? {
                Submitted::Done(outcome) => outcome.map(Requested::Done),
                Submitted::Pending => Ok(Requested::Queued(queued.id)),
            };
        }
        if self.control.locks() {
            // Every schedule has seats 1 to 50 and the numbers are valid:
            // an unknown schedule is the only unknown seat. Refused before
            // any lock (and its bookkeeping) is taken for it.
            self.require_schedule(schedule).await?;
        }
        let seats = request.seats();
        let keys: Vec<LockKey> = seats.iter().map(|s| LockKey::seat(schedule, *s)).collect();
        let clock = self.ports.clock.as_ref();
        self.control
            .run(Operation::Reserve, &keys, clock, |protection| {
                self.hold_once(user, schedule, seats, protection)
            })
            .await
            .map(Requested::Done)
    }

    /// One unit of work holding `seats` under `protection` (the queue
    /// strategy's applier calls it under the partition's fence).
    async fn require_schedule(&self, schedule: ScheduleId) -> Result<(), ReserveError> {
        let known = |known: &Mutex<HashSet<ScheduleId>>| {
            known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&schedule)
        };
        if known(&self.known) {
            return Ok(());
        }
        if self.ports.catalogue.schedule(schedule).await?.is_none() {
            return Err(ReserveError::SeatNotFound);
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(schedule);
        Ok(())
    }

    pub(crate) async fn hold_once(
        &self,
        user: UserId,
        schedule: ScheduleId,
        seats: &[SeatNumber],
        protection: Protection,
    ) -> Result<Vec<Reservation>, ReserveError> {
        let now = self.ports.clock.now();
        let until = now + chrono_duration(self.policy.hold);
        let atomic = matches!(protection, Protection::Atomic);
        let mut uow = self.ports.transactions.begin(protection.clone()).await?;
        let outcome = async {
            self.check_hold_limit(&mut *uow, user, schedule, seats.len(), now)
                .await?;
            let held = if atomic {
                hold_atomically(&mut *uow, user, schedule, seats, now, until).await?
            } else {
                hold_by_rule(&mut *uow, user, schedule, seats, now, until).await?
            };
            uow.outbox().record(&held.events).await?;
            if self.ports.clock.now() >= until {
                // The work outlived the hold (a stalled dependency): never
                // grant a hold that has already ended.
                return Err(Failure::unavailable(anyhow::anyhow!(
                    "the hold would have ended before it was granted"
                ))
                .into());
            }
            Ok(held.reservations)
        }
        .await;
        finish(uow, &protection, outcome).await
    }

    async fn check_hold_limit(
        &self,
        uow: &mut dyn UnitOfWork,
        user: UserId,
        schedule: ScheduleId,
        wanted: usize,
        now: DateTime<Utc>,
    ) -> Result<(), ReserveError> {
        let limit = self.policy.max_holds_per_user;
        if limit == 0 {
            return Ok(());
        }
        let live = uow
            .reservations()
            .lock_holds_of(user, schedule, now)
            .await?;
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        if live.saturating_add(wanted) > limit {
            return Err(ReserveError::HoldLimit { limit });
        }
        Ok(())
    }

    /// The reservation as its owner sees it now. Another user's reservation
    /// is `NotFound`, exactly like a missing one; so is a cancelled one (a
    /// cancelled hold was deleted: it no longer exists as a resource of its
    /// own, and shows only in the owner's list with status `CANCELLED`).
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, user: UserId, id: ReservationId) -> Result<Reservation, QueryError> {
        let reservation = self
            .ports
            .queries
            .reservation(id)
            .await?
            .filter(|r| r.is_visible_to(user))
            .filter(|r| r.status != ReservationStatus::Cancelled)
            .ok_or(QueryError::NotFound("reservation"))?;
        Ok(self.as_seen_now(reservation))
    }

    /// The user's reservations, newest first, with the status they have now
    /// (optionally only those with `status`).
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        user: UserId,
        status: Option<ReservationStatus>,
    ) -> Result<Vec<Reservation>, QueryError> {
        let all = self.ports.queries.reservations_of(user).await?;
        Ok(all
            .into_iter()
            .map(|r| self.as_seen_now(r))
            .filter(|r| status.is_none_or(|wanted| r.status == wanted))
            .collect())
    }

    fn as_seen_now(&self, reservation: Reservation) -> Reservation {
        let status = reservation.status_at(self.ports.clock.now());
        Reservation {
            status,
            ..reservation
        }
    }

    /// Cancels the user's live hold: the seat is available at once.
    /// Cancelling a cancelled reservation again answers it unchanged.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<Reservation, CancelError> {
        let now = self.ports.clock.now();
        let mut uow = self
            .ports
            .transactions
            .begin(Protection::Optimistic)
            .await?;
        let outcome = async {
            let found = uow
                .reservations()
                .find(id)
                .await?
                .filter(|r| r.is_visible_to(user))
                .ok_or(CancelError::NotFound)?;
            // The seat first (every writer of its reservations locks it),
            // then the reservation as it stands under that lock.
            let seat = uow.seats().lock(found.seat).await?;
            let current = uow
                .reservations()
                .find(id)
                .await?
                .ok_or(CancelError::NotFound)?;
            let Some(cancelled) = current.cancel(user, now)? else {
                return Ok(current);
            };
            if let Some(seat) = seat.filter(|s| holds(s, &current)) {
                uow.seats().save(&seat.release()).await?;
            }
            uow.reservations()
                .save(&cancelled, ReservationStatus::Held)
                .await?;
            uow.outbox()
                .record(&[Event::hold_cancelled(&cancelled, now)])
                .await?;
            Ok(cancelled)
        }
        .await;
        finish(uow, &Protection::Optimistic, outcome).await
    }

    /// Expires stale holds and frees their seats, in batches; returns how
    /// many holds it expired. Correctness never depends on it: the hold and
    /// payment rules already treat an ended hold as expired. It keeps seat
    /// maps and counts accurate and publishes `HoldExpired`.
    pub async fn expire_stale(&self) -> Result<u64, QueryError> {
        const BATCH: u32 = 500;
        let now = self.ports.clock.now();
        let mut total = 0;
        loop {
            let mut uow = self
                .ports
                .transactions
                .begin(Protection::Optimistic)
                .await?;
            let outcome = async {
                let stale = uow.reservations().stale(now, BATCH).await?;
                let mut seats: Vec<_> = stale.iter().map(|r| r.seat).collect();
                seats.sort();
                seats.dedup();
                uow.seats().release_expired(&seats, now).await?;
                let ids: Vec<_> = stale.iter().map(|r| r.id).collect();
                let expired = uow.reservations().expire(&ids, now).await?;
                let events: Vec<_> = stale
                    .iter()
                    .filter(|r| expired.contains(&r.id))
                    .map(|r| Event::hold_expired(&r.expire(), now))
                    .collect();
                uow.outbox().record(&events).await?;
                Ok::<_, QueryError>((expired.len() as u64, stale.len()))
            }
            .await;
            let (expired, seen) = finish(uow, &Protection::Optimistic, outcome).await?;
            total += expired;
            if seen < BATCH as usize {
                return Ok(total);
            }
        }
    }
}

/// The outcome of a request that must be answered now: a request still
/// queued after the reply budget is unavailable to a caller that cannot
/// poll.
fn answered<T>(requested: Requested<T>) -> Result<T, ReserveError> {
    match requested {
        Requested::Done(value) => Ok(value),
        Requested::Queued(id) => Err(Failure::unavailable(anyhow::anyhow!(
            "no outcome within the reply budget: request {id} is still queued"
        ))
        .into()),
    }
}

/// True when `seat` is held by `reservation` (same holder, same end).
fn holds(seat: &Seat, reservation: &Reservation) -> bool {
    matches!(seat.state, crate::model::seat::SeatState::Held { by, until }
        if by == reservation.user && until == reservation.expires_at)
}

/// Optimistic, pessimistic or fenced: read the seats (locked when
/// pessimistic), let [`Seat::hold`] decide for each, write them back under
/// the version they were read with, expire the holds they replace, record
/// the new reservations.
async fn hold_by_rule(
    uow: &mut dyn UnitOfWork,
    user: UserId,
    schedule: ScheduleId,
    numbers: &[SeatNumber],
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Held, ReserveError> {
    let seats = uow.seats().find(schedule, numbers).await?;
    if seats.len() != numbers.len() {
        return Err(ReserveError::SeatNotFound);
    }
    let mut decisions = Vec::with_capacity(seats.len());
    let mut taken = Vec::new();
    let mut own = None;
    for seat in &seats {
        match seat.hold(user, now, until) {
            Ok(decision) => decisions.push(decision),
            Err(t) => {
                taken.push(seat.number);
                if t.holder == Some(user) {
                    own = Some(seat.id);
                }
            }
        }
    }
    if !taken.is_empty() {
        let yours = match own {
            Some(seat) if numbers.len() == 1 => {
                uow.reservations().held_for_seat(seat).await?.map(|r| r.id)
            }
            _ => None,
        };
        return Err(ReserveError::SeatUnavailable {
            seats: taken,
            yours,
        });
    }
    let mut held = Held {
        reservations: Vec::with_capacity(decisions.len()),
        events: Vec::new(),
    };
    for decision in decisions {
        uow.seats().save(&decision.seat).await?;
        if decision.replaces_expired_hold {
            expire_replaced(uow, &decision.seat, now, &mut held.events).await?;
        }
        record_hold(uow, &decision.seat, user, now, until, &mut held).await?;
    }
    Ok(held)
}

/// Atomic: one conditional write per seat takes it if it is free; if any
/// is not, the unit rolls back and the seats that were taken are named.
async fn hold_atomically(
    uow: &mut dyn UnitOfWork,
    user: UserId,
    schedule: ScheduleId,
    numbers: &[SeatNumber],
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Held, ReserveError> {
    let mut refused = Vec::new();
    for number in numbers {
        if !uow
            .seats()
            .hold_if_free(schedule, *number, user, now, until)
            .await?
        {
            refused.push(*number);
        }
    }
    let seats = uow.seats().find(schedule, numbers).await?;
    if seats.len() != numbers.len() {
        return Err(ReserveError::SeatNotFound);
    }
    if !refused.is_empty() {
        // As under the other protections: a single seat the caller holds
        // names the caller's reservation.
        let own = match (numbers, seats.as_slice()) {
            ([_], [seat]) => match seat.state {
                SeatState::Held { by, until } if by == user && until > now => Some(seat.id),
                _ => None,
            },
            _ => None,
        };
        let yours = match own {
            Some(seat) => uow.reservations().held_for_seat(seat).await?.map(|r| r.id),
            None => None,
        };
        return Err(ReserveError::SeatUnavailable {
            seats: refused,
            yours,
        });
    }
    let mut held = Held {
        reservations: Vec::with_capacity(seats.len()),
        events: Vec::new(),
    };
    for seat in &seats {
        expire_replaced(uow, seat, now, &mut held.events).await?;
        record_hold(uow, seat, user, now, until, &mut held).await?;
    }
    Ok(held)
}

/// Marks the ended hold that `seat`'s new hold replaces (if any) expired.
async fn expire_replaced(
    uow: &mut dyn UnitOfWork,
    seat: &Seat,
    now: DateTime<Utc>,
    events: &mut Vec<Event>,
) -> Result<(), ReserveError> {
    if let Some(old) = uow.reservations().held_for_seat(seat.id).await? {
        let expired = old.expire();
        uow.reservations()
            .save(&expired, ReservationStatus::Held)
            .await?;
        events.push(Event::hold_expired(&expired, now));
    }
    Ok(())
}

async fn record_hold(
    uow: &mut dyn UnitOfWork,
    seat: &Seat,
    user: UserId,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    held: &mut Held,
) -> Result<(), ReserveError> {
    let reservation = uow
        .reservations()
        .insert(&NewReservation::for_seat(seat, user, now, until))
        .await?;
    held.events.push(Event::seat_held(&reservation, now));
    held.reservations.push(reservation);
    Ok(())
}
