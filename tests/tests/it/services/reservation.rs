//! The reservation use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use std::sync::{Arc, Mutex};

use chrono::Duration;

use super::{TestClock, every_control, services, t0};
use concert_domain::clock::Clock;
use concert_domain::control::RetryPolicy;
use concert_domain::events::EventType;
use concert_domain::lock::{LockOptions, MockDistributedLock};
use concert_domain::model::catalogue::SeatStatus;
use concert_domain::model::seat::SeatState;
use concert_domain::queue::SeatRequest;
use concert_domain::services::{Policy, Services};
use concert_domain::*;
use concert_locking::Ordered;
use concert_memory::MemoryStore;

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

fn user(n: u64) -> UserId {
    UserId::from(n)
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
    for control in every_control() {
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
    for control in every_control() {
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
    for control in every_control() {
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
    for control in every_control() {
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
    for control in every_control() {
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
    let (svc, store, clock, schedule) = setup(Control::locked(
        "local",
        Arc::new(Ordered::plain(lock)),
        LockOptions::default(),
    ));
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
        Control::locked(
            "local",
            Arc::new(Ordered::plain(old)),
            LockOptions::default(),
        ),
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
    use concert_domain::queue::{MockSeatQueue, QueuedRequest, RequestId, RequestState, Submitted};
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
