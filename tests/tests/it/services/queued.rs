//! The queued use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Duration as Span;

use super::{TestClock, t0};
use concert_domain::clock::Clock;
use concert_domain::ids::UserId;
use concert_domain::queue::{RequestId, SeatRequest};
use concert_domain::services::{ReserveSeat, ReserveSeats};
use concert_domain::*;
use concert_memory::MemoryStore;

/// Counts the units of work the applier runs.
#[derive(Default)]
struct Units(AtomicU64);

impl Observer for Units {
    fn attempt(&self, _: Operation, strategy: &str) {
        assert_eq!(strategy, "queue");
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Units {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Setup {
    applier: SeatRequestApplier,
    store: MemoryStore,
    clock: TestClock,
    schedule: ScheduleId,
    units: Arc<Units>,
}

fn setup(memory: Duration) -> Setup {
    let store = MemoryStore::new();
    let clock = TestClock::new();
    let (_, schedule) = store.add_schedule(t0() + Span::days(30), 500);
    let units = Arc::new(Units::default());
    let applier = SeatRequestApplier::new(store.ports(Arc::new(clock.clone())), Policy::default())
        .with_options(ApplierOptions {
            memory,
            ..ApplierOptions::default()
        })
        .with_observer("queue", units.clone());
    Setup {
        applier,
        store,
        clock,
        schedule,
        units,
    }
}

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

impl Setup {
    fn one(&self, user: u64, number: i64) -> Delivery {
        self.delivery(SeatRequest::One(ReserveSeat {
            user: UserId::from(user),
            schedule: self.schedule,
            seat: seat(number),
        }))
    }

    fn many(&self, user: u64, numbers: &[i64]) -> Delivery {
        let seats = numbers.iter().map(|n| seat(*n)).collect();
        self.delivery(SeatRequest::Many(
            ReserveSeats::new(UserId::from(user), self.schedule, seats, 4).unwrap(),
        ))
    }

    fn delivery(&self, request: SeatRequest) -> Delivery {
        Delivery {
            request: QueuedRequest {
                id: RequestId::generate(),
                request,
                submitted_at: self.clock.now(),
            },
            redelivered: false,
        }
    }
}

fn done(applied: Applied) -> SeatOutcome {
    match applied {
        Applied::Done(outcome) => outcome,
        Applied::Abandoned => panic!("abandoned"),
    }
}

fn held_by(outcome: SeatOutcome) -> Vec<(u64, u8)> {
    outcome
        .unwrap()
        .iter()
        .map(|r| (r.user.get(), r.seat_number.get()))
        .collect()
}

fn refused(outcome: SeatOutcome) -> (Vec<u8>, Option<ReservationId>) {
    match outcome {
        Err(ReserveError::SeatUnavailable { seats, yours }) => {
            (seats.iter().map(|s| s.get()).collect(), yours)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_first_request_for_a_seat_wins_and_the_rest_are_answered_from_memory() {
    let s = setup(Duration::from_secs(3600));
    let mut tenure = s.applier.open(Fence::new(7));
    let mut batch: Vec<Delivery> = (1..=50).map(|u| s.one(u, 7)).collect();
    batch.push(s.one(99, 8));
    let mut out = tenure.apply(batch).await.into_iter().map(done);
    assert_eq!(held_by(out.next().unwrap()), [(1, 7)]);
    for _ in 2..=50 {
        assert_eq!(refused(out.next().unwrap()), (vec![7], None));
    }
    assert_eq!(held_by(out.next().unwrap()), [(99, 8)]);
    // one unit of work per seat: the 49 losers never reached storage
    assert_eq!(s.units.get(), 2);
    assert_eq!(s.store.reservations().len(), 2);
    assert_eq!(s.store.seat_fence(s.schedule, seat(7)), 7);

    // the next batch too, and the holder is named its own hold
    let mine = s.store.reservations()[0].id;
    let out: Vec<_> = tenure
        .apply(vec![s.one(3, 7), s.one(1, 7)])
        .await
        .into_iter()
        .map(done)
        .collect();
    let [other, own] = <[SeatOutcome; 2]>::try_from(out).unwrap();
    assert_eq!(refused(other), (vec![7], None));
    assert_eq!(refused(own), (vec![7], Some(mine)));
    assert_eq!(s.units.get(), 2);
}

#[tokio::test]
async fn requests_for_one_seat_are_decided_in_arrival_order() {
    let s = setup(Duration::ZERO);
    let mut tenure = s.applier.open(Fence::new(1));
    // without memory every request reaches storage, in arrival order
    // per seat
    let out: Vec<_> = tenure
        .apply(vec![s.one(5, 1), s.one(6, 2), s.one(7, 1), s.one(8, 2)])
        .await
        .into_iter()
        .map(done)
        .collect();
    let [a, b, c, d] = <[SeatOutcome; 4]>::try_from(out).unwrap();
    assert_eq!(held_by(a), [(5, 1)]);
    assert_eq!(held_by(b), [(6, 2)]);
    assert_eq!(refused(c), (vec![1], None));
    assert_eq!(refused(d), (vec![2], None));
    assert_eq!(s.units.get(), 4);
}

#[tokio::test]
async fn a_batch_holds_all_or_none_and_names_every_taken_seat() {
    let s = setup(Duration::from_secs(3600));
    let mut tenure = s.applier.open(Fence::new(1));
    let out: Vec<_> = tenure
        .apply(vec![
            s.many(1, &[5, 2]),
            // every seat known: refused from memory
            s.many(2, &[2, 5]),
            // seats 1 and 9 unknown: storage refuses, the seat map is read
            s.many(3, &[1, 5, 9, 2]),
            // now known: refused from memory
            s.many(4, &[1, 5, 9, 2]),
            // known free: storage decides
            s.many(5, &[1, 9]),
        ])
        .await
        .into_iter()
        .map(done)
        .collect();
    let [first, second, third, fourth, fifth] = <[SeatOutcome; 5]>::try_from(out).unwrap();
    assert_eq!(held_by(first), [(1, 2), (1, 5)]);
    for refusal in [second, third, fourth] {
        assert_eq!(refused(refusal), (vec![2, 5], None));
    }
    assert_eq!(held_by(fifth), [(5, 1), (5, 9)]);
    assert_eq!(s.units.get(), 3);
    assert_eq!(s.store.reservations().len(), 4);
}

#[tokio::test]
async fn a_newer_token_on_a_seat_abandons_the_stale_tenure() {
    let s = setup(Duration::from_secs(3600));
    let mut newer = s.applier.open(Fence::new(20));
    done(newer.apply(vec![s.one(7, 3)]).await.pop().unwrap()).unwrap();
    // the hold ends: the stale tenure, whose snapshot is read now,
    // believes the seat free and tries to write it
    s.clock.advance(Span::minutes(5));
    let fence = Fence::new(10);
    let mut stale = s.applier.open(fence.clone());
    // the batch waits for the first request (it shares seat 3)
    let out = stale.apply(vec![s.one(5, 3), s.many(6, &[3, 4])]).await;
    assert!(out.iter().all(|a| matches!(a, Applied::Abandoned)));
    assert!(
        fence.is_lost(),
        "storage refused the token: the lease is lost"
    );
    assert_eq!(s.store.seat_fence(s.schedule, seat(3)), 20);
    assert_eq!(s.store.reservations().len(), 1);
    // a tenure that knows its lease is lost decides nothing
    let lost = Fence::new(30);
    lost.mark_lost();
    let mut gone = s.applier.open(lost);
    assert!(matches!(
        gone.apply(vec![s.one(8, 9)]).await.as_slice(),
        [Applied::Abandoned]
    ));
    assert_eq!(s.store.reservations().len(), 1);
}

#[tokio::test]
async fn a_redelivered_request_that_was_applied_gets_its_own_hold_back() {
    let s = setup(Duration::from_secs(3600));
    // the user's older hold of seat 4, made before the request below
    let mut first = s.applier.open(Fence::new(1));
    let older = done(first.apply(vec![s.one(5, 4)]).await.pop().unwrap()).unwrap();
    s.clock.advance(Span::seconds(10));
    let request = s.one(5, 3);
    let applied = done(first.apply(vec![request.clone()]).await.pop().unwrap()).unwrap();
    // the applier died before answering: the next holder gets it again
    let mut next = s.applier.open(Fence::new(2));
    let again = Delivery {
        redelivered: true,
        ..request
    };
    let stale_copy = Delivery {
        redelivered: true,
        ..s.delivery(SeatRequest::One(ReserveSeat {
            user: UserId::from(5),
            schedule: s.schedule,
            seat: seat(4),
        }))
    };
    let out: Vec<_> = next
        .apply(vec![again, stale_copy])
        .await
        .into_iter()
        .map(done)
        .collect();
    let [replayed, own] = <[SeatOutcome; 2]>::try_from(out).unwrap();
    assert_eq!(
        replayed.unwrap(),
        applied,
        "the same hold, not a second one"
    );
    // seat 4 was held before that request was submitted: not its own
    assert_eq!(refused(own), (vec![4], Some(older[0].id)));
    assert_eq!(s.store.reservations().len(), 2);
}

#[tokio::test]
async fn a_hold_cancelled_elsewhere_is_seen_once_the_memory_is_read_again() {
    for (memory, expect_free) in [(Duration::ZERO, true), (Duration::from_secs(3600), false)] {
        let s = setup(memory);
        let mut tenure = s.applier.open(Fence::new(1));
        let held = done(tenure.apply(vec![s.one(1, 3)]).await.pop().unwrap()).unwrap();
        let services = concert_domain::services::Services::new(
            s.store.ports(Arc::new(s.clock.clone())),
            super::controls(Control::optimistic("optimistic")),
            Policy::default(),
        );
        services
            .reservations
            .cancel(UserId::from(1), held[0].id)
            .await
            .unwrap();
        let next = done(tenure.apply(vec![s.one(2, 3)]).await.pop().unwrap());
        if expect_free {
            assert_eq!(held_by(next), [(2, 3)]);
        } else {
            // within the memory period the snapshot still says taken
            assert_eq!(refused(next), (vec![3], None));
        }
    }
}

#[tokio::test]
async fn unknown_schedules_are_not_found_and_then_known_missing() {
    let s = setup(Duration::from_secs(3600));
    let mut tenure = s.applier.open(Fence::new(1));
    let unknown = |user| {
        s.delivery(SeatRequest::One(ReserveSeat {
            user: UserId::from(user),
            schedule: ScheduleId::from(999),
            seat: seat(1),
        }))
    };
    let out = tenure.apply(vec![unknown(1), unknown(2)]).await;
    for applied in out {
        let outcome = done(applied);
        assert!(
            matches!(outcome, Err(ReserveError::SeatNotFound)),
            "{outcome:?}"
        );
    }
    assert_eq!(s.units.get(), 1, "the second from memory");
    assert!(s.store.reservations().is_empty());
}
