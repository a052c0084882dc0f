//! The queue strategy's applier: what the holder of a partition's lease
//! does with the partition's seat requests.
//!
//! - Requests for one seat are decided in arrival order, and without any
//!   lock: the lease makes this tenure the partition's only applier, and
//!   its [`Fence`] is checked by storage on every seat it writes (a holder
//!   whose lease was taken over is refused, like a stale lock holder).
//! - Requests for other seats run concurrently, in waves (a request waits
//!   only for the earlier requests that share one of its seats).
//! - A seat known taken is answered from memory, without a database round
//!   trip: the tenure learns every hold it grants, and when the database
//!   refuses a seat it did not know taken (held before this tenure began)
//!   it reads that schedule's seat map once. What it knows is forgotten
//!   after a freshness period. Only holds change through the queue, so the
//!   memory can only err on the side of "taken" (a hold cancelled or
//!   refunded elsewhere is seen once forgotten); a seat it does not know
//!   taken always goes to the database, which decides.
//! - A redelivered request (its previous applier died or lost the lease
//!   after deciding it, before answering) whose seats are all held by its
//!   user, by holds made since it was submitted, is answered with those
//!   holds: applying it twice holds nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::control::{Control, Observer, Operation, Protection, Unobserved};
use crate::error::{Failure, OperationError, ReserveError};
use crate::ids::{ReservationId, ScheduleId, SeatNumber};
use crate::lock::{Fence, Fences, LockKey};
use crate::model::seat::{Reservation, ReservationStatus, SeatState};
use crate::queue::{Applied, Appliers, Delivery, PartitionApplier, QueuedRequest, SeatOutcome};
use crate::services::{Policy, Ports, ReservationService, chrono_duration};

/// Tuning of a [`SeatRequestApplier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplierOptions {
    /// How long a schedule's seat snapshot answers "taken" before it is
    /// read again (the longest a hold cancelled or refunded outside the
    /// queue may still be answered as taken).
    pub memory: Duration,
    /// Most requests decided concurrently in one wave.
    pub wave: usize,
    /// Attempts per request when storage reports a conflict (a concurrent
    /// cancel or payment of the seat changed it between read and write).
    pub attempts: u32,
}

impl Default for ApplierOptions {
    fn default() -> Self {
        Self {
            memory: Duration::from_secs(1),
            wave: 32,
            attempts: 3,
        }
    }
}

/// Applies queued seat requests (the domain side of the queue strategy):
/// an [`Appliers`] whose tenures decide with the hold rule of
/// [`ReservationService`], fenced by the partition's lease.
#[derive(Clone)]
pub struct SeatRequestApplier {
    holds: ReservationService,
    ports: Ports,
    policy: Policy,
    options: ApplierOptions,
    name: String,
    observer: Arc<dyn Observer>,
}

impl SeatRequestApplier {
    pub fn new(ports: Ports, policy: Policy) -> Self {
        Self {
            holds: ReservationService::new(ports.clone(), Control::optimistic("queue"), policy),
            ports,
            policy,
            options: ApplierOptions::default(),
            name: "queue".to_owned(),
            observer: Arc::new(Unobserved),
        }
    }

    pub fn with_options(mut self, options: ApplierOptions) -> Self {
        self.options = options;
        self
    }

    /// Reports every unit of work (attempt) and conflict under the
    /// strategy name `name`.
    pub fn with_observer(mut self, name: &str, observer: Arc<dyn Observer>) -> Self {
        self.name = name.to_owned();
        self.observer = observer;
        self
    }

    /// Decides one request in the database, under `fence`.
    async fn decide(&self, delivery: &Delivery, fence: &Fence) -> SeatOutcome {
        let request = &delivery.request.request;
        let (user, schedule, seats) = (request.user(), request.schedule(), request.seats());
        let fences = Fences::new(
            seats
                .iter()
                .map(|s| (LockKey::seat(schedule, *s), fence.clone()))
                .collect(),
        );
        let mut attempt = 1;
        let outcome = loop {
            self.observer.attempt(Operation::Reserve, &self.name);
            let protection = Protection::Fenced(fences.clone());
            match self
                .holds
                .hold_once(user, schedule, seats, protection)
                .await
            {
                Err(e) if e.is_conflict() => {
                    self.observer.conflict(Operation::Reserve, &self.name);
                    if attempt >= self.options.attempts {
                        break Err(e);
                    }
                    attempt += 1;
                }
                outcome => break outcome,
            }
        };
        if delivery.redelivered
            && matches!(outcome, Err(ReserveError::SeatUnavailable { .. }))
            && let Some(held) = self.already_applied(&delivery.request).await
        {
            return Ok(held);
        }
        outcome
    }

    /// The holds `queued` took when an earlier applier applied it: every
    /// seat held by its user with a hold made at or after it was
    /// submitted. `None` if any seat is not.
    async fn already_applied(&self, queued: &QueuedRequest) -> Option<Vec<Reservation>> {
        let request = &queued.request;
        let now = self.ports.clock.now();
        let hold = chrono_duration(self.policy.hold);
        let mine = self
            .ports
            .queries
            .reservations_of(request.user())
            .await
            .ok()?;
        let mut held: Vec<Reservation> = mine
            .into_iter()
            .filter(|r| {
                r.schedule == request.schedule()
                    && request.seats().contains(&r.seat_number)
                    && r.status_at(now) == ReservationStatus::Held
                    && r.expires_at - hold >= queued.submitted_at
            })
            .collect();
        held.sort_by_key(|r| r.seat_number);
        held.dedup_by_key(|r| r.seat_number);
        (held.len() == request.seats().len()).then_some(held)
    }
}

impl Appliers for SeatRequestApplier {
    fn open(&self, fence: Fence) -> Box<dyn PartitionApplier> {
        Box::new(Tenure {
            taken: TakenSeats::new(self.options.memory),
            applier: self.clone(),
            fence,
        })
    }
}

/// One tenure of a partition's lease.
struct Tenure {
    applier: SeatRequestApplier,
    fence: Fence,
    taken: TakenSeats,
}

type SeatKey = (ScheduleId, SeatNumber);

fn seat_keys(delivery: &Delivery) -> Vec<SeatKey> {
    let request = &delivery.request.request;
    request
        .seats()
        .iter()
        .map(|s| (request.schedule(), *s))
        .collect()
}

#[async_trait]
impl PartitionApplier for Tenure {
    async fn apply(&mut self, batch: Vec<Delivery>) -> Vec<Applied> {
        let mut out: Vec<Option<Applied>> = batch.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let wave_size = self.applier.options.wave.max(1);
        while !pending.is_empty() && !self.fence.is_lost() {
            self.taken.refresh(&self.applier).await;
            let now = self.applier.ports.clock.now();
            let mut wave = Vec::new();
            let mut blocked: HashSet<SeatKey> = HashSet::new();
            let mut later = Vec::new();
            for i in pending {
                let keys = seat_keys(&batch[i]);
                if wave.len() >= wave_size || keys.iter().any(|k| blocked.contains(k)) {
                    blocked.extend(keys);
                    later.push(i);
                } else if let Some(refusal) = self.taken.answer(&batch[i], now) {
                    out[i] = Some(Applied::Done(Err(refusal)));
                } else {
                    blocked.extend(keys);
                    wave.push(i);
                }
            }
            let (applier, fence) = (&self.applier, &self.fence);
            let outcomes = futures_util::future::join_all(
                wave.iter().map(|i| applier.decide(&batch[*i], fence)),
            )
            .await;
            let mut lost = false;
            for (i, outcome) in wave.into_iter().zip(outcomes) {
                if matches!(outcome, Err(ReserveError::Failed(Failure::LockLost))) {
                    lost = true;
                    out[i] = Some(Applied::Abandoned);
                } else {
                    self.taken.learn(&batch[i], &outcome);
                    out[i] = Some(Applied::Done(outcome));
                }
            }
            if lost {
                self.fence.mark_lost();
            }
            pending = later;
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Applied::Abandoned))
            .collect()
    }
}

/// What a tenure knows of one seat, and since when.
#[derive(Debug, Clone, Copy)]
struct Known {
    state: SeatState,
    /// The live hold's reservation, when this tenure made it or learnt it.
    reservation: Option<ReservationId>,
    at: Instant,
}

/// What a tenure knows of one schedule.
#[derive(Debug, Default)]
struct ScheduleSeats {
    /// Since when the schedule is known not to exist.
    missing: Option<Instant>,
    seats: HashMap<SeatNumber, Known>,
}

/// The tenure's cache of taken seats. It learns a seat from every hold it
/// grants; when storage refuses a request for seats it did not know taken
/// (taken before this tenure, or by another strategy), it reads that
/// schedule's seat map once. Everything it knows is forgotten after the
/// freshness period.
#[derive(Debug)]
struct TakenSeats {
    freshness: Duration,
    schedules: HashMap<ScheduleId, ScheduleSeats>,
    /// Schedules whose seat map to read before the next wave.
    to_read: HashSet<ScheduleId>,
}

impl TakenSeats {
    fn new(freshness: Duration) -> Self {
        Self {
            freshness,
            schedules: HashMap::new(),
            to_read: HashSet::new(),
        }
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.freshness
    }

    /// Forgets what is no longer fresh and reads the seat maps wanted (a
    /// failed read leaves them unknown: their requests go to storage).
    async fn refresh(&mut self, applier: &SeatRequestApplier) {
        let freshness = self.freshness;
        self.schedules.retain(|_, m| {
            m.missing = m.missing.filter(|at| at.elapsed() < freshness);
            m.seats.retain(|_, k| k.at.elapsed() < freshness);
            m.missing.is_some() || !m.seats.is_empty()
        });
        for schedule in std::mem::take(&mut self.to_read) {
            let at = Instant::now();
            let Ok(seats) = applier.ports.catalogue.seats(schedule).await else {
                continue;
            };
            let memory = match seats {
                None => ScheduleSeats {
                    missing: Some(at),
                    seats: HashMap::new(),
                },
                Some(seats) => ScheduleSeats {
                    missing: None,
                    seats: seats
                        .into_iter()
                        .map(|s| {
                            let known = Known {
                                state: s.state,
                                reservation: None,
                                at,
                            };
                            (s.number, known)
                        })
                        .collect(),
                },
            };
            self.schedules.insert(schedule, memory);
        }
    }

    /// The refusal storage would give, when this memory knows every seat
    /// of the request; `None` when storage must decide.
    fn answer(&self, delivery: &Delivery, now: DateTime<Utc>) -> Option<ReserveError> {
        let request = &delivery.request.request;
        let memory = self.schedules.get(&request.schedule())?;
        if memory.missing.is_some_and(|at| self.fresh(at)) {
            return Some(ReserveError::SeatNotFound);
        }
        let mut taken = Vec::new();
        let mut own = None;
        for number in request.seats() {
            let known = memory.seats.get(number).filter(|k| self.fresh(k.at))?;
            match known.state {
                SeatState::Held { by, until } if until > now => {
                    taken.push(*number);
                    if by == request.user() {
                        own = Some(known.reservation);
                    }
                }
                SeatState::Sold => taken.push(*number),
                SeatState::Held { .. } | SeatState::Available => {}
            }
        }
        if taken.is_empty() {
            return None;
        }
        let yours = match own {
            // perhaps held by this very request, decided by the previous
            // holder of the partition: the storage path recognises it
            Some(_) if delivery.redelivered => return None,
            // the caller's own hold: named when known, else storage names it
            Some(reservation) if !request.is_many() => Some(reservation?),
            _ => None,
        };
        Some(ReserveError::SeatUnavailable {
            seats: taken,
            yours,
        })
    }

    /// Learns from what storage decided.
    fn learn(&mut self, delivery: &Delivery, outcome: &SeatOutcome) {
        let request = &delivery.request.request;
        let schedule = request.schedule();
        let at = Instant::now();
        match outcome {
            Ok(held) => {
                let memory = self.schedules.entry(schedule).or_default();
                memory.missing = None;
                for r in held {
                    let state = SeatState::Held {
                        by: r.user,
                        until: r.expires_at,
                    };
                    let known = Known {
                        state,
                        reservation: Some(r.id),
                        at,
                    };
                    memory.seats.insert(r.seat_number, known);
                }
            }
            // the caller's own hold, named: answerable from now on
            Err(ReserveError::SeatUnavailable {
                yours: Some(id), ..
            }) if !request.is_many() => {
                let known = self
                    .schedules
                    .get_mut(&schedule)
                    .and_then(|m| m.seats.get_mut(&request.seats()[0]));
                match known {
                    Some(known) => known.reservation = Some(*id),
                    None => {
                        self.to_read.insert(schedule);
                    }
                }
            }
            // taken, or missing, as this memory did not know: read the
            // schedule's seats
            Err(ReserveError::SeatUnavailable { .. } | ReserveError::SeatNotFound) => {
                self.to_read.insert(schedule);
            }
            // refusals that say nothing about the seats
            Err(ReserveError::HoldLimit { .. } | ReserveError::NotAdmitted) => {}
            // a failure: what this memory knows of the schedule is in doubt
            Err(ReserveError::Failed(_)) => {
                self.schedules.remove(&schedule);
            }
        }
    }
}
