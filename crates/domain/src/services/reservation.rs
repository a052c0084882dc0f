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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::control::RetryPolicy;
    use crate::events::EventType;
    use crate::lock::{LockOptions, MockDistributedLock};
    use crate::memory::MemoryStore;
    use crate::model::catalogue::SeatStatus;
    use crate::model::seat::SeatState;
    use crate::queue::SeatRequest;
    use crate::services::testing::{TestClock, services, t0};
    use crate::services::{Policy, Services};

    fn seat(n: i64) -> SeatNumber {
        SeatNumber::new(n).unwrap()
    }

    fn user(n: u64) -> UserId {
        UserId::from(n)
    }

    fn controls() -> Vec<Control> {
        let lock = Arc::new(MockDistributedLock::granting(1, Arc::default()));
        vec![
            Control::optimistic("optimistic"),
            Control::pessimistic("pessimistic"),
            Control::atomic("atomic"),
            Control::retrying("optimistic-retry", RetryPolicy::default()),
            Control::locked("local", lock, LockOptions::default()),
        ]
    }

    fn setup(control: Control) -> (Services, MemoryStore, TestClock, ScheduleId) {
        let (svc, store, clock) = services(control, Policy::default());
        let (_, schedule) = store.add_schedule(t0() + Duration::days(30), 500);
        (svc, store, clock, schedule)
    }

    fn types(store: &MemoryStore) -> Vec<EventType> {
        store.events().iter().map(|e| e.kind).collect()
    }

    #[tokio::test]
    async fn a_hold_writes_seat_reservation_and_event_under_every_control() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _, schedule) = setup(control);
            let r = svc
                .reservations
                .reserve(ReserveSeat {
                    user: user(5),
                    schedule,
                    seat: seat(7),
                })
                .await
                .unwrap();
            let until = t0() + Duration::minutes(5);
            assert_eq!(
                (r.user, r.seat_number, r.price.get(), r.status, r.expires_at),
                (user(5), seat(7), 500, ReservationStatus::Held, until),
                "{name}"
            );
            let stored = store.seat(schedule, seat(7)).unwrap();
            assert_eq!(
                stored.state,
                SeatState::Held { by: user(5), until },
                "{name}"
            );
            assert_eq!(stored.version, 1, "{name}");
            assert_eq!(store.reservations(), vec![r.clone()], "{name}");
            assert_eq!(types(&store), [EventType::SeatHeld], "{name}");
            assert_eq!(store.events()[0].payload.reservation_id, Some(r.id));
        }
    }

    #[tokio::test]
    async fn a_taken_seat_is_refused_and_names_the_callers_own_hold() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _, schedule) = setup(control);
            let cmd = |u| ReserveSeat {
                user: user(u),
                schedule,
                seat: seat(7),
            };
            let mine = svc.reservations.reserve(cmd(1)).await.unwrap();
            match svc.reservations.reserve(cmd(2)).await {
                Err(ReserveError::SeatUnavailable { seats, yours }) => {
                    assert_eq!((seats, yours), (vec![seat(7)], None), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            match svc.reservations.reserve(cmd(1)).await {
                Err(ReserveError::SeatUnavailable { yours, .. }) => {
                    assert_eq!(yours, Some(mine.id), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(store.reservations().len(), 1, "{name}");
            assert_eq!(store.events().len(), 1, "{name}");
        }
    }

    #[tokio::test]
    async fn an_ended_hold_is_taken_over_and_expired() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, clock, schedule) = setup(control);
            let cmd = |u| ReserveSeat {
                user: user(u),
                schedule,
                seat: seat(3),
            };
            let first = svc.reservations.reserve(cmd(1)).await.unwrap();
            clock.advance(Duration::minutes(5));
            let second = svc.reservations.reserve(cmd(2)).await.unwrap();
            let stored = store.reservations();
            assert_eq!(stored[0].id, first.id);
            assert_eq!(stored[0].status, ReservationStatus::Expired, "{name}");
            assert_eq!(stored[1], second, "{name}");
            assert_eq!(
                types(&store),
                [
                    EventType::SeatHeld,
                    EventType::HoldExpired,
                    EventType::SeatHeld
                ],
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_schedules_and_seats_are_not_found() {
        for control in controls() {
            let (svc, store, _, _) = setup(control);
            let out = svc
                .reservations
                .reserve(ReserveSeat {
                    user: user(1),
                    schedule: ScheduleId::from(999),
                    seat: seat(1),
                })
                .await;
            assert!(matches!(out, Err(ReserveError::SeatNotFound)), "{out:?}");
            assert!(store.events().is_empty());
        }
    }

    #[tokio::test]
    async fn a_batch_holds_all_seats_or_none() {
        for control in controls() {
            let name = control.name().to_owned();
            let (svc, store, _, schedule) = setup(control);
            let batch = |u, seats: &[i64]| {
                ReserveSeats::new(
                    user(u),
                    schedule,
                    seats.iter().map(|n| seat(*n)).collect(),
                    4,
                )
                .unwrap()
            };
            let held = svc
                .reservations
                .reserve_many(batch(1, &[9, 2, 5]))
                .await
                .unwrap();
            let numbers: Vec<_> = held.iter().map(|r| r.seat_number.get()).collect();
            assert_eq!(numbers, [2, 5, 9], "{name}");
            match svc
                .reservations
                .reserve_many(batch(2, &[1, 5, 9, 10]))
                .await
            {
                Err(ReserveError::SeatUnavailable { seats, .. }) => {
                    assert_eq!(seats, [seat(5), seat(9)], "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
            assert_eq!(
                store.reservations().len(),
                3,
                "{name}: nothing of the second"
            );
            assert_eq!(
                store.seat(schedule, seat(1)).unwrap().state,
                SeatState::Available
            );
        }
    }

    #[test]
    fn a_batch_is_one_to_max_distinct_seats() {
        let make = |seats: &[i64]| {
            ReserveSeats::new(
                user(1),
                ScheduleId::from(1),
                seats.iter().map(|n| seat(*n)).collect(),
                4,
            )
        };
        assert!(make(&[]).is_err());
        assert!(make(&[1, 2, 3, 4, 5]).is_err());
        assert!(make(&[1, 1]).is_err());
        assert_eq!(make(&[4, 1]).unwrap().seats(), [seat(1), seat(4)]);
    }

    #[tokio::test]
    async fn the_hold_limit_counts_live_holds_per_schedule() {
        let policy = Policy {
            max_holds_per_user: 2,
            ..Policy::default()
        };
        let (svc, store, clock) = services(Control::pessimistic("pessimistic"), policy);
        let (_, schedule) = store.add_schedule(t0() + Duration::days(30), 500);
        let (_, other) = store.add_schedule(t0() + Duration::days(31), 500);
        let cmd = |s, n| ReserveSeat {
            user: user(1),
            schedule: s,
            seat: seat(n),
        };
        svc.reservations.reserve(cmd(schedule, 1)).await.unwrap();
        svc.reservations.reserve(cmd(schedule, 2)).await.unwrap();
        assert!(matches!(
            svc.reservations.reserve(cmd(schedule, 3)).await,
            Err(ReserveError::HoldLimit { limit: 2 })
        ));
        svc.reservations.reserve(cmd(other, 3)).await.unwrap();
        // ended holds no longer count
        clock.advance(Duration::minutes(5));
        svc.reservations.reserve(cmd(schedule, 3)).await.unwrap();
    }

    #[tokio::test]
    async fn get_and_list_show_the_status_now_to_the_owner_only() {
        let (svc, _, clock, schedule) = setup(Control::atomic("atomic"));
        let r = svc
            .reservations
            .reserve(ReserveSeat {
                user: user(5),
                schedule,
                seat: seat(1),
            })
            .await
            .unwrap();
        assert_eq!(svc.reservations.get(user(5), r.id).await.unwrap(), r);
        assert!(matches!(
            svc.reservations.get(user(6), r.id).await,
            Err(QueryError::NotFound("reservation"))
        ));
        clock.advance(Duration::minutes(5));
        let seen = svc.reservations.get(user(5), r.id).await.unwrap();
        assert_eq!(seen.status, ReservationStatus::Expired);
        let listed = svc.reservations.list(user(5), None).await.unwrap();
        assert_eq!(listed, vec![seen]);
        assert!(
            svc.reservations
                .list(user(5), Some(ReservationStatus::Held))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            svc.reservations
                .list(user(6), None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn cancel_frees_the_seat_once_and_answers_repeats_unchanged() {
        let (svc, store, _, schedule) = setup(Control::pessimistic("pessimistic"));
        let r = svc
            .reservations
            .reserve(ReserveSeat {
                user: user(5),
                schedule,
                seat: seat(1),
            })
            .await
            .unwrap();
        assert!(matches!(
            svc.reservations.cancel(user(6), r.id).await,
            Err(CancelError::NotFound)
        ));
        let cancelled = svc.reservations.cancel(user(5), r.id).await.unwrap();
        assert_eq!(cancelled.status, ReservationStatus::Cancelled);
        let again = svc.reservations.cancel(user(5), r.id).await.unwrap();
        assert_eq!(again, cancelled);
        assert_eq!(
            store.seat(schedule, seat(1)).unwrap().state,
            SeatState::Available
        );
        assert_eq!(
            types(&store),
            [EventType::SeatHeld, EventType::HoldCancelled]
        );
        // and the seat can be held again at once
        svc.reservations
            .reserve(ReserveSeat {
                user: user(6),
                schedule,
                seat: seat(1),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_ended_hold_cannot_be_cancelled() {
        let (svc, store, clock, schedule) = setup(Control::optimistic("optimistic"));
        let r = svc
            .reservations
            .reserve(ReserveSeat {
                user: user(5),
                schedule,
                seat: seat(1),
            })
            .await
            .unwrap();
        clock.advance(Duration::minutes(5));
        assert!(matches!(
            svc.reservations.cancel(user(5), r.id).await,
            Err(CancelError::Expired)
        ));
        assert_eq!(store.events().len(), 1);
    }

    #[tokio::test]
    async fn the_sweeper_expires_ended_holds_only() {
        let (svc, store, clock, schedule) = setup(Control::atomic("atomic"));
        for n in 1..=3 {
            svc.reservations
                .reserve(ReserveSeat {
                    user: user(n),
                    schedule,
                    seat: seat(n as i64),
                })
                .await
                .unwrap();
        }
        clock.advance(Duration::minutes(4));
        svc.reservations
            .reserve(ReserveSeat {
                user: user(9),
                schedule,
                seat: seat(9),
            })
            .await
            .unwrap();
        clock.advance(Duration::minutes(1));
        assert_eq!(svc.reservations.expire_stale().await.unwrap(), 3);
        assert_eq!(svc.reservations.expire_stale().await.unwrap(), 0);
        let statuses: Vec<_> = store.reservations().iter().map(|r| r.status).collect();
        use ReservationStatus::{Expired, Held};
        assert_eq!(statuses, [Expired, Expired, Expired, Held]);
        assert_eq!(
            svc.catalogue
                .seats(schedule, Some(SeatStatus::Held))
                .await
                .unwrap()
                .len(),
            1
        );
        let expired = types(&store)
            .iter()
            .filter(|t| **t == EventType::HoldExpired)
            .count();
        assert_eq!(expired, 3);
    }

    #[tokio::test]
    async fn a_commit_conflict_is_retried_only_by_the_retrying_control() {
        let (svc, store, _, schedule) = setup(Control::optimistic("optimistic"));
        store.fail_next_commit(Failure::Conflict);
        let cmd = ReserveSeat {
            user: user(1),
            schedule,
            seat: seat(1),
        };
        let out = svc.reservations.reserve(cmd).await;
        assert!(matches!(out, Err(ReserveError::Failed(Failure::Conflict))));
        assert!(store.reservations().is_empty());

        let (svc, store, _, schedule) = setup(Control::retrying(
            "optimistic-retry",
            RetryPolicy::default(),
        ));
        store.fail_next_commit(Failure::Conflict);
        let r = svc
            .reservations
            .reserve(ReserveSeat { schedule, ..cmd })
            .await
            .unwrap();
        assert_eq!(store.reservations(), vec![r]);
    }

    #[tokio::test]
    async fn under_a_lock_the_seats_fence_is_recorded_and_a_stale_one_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lock = Arc::new(MockDistributedLock::granting(40, log.clone()));
        let (svc, store, clock, schedule) =
            setup(Control::locked("local", lock, LockOptions::default()));
        let cmd = |u| ReserveSeat {
            user: user(u),
            schedule,
            seat: seat(2),
        };
        svc.reservations.reserve(cmd(1)).await.unwrap();
        assert_eq!(store.seat_fence(schedule, seat(2)), 40);
        assert_eq!(
            *log.lock().unwrap(),
            ["acquire seat:2:02", "release seat:2:02"]
        );

        // a holder whose token is older than the recorded one is refused
        let old = Arc::new(MockDistributedLock::granting(7, Arc::default()));
        let stale = ReservationService::new(
            store.ports(Arc::new(clock.clone())),
            Control::locked("local", old, LockOptions::default()),
            Policy::default(),
        );
        clock.advance(Duration::minutes(5));
        assert!(matches!(
            stale.reserve(cmd(2)).await,
            Err(ReserveError::Failed(Failure::LockLost))
        ));
        assert_eq!(store.reservations().len(), 1);
    }

    #[tokio::test]
    async fn under_the_queue_a_hold_is_submitted_and_answered_or_left_queued() {
        use crate::queue::{MockSeatQueue, QueuedRequest, RequestId, RequestState, Submitted};
        use std::time::Duration as Std;

        let submitted: Arc<Mutex<Vec<(QueuedRequest, Std)>>> = Arc::default();
        let mut queue = MockSeatQueue::new();
        let seen = submitted.clone();
        let mut answers = vec![
            Submitted::Done(Err(ReserveError::SeatUnavailable {
                seats: vec![seat(7)],
                yours: None,
            })),
            Submitted::Pending,
            Submitted::Pending,
        ];
        queue
            .expect_submit()
            .times(3)
            .returning(move |request, wait| {
                seen.lock().unwrap().push((request.clone(), wait));
                Ok(answers.pop().unwrap())
            });
        let owner = Arc::new(Mutex::new(None::<RequestId>));
        let owned = owner.clone();
        queue.expect_state().returning(move |id| {
            let known = owned.lock().unwrap().clone();
            Ok((known.as_ref() == Some(id)).then(|| RequestState {
                owner: user(5),
                many: false,
                outcome: None,
            }))
        });
        let control = Control::queued("queue", Arc::new(queue), Std::from_millis(250));
        let (svc, store, clock, schedule) = setup(control);
        let cmd = ReserveSeat {
            user: user(5),
            schedule,
            seat: seat(7),
        };

        let Requested::Queued(id) = svc.reservations.request(cmd).await.unwrap() else {
            panic!("pending is queued");
        };
        {
            let submitted = submitted.lock().unwrap();
            let (request, wait) = &submitted[0];
            assert_eq!(request.id, id);
            assert_eq!(request.request, SeatRequest::One(cmd));
            assert_eq!(request.submitted_at, clock.now());
            assert_eq!(*wait, Std::from_millis(250));
        }
        *owner.lock().unwrap() = Some(id.clone());
        let view = svc.reservations.request_state(user(5), &id).await.unwrap();
        assert_eq!(
            (view.id, view.many, view.outcome.is_none()),
            (id.clone(), false, true)
        );
        for (who, asked) in [(user(6), id.clone()), (user(5), RequestId::generate())] {
            assert!(matches!(
                svc.reservations.request_state(who, &asked).await,
                Err(QueryError::NotFound("reservation request"))
            ));
        }
        // a caller that cannot poll is told it is unavailable
        assert!(matches!(
            svc.reservations.reserve(cmd).await,
            Err(ReserveError::Failed(Failure::Unavailable(_)))
        ));
        // an answered refusal is the caller's answer
        assert!(matches!(
            svc.reservations.request(cmd).await,
            Err(ReserveError::SeatUnavailable { .. })
        ));
        // the submitting side writes nothing itself
        assert!(store.reservations().is_empty());

        // without the queue there are no requests to look up
        let (plain, _, _, plain_schedule) = setup(Control::pessimistic("pessimistic"));
        assert!(matches!(
            plain.reservations.request_state(user(5), &id).await,
            Err(QueryError::NotFound(_))
        ));
        let held = plain
            .reservations
            .request(ReserveSeat {
                schedule: plain_schedule,
                ..cmd
            })
            .await
            .unwrap();
        assert!(matches!(held, Requested::Done(_)));
    }

    #[tokio::test]
    async fn use_cases_run_on_any_runtime_thread() {
        let (svc, _, _, schedule) = setup(Control::pessimistic("pessimistic"));
        let handle = tokio::spawn(async move {
            svc.reservations
                .reserve(ReserveSeat {
                    user: user(1),
                    schedule,
                    seat: seat(1),
                })
                .await
                .map(|r| r.seat_number)
        });
        assert_eq!(handle.await.unwrap().unwrap(), seat(1));
    }
}
