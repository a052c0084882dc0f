//! What only the MySQL adapter has or promises, against a real MariaDB:
//! row locks that make a second unit wait (the in-memory store never
//! waits: its units work on copies and the first committer wins at
//! commit), the migrations, killed connections, statement limits, the
//! pool, and the stored rows the SQL witness reads. Also the MySQL
//! [`Harness`] of the shared contract: each test on a fresh `test_<uuid>`
//! database, dropped at the end.

use super::*;

use concert_domain::Event;
use concert_domain::{
    Claim, Failure, KeyScope, NewHistoryEntry, PayReservation, PaymentId, Stored, Wallet,
};
use concert_mysql::{DatabaseUrl, Db, MysqlStore, PoolOptions};
use concert_testkit::{Sql, TestDatabase};

/// A fresh database, the store under test and an independent SQL witness.
pub(super) struct Env {
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

#[async_trait]
impl Harness for Env {
    type Store = MysqlStore;

    async fn fresh() -> Self {
        env().await
    }

    fn store(&self) -> &Self::Store {
        &self.store
    }

    async fn outbox_types(&self) -> Vec<String> {
        let rows = self.sql.outbox().await.unwrap();
        rows.into_iter().map(|e| e.event_type).collect()
    }

    async fn seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber) -> u64 {
        self.sql.seat_fence_token(schedule, number).await.unwrap()
    }

    async fn set_seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber, token: u64) {
        let set = self.sql.set_seat_fence_token(schedule, number, token);
        set.await.unwrap();
    }

    async fn wallet_fence_token(&self, user: UserId) -> u64 {
        self.sql.wallet_fence_token(user).await.unwrap()
    }

    async fn set_wallet_fence_token(&self, user: UserId, token: u64) {
        self.sql.set_wallet_fence_token(user, token).await.unwrap();
    }

    async fn reservations_of_seat(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> Vec<Reservation> {
        self.sql
            .reservations_of_seat(schedule, number)
            .await
            .unwrap()
    }

    async fn payments_of_reservation(&self, reservation: ReservationId) -> Vec<Payment> {
        self.sql.payments_of_reservation(reservation).await.unwrap()
    }

    async fn payment_count(&self) -> u64 {
        self.sql.payment_count().await.unwrap()
    }

    async fn sold_seats_without_payment(&self) -> u64 {
        self.sql.sold_seats_without_payment().await.unwrap()
    }
}

// MySQL only: a save reads the stored version, so the second unit's saves
// conflict at once; the in-memory store checks them against the unit's copy
// and refuses at commit instead (first committer wins).
#[tokio::test]
async fn optimistic_units_that_read_the_same_version_conflict_on_the_second_save() {
    super::contract::second_reader_conflicts(&env().await, true).await;
}

// MySQL only: a locking read waits for the holder; the in-memory store never
// waits.
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

// MySQL only: the second unit waits on the lock row; the in-memory store never
// waits (the counting alone is in the contract).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holds_of_counts_live_holds_and_serializes_one_users_holds() {
    let env = env().await;
    let (s, mut a) = super::contract::count_holds(&env).await;

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

/// `save_at_commit`: the wallet is written by the commit, in its round
/// trip; a stale version fails the commit with `Conflict`, a stale fence
/// with `LockLost`, and then nothing of the unit is committed (its history
/// line and events included).
// MySQL only: the in-memory store keeps the port's default (`save` at once),
// so a stale version fails `save_at_commit` itself, not the commit.
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
// MySQL only: the next holder's write waits for the row; the in-memory store
// never waits.
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

// MySQL only: the second creator waits on the row; the in-memory store never
// waits.
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

// MySQL only: the second claim waits on the key's row; the in-memory store
// never waits.
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

    // The first claimer rolls back: the key is free again. Then it commits:
    // the second sees its result.
    for commits in [false, true] {
        let mut first = begin(&env, Protection::Optimistic).await;
        let claimed = first
            .idempotency()
            .claim(user(1), KeyScope::Payment, &k, "reservation=7")
            .await;
        assert_eq!(claimed.unwrap(), Claim::New);
        let second = tokio::spawn(claim(env.store.clone(), k.clone()));
        env.sql
            .until_blocked("INSERT INTO idempotency_keys")
            .await
            .unwrap();
        if !commits {
            first.rollback().await;
            assert_eq!(second.await.unwrap().unwrap(), Claim::New);
            continue;
        }
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
}

// MySQL only: reads the stored rows (stream, aggregate, payload, event id).
#[tokio::test]
async fn the_outbox_rows_carry_each_events_stream_aggregate_payload_and_a_fresh_id() {
    let env = env().await;
    let (r, events) = super::contract::record_outbox(&env).await;
    let rows = env.sql.outbox().await.unwrap();
    assert_eq!(rows.len(), 23);
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
    assert_eq!(ids.len(), 23);
    assert_eq!(
        rows[..3]
            .iter()
            .map(|r| r.aggregate.as_str())
            .collect::<Vec<_>>(),
        [
            format!("reservation:{}", r.id).as_str(),
            "user:7",
            format!("reservation:{}", r.id).as_str()
        ]
    );
}

fn uuid_v4(id: &str) -> bool {
    let groups: Vec<_> = id.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12]
        && id.as_bytes()[14] == b'4'
        && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

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
    let paid = reserve(&svc, user(1), s, n(1)).await.unwrap();
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
    let held = reserve(&svc, user(1), s, n(2)).await.unwrap();
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
    let kinds = balance_story(&env, user(1)).await;
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
    let again = reserve(&svc, user(1), s, n(3)).await.unwrap();
    svc.reservations.cancel(user(1), again.id).await.unwrap();
    assert_eq!(env.outbox_types().await, ["SeatHeld", "HoldCancelled"]);
}

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

// MySQL only: pessimistic units queue on the row; in memory they conflict at
// commit (nothing waits), so not all 100 succeed.
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
    let tasks = spawn_uses(&svc, 100);
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

// MySQL only: `lock_holds_of` makes the user's holds queue; in memory
// concurrent holds conflict at commit, so fewer than the limit may succeed.
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
            tokio::spawn(async move { reserve(&svc, user(1), s, n(seat)).await })
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

/// A read whose caller gave up while the statement ran (a cancelled
/// request, an aborted task) leaves its connection mid-answer: it must be
/// closed, never handed to the next read, which would read the rest of
/// the old answer as its own (`can't parse: buf doesn't have enough data`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_given_up_mid_statement_does_not_pass_its_connection_on() {
    let env = env_with(PoolOptions {
        max_size: 1,
        ..options()
    })
    .await;
    let s = schedule(&env, 500).await;
    let concerts = env.store.concerts().await.unwrap();
    // one witness connection holds the seats table, so the read waits
    let witness = Sql::connect_with(env.url.as_str(), 1).await.unwrap();
    witness.execute("LOCK TABLES seats WRITE").await.unwrap();
    let given_up = tokio::time::timeout(Duration::from_millis(300), env.store.seats(s)).await;
    assert!(given_up.is_err(), "the read waited for the table lock");
    // the server now answers the abandoned read, to nobody
    witness.execute("UNLOCK TABLES").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(env.store.concerts().await.unwrap(), concerts);
        let seats = env.store.seats(s).await.unwrap().expect("the schedule");
        assert_eq!(seats.len(), 50);
    }
    witness.close();
}
