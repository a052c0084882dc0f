//! The storage ports' contract (each MUST of `crates/domain/src/ports.rs`):
//! the port-level tests written once, generic over a [`Harness`], and run
//! against both storage adapters, the in-memory store and MySQL
//! (`contract.rs`); and what only MySQL has or promises (`mysql.rs`): real
//! row locks that make a second unit wait, the migrations, killed
//! connections, statement limits, the stored rows. Each MySQL test runs on
//! a fresh `test_<uuid>` database, dropped at the end.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    CatalogueRepository, Clock, Control, Controls, Fence, Fences, IdempotencyKey, LockKey,
    LockOptions, MAX_AMOUNT, NewReservation, NewSchedule, Payment, PaymentStatus, PointBalance,
    PointChange, PointKind, Points, Policy, Ports, Protection, Queries, Reservation, ReservationId,
    ReservationStatus, ReserveError, ReserveSeat, ScheduleId, Seat, SeatNumber, SeatState,
    Services, Title, Transactions, UnitOfWork, UseError, UsePoints, UserId,
};
use concert_inprocess::LocalLock;
use concert_locking::Ordered;
use concert_memory::MemoryStore;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- harness

/// A fresh store of one adapter, and the witnesses the ports do not read
/// back (the outbox, fencing tokens, payments and reservations by seat).
#[async_trait]
trait Harness: Send + Sync + Sized + 'static {
    type Store: Transactions + Queries + CatalogueRepository + Clone + 'static;

    /// An empty store.
    async fn fresh() -> Self;

    fn store(&self) -> &Self::Store;

    /// The types of the events committed units recorded, oldest first.
    async fn outbox_types(&self) -> Vec<String>;

    async fn seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber) -> u64;

    async fn set_seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber, token: u64);

    async fn wallet_fence_token(&self, user: UserId) -> u64;

    async fn set_wallet_fence_token(&self, user: UserId, token: u64);

    /// Every reservation of the seat, oldest first.
    async fn reservations_of_seat(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> Vec<Reservation>;

    async fn payments_of_reservation(&self, reservation: ReservationId) -> Vec<Payment>;

    async fn payment_count(&self) -> u64;

    /// Seats sold without a confirmed reservation that has a payment.
    async fn sold_seats_without_payment(&self) -> u64;
}

#[async_trait]
impl Harness for MemoryStore {
    type Store = MemoryStore;

    async fn fresh() -> Self {
        MemoryStore::new()
    }

    fn store(&self) -> &Self::Store {
        self
    }

    async fn outbox_types(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e.kind.as_str().to_owned())
            .collect()
    }

    async fn seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber) -> u64 {
        self.seat_fence(schedule, number)
    }

    async fn set_seat_fence_token(&self, schedule: ScheduleId, number: SeatNumber, token: u64) {
        self.set_seat_fence(schedule, number, token);
    }

    async fn wallet_fence_token(&self, user: UserId) -> u64 {
        self.wallet_fence(user)
    }

    async fn set_wallet_fence_token(&self, user: UserId, token: u64) {
        self.set_wallet_fence(user, token);
    }

    async fn reservations_of_seat(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> Vec<Reservation> {
        self.reservations()
            .into_iter()
            .filter(|r| r.schedule == schedule && r.seat_number == number)
            .collect()
    }

    async fn payments_of_reservation(&self, reservation: ReservationId) -> Vec<Payment> {
        self.payments()
            .into_iter()
            .filter(|p| p.reservation == reservation)
            .collect()
    }

    async fn payment_count(&self) -> u64 {
        self.payments().len() as u64
    }

    async fn sold_seats_without_payment(&self) -> u64 {
        let paid: HashSet<ReservationId> = self.payments().iter().map(|p| p.reservation).collect();
        let covered: HashSet<_> = self
            .reservations()
            .iter()
            .filter(|r| r.status == ReservationStatus::Confirmed && paid.contains(&r.id))
            .map(|r| r.seat)
            .collect();
        let mut sold = 0;
        for concert in self.concerts().await.unwrap() {
            for summary in self.schedules(concert.id, epoch()).await.unwrap().unwrap() {
                sold += self
                    .seats(summary.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .iter()
                    .filter(|s| s.state == SeatState::Sold && !covered.contains(&s.id))
                    .count() as u64;
            }
        }
        sold
    }
}

/// Runs a contract against both stores.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$name::<concert_memory::MemoryStore>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                super::$name::<super::super::mysql::Env>().await;
            }
        }
    )*};
}

mod contract;
mod mysql;

// ---------------------------------------------------------------- helpers

/// The tests' "now": whole seconds, far from the wall clock.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).expect("valid time")
}

/// Before every schedule of the tests.
fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).expect("valid time")
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

/// A concert with a schedule 30 days after [`t0`], every seat at `price`,
/// created through the catalogue port.
async fn schedule<H: Harness>(h: &H, price: u64) -> ScheduleId {
    let store = h.store();
    let concert = store
        .create_concert(&Title::new("Test concert").unwrap())
        .await
        .unwrap();
    let price = pts(i64::try_from(price).unwrap());
    let prices = SeatNumber::all().map(|_| price).collect();
    let new = NewSchedule::new(concert.id, t0() + chrono::Duration::days(30), prices, t0());
    store
        .create_schedule(&new.unwrap())
        .await
        .unwrap()
        .expect("the concert exists")
        .id
}

/// How many concerts and schedules the catalogue has.
async fn catalogue_size<H: Harness>(h: &H) -> (u64, u64) {
    let concerts = h.store().concerts().await.unwrap();
    let mut schedules = 0;
    for concert in &concerts {
        schedules += h
            .store()
            .schedules(concert.id, epoch())
            .await
            .unwrap()
            .unwrap()
            .len() as u64;
    }
    (concerts.len() as u64, schedules)
}

/// The seat as the catalogue reads it.
async fn stored_seat<H: Harness>(h: &H, schedule: ScheduleId, number: SeatNumber) -> Option<Seat> {
    h.store()
        .seats(schedule)
        .await
        .unwrap()
        .and_then(|seats| seats.into_iter().find(|s| s.number == number))
}

/// Sets `user`'s balance in one atomic unit through the ports, creating the
/// wallet if needed: history lines record the difference (charges when it
/// grows, uses when it shrinks; one line per step of at most
/// [`MAX_AMOUNT`], so one for the tests' small balances), each bumping the
/// version; the same balance again writes nothing.
async fn set_balance<H: Harness>(h: &H, who: UserId, balance: u64) {
    let mut uow = begin(h, Protection::Atomic).await;
    uow.wallets().create(who).await.unwrap();
    let mut current = uow.wallets().find(who).await.unwrap().unwrap().balance;
    while current != balance {
        let step = current.abs_diff(balance).min(MAX_AMOUNT);
        let amount = pts(i64::try_from(step).unwrap());
        let (change, next) = if balance > current {
            (PointChange::Charge(amount), current + step)
        } else {
            (PointChange::Use(amount), current - step)
        };
        let after = uow.wallets().change_atomically(who, change, t0()).await;
        assert_eq!(after.unwrap(), Some(next));
        current = next;
    }
    uow.commit().await.unwrap();
}

/// The reservation's status, as the plain reads see it.
async fn status<H: Harness>(h: &H, id: ReservationId) -> ReservationStatus {
    let found = h.store().reservation(id).await.unwrap();
    found.expect("the reservation").status
}

/// The user's history lines as (kind, balance after), newest first.
async fn balance_story<H: Harness>(h: &H, who: UserId) -> Vec<(PointKind, u64)> {
    let history = h.store().history(who).await.unwrap();
    history.iter().map(|h| (h.kind, h.balance_after)).collect()
}

async fn history_count<H: Harness>(h: &H, who: UserId) -> u64 {
    h.store().history(who).await.unwrap().len() as u64
}

async fn outbox_count<H: Harness>(h: &H) -> u64 {
    h.outbox_types().await.len() as u64
}

/// How many live (`HELD` or `CONFIRMED`) reservations the seat has.
async fn live_reservations<H: Harness>(h: &H, schedule: ScheduleId, number: SeatNumber) -> u64 {
    h.reservations_of_seat(schedule, number)
        .await
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                ReservationStatus::Held | ReservationStatus::Confirmed
            )
        })
        .count() as u64
}

async fn begin<H: Harness>(h: &H, protection: Protection) -> Box<dyn UnitOfWork> {
    h.store().begin(protection).await.expect("unit of work")
}

fn fenced(key: LockKey, fence: &Fence) -> Protection {
    Protection::Fenced(Fences::new(vec![(key, fence.clone())]))
}

/// Holds seat `number` of `schedule` for `who` until `until` in one unit:
/// the seat written held and its reservation recorded, committed.
async fn hold<H: Harness>(
    h: &H,
    schedule: ScheduleId,
    number: SeatNumber,
    who: UserId,
    until: DateTime<Utc>,
) -> Reservation {
    let mut uow = begin(h, Protection::Optimistic).await;
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
fn services<H: Harness>(h: &H, control: Control, policy: Policy, clock: &TestClock) -> Services {
    let store = Arc::new(h.store().clone());
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

/// Spawns `tasks` concurrent uses of 500 points by user 1.
fn spawn_uses(svc: &Services, tasks: usize) -> Vec<JoinHandle<Result<PointBalance, UseError>>> {
    (0..tasks)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let amount = pts(500);
                svc.points
                    .use_points(UsePoints {
                        user: user(1),
                        amount,
                    })
                    .await
            })
        })
        .collect()
}

/// `who` reserves seat `number` of `schedule` through the services.
async fn reserve(
    svc: &Services,
    who: UserId,
    schedule: ScheduleId,
    number: SeatNumber,
) -> Result<Reservation, ReserveError> {
    let seat = ReserveSeat {
        user: who,
        schedule,
        seat: number,
    };
    svc.reservations.reserve(seat).await
}

fn controls() -> Vec<Control> {
    vec![
        Control::optimistic("optimistic"),
        Control::pessimistic("pessimistic"),
        Control::atomic("atomic"),
        Control::retrying("optimistic-retry", concert_domain::RetryPolicy::default()),
        Control::locked(
            "local",
            Arc::new(Ordered::plain(LocalLock::new())),
            LockOptions::default(),
        ),
    ]
}
