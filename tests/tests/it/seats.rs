//! Seat holds over MySQL through the domain's `ReservationService` and
//! `CatalogueService`: one winner among 100, expiry and re-hold, the seat
//! map, the sweeper, fencing. Exact outcomes only.

use std::sync::Arc;
use std::time::Duration;

use concert_domain::{
    Clock, ConcertId, Failure, PayReservation, Policy, QueryError, ReservationStatus, ReserveError,
    ReserveSeat, ScheduleId, SeatNumber, SeatState, SeatStatus, Services, UserId,
};
use concert_tests::audit::assert_consistent;
use concert_tests::clock::ManualClock;
use concert_tests::db::{TestDb, concurrently, lock_free};
use concert_tests::locks::FixedFenceLock;

/// The default hold (5 minutes).
fn hold_time() -> Duration {
    Policy::default().hold
}

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

fn reserve(user: u64, schedule: ScheduleId, n: i64) -> ReserveSeat {
    ReserveSeat {
        user: UserId::from(user),
        schedule,
        seat: seat(n),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_a_hundred_holds_wins() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(500).await;
        let svc = Arc::new(db.services(strategy, ManualClock::new()));

        let outcomes = concurrently(100, |i| {
            let svc = svc.clone();
            async move {
                svc.reservations
                    .reserve(reserve(1 + i as u64, schedule, 7))
                    .await
            }
        })
        .await;

        let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{strategy}: {outcomes:?}");
        let losers = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Err(ReserveError::SeatUnavailable { .. }
                        | ReserveError::Failed(Failure::Conflict))
                )
            })
            .count();
        assert_eq!(losers, 99, "{strategy}: {outcomes:?}");
        if concert_app::StrategyName::named(strategy).waits() {
            // waiting or conditional strategies never report a conflict
            assert!(
                outcomes
                    .iter()
                    .all(|o| !matches!(o, Err(ReserveError::Failed(Failure::Conflict)))),
                "{strategy}"
            );
        }

        let winner = winners[0];
        assert_eq!(
            db.sql.live_reservations(schedule, seat(7)).await.unwrap(),
            1
        );
        let stored = db
            .sql
            .reservations_of_seat(schedule, seat(7))
            .await
            .unwrap();
        assert_eq!(stored, vec![winner.clone()], "{strategy}");
        let s = db.sql.seat(schedule, seat(7)).await.unwrap().unwrap();
        assert_eq!(
            s.state,
            SeatState::Held {
                by: winner.user,
                until: winner.expires_at
            }
        );
        assert_eq!(s.version, 1, "{strategy}: one write");
        // other seats are untouched
        assert_eq!(
            db.sql.live_reservations(schedule, seat(8)).await.unwrap(),
            0
        );
        assert_consistent(&db.db).await;
    }
}

#[tokio::test]
async fn a_hold_returns_what_is_stored() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(750).await;
        let clock = ManualClock::new();
        let svc = db.services(strategy, clock.clone());

        let r = svc
            .reservations
            .reserve(reserve(3, schedule, 12))
            .await
            .unwrap();

        assert_eq!(r.user, UserId::from(3));
        assert_eq!((r.schedule, r.seat_number), (schedule, seat(12)));
        assert_eq!(r.price.get(), 750);
        assert_eq!(r.status, ReservationStatus::Held);
        assert_eq!(
            r.expires_at,
            clock.now() + chrono::Duration::from_std(hold_time()).unwrap()
        );
        assert_eq!(
            svc.reservations.get(UserId::from(3), r.id).await.unwrap(),
            r,
            "{strategy}"
        );
        // only the owner sees it
        assert!(matches!(
            svc.reservations.get(UserId::from(4), r.id).await,
            Err(QueryError::NotFound(_))
        ));
        // the holder cannot hold it twice, nobody else can either
        for user in [3, 4] {
            assert!(
                matches!(
                    svc.reservations.reserve(reserve(user, schedule, 12)).await,
                    Err(ReserveError::SeatUnavailable { .. })
                ),
                "{strategy}"
            );
        }
    }
}

#[tokio::test]
async fn an_expired_hold_is_taken_over_and_expired() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(500).await;
        let clock = ManualClock::new();
        let svc = db.services(strategy, clock.clone());

        let first = svc
            .reservations
            .reserve(reserve(1, schedule, 5))
            .await
            .unwrap();
        clock.advance(hold_time() - Duration::from_secs(1));
        assert!(matches!(
            svc.reservations.reserve(reserve(2, schedule, 5)).await,
            Err(ReserveError::SeatUnavailable { .. })
        ));
        clock.advance(Duration::from_secs(1));

        let second = svc
            .reservations
            .reserve(reserve(2, schedule, 5))
            .await
            .unwrap();

        assert_ne!(first.id, second.id);
        let stored = db
            .sql
            .reservations_of_seat(schedule, seat(5))
            .await
            .unwrap();
        let statuses: Vec<_> = stored.iter().map(|r| (r.id, r.user, r.status)).collect();
        assert_eq!(
            statuses,
            [
                (first.id, UserId::from(1), ReservationStatus::Expired),
                (second.id, UserId::from(2), ReservationStatus::Held),
            ],
            "{strategy}"
        );
        assert_eq!(
            db.sql.live_reservations(schedule, seat(5)).await.unwrap(),
            1
        );
        assert_eq!(
            svc.reservations
                .get(UserId::from(1), first.id)
                .await
                .unwrap()
                .status,
            ReservationStatus::Expired
        );
        let s = db.sql.seat(schedule, seat(5)).await.unwrap().unwrap();
        assert_eq!(
            s.state,
            SeatState::Held {
                by: UserId::from(2),
                until: second.expires_at
            }
        );
    }
}

#[tokio::test]
async fn an_unknown_seat_is_not_found() {
    for strategy in lock_free() {
        let db = TestDb::new().await;
        let schedule = db.schedule(500).await;
        let svc = db.services(strategy, ManualClock::new());
        let missing = ScheduleId::from(schedule.get() + 1_000);
        let err = svc
            .reservations
            .reserve(reserve(1, missing, 1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReserveError::SeatNotFound),
            "{strategy}: {err:?}"
        );
        assert_eq!(
            db.sql.reservations_of_user(UserId::from(1)).await.unwrap(),
            0
        );
    }
}

async fn statuses(svc: &Services, schedule: ScheduleId) -> Vec<(u8, SeatStatus)> {
    svc.catalogue
        .seats(schedule, None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.number.get(), v.status))
        .filter(|(_, s)| *s != SeatStatus::Available)
        .collect()
}

#[tokio::test]
async fn the_seat_map_and_schedules_show_holds_sales_and_expiry() {
    let db = TestDb::new().await;
    let clock = ManualClock::new();
    let now = clock.now();
    let (concert, schedule) = db.schedule_at(now + chrono::Duration::days(10), 500).await;
    let later = db
        .sql
        .create_schedule(concert, now + chrono::Duration::days(20), |n| {
            100 * u64::from(n.get())
        })
        .await
        .unwrap();
    let _past = db
        .sql
        .create_schedule(concert, now - chrono::Duration::days(1), |_| 500)
        .await
        .unwrap();
    let svc = db.services("pessimistic", clock.clone());

    let map = svc.catalogue.seats(later, None).await.unwrap();
    assert_eq!(map.len(), 50);
    assert_eq!(
        map.iter()
            .map(|v| (v.number.get(), v.price.get()))
            .collect::<Vec<_>>(),
        (1..=50u8)
            .map(|n| (n, 100 * u64::from(n)))
            .collect::<Vec<_>>()
    );

    // seat 3 held and expired, seat 4 held, seat 5 sold
    svc.reservations
        .reserve(reserve(1, schedule, 3))
        .await
        .unwrap();
    clock.advance(hold_time());
    svc.reservations
        .reserve(reserve(1, schedule, 4))
        .await
        .unwrap();
    let sold = svc
        .reservations
        .reserve(reserve(2, schedule, 5))
        .await
        .unwrap();
    db.sql.set_balance(UserId::from(2), 500).await.unwrap();
    svc.payments
        .pay(PayReservation {
            user: UserId::from(2),
            reservation: sold.id,
            idempotency: None,
        })
        .await
        .unwrap();

    assert_eq!(
        statuses(&svc, schedule).await,
        [(4, SeatStatus::Held), (5, SeatStatus::Sold)]
    );
    let available = svc
        .catalogue
        .seats(schedule, Some(SeatStatus::Available))
        .await
        .unwrap();
    assert_eq!(available.len(), 48);
    assert!(available.iter().any(|v| v.number.get() == 3));

    let schedules = svc.catalogue.schedules(concert).await.unwrap();
    let listed: Vec<_> = schedules
        .iter()
        .map(|s| (s.id, s.concert, s.available_seats))
        .collect();
    assert_eq!(listed, [(schedule, concert, 48), (later, concert, 50)]);
    assert!(schedules[0].starts_at < schedules[1].starts_at);

    let concerts = svc.catalogue.concerts().await.unwrap();
    assert_eq!(concerts.len(), 1);
    assert_eq!(
        (concerts[0].id, concerts[0].title.as_str()),
        (concert, "Test concert")
    );

    // unknown ids are NotFound; a concert without future dates is empty
    let other = db.sql.create_concert("Past only").await.unwrap();
    assert!(svc.catalogue.schedules(other).await.unwrap().is_empty());
    assert!(matches!(
        svc.catalogue
            .schedules(ConcertId::from(other.get() + 100))
            .await,
        Err(QueryError::NotFound("concert"))
    ));
    assert!(matches!(
        svc.catalogue
            .seats(ScheduleId::from(later.get() + 100), None)
            .await,
        Err(QueryError::NotFound("schedule"))
    ));
}

#[tokio::test]
async fn the_sweeper_expires_stale_holds_only() {
    let db = TestDb::new().await;
    let schedule = db.schedule(500).await;
    let clock = ManualClock::new();
    let svc = db.services("atomic", clock.clone());

    let mut stale = Vec::new();
    for n in 1..=3 {
        stale.push(
            svc.reservations
                .reserve(reserve(n as u64, schedule, n))
                .await
                .unwrap(),
        );
    }
    clock.advance(Duration::from_secs(60));
    let live = svc
        .reservations
        .reserve(reserve(9, schedule, 10))
        .await
        .unwrap();
    clock.advance(hold_time() - Duration::from_secs(60));

    assert_eq!(svc.reservations.expire_stale().await.unwrap(), 3);
    assert_eq!(svc.reservations.expire_stale().await.unwrap(), 0);

    for r in &stale {
        let stored = db
            .sql
            .reservations_of_seat(schedule, r.seat_number)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].status, ReservationStatus::Expired);
        let s = db.sql.seat(schedule, r.seat_number).await.unwrap().unwrap();
        assert_eq!(s.state, SeatState::Available);
        assert_eq!(s.version, 2, "held, then freed");
    }
    let kept = db
        .sql
        .reservations_of_seat(schedule, seat(10))
        .await
        .unwrap();
    assert_eq!(kept, vec![live.clone()]);
    assert_eq!(statuses(&svc, schedule).await, [(10, SeatStatus::Held)]);

    // a freed seat is held again normally
    svc.reservations
        .reserve(reserve(5, schedule, 1))
        .await
        .unwrap();
    assert_eq!(
        db.sql.live_reservations(schedule, seat(1)).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_stale_or_lost_fence_is_refused_and_writes_nothing() {
    let db = TestDb::new().await;
    let schedule = db.schedule(500).await;
    db.sql
        .set_seat_fence_token(schedule, seat(9), 10)
        .await
        .unwrap();
    let under = |lock: FixedFenceLock| {
        db.seat_services(lock.control(), ManualClock::new())
            .reservations
    };

    // an older token than the one that last wrote the seat
    let stale = under(FixedFenceLock::new(9))
        .reserve(reserve(1, schedule, 9))
        .await;
    assert!(
        matches!(stale, Err(ReserveError::Failed(Failure::LockLost))),
        "{stale:?}"
    );
    // a newer token whose lease was lost while the work ran
    let lost = under(FixedFenceLock::lost(11))
        .reserve(reserve(1, schedule, 9))
        .await;
    assert!(
        matches!(lost, Err(ReserveError::Failed(Failure::LockLost))),
        "{lost:?}"
    );
    let s = db.sql.seat(schedule, seat(9)).await.unwrap().unwrap();
    assert_eq!((s.state, s.version), (SeatState::Available, 0));
    assert_eq!(
        db.sql
            .reservations_of_seat(schedule, seat(9))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        db.sql.seat_fence_token(schedule, seat(9)).await.unwrap(),
        10
    );
    assert_eq!(db.sql.outbox_count().await.unwrap(), 0, "no event either");

    // a newer token writes and is recorded
    let r = under(FixedFenceLock::new(11))
        .reserve(reserve(1, schedule, 9))
        .await
        .unwrap();
    assert_eq!(r.user, UserId::from(1));
    assert_eq!(
        db.sql.seat_fence_token(schedule, seat(9)).await.unwrap(),
        11
    );
}

#[tokio::test]
async fn the_demo_seed_is_idempotent() {
    let db = TestDb::new().await;
    let clock = ManualClock::new();
    let svc = db.services("pessimistic", clock.clone());

    let first = concert_app::seed::seed_demo(&svc.catalogue, clock.now())
        .await
        .unwrap();
    assert_eq!((first.concerts_created, first.schedules_created), (2, 6));
    let again = concert_app::seed::seed_demo(&svc.catalogue, clock.now())
        .await
        .unwrap();
    assert_eq!((again.concerts_created, again.schedules_created), (0, 0));
    assert_eq!(again.concerts, first.concerts);

    let concerts = svc.catalogue.concerts().await.unwrap();
    assert_eq!(concerts.len(), 2);
    for concert in &concerts {
        let schedules = svc.catalogue.schedules(concert.id).await.unwrap();
        assert_eq!(schedules.len(), 3, "{}", concert.title);
        for s in &schedules {
            assert!(s.starts_at > clock.now());
            assert_eq!(s.available_seats, 50);
            let map = svc.catalogue.seats(s.id, None).await.unwrap();
            assert_eq!(map.len(), 50);
            assert!(
                map.iter()
                    .all(|v| v.price.get() == concert_app::seed::demo_price(v.number))
            );
        }
    }

    // a week later the first dates have passed: the seed tops them up
    clock.advance(Duration::from_secs(8 * 24 * 3600));
    let later = concert_app::seed::seed_demo(&svc.catalogue, clock.now())
        .await
        .unwrap();
    assert_eq!((later.concerts_created, later.schedules_created), (0, 2));
    for concert in &concerts {
        assert_eq!(svc.catalogue.schedules(concert.id).await.unwrap().len(), 3);
    }
}
