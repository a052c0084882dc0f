//! The MySQL adapter against a real MariaDB: every storage port method's
//! contract (each MUST of `crates/domain/src/ports.rs`), the protections a
//! unit of work applies, the migrations, and the domain services over
//! [`MysqlStore`] end to end. Each test runs on a fresh `test_<uuid>`
//! database, dropped at the end. Self-contained: helpers first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    CatalogueRepository, ChargePoints, Claim, Clock, ConcertId, Control, Controls, Event,
    EventType, Failure, Fence, Fences, IdempotencyKey, KeyScope, LockKey, LockOptions,
    NewHistoryEntry, NewPayment, NewReservation, NewSchedule, PayError, PayReservation, PaymentId,
    PaymentStatus, PointChange, PointKind, Points, Policy, Ports, Protection, Queries,
    ReservationId, ReservationStatus, ReserveError, ReserveSeat, ScheduleId, Seat, SeatNumber,
    SeatState, Services, Stored, Title, Transactions, UnitOfWork, UsePoints, UserId, Wallet,
};
use concert_inprocess::LocalLock;
use concert_mysql::{DatabaseUrl, Db, MysqlStore, PoolOptions};
use concert_testkit::{Sql, TestDatabase};

// ---------------------------------------------------------------- helpers

/// A fresh database, the store under test and an independent SQL witness.
struct Env {
    store: MysqlStore,
    sql: Sql,
    url: DatabaseUrl,
    _db: TestDatabase,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.store.db().close();
        self.sql.close();
    }
}

fn options() -> PoolOptions {
    PoolOptions {
        max_size: 20,
        wait_timeout: Duration::from_secs(30),
        ..PoolOptions::default()
    }
}

async fn env() -> Env {
    env_with(options()).await
}

async fn env_with(options: PoolOptions) -> Env {
    let db = TestDatabase::create().await.expect("a fresh test database");
    let url = db.url().clone();
    let store = MysqlStore::new(Db::connect(&url, options).await.expect("pool"));
    let sql = Sql::connect(url.as_str()).await.expect("test SQL pool");
    Env {
        store,
        sql,
        url,
        _db: db,
    }
}

/// The tests' "now": whole seconds, far from the wall clock.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).expect("valid time")
}

fn mins(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

fn n(number: i64) -> SeatNumber {
    SeatNumber::new(number).expect("seat number")
}

fn user(id: u64) -> UserId {
    UserId::from(id)
}

fn pts(amount: i64) -> Points {
    Points::new(amount).expect("amount")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("key")
}

fn numbers(seats: &[Seat]) -> Vec<u8> {
    seats.iter().map(|s| s.number.get()).collect()
}

/// A concert with a schedule 30 days after [`t0`], every seat at `price`.
async fn schedule(env: &Env, price: u64) -> ScheduleId {
    let concert = env.sql.create_concert("Test concert").await.unwrap();
    env.sql
        .create_schedule(concert, t0() + chrono::Duration::days(30), |_| price)
        .await
        .unwrap()
}

async fn begin(env: &Env, protection: Protection) -> Box<dyn UnitOfWork> {
    env.store.begin(protection).await.expect("unit of work")
}

fn fenced(key: LockKey, fence: &Fence) -> Protection {
    Protection::Fenced(Fences::new(vec![(key, fence.clone())]))
}

/// Holds seat `number` of `schedule` for `who` until `until` in one unit:
/// the seat written held and its reservation recorded, committed.
async fn hold(
    env: &Env,
    schedule: ScheduleId,
    number: SeatNumber,
    who: UserId,
    until: DateTime<Utc>,
) -> concert_domain::Reservation {
    let mut uow = begin(env, Protection::Optimistic).await;
    let seat = uow
        .seats()
        .find(schedule, &[number])
        .await
        .unwrap()
        .remove(0);
    let held = Seat {
        state: SeatState::Held { by: who, until },
        version: seat.version + 1,
        ..seat
    };
    uow.seats().save(&held).await.unwrap();
    let r = uow
        .reservations()
        .insert(&NewReservation::for_seat(&held, who, t0(), until))
        .await
        .unwrap();
    uow.commit().await.unwrap();
    r
}

/// A clock the test moves; sleeps are real (retry backoffs).
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(t0())))
    }

    fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// The domain services over the store, one control for everything.
fn services(env: &Env, control: Control, policy: Policy, clock: &TestClock) -> Services {
    let store = Arc::new(env.store.clone());
    let ports = Ports {
        transactions: store.clone(),
        queries: store.clone(),
        catalogue: store,
        clock: Arc::new(clock.clone()),
    };
    Services::new(
        ports,
        Controls {
            seats: control.clone(),
            charge: control.clone(),
            spend: control,
        },
        policy,
    )
}

fn controls() -> Vec<Control> {
    vec![
        Control::optimistic("optimistic"),
        Control::pessimistic("pessimistic"),
        Control::atomic("atomic"),
        Control::retrying("optimistic-retry", concert_domain::RetryPolicy::default()),
        Control::locked("local", Arc::new(LocalLock::new()), LockOptions::default()),
    ]
}

async fn outbox_types(env: &Env) -> Vec<String> {
    env.sql
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

// ------------------------------------------------------------------ seats

#[tokio::test]
async fn seats_are_found_by_number_locked_by_id_and_saved_under_their_version() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let found = uow
        .seats()
        .find(s, &[n(9), n(2), n(9), n(5)])
        .await
        .unwrap();
    assert_eq!(numbers(&found), [2, 5, 9]);
    assert!(found.iter().all(|seat| seat.state == SeatState::Available
        && seat.version == 0
        && seat.price.get() == 500
        && seat.schedule == s));
    assert!(uow.seats().find(s, &[]).await.unwrap().is_empty());
    assert!(
        uow.seats()
            .find(ScheduleId::from(9_999), &[n(1)])
            .await
            .unwrap()
            .is_empty()
    );

    let until = t0() + mins(5);
    let held = found[0].hold(user(1), t0(), until).unwrap().seat;
    assert_eq!(held.version, 1);
    uow.seats().save(&held).await.unwrap();
    // Written again from the same read: the stored version moved on.
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(env.sql.seat(s, n(2)).await.unwrap(), Some(held.clone()));

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.seats().lock(held.id).await.unwrap(), Some(held.clone()));
    assert_eq!(
        uow.seats()
            .lock(concert_domain::SeatId::from(999_999))
            .await
            .unwrap(),
        None
    );
    let sold = Seat {
        state: SeatState::Sold,
        version: 2,
        ..held.clone()
    };
    uow.seats().save(&sold).await.unwrap();
    let freed = sold.release();
    uow.seats().save(&freed).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.seat(s, n(2)).await.unwrap(), Some(freed));
    // version 0 cannot have been read
    let mut uow = begin(&env, Protection::Optimistic).await;
    let zero = Seat { version: 0, ..held };
    assert!(matches!(
        uow.seats().save(&zero).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;
}

#[tokio::test]
async fn optimistic_units_that_read_the_same_version_conflict_on_the_second_save() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    env.sql.set_balance(user(1), 1_000).await.unwrap();

    let mut a = begin(&env, Protection::Optimistic).await;
    let mut b = begin(&env, Protection::Optimistic).await;
    let seat_a = a.seats().find(s, &[n(1)]).await.unwrap().remove(0);
    let seat_b = b.seats().find(s, &[n(1)]).await.unwrap().remove(0);
    let wallet_a = a.wallets().find(user(1)).await.unwrap().unwrap();
    let wallet_b = b.wallets().find(user(1)).await.unwrap().unwrap();
    assert_eq!((seat_a.version, wallet_a.version), (0, 1));
    assert_eq!((seat_b.version, wallet_b.version), (0, 1));

    let held_a = seat_a.hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    let charged_a = wallet_a.apply(PointChange::Charge(pts(100))).unwrap();
    a.seats().save(&held_a).await.unwrap();
    a.wallets().save(&charged_a).await.unwrap();
    a.commit().await.unwrap();

    let held_b = seat_b.hold(user(2), t0(), t0() + mins(5)).unwrap().seat;
    assert!(matches!(
        b.seats().save(&held_b).await,
        Err(Failure::Conflict)
    ));
    let used_b = wallet_b.apply(PointChange::Use(pts(100))).unwrap();
    assert!(matches!(
        b.wallets().save(&used_b).await,
        Err(Failure::Conflict)
    ));
    b.rollback().await;

    assert_eq!(env.sql.seat(s, n(1)).await.unwrap(), Some(held_a));
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(charged_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_reads_wait_for_the_holder_and_see_what_it_committed() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    env.sql.set_balance(user(1), 1_000).await.unwrap();

    let mut a = begin(&env, Protection::Pessimistic).await;
    let seats = a.seats().find(s, &[n(4), n(3)]).await.unwrap();
    let wallet = a.wallets().find(user(1)).await.unwrap().unwrap();

    // A plain (optimistic) read does not wait: it sees the last commit.
    let mut reader = begin(&env, Protection::Optimistic).await;
    assert_eq!(reader.seats().find(s, &[n(3)]).await.unwrap()[0].version, 0);
    assert_eq!(
        reader
            .wallets()
            .find(user(1))
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    reader.rollback().await;

    // A locking read of the same rows waits for A.
    let store = env.store.clone();
    let b = tokio::spawn(async move {
        let mut b = store.begin(Protection::Pessimistic).await?;
        let seat = b.seats().find(s, &[n(3)]).await?;
        let wallet = b.wallets().find(user(1)).await?;
        b.rollback().await;
        Ok::<_, Failure>((seat, wallet))
    });
    env.sql.until_blocked("FOR UPDATE").await.unwrap();

    let held = seats[0].hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    let charged = wallet.apply(PointChange::Charge(pts(500))).unwrap();
    a.seats().save(&held).await.unwrap();
    a.wallets().save(&charged).await.unwrap();
    a.commit().await.unwrap();

    let (seat, wallet) = b.await.unwrap().unwrap();
    assert_eq!(seat, vec![held]);
    assert_eq!(wallet, Some(charged));
}

#[tokio::test]
async fn fenced_saves_refuse_a_newer_token_and_record_their_own() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let seat_key = LockKey::seat(s, n(4));
    env.sql.set_seat_fence_token(s, n(4), 5).await.unwrap();

    // A stale holder (token 4): refused when it reads and when it writes,
    // nothing written.
    let seat = env.sql.seat(s, n(4)).await.unwrap().unwrap();
    let held = seat.hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(4))).await;
    assert!(matches!(
        uow.seats().find(s, &[n(4)]).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(4))).await;
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    // A lost fence is refused at the read even with a newer token.
    let lost = Fence::new(9);
    lost.mark_lost();
    let mut uow = begin(&env, fenced(seat_key.clone(), &lost)).await;
    assert!(matches!(
        uow.seats().find(s, &[n(4)]).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    assert_eq!(env.sql.seat_fence_token(s, n(4)).await.unwrap(), 5);
    assert_eq!(env.sql.seat(s, n(4)).await.unwrap().unwrap().version, 0);

    // A newer holder (token 7): written, token recorded.
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(7))).await;
    uow.seats().save(&held).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.seat_fence_token(s, n(4)).await.unwrap(), 7);
    assert_eq!(env.sql.seat(s, n(4)).await.unwrap(), Some(held.clone()));

    // The same token writes again; a stale version under a valid fence is
    // a conflict, not a lost lock.
    let mut uow = begin(&env, fenced(seat_key.clone(), &Fence::new(7))).await;
    assert!(matches!(
        uow.seats().save(&held).await,
        Err(Failure::Conflict)
    ));
    let sold = Seat {
        state: SeatState::Sold,
        version: 2,
        ..held.clone()
    };
    uow.seats().save(&sold).await.unwrap();
    uow.commit().await.unwrap();

    // A seat without a fence of its own is only version-checked.
    let other = LockKey::seat(s, n(9));
    let mut uow = begin(&env, fenced(other, &Fence::new(1))).await;
    let freed = sold.release();
    uow.seats().save(&freed).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.seat_fence_token(s, n(4)).await.unwrap(), 7);
    assert_eq!(env.sql.seat(s, n(4)).await.unwrap(), Some(freed));

    // Wallets alike.
    env.sql.set_balance(user(3), 1_000).await.unwrap();
    env.sql.set_wallet_fence_token(user(3), 10).await.unwrap();
    let wallet_key = LockKey::wallet(user(3));
    let mut uow = begin(&env, fenced(wallet_key.clone(), &Fence::new(9))).await;
    let wallet = uow.wallets().find(user(3)).await.unwrap().unwrap();
    let used = wallet.apply(PointChange::Use(pts(100))).unwrap();
    assert!(matches!(
        uow.wallets().save(&used).await,
        Err(Failure::LockLost)
    ));
    uow.rollback().await;
    let mut uow = begin(&env, fenced(wallet_key.clone(), &Fence::new(11))).await;
    uow.wallets().save(&used).await.unwrap();
    assert!(matches!(
        uow.wallets().save(&used).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(env.sql.wallet_fence_token(user(3)).await.unwrap(), 11);
    assert_eq!(env.store.wallet(user(3)).await.unwrap(), Some(used));
    let mut uow = begin(&env, fenced(LockKey::wallet(user(4)), &Fence::new(1))).await;
    let again = used.apply(PointChange::Use(pts(100))).unwrap();
    uow.wallets().save(&again).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.wallet_fence_token(user(3)).await.unwrap(), 11);
}

#[tokio::test]
async fn a_unit_whose_fence_is_lost_commits_nothing() {
    let env = env().await;
    env.sql.set_balance(user(1), 1_000).await.unwrap();
    let fence = Fence::new(10);
    let mut uow = begin(&env, fenced(LockKey::wallet(user(1)), &fence)).await;
    let wallet = uow.wallets().find(user(1)).await.unwrap().unwrap();
    let used = wallet.apply(PointChange::Use(pts(300))).unwrap();
    uow.wallets().save(&used).await.unwrap();
    uow.wallets()
        .append(&NewHistoryEntry {
            user: user(1),
            change: PointChange::Use(pts(300)),
            balance_after: used.balance,
            at: t0(),
        })
        .await
        .unwrap();
    uow.outbox()
        .record(&[Event::points(
            user(1),
            PointChange::Use(pts(300)),
            used.balance,
            None,
            t0(),
        )])
        .await
        .unwrap();
    fence.mark_lost();
    assert!(matches!(uow.commit().await, Err(Failure::LockLost)));

    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(wallet));
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), 1);
    assert_eq!(env.sql.wallet_fence_token(user(1)).await.unwrap(), 0);
    assert_eq!(env.sql.outbox_count().await.unwrap(), 0);
}

#[tokio::test]
async fn hold_if_free_takes_a_free_or_ended_seat_in_one_write() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let mut uow = begin(&env, Protection::Atomic).await;
    let until = t0() + mins(5);
    assert!(
        uow.seats()
            .hold_if_free(s, n(1), user(1), t0(), until)
            .await
            .unwrap()
    );
    // held and live: refused, for anyone
    for who in [user(1), user(2)] {
        assert!(
            !uow.seats()
                .hold_if_free(s, n(1), who, t0(), until)
                .await
                .unwrap()
        );
    }
    // the hold ended at or before now: taken over
    assert!(
        uow.seats()
            .hold_if_free(s, n(1), user(2), until, until + mins(5))
            .await
            .unwrap()
    );
    // unknown seat
    assert!(
        !uow.seats()
            .hold_if_free(ScheduleId::from(9_999), n(1), user(1), t0(), until)
            .await
            .unwrap()
    );
    uow.commit().await.unwrap();
    let seat = env.sql.seat(s, n(1)).await.unwrap().unwrap();
    assert_eq!(
        (seat.state, seat.version),
        (
            SeatState::Held {
                by: user(2),
                until: until + mins(5)
            },
            2
        )
    );

    // sold: refused
    let mut uow = begin(&env, Protection::Atomic).await;
    let sold = Seat {
        state: SeatState::Sold,
        version: 3,
        ..seat
    };
    uow.seats().save(&sold).await.unwrap();
    assert!(
        !uow.seats()
            .hold_if_free(s, n(1), user(3), until + mins(60), until + mins(65))
            .await
            .unwrap()
    );
    uow.commit().await.unwrap();
    assert_eq!(env.sql.seat(s, n(1)).await.unwrap(), Some(sold));
}

#[tokio::test]
async fn release_expired_frees_only_ended_holds() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let ended = hold(&env, s, n(1), user(1), t0()).await;
    let live = hold(&env, s, n(2), user(2), t0() + mins(5)).await;
    let free = env.sql.seat(s, n(3)).await.unwrap().unwrap();

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.seats().release_expired(&[], t0()).await.unwrap(), 0);
    let freed = uow
        .seats()
        .release_expired(&[ended.seat, live.seat, free.id], t0())
        .await
        .unwrap();
    assert_eq!(freed, 1);
    uow.commit().await.unwrap();
    let seat1 = env.sql.seat(s, n(1)).await.unwrap().unwrap();
    assert_eq!((seat1.state, seat1.version), (SeatState::Available, 2));
    let seat2 = env.sql.seat(s, n(2)).await.unwrap().unwrap();
    assert_eq!(seat2.version, 1);
    assert!(matches!(seat2.state, SeatState::Held { .. }));
    assert_eq!(env.sql.seat(s, n(3)).await.unwrap(), Some(free));
}

// ----------------------------------------------------------- reservations

#[tokio::test]
async fn reservations_are_recorded_found_and_written_by_status() {
    let env = env().await;
    let s = schedule(&env, 700).await;
    let until = t0() + mins(5);
    let r = hold(&env, s, n(8), user(5), until).await;
    assert_eq!(
        (
            r.schedule,
            r.seat_number,
            r.user,
            r.price.get(),
            r.status,
            r.expires_at
        ),
        (s, n(8), user(5), 700, ReservationStatus::Held, until)
    );

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.reservations().find(r.id).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        uow.reservations()
            .find(ReservationId::from(999_999))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        uow.reservations().held_for_seat(r.seat).await.unwrap(),
        Some(r.clone())
    );
    // compare-and-set of the status
    let confirmed = r.confirm();
    assert!(matches!(
        uow.reservations()
            .save(&confirmed, ReservationStatus::Expired)
            .await,
        Err(Failure::Conflict)
    ));
    uow.reservations()
        .save(&confirmed, ReservationStatus::Held)
        .await
        .unwrap();
    // written in this unit: seen by it
    assert_eq!(
        uow.reservations().find(r.id).await.unwrap(),
        Some(confirmed.clone())
    );
    assert_eq!(
        uow.reservations().held_for_seat(r.seat).await.unwrap(),
        None
    );
    assert!(matches!(
        uow.reservations()
            .save(&confirmed, ReservationStatus::Held)
            .await,
        Err(Failure::Conflict)
    ));
    let refunded = confirmed.refund();
    uow.reservations()
        .save(&refunded, ReservationStatus::Confirmed)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        env.sql.reservations_of_seat(s, n(8)).await.unwrap(),
        vec![refunded]
    );

    // every status the domain knows is storable
    let r2 = hold(&env, s, n(9), user(5), until).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let cancelled = r2.cancel(user(5), t0()).unwrap().unwrap();
    uow.reservations()
        .save(&cancelled, ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(
        env.store.reservation(r2.id).await.unwrap().unwrap().status,
        ReservationStatus::Cancelled
    );
}

#[tokio::test]
async fn a_seat_never_has_two_live_reservations() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let first = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let seat = env.sql.seat(s, n(1)).await.unwrap().unwrap();
    let twin = NewReservation::for_seat(&seat, user(2), t0(), t0() + mins(5));

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert!(matches!(
        uow.reservations().insert(&twin).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;

    // confirmed is live too
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&first.confirm(), ReservationStatus::Held)
        .await
        .unwrap();
    assert!(matches!(
        uow.reservations().insert(&twin).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;

    // an expired one is not
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&first.expire(), ReservationStatus::Held)
        .await
        .unwrap();
    let second = uow.reservations().insert(&twin).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.live_reservations(s, n(1)).await.unwrap(), 1);
    let stored = env.sql.reservations_of_seat(s, n(1)).await.unwrap();
    assert_eq!(stored, vec![first.expire(), second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holds_of_counts_live_holds_and_serializes_one_users_holds() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let other = schedule(&env, 500).await;
    hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    hold(&env, s, n(2), user(1), t0()).await; // ended
    hold(&env, s, n(3), user(2), t0() + mins(5)).await; // another user
    hold(&env, other, n(1), user(1), t0() + mins(5)).await; // another schedule
    let expired = hold(&env, s, n(4), user(1), t0() + mins(5)).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&expired.expire(), ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut a = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        a.reservations()
            .lock_holds_of(user(1), s, t0())
            .await
            .unwrap(),
        1
    );
    // a first hold of a user: the lock row is created
    let mut c = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        c.reservations()
            .lock_holds_of(user(9), s, t0())
            .await
            .unwrap(),
        0
    );
    c.commit().await.unwrap();

    // a second unit of the same user and schedule waits for A, then counts
    // what A added
    let store = env.store.clone();
    let b = tokio::spawn(async move {
        let mut b = store.begin(Protection::Optimistic).await?;
        let live = b.reservations().lock_holds_of(user(1), s, t0()).await?;
        b.rollback().await;
        Ok::<_, Failure>(live)
    });
    env.sql
        .until_blocked("INSERT INTO hold_locks")
        .await
        .unwrap();
    let seat = a.seats().find(s, &[n(5)]).await.unwrap().remove(0);
    let held = seat.hold(user(1), t0(), t0() + mins(5)).unwrap().seat;
    a.seats().save(&held).await.unwrap();
    a.reservations()
        .insert(&NewReservation::for_seat(
            &held,
            user(1),
            t0(),
            t0() + mins(5),
        ))
        .await
        .unwrap();
    a.commit().await.unwrap();
    assert_eq!(b.await.unwrap().unwrap(), 2);
}

#[tokio::test]
async fn stale_and_expire_find_and_mark_ended_holds_only() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let old = hold(&env, s, n(1), user(1), t0() - mins(10)).await;
    let older = hold(&env, s, n(2), user(2), t0() - mins(20)).await;
    let at_now = hold(&env, s, n(3), user(3), t0()).await;
    let live = hold(&env, s, n(4), user(4), t0() + mins(1)).await;
    let paid = hold(&env, s, n(5), user(5), t0() - mins(30)).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.reservations()
        .save(&paid.confirm(), ReservationStatus::Held)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let mut uow = begin(&env, Protection::Optimistic).await;
    let stale = uow.reservations().stale(t0(), 10).await.unwrap();
    let ids: Vec<_> = stale.iter().map(|r| r.id).collect();
    assert_eq!(ids, [older.id, old.id, at_now.id]);
    let first_two = uow.reservations().stale(t0(), 2).await.unwrap();
    assert_eq!(first_two, stale[..2].to_vec());
    assert!(
        uow.reservations()
            .stale(t0() - mins(60), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        uow.reservations()
            .expire(&[], t0())
            .await
            .unwrap()
            .is_empty()
    );
    let marked = uow
        .reservations()
        .expire(&[old.id, live.id, paid.id, at_now.id], t0())
        .await
        .unwrap();
    assert_eq!(marked, [old.id, at_now.id]);
    // marked already: not again
    assert!(
        uow.reservations()
            .expire(&[old.id], t0())
            .await
            .unwrap()
            .is_empty()
    );
    uow.commit().await.unwrap();
    let status = |r: &concert_domain::Reservation| {
        let store = env.store.clone();
        let id = r.id;
        async move { store.reservation(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(&old).await, ReservationStatus::Expired);
    assert_eq!(status(&at_now).await, ReservationStatus::Expired);
    assert_eq!(status(&older).await, ReservationStatus::Held);
    assert_eq!(status(&live).await, ReservationStatus::Held);
    assert_eq!(status(&paid).await, ReservationStatus::Confirmed);
}

// ---------------------------------------------------------------- wallets

#[tokio::test]
async fn wallets_are_created_once_saved_and_appended_to() {
    let env = env().await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.wallets().find(user(1)).await.unwrap(), None);
    uow.wallets().create(user(1)).await.unwrap();
    uow.wallets().create(user(1)).await.unwrap();
    let empty = uow.wallets().find(user(1)).await.unwrap().unwrap();
    assert_eq!(empty, Wallet::empty(user(1)));
    let charged = empty.apply(PointChange::Charge(pts(700))).unwrap();
    uow.wallets().save(&charged).await.unwrap();
    uow.wallets()
        .append(&NewHistoryEntry {
            user: user(1),
            change: PointChange::Charge(pts(700)),
            balance_after: 700,
            at: t0(),
        })
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(charged));
    let history = env.store.history(user(1)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (
            history[0].kind,
            history[0].amount,
            history[0].balance_after,
            history[0].created_at
        ),
        (PointKind::Charge, 700, 700, t0())
    );
    // a wallet never charged does not exist
    assert_eq!(env.store.wallet(user(2)).await.unwrap(), None);
}

/// `save_at_commit`: the wallet is written by the commit, in its round
/// trip; a stale version fails the commit with `Conflict`, a stale fence
/// with `LockLost`, and then nothing of the unit is committed (its history
/// line and events included).
#[tokio::test]
async fn a_wallet_saved_at_commit_is_checked_by_the_commit() {
    let env = env().await;
    env.sql.set_balance(user(1), 1_000).await.unwrap();
    let line = |balance_after| NewHistoryEntry {
        user: user(1),
        change: PointChange::Use(pts(100)),
        balance_after,
        at: t0(),
    };
    let event = |balance| Event::points(user(1), PointChange::Use(pts(100)), balance, None, t0());

    // written with the commit
    let mut uow = begin(&env, Protection::Pessimistic).await;
    let read = uow.wallets().find(user(1)).await.unwrap().unwrap();
    let used = read.apply(PointChange::Use(pts(100))).unwrap();
    uow.wallets().save_at_commit(&used).await.unwrap();
    uow.wallets().append(&line(900)).await.unwrap();
    uow.outbox().record(&[event(900)]).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(used));
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), 2);
    let outbox = env.sql.outbox_count().await.unwrap();

    // a stale version: the commit refuses, nothing is written
    let mut uow = begin(&env, Protection::Optimistic).await;
    let stale = read.apply(PointChange::Use(pts(100))).unwrap();
    uow.wallets().save_at_commit(&stale).await.unwrap();
    uow.wallets().append(&line(900)).await.unwrap();
    uow.outbox().record(&[event(900)]).await.unwrap();
    assert!(matches!(uow.commit().await, Err(Failure::Conflict)));
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(used));
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), 2);
    assert_eq!(env.sql.outbox_count().await.unwrap(), outbox);

    // a stale fence: LockLost, nothing written; a newer one writes and
    // records its token
    env.sql.set_wallet_fence_token(user(1), 10).await.unwrap();
    let key = LockKey::wallet(user(1));
    let next = used.apply(PointChange::Use(pts(100))).unwrap();
    let mut uow = begin(&env, fenced(key.clone(), &Fence::new(9))).await;
    uow.wallets().save_at_commit(&next).await.unwrap();
    uow.wallets().append(&line(800)).await.unwrap();
    assert!(matches!(uow.commit().await, Err(Failure::LockLost)));
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(used));
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), 2);
    let mut uow = begin(&env, fenced(key, &Fence::new(11))).await;
    uow.wallets().save_at_commit(&next).await.unwrap();
    uow.wallets().append(&line(800)).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(next));
    assert_eq!(env.sql.wallet_fence_token(user(1)).await.unwrap(), 11);
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), 3);
    // the connection is fine after a refused commit
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(uow.wallets().find(user(1)).await.unwrap(), Some(next));
    uow.rollback().await;
}

/// `write` applies and checks what the unit held back without committing,
/// and the rows written stay locked until the unit ends. The next holder of
/// the same fencing token (a relay's hand-over) reads the written wallet
/// from memory at once, and its own write waits for the first unit's end:
/// after that unit's commit it applies on top; after its rollback it is
/// refused as a conflict, and the next read sees the rolled-back state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_unit_keeps_its_rows_until_it_ends_and_the_next_holder_waits_for_that() {
    let env = env().await;
    let key = LockKey::wallet(user(1));
    let use_100 = |w: Wallet| w.apply(PointChange::Use(pts(100))).unwrap();
    let line = |balance_after| NewHistoryEntry {
        user: user(1),
        change: PointChange::Use(pts(100)),
        balance_after,
        at: t0(),
    };
    for (token, commit) in [(7, true), (8, false)] {
        let fence = Fence::new(token);
        env.sql.set_balance(user(1), 1_000).await.unwrap();
        let before = env.store.wallet(user(1)).await.unwrap().unwrap();
        let lines = env.sql.history_count(user(1)).await.unwrap();

        let mut first = begin(&env, fenced(key.clone(), &fence)).await;
        let read = first.wallets().find(user(1)).await.unwrap().unwrap();
        assert_eq!(read, before);
        first
            .wallets()
            .save_at_commit(&use_100(read))
            .await
            .unwrap();
        first.wallets().append(&line(900)).await.unwrap();
        first.write().await.unwrap();
        // written, not committed: others still read the state before
        assert_eq!(env.store.wallet(user(1)).await.unwrap(), Some(before));

        let mut next = begin(&env, fenced(key.clone(), &fence)).await;
        let seen = next.wallets().find(user(1)).await.unwrap().unwrap();
        assert_eq!(seen, use_100(before), "read from memory");
        next.wallets().save_at_commit(&use_100(seen)).await.unwrap();
        next.wallets().append(&line(800)).await.unwrap();
        let next = tokio::spawn(async move { next.commit().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!next.is_finished(), "the next write waits for the row");

        let balance = || async { env.store.wallet(user(1)).await.unwrap().unwrap().balance };
        if commit {
            first.commit().await.unwrap();
            next.await.unwrap().unwrap();
            assert_eq!(balance().await, 800);
            assert_eq!(env.sql.history_count(user(1)).await.unwrap(), lines + 2);
        } else {
            first.rollback().await;
            assert!(matches!(next.await.unwrap(), Err(Failure::Conflict)));
            assert_eq!(balance().await, 1_000);
            assert_eq!(env.sql.history_count(user(1)).await.unwrap(), lines);
            // the memory forgot it: the next holder reads the row
            let mut again = begin(&env, fenced(key.clone(), &fence)).await;
            assert_eq!(again.wallets().find(user(1)).await.unwrap(), Some(before));
            again.rollback().await;
        }
    }
    // a written unit rolled back with nobody behind it: the memory forgets
    // what it wrote
    let fence = Fence::new(9);
    let before = env.store.wallet(user(1)).await.unwrap().unwrap();
    let mut unit = begin(&env, fenced(key.clone(), &fence)).await;
    let read = unit.wallets().find(user(1)).await.unwrap().unwrap();
    unit.wallets().save_at_commit(&use_100(read)).await.unwrap();
    unit.write().await.unwrap();
    unit.rollback().await;
    let mut again = begin(&env, fenced(key, &fence)).await;
    assert_eq!(again.wallets().find(user(1)).await.unwrap(), Some(before));
    again.rollback().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creators_of_one_wallet_queue_and_neither_fails() {
    let env = env().await;
    let mut a = begin(&env, Protection::Optimistic).await;
    a.wallets().create(user(1)).await.unwrap();
    let store = env.store.clone();
    let b = tokio::spawn(async move {
        let mut b = store.begin(Protection::Pessimistic).await?;
        b.wallets().create(user(1)).await?;
        let wallet = b.wallets().find(user(1)).await?;
        b.commit().await?;
        Ok::<_, Failure>(wallet)
    });
    env.sql.until_blocked("INSERT INTO wallets").await.unwrap();
    let w = a.wallets().find(user(1)).await.unwrap().unwrap();
    a.wallets()
        .save(&w.apply(PointChange::Charge(pts(5))).unwrap())
        .await
        .unwrap();
    a.commit().await.unwrap();
    let seen = b.await.unwrap().unwrap().unwrap();
    assert_eq!((seen.balance, seen.version), (5, 1));
}

#[tokio::test]
async fn change_atomically_applies_the_rule_in_one_write_or_writes_nothing() {
    let env = env().await;
    env.sql.set_balance(user(1), 1_000).await.unwrap(); // version 1, 1 history line
    let mut uow = begin(&env, Protection::Atomic).await;
    let wallets = uow.wallets();
    assert_eq!(
        wallets
            .change_atomically(user(1), PointChange::Use(pts(400)), t0())
            .await
            .unwrap(),
        Some(600)
    );
    assert_eq!(
        wallets
            .change_atomically(user(1), PointChange::Use(pts(601)), t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        wallets
            .change_atomically(user(1), PointChange::Use(pts(600)), t0())
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        wallets
            .change_atomically(user(2), PointChange::Charge(pts(1)), t0())
            .await
            .unwrap(),
        None,
        "no wallet"
    );
    uow.commit().await.unwrap();
    let wallet = env.store.wallet(user(1)).await.unwrap().unwrap();
    assert_eq!((wallet.balance, wallet.version), (0, 3));
    let history = env.store.history(user(1)).await.unwrap();
    let lines: Vec<_> = history
        .iter()
        .map(|h| (h.kind, h.amount, h.balance_after))
        .collect();
    assert_eq!(
        lines,
        [
            (PointKind::Use, 600, 0),
            (PointKind::Use, 400, 600),
            (PointKind::Charge, 1_000, 1_000)
        ]
    );
    assert_eq!(env.store.wallet(user(2)).await.unwrap(), None);

    // charges stop at the maximum balance; refunds always come back
    let max = concert_domain::MAX_BALANCE;
    env.sql.set_balance(user(3), max - 10).await.unwrap();
    let mut uow = begin(&env, Protection::Atomic).await;
    let wallets = uow.wallets();
    assert_eq!(
        wallets
            .change_atomically(user(3), PointChange::Charge(pts(11)), t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        wallets
            .change_atomically(user(3), PointChange::Charge(pts(10)), t0())
            .await
            .unwrap(),
        Some(max)
    );
    assert_eq!(
        wallets
            .change_atomically(user(3), PointChange::Refund(pts(500)), t0())
            .await
            .unwrap(),
        Some(max + 500)
    );
    uow.commit().await.unwrap();
    assert_eq!(env.sql.history_count(user(3)).await.unwrap(), 3);
    let latest = &env.store.history(user(3)).await.unwrap()[0];
    assert_eq!(
        (latest.kind, latest.amount, latest.balance_after),
        (PointKind::Refund, 500, max + 500)
    );
}

// --------------------------------------------------------------- payments

#[tokio::test]
async fn one_payment_per_reservation_and_its_status_is_compared_and_set() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let r = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let new = NewPayment {
        reservation: r.id,
        user: user(1),
        amount: pts(500),
        paid_at: t0(),
    };
    let mut uow = begin(&env, Protection::Optimistic).await;
    let paid = uow.payments().insert(&new).await.unwrap();
    assert_eq!(
        (
            paid.reservation,
            paid.user,
            paid.amount,
            paid.paid_at,
            paid.status
        ),
        (r.id, user(1), pts(500), t0(), PaymentStatus::Paid)
    );
    assert!(matches!(
        uow.payments().insert(&new).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;
    assert_eq!(env.sql.payment_count().await.unwrap(), 0);

    let mut uow = begin(&env, Protection::Optimistic).await;
    let paid = uow.payments().insert(&new).await.unwrap();
    uow.commit().await.unwrap();
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert!(matches!(
        uow.payments().insert(&new).await,
        Err(Failure::Conflict)
    ));
    uow.rollback().await;

    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.payments().find(paid.id).await.unwrap(),
        Some(paid.clone())
    );
    assert_eq!(
        uow.payments().find(PaymentId::from(999_999)).await.unwrap(),
        None
    );
    let refunded = concert_domain::Payment {
        status: PaymentStatus::Refunded,
        ..paid.clone()
    };
    uow.payments()
        .save(&refunded, PaymentStatus::Paid)
        .await
        .unwrap();
    assert!(matches!(
        uow.payments().save(&refunded, PaymentStatus::Paid).await,
        Err(Failure::Conflict)
    ));
    uow.commit().await.unwrap();
    assert_eq!(
        env.sql.payments_of_reservation(r.id).await.unwrap(),
        vec![refunded.clone()]
    );
    assert_eq!(env.store.payment(paid.id).await.unwrap(), Some(refunded));
}

// ------------------------------------------------------------ idempotency

#[tokio::test]
async fn a_key_is_new_then_done_and_refuses_another_request() {
    let env = env().await;
    let long = "k".repeat(IdempotencyKey::MAX_LEN);
    for k in ["order-1", long.as_str()] {
        let k = key(k);
        let mut uow = begin(&env, Protection::Optimistic).await;
        let idem = uow.idempotency();
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::New
        );
        idem.complete(user(1), KeyScope::Charge, &k, Stored::Balance(105))
            .await
            .unwrap();
        uow.commit().await.unwrap();

        let mut uow = begin(&env, Protection::Optimistic).await;
        let idem = uow.idempotency();
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::Done(Stored::Balance(105))
        );
        assert_eq!(
            idem.claim(user(1), KeyScope::Charge, &k, "amount=6")
                .await
                .unwrap(),
            Claim::Mismatch
        );
        // other scope, other user: other keys
        assert_eq!(
            idem.claim(user(1), KeyScope::Payment, &k, "reservation=1")
                .await
                .unwrap(),
            Claim::New
        );
        idem.complete(
            user(1),
            KeyScope::Payment,
            &k,
            Stored::Payment(PaymentId::from(4)),
        )
        .await
        .unwrap();
        assert_eq!(
            idem.claim(user(2), KeyScope::Charge, &k, "amount=5")
                .await
                .unwrap(),
            Claim::New
        );
        uow.commit().await.unwrap();
        let mut uow = begin(&env, Protection::Optimistic).await;
        assert_eq!(
            uow.idempotency()
                .claim(user(1), KeyScope::Payment, &k, "reservation=1")
                .await
                .unwrap(),
            Claim::Done(Stored::Payment(PaymentId::from(4)))
        );
        uow.rollback().await;
    }
    // keys are compared byte for byte
    let mut uow = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        uow.idempotency()
            .claim(user(1), KeyScope::Charge, &key("ORDER-1"), "amount=5")
            .await
            .unwrap(),
        Claim::New
    );
    // completing a key never claimed is a bug
    assert!(matches!(
        uow.idempotency()
            .complete(user(1), KeyScope::Charge, &key("never"), Stored::Balance(1))
            .await,
        Err(Failure::Unknown(_))
    ));
    uow.rollback().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_claim_waits_for_the_first_and_sees_its_outcome() {
    let env = env().await;
    let k = key("pay-7");
    let claim = |store: MysqlStore, k: IdempotencyKey| async move {
        let mut uow = store.begin(Protection::Optimistic).await?;
        let claim = uow
            .idempotency()
            .claim(user(1), KeyScope::Payment, &k, "reservation=7")
            .await?;
        uow.rollback().await;
        Ok::<_, Failure>(claim)
    };

    // The first claimer rolls back: the key is free again.
    let mut first = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        first
            .idempotency()
            .claim(user(1), KeyScope::Payment, &k, "reservation=7")
            .await
            .unwrap(),
        Claim::New
    );
    let second = tokio::spawn(claim(env.store.clone(), k.clone()));
    env.sql
        .until_blocked("INSERT INTO idempotency_keys")
        .await
        .unwrap();
    first.rollback().await;
    assert_eq!(second.await.unwrap().unwrap(), Claim::New);

    // The first claimer commits: the second sees its result.
    let mut first = begin(&env, Protection::Optimistic).await;
    assert_eq!(
        first
            .idempotency()
            .claim(user(1), KeyScope::Payment, &k, "reservation=7")
            .await
            .unwrap(),
        Claim::New
    );
    let second = tokio::spawn(claim(env.store.clone(), k.clone()));
    env.sql
        .until_blocked("INSERT INTO idempotency_keys")
        .await
        .unwrap();
    first
        .idempotency()
        .complete(
            user(1),
            KeyScope::Payment,
            &k,
            Stored::Payment(PaymentId::from(12)),
        )
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap().unwrap(),
        Claim::Done(Stored::Payment(PaymentId::from(12)))
    );
}

// ----------------------------------------------------------------- outbox

#[tokio::test]
async fn the_outbox_records_every_event_of_a_committed_unit_only() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let r = hold(&env, s, n(1), user(7), t0() + mins(5)).await;
    let events = vec![
        Event::seat_held(&r, t0()),
        Event::points(
            user(7),
            PointChange::Use(pts(500)),
            99_500,
            Some(PaymentId::from(3)),
            t0() + chrono::Duration::microseconds(1),
        ),
        Event::hold_cancelled(&r, t0()),
    ];

    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.outbox().record(&events).await.unwrap();
    uow.rollback().await;
    assert_eq!(env.sql.outbox_count().await.unwrap(), 0);

    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.outbox().record(&[]).await.unwrap();
    uow.outbox().record(&events).await.unwrap();
    uow.commit().await.unwrap();
    let rows = env.sql.outbox().await.unwrap();
    assert_eq!(rows.len(), 3);
    for (row, event) in rows.iter().zip(&events) {
        assert_eq!(row.event_type, event.kind.as_str());
        assert_eq!(row.stream, event.stream().as_str());
        assert_eq!(row.aggregate, event.aggregate());
        assert_eq!(row.payload, serde_json::to_string(&event.payload).unwrap());
        assert_eq!(row.created_at.and_utc(), event.payload.occurred_at);
        assert_eq!(row.published_at, None);
        assert!(uuid_v4(&row.event_id), "{}", row.event_id);
    }
    let mut ids: Vec<_> = rows.iter().map(|r| r.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        rows.iter()
            .map(|r| r.aggregate.as_str())
            .collect::<Vec<_>>(),
        [
            format!("reservation:{}", r.id).as_str(),
            "user:7",
            format!("reservation:{}", r.id).as_str()
        ]
    );

    // many events at once (more than the statements kept prepared)
    let many: Vec<_> = (0..20).map(|_| Event::hold_expired(&r, t0())).collect();
    let mut uow = begin(&env, Protection::Optimistic).await;
    uow.outbox().record(&many).await.unwrap();
    uow.commit().await.unwrap();
    assert_eq!(env.sql.outbox_count().await.unwrap(), 23);
}

fn uuid_v4(id: &str) -> bool {
    let groups: Vec<_> = id.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12]
        && id.as_bytes()[14] == b'4'
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

// ------------------------------------------------------ queries, catalogue

#[tokio::test]
async fn queries_answer_none_for_unknown_ids_and_list_newest_first() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let store = &env.store;
    assert_eq!(
        store.reservation(ReservationId::from(1)).await.unwrap(),
        None
    );
    assert_eq!(store.payment(PaymentId::from(1)).await.unwrap(), None);
    assert_eq!(store.wallet(user(1)).await.unwrap(), None);
    assert!(store.reservations_of(user(1)).await.unwrap().is_empty());
    assert!(store.history(user(1)).await.unwrap().is_empty());

    let a = hold(&env, s, n(1), user(1), t0() + mins(5)).await;
    let b = hold(&env, s, n(2), user(1), t0() + mins(5)).await;
    hold(&env, s, n(3), user(2), t0() + mins(5)).await;
    assert_eq!(store.reservation(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.reservations_of(user(1)).await.unwrap(), vec![b, a]);

    env.sql.set_balance(user(1), 100).await.unwrap();
    env.sql.set_balance(user(1), 40).await.unwrap();
    let history = store.history(user(1)).await.unwrap();
    let lines: Vec<_> = history
        .iter()
        .map(|h| (h.kind, h.amount, h.balance_after))
        .collect();
    assert_eq!(
        lines,
        [(PointKind::Use, 60, 40), (PointKind::Charge, 100, 100)]
    );
    assert!(history[0].id > history[1].id);
    assert_eq!(
        store.wallet(user(1)).await.unwrap(),
        Some(Wallet {
            user: user(1),
            balance: 40,
            version: 2
        })
    );
}

#[tokio::test]
async fn the_catalogue_lists_creates_and_counts_available_seats() {
    let env = env().await;
    let store = &env.store;
    assert!(store.concerts().await.unwrap().is_empty());
    assert_eq!(store.concert(ConcertId::from(1)).await.unwrap(), None);
    assert_eq!(store.schedule(ScheduleId::from(1)).await.unwrap(), None);
    assert_eq!(
        store.schedules(ConcertId::from(1), t0()).await.unwrap(),
        None
    );
    assert_eq!(store.seats(ScheduleId::from(1)).await.unwrap(), None);

    let night = store
        .create_concert(&Title::new("  Night  ").unwrap())
        .await
        .unwrap();
    assert_eq!(night.title, "Night");
    let day = store
        .create_concert(&Title::new("Day").unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.concerts().await.unwrap(),
        vec![night.clone(), day.clone()]
    );
    assert_eq!(store.concert(day.id).await.unwrap(), Some(day.clone()));
    assert_eq!(store.schedules(day.id, t0()).await.unwrap(), Some(vec![]));

    let prices: Vec<Points> = SeatNumber::all()
        .map(|s| pts(i64::from(s.get()) * 10))
        .collect();
    let new = |starts_at, concert| {
        NewSchedule::new(concert, starts_at, prices.clone(), t0() - mins(1)).unwrap()
    };
    let later = store
        .create_schedule(&new(t0() + mins(120), night.id))
        .await
        .unwrap()
        .unwrap();
    let sooner = store
        .create_schedule(&new(t0() + mins(60), night.id))
        .await
        .unwrap()
        .unwrap();
    let past = store
        .create_schedule(&new(t0(), night.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sooner.concert, sooner.starts_at),
        (night.id, t0() + mins(60))
    );
    assert_eq!(store.schedule(later.id).await.unwrap(), Some(later.clone()));
    assert_eq!(
        store
            .create_schedule(&new(t0() + mins(60), ConcertId::from(999_999)))
            .await
            .unwrap(),
        None
    );
    assert_eq!(env.sql.catalogue_size().await.unwrap(), (2, 3));

    let seats = store.seats(sooner.id).await.unwrap().unwrap();
    assert_eq!(seats.len(), 50);
    assert!(
        seats
            .iter()
            .all(|s| s.price.get() == u64::from(s.number.get()) * 10
                && s.state == SeatState::Available
                && s.version == 0)
    );
    assert_eq!(numbers(&seats), (1..=50).collect::<Vec<u8>>());

    // availability at `after`: a hold that ended counts as available
    hold(&env, sooner.id, n(1), user(1), t0() + mins(5)).await;
    hold(&env, sooner.id, n(2), user(1), t0()).await;
    let r = hold(&env, sooner.id, n(3), user(1), t0() + mins(5)).await;
    let mut uow = begin(&env, Protection::Optimistic).await;
    let seat = uow.seats().lock(r.seat).await.unwrap().unwrap();
    uow.seats()
        .save(&Seat {
            state: SeatState::Sold,
            version: seat.version + 1,
            ..seat
        })
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let summaries = store.schedules(night.id, t0()).await.unwrap().unwrap();
    let seen: Vec<_> = summaries
        .iter()
        .map(|s| (s.id, s.concert, s.starts_at, s.available_seats))
        .collect();
    assert_eq!(
        seen,
        [
            (sooner.id, night.id, t0() + mins(60), 48),
            (later.id, night.id, t0() + mins(120), 50)
        ]
    );
    assert!(!summaries.iter().any(|s| s.id == past.id));
    let at_hold_end = store
        .schedules(night.id, t0() + mins(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at_hold_end[0].available_seats, 49);
}

// ------------------------------------------------------------- migrations

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let env = env().await;
    let tables = || async {
        env.sql
            .tables()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t != "__diesel_schema_migrations")
            .collect::<Vec<_>>()
    };
    let all = [
        "concerts",
        "hold_locks",
        "idempotency_keys",
        "outbox",
        "payments",
        "point_history",
        "reservations",
        "schedules",
        "seats",
        "wallets",
    ];
    assert_eq!(tables().await, all);
    assert_eq!(concert_mysql::run_migrations(&env.url).await.unwrap(), 0);
    assert_eq!(
        concert_mysql::revert_all_migrations(&env.url)
            .await
            .unwrap(),
        4
    );
    assert!(tables().await.is_empty());
    assert_eq!(concert_mysql::run_migrations(&env.url).await.unwrap(), 4);
    assert_eq!(tables().await, all);
    // the schema works after the round trip
    let s = schedule(&env, 500).await;
    assert!(env.sql.seat(s, n(50)).await.unwrap().is_some());

    // databases are created if missing and dropped, idempotently
    let extra = env
        .url
        .with_database(&format!("{}_x", env.url.name()))
        .unwrap();
    concert_mysql::create_database_if_missing(&extra)
        .await
        .unwrap();
    concert_mysql::create_database_if_missing(&extra)
        .await
        .unwrap();
    concert_mysql::drop_database(&extra).await.unwrap();
    concert_mysql::drop_database(&extra).await.unwrap();
}

/// Runs `work` with a synchronous diesel connection on `url` (the
/// migration harness is synchronous).
async fn with_harness<T: Send + 'static>(
    url: &DatabaseUrl,
    work: impl FnOnce(
        &mut diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
            diesel_async::AsyncMysqlConnection,
        >,
    ) -> T
    + Send
    + 'static,
) -> T {
    use diesel::Connection;
    let url = url.as_str().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
            diesel_async::AsyncMysqlConnection,
        >::establish(&url)
        .expect("a synchronous connection");
        work(&mut conn)
    })
    .await
    .expect("the harness task")
}

#[tokio::test]
async fn the_newest_migration_reverts_with_round_two_data_and_redoes() {
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

    let env = env().await;
    let clock = TestClock::new();
    let svc = services(&env, Control::pessimistic("p"), Policy::default(), &clock);
    let s = schedule(&env, 500).await;
    env.sql.set_balance(user(1), 1_000).await.unwrap();
    let paid = svc
        .reservations
        .reserve(ReserveSeat {
            user: user(1),
            schedule: s,
            seat: n(1),
        })
        .await
        .unwrap();
    let payment = svc
        .payments
        .pay(PayReservation {
            user: user(1),
            reservation: paid.id,
            idempotency: Some(key(&"p".repeat(200))),
        })
        .await
        .unwrap();
    svc.payments.refund(user(1), payment.id).await.unwrap();
    let held = svc
        .reservations
        .reserve(ReserveSeat {
            user: user(1),
            schedule: s,
            seat: n(2),
        })
        .await
        .unwrap();
    svc.reservations.cancel(user(1), held.id).await.unwrap();
    assert!(env.sql.outbox_count().await.unwrap() > 0);

    let reverted = with_harness(&env.url, |c| {
        c.revert_last_migration(MIGRATIONS)
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    assert!(reverted.contains("000004"), "{reverted}");
    let tables = env.sql.tables().await.unwrap();
    assert!(!tables.iter().any(|t| t == "outbox" || t == "hold_locks"));
    // round 1 has no word for cancelled or refunded: both expired
    for number in [n(1), n(2)] {
        let statuses: Vec<_> = env
            .sql
            .reservations_of_seat(s, number)
            .await
            .unwrap()
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [ReservationStatus::Expired]);
    }
    // the refund line is a charge line; the balance story still adds up
    let kinds: Vec<_> = env
        .store
        .history(user(1))
        .await
        .unwrap()
        .iter()
        .map(|h| (h.kind, h.balance_after))
        .collect();
    assert_eq!(
        kinds,
        [
            (PointKind::Charge, 1_000),
            (PointKind::Use, 500),
            (PointKind::Charge, 1_000)
        ]
    );

    assert_eq!(concert_mysql::run_migrations(&env.url).await.unwrap(), 1);
    assert!(
        env.sql
            .tables()
            .await
            .unwrap()
            .iter()
            .any(|t| t == "outbox")
    );
    assert_eq!(env.sql.outbox_count().await.unwrap(), 0);
    // the redone schema takes round 2 data again
    let again = svc
        .reservations
        .reserve(ReserveSeat {
            user: user(1),
            schedule: s,
            seat: n(3),
        })
        .await
        .unwrap();
    svc.reservations.cancel(user(1), again.id).await.unwrap();
    assert_eq!(outbox_types(&env).await, ["SeatHeld", "HoldCancelled"]);
}

// ------------------------------------------------- failures and connections

#[tokio::test]
async fn a_killed_connection_is_unavailable_and_never_reused() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let mut uow = begin(&env, Protection::Pessimistic).await;
    assert!(env.sql.kill_other_connections().await.unwrap() >= 1);
    let outcome = uow.seats().find(s, &[n(1)]).await;
    assert!(
        matches!(outcome, Err(Failure::Unavailable(_))),
        "{outcome:?}"
    );
    uow.rollback().await;
    // every pooled connection the kill reached is gone: the next units get
    // fresh ones and work
    for _ in 0..3 {
        let mut uow = begin(&env, Protection::Pessimistic).await;
        assert_eq!(uow.seats().find(s, &[n(1)]).await.unwrap().len(), 1);
        uow.commit().await.unwrap();
    }
    assert!(env.store.db().ping().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_limits_end_row_lock_waits() {
    for (limit, conflict) in [
        (Duration::from_millis(2_500), true),
        (Duration::from_millis(400), false),
    ] {
        let env = env_with(PoolOptions {
            statement_timeout: Some(limit),
            ..options()
        })
        .await;
        env.sql.set_balance(user(1), 100).await.unwrap();
        let mut holder = begin(&env, Protection::Pessimistic).await;
        holder.wallets().find(user(1)).await.unwrap();
        let mut waiter = begin(&env, Protection::Pessimistic).await;
        let outcome = waiter.wallets().find(user(1)).await;
        if conflict {
            // innodb_lock_wait_timeout = 2 s < 2.5 s
            assert!(matches!(outcome, Err(Failure::Conflict)), "{outcome:?}");
        } else {
            // max_statement_time = 0.4 s < innodb_lock_wait_timeout = 1 s
            assert!(
                matches!(outcome, Err(Failure::Unavailable(_))),
                "{outcome:?}"
            );
        }
        waiter.rollback().await;
        holder.rollback().await;
    }
}

#[tokio::test]
async fn a_dropped_unit_releases_its_locks_and_writes_nothing() {
    let env = env_with(PoolOptions {
        statement_timeout: Some(Duration::from_millis(2_500)),
        ..options()
    })
    .await;
    env.sql.set_balance(user(1), 100).await.unwrap();
    let size = env.store.db().status().size;
    {
        let mut uow = begin(&env, Protection::Pessimistic).await;
        let w = uow.wallets().find(user(1)).await.unwrap().unwrap();
        uow.wallets()
            .save(&w.apply(PointChange::Use(pts(100))).unwrap())
            .await
            .unwrap();
        // dropped here, neither committed nor rolled back
    }
    // its connection left the pool
    assert_eq!(env.store.db().status().size, size);
    let mut uow = begin(&env, Protection::Pessimistic).await;
    let w = uow.wallets().find(user(1)).await.unwrap().unwrap();
    assert_eq!((w.balance, w.version), (100, 1));
    uow.rollback().await;
}

// ----------------------------------------------- domain services end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_pessimistic_uses_all_succeed_exactly() {
    let env = env().await;
    env.sql.set_balance(user(1), 100_000).await.unwrap();
    let clock = TestClock::new();
    let svc = services(
        &env,
        Control::pessimistic("pessimistic"),
        Policy::default(),
        &clock,
    );
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.points
                    .use_points(UsePoints {
                        user: user(1),
                        amount: pts(500),
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(
        env.store.wallet(user(1)).await.unwrap().unwrap().balance,
        50_000
    );
    let mut steps: Vec<u64> = env
        .store
        .history(user(1))
        .await
        .unwrap()
        .iter()
        .filter(|h| h.kind == PointKind::Use)
        .map(|h| h.balance_after)
        .collect();
    steps.sort_unstable();
    let expected: Vec<u64> = (0..100).map(|k| 50_000 + 500 * k).collect();
    assert_eq!(steps, expected);
    let events = env.sql.outbox().await.unwrap();
    assert_eq!(events.len(), 100);
    assert!(
        events
            .iter()
            .all(|e| e.event_type == "PointsUsed" && e.aggregate == "user:1")
    );
    let mut after: Vec<u64> = events
        .iter()
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            payload["balanceAfter"].as_u64().unwrap()
        })
        .collect();
    after.sort_unstable();
    assert_eq!(after, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_optimistic_uses_lose_races_but_never_points() {
    let env = env().await;
    env.sql.set_balance(user(1), 100_000).await.unwrap();
    let clock = TestClock::new();
    let svc = services(
        &env,
        Control::optimistic("optimistic"),
        Policy::default(),
        &clock,
    );
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.points
                    .use_points(UsePoints {
                        user: user(1),
                        amount: pts(500),
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(e, concert_domain::UseError::Failed(Failure::Conflict)),
                "{e:?}"
            ),
        }
    }
    assert!(ok >= 1);
    assert_eq!(
        env.store.wallet(user(1)).await.unwrap().unwrap().balance,
        100_000 - 500 * ok
    );
    assert_eq!(env.sql.history_count(user(1)).await.unwrap(), ok + 1);
    assert_eq!(env.sql.outbox_count().await.unwrap(), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_seat_has_one_winner_under_every_control() {
    let env = env().await;
    let clock = TestClock::new();
    for control in controls() {
        let name = control.name().to_owned();
        let s = schedule(&env, 500).await;
        let before = env.sql.outbox_count().await.unwrap();
        let svc = services(&env, control, Policy::default(), &clock);
        let tasks: Vec<_> = (1..=30)
            .map(|u| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    svc.reservations
                        .reserve(ReserveSeat {
                            user: user(u),
                            schedule: s,
                            seat: n(7),
                        })
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => winners += 1,
                Err(ReserveError::SeatUnavailable { .. })
                | Err(ReserveError::Failed(Failure::Conflict)) => {}
                Err(e) => panic!("{name}: {e:?}"),
            }
        }
        assert_eq!(winners, 1, "{name}");
        assert_eq!(
            env.sql.live_reservations(s, n(7)).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            env.sql.reservations_of_seat(s, n(7)).await.unwrap().len(),
            1,
            "{name}"
        );
        assert_eq!(env.sql.outbox_count().await.unwrap(), before + 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hold_limit_holds_under_concurrent_requests_of_one_user() {
    let env = env().await;
    let s = schedule(&env, 500).await;
    let clock = TestClock::new();
    let policy = Policy {
        max_holds_per_user: 2,
        ..Policy::default()
    };
    let svc = services(&env, Control::pessimistic("pessimistic"), policy, &clock);
    let tasks: Vec<_> = (1..=10)
        .map(|seat| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.reservations
                    .reserve(ReserveSeat {
                        user: user(1),
                        schedule: s,
                        seat: n(seat),
                    })
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ReserveError::HoldLimit { limit: 2 }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(env.sql.reservations_of_user(user(1)).await.unwrap(), 2);
}

#[tokio::test]
async fn pay_refund_cancel_and_expire_end_to_end_under_every_control() {
    let env = env().await;
    for control in controls() {
        let name = control.name().to_owned();
        let clock = TestClock::new();
        let s = schedule(&env, 500).await;
        let svc = services(&env, control, Policy::default(), &clock);
        let payer = user(100 + env.sql.catalogue_size().await.unwrap().1);
        let before = outbox_types(&env).await.len();

        let charge = ChargePoints {
            user: payer,
            amount: pts(2_000),
            idempotency: Some(key("top-up")),
        };
        assert_eq!(
            svc.points.charge(charge.clone()).await.unwrap().balance,
            2_000
        );
        assert_eq!(
            svc.points.charge(charge).await.unwrap().balance,
            2_000,
            "{name}"
        );

        let held = svc
            .reservations
            .reserve(ReserveSeat {
                user: payer,
                schedule: s,
                seat: n(1),
            })
            .await
            .unwrap();
        let pay = PayReservation {
            user: payer,
            reservation: held.id,
            idempotency: Some(key("pay-1")),
        };
        let payment = svc.payments.pay(pay.clone()).await.unwrap();
        assert_eq!(svc.payments.pay(pay).await.unwrap(), payment, "{name}");
        assert!(matches!(
            svc.payments
                .pay(PayReservation {
                    user: payer,
                    reservation: held.id,
                    idempotency: None
                })
                .await,
            Err(PayError::AlreadyPaid)
        ));
        assert_eq!(
            env.sql.seat(s, n(1)).await.unwrap().unwrap().state,
            SeatState::Sold,
            "{name}"
        );
        assert_eq!(
            env.store
                .reservation(held.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            ReservationStatus::Confirmed
        );
        assert_eq!(
            env.sql.payments_of_reservation(held.id).await.unwrap(),
            vec![payment.clone()]
        );
        assert_eq!(svc.points.balance(payer).await.unwrap().balance, 1_500);
        assert_eq!(env.sql.sold_seats_without_payment().await.unwrap(), 0);

        let refunded = svc.payments.refund(payer, payment.id).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded, "{name}");
        assert_eq!(svc.points.balance(payer).await.unwrap().balance, 2_000);
        assert_eq!(
            env.sql.seat(s, n(1)).await.unwrap().unwrap().state,
            SeatState::Available
        );
        assert_eq!(
            env.store
                .reservation(held.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            ReservationStatus::Refunded
        );

        let second = svc
            .reservations
            .reserve(ReserveSeat {
                user: payer,
                schedule: s,
                seat: n(2),
            })
            .await
            .unwrap();
        let cancelled = svc.reservations.cancel(payer, second.id).await.unwrap();
        assert_eq!(cancelled.status, ReservationStatus::Cancelled, "{name}");
        assert_eq!(
            env.sql.seat(s, n(2)).await.unwrap().unwrap().state,
            SeatState::Available
        );

        let third = svc
            .reservations
            .reserve(ReserveSeat {
                user: payer,
                schedule: s,
                seat: n(3),
            })
            .await
            .unwrap();
        clock.advance(mins(6));
        assert!(
            svc.reservations.expire_stale().await.unwrap() >= 1,
            "{name}"
        );
        assert_eq!(
            env.store
                .reservation(third.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            ReservationStatus::Expired
        );
        assert_eq!(
            env.sql.seat(s, n(3)).await.unwrap().unwrap().state,
            SeatState::Available
        );
        let history: Vec<_> = env
            .store
            .history(payer)
            .await
            .unwrap()
            .iter()
            .map(|h| (h.kind, h.balance_after))
            .collect();
        assert_eq!(
            history,
            [
                (PointKind::Refund, 2_000),
                (PointKind::Use, 1_500),
                (PointKind::Charge, 2_000)
            ],
            "{name}"
        );

        let types = outbox_types(&env).await[before..].to_vec();
        assert_eq!(
            types,
            [
                EventType::PointsCharged,
                EventType::SeatHeld,
                EventType::ReservationConfirmed,
                EventType::PointsUsed,
                EventType::PaymentCompleted,
                EventType::PaymentRefunded,
                EventType::ReservationRefunded,
                EventType::PointsRefunded,
                EventType::SeatHeld,
                EventType::HoldCancelled,
                EventType::SeatHeld,
                EventType::HoldExpired,
            ]
            .map(|t| t.as_str().to_owned()),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_uses_under_the_in_process_lock_all_succeed_and_record_their_token() {
    let env = env().await;
    env.sql.set_balance(user(1), 10_000).await.unwrap();
    let clock = TestClock::new();
    let control = Control::locked("local", Arc::new(LocalLock::new()), LockOptions::default());
    let svc = services(&env, control, Policy::default(), &clock);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.points
                    .use_points(UsePoints {
                        user: user(1),
                        amount: pts(500),
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(env.store.wallet(user(1)).await.unwrap().unwrap().balance, 0);
    assert!(env.sql.wallet_fence_token(user(1)).await.unwrap() > 0);
    assert_eq!(env.sql.outbox_count().await.unwrap(), 20);
}
