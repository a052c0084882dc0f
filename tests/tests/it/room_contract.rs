//! The waiting room port's contract, written once, generic over
//! `WaitingRoom`, and run against both adapters: the in-process room and
//! the Redis room (on the real Redis, each test on its own key prefix).
//! "Two instances" are two adapters over one room: two Redis adapters with
//! their own connections on one prefix, or two handles of one in-process
//! room. Time is passed in, never slept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use concert_domain::{ConcertId, QueryError, RoomRules, RoomStatus, RoomView, UserId, WaitingRoom};
use concert_inprocess::LocalWaitingRoom;
use concert_redis::{RedisLockSettings, RedisWaitingRoom};
use concert_tests::clock::ManualClock;
use concert_tests::db::TestDb;
use concert_tests::redis::{purge_prefix, redis_url, test_prefix};

// --------------------------------------------------------------- helpers

/// Two adapters over one room state (two instances), and what to clean up.
struct Pair<R> {
    a: Arc<R>,
    b: Arc<R>,
    _guard: Option<Purge>,
}

/// Deletes a Redis prefix when dropped.
struct Purge(String);

impl Drop for Purge {
    fn drop(&mut self) {
        purge_prefix(&redis_url(), &self.0);
    }
}

trait Adapter: WaitingRoom + Sized + 'static {
    fn pair(rules: RoomRules) -> Pair<Self>;
}

impl Adapter for LocalWaitingRoom {
    fn pair(rules: RoomRules) -> Pair<Self> {
        let room = Arc::new(LocalWaitingRoom::new(rules));
        Pair {
            a: room.clone(),
            b: room,
            _guard: None,
        }
    }
}

impl Adapter for RedisWaitingRoom {
    fn pair(rules: RoomRules) -> Pair<Self> {
        let prefix = test_prefix();
        let make = || {
            Arc::new(
                RedisWaitingRoom::new(&redis_url(), &prefix, rules, RedisLockSettings::default())
                    .expect("a Redis room"),
            )
        };
        Pair {
            a: make(),
            b: make(),
            _guard: Some(Purge(prefix)),
        }
    }
}

fn rules(limit: u32, admission_s: u64, idle_s: u64) -> RoomRules {
    RoomRules {
        active_limit: limit,
        admission: Duration::from_secs(admission_s),
        idle: Duration::from_secs(idle_s),
    }
}

/// 2030-03-17T17:46:40Z.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

/// The concert of most contracts.
fn c() -> ConcertId {
    concert(7)
}

fn concert(id: u64) -> ConcertId {
    ConcertId::from(id)
}

fn u(id: u64) -> UserId {
    UserId::from(id)
}

fn waiting(position: u64) -> RoomStatus {
    RoomStatus::Waiting { position }
}

fn admitted_until(seconds: i64) -> RoomStatus {
    RoomStatus::Admitted { until: at(seconds) }
}

async fn enter<R: WaitingRoom>(room: &R, user: u64, seconds: i64) -> RoomStatus {
    room.enter(c(), u(user), at(seconds)).await.unwrap().status
}

async fn poll<R: WaitingRoom>(room: &R, user: u64, seconds: i64) -> Option<RoomStatus> {
    room.poll(c(), u(user), at(seconds))
        .await
        .unwrap()
        .map(|v| v.status)
}

/// Runs a contract against both adapters.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn in_process() {
                super::$name::<concert_inprocess::LocalWaitingRoom>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$name::<concert_redis::RedisWaitingRoom>().await;
            }
        }
    )*};
}

contract!(
    fifo_positions,
    reentering_keeps_the_place,
    leaving_frees_the_place_and_admits_the_next,
    releasing_ends_only_an_admission,
    idle_entries_lose_their_place_and_are_never_admitted,
    admissions_lapse_and_free_their_place,
    sold_out_admits_nobody_until_on_sale_again,
    time_never_goes_back_in_a_room,
    the_limit_holds_for_500_concurrent_entrants_on_two_instances,
    the_rate_is_observed,
);

// ------------------------------------------------------------- contracts

async fn fifo_positions<R: Adapter>() {
    let p = R::pair(rules(2, 600, 60));
    let answers = [
        enter(&*p.a, 1, 0).await,
        enter(&*p.b, 2, 0).await,
        enter(&*p.a, 3, 0).await,
        enter(&*p.b, 4, 0).await,
        enter(&*p.a, 5, 0).await,
    ];
    assert_eq!(
        answers,
        [
            admitted_until(600),
            admitted_until(600),
            waiting(1),
            waiting(2),
            waiting(3)
        ]
    );
    // both instances see the same positions
    for (user, position) in [(3, 1), (4, 2), (5, 3)] {
        assert_eq!(poll(&*p.a, user, 1).await, Some(waiting(position)));
        assert_eq!(poll(&*p.b, user, 1).await, Some(waiting(position)));
    }
    assert_eq!(poll(&*p.b, 1, 1).await, Some(admitted_until(600)));
    assert_eq!(poll(&*p.a, 9, 1).await, None, "never entered");
    assert_eq!(p.a.sizes(c(), at(1)).await.unwrap(), (3, 2));
    assert_eq!(p.b.sizes(concert(8), at(1)).await.unwrap(), (0, 0));
    assert!(p.b.is_admitted(c(), u(2), at(1)).await.unwrap());
    assert!(!p.b.is_admitted(c(), u(3), at(1)).await.unwrap());
    // rooms are per concert
    assert_eq!(
        p.a.enter(concert(8), u(5), at(1)).await.unwrap().status,
        admitted_until(601)
    );
    assert!(!p.a.is_admitted(c(), u(5), at(1)).await.unwrap());
}

async fn reentering_keeps_the_place<R: Adapter>() {
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await;
    enter(&*p.a, 3, 0).await;
    assert_eq!(enter(&*p.b, 2, 5).await, waiting(1));
    assert_eq!(enter(&*p.a, 3, 6).await, waiting(2));
    assert_eq!(enter(&*p.b, 2, 7).await, waiting(1));
    // an admitted user re-entering stays admitted until the same end
    assert_eq!(enter(&*p.b, 1, 8).await, admitted_until(600));
    assert_eq!(poll(&*p.a, 3, 9).await, Some(waiting(2)));
}

async fn leaving_frees_the_place_and_admits_the_next<R: Adapter>() {
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await;
    enter(&*p.a, 3, 0).await;
    p.b.leave(c(), u(1), at(10)).await.unwrap();
    assert!(!p.a.is_admitted(c(), u(1), at(10)).await.unwrap());
    assert_eq!(poll(&*p.a, 1, 10).await, None);
    assert_eq!(poll(&*p.a, 2, 10).await, Some(admitted_until(610)));
    assert_eq!(poll(&*p.b, 3, 10).await, Some(waiting(1)));
    // a waiting user leaves: the place behind moves up
    enter(&*p.a, 4, 11).await;
    assert_eq!(poll(&*p.a, 4, 11).await, Some(waiting(2)));
    p.a.leave(c(), u(3), at(12)).await.unwrap();
    assert_eq!(poll(&*p.b, 3, 12).await, None);
    assert_eq!(poll(&*p.b, 4, 12).await, Some(waiting(1)));
    // leaving without an entry changes nothing
    p.a.leave(c(), u(99), at(12)).await.unwrap();
    assert_eq!(p.a.sizes(c(), at(12)).await.unwrap(), (1, 1));
    // re-entering after leaving joins the end of the line
    assert_eq!(enter(&*p.a, 3, 13).await, waiting(2));
}

async fn releasing_ends_only_an_admission<R: Adapter>() {
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await;
    enter(&*p.a, 3, 0).await;
    // a waiting user is not released
    p.b.release(c(), u(3), at(5)).await.unwrap();
    assert_eq!(poll(&*p.a, 3, 5).await, Some(waiting(2)));
    p.b.release(c(), u(1), at(6)).await.unwrap();
    assert!(!p.a.is_admitted(c(), u(1), at(6)).await.unwrap());
    assert_eq!(poll(&*p.a, 1, 6).await, None);
    assert_eq!(poll(&*p.a, 2, 6).await, Some(admitted_until(606)));
    assert_eq!(poll(&*p.a, 3, 6).await, Some(waiting(1)));
}

async fn idle_entries_lose_their_place_and_are_never_admitted<R: Adapter>() {
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await; // never polls again
    enter(&*p.a, 3, 0).await;
    enter(&*p.a, 4, 0).await;
    // 3 and 4 keep polling (within the idle time); 2 does not
    assert_eq!(poll(&*p.b, 3, 59).await, Some(waiting(2)));
    assert_eq!(poll(&*p.b, 4, 59).await, Some(waiting(3)));
    assert_eq!(p.a.sizes(c(), at(59)).await.unwrap(), (3, 1));
    // at 60 s without a poll, 2 has lost the place: 3 and 4 move up
    assert_eq!(poll(&*p.b, 3, 60).await, Some(waiting(1)));
    assert_eq!(poll(&*p.a, 2, 60).await, None);
    assert_eq!(p.a.sizes(c(), at(60)).await.unwrap(), (2, 1));
    // re-entering after idling joins the end
    assert_eq!(enter(&*p.a, 2, 61).await, waiting(3));

    // an idle user at the head is skipped, never admitted
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await; // idles
    enter(&*p.a, 3, 0).await;
    assert_eq!(poll(&*p.a, 3, 50).await, Some(waiting(2)));
    // at 100 s the tidy has not run since 50 s: 2 is still in the line
    // when 1 leaves, and is skipped
    p.b.leave(c(), u(1), at(100)).await.unwrap();
    assert!(!p.a.is_admitted(c(), u(2), at(100)).await.unwrap());
    assert_eq!(poll(&*p.a, 3, 100).await, Some(admitted_until(700)));
    assert_eq!(poll(&*p.a, 2, 100).await, None);
}

async fn admissions_lapse_and_free_their_place<R: Adapter>() {
    let p = R::pair(rules(1, 30, 60));
    assert_eq!(enter(&*p.a, 1, 0).await, admitted_until(30));
    enter(&*p.b, 2, 0).await;
    assert!(p.a.is_admitted(c(), u(1), at(29)).await.unwrap());
    assert_eq!(poll(&*p.b, 2, 29).await, Some(waiting(1)));
    // at its end, the admission is over, and the next poll admits 2
    assert!(!p.a.is_admitted(c(), u(1), at(30)).await.unwrap());
    assert_eq!(p.a.sizes(c(), at(30)).await.unwrap(), (1, 0));
    assert_eq!(poll(&*p.b, 2, 30).await, Some(admitted_until(60)));
    assert_eq!(poll(&*p.a, 1, 31).await, None);
    // the lapsed user may queue again
    assert_eq!(enter(&*p.a, 1, 31).await, waiting(1));
    // nobody polls: at 60 s any step admits 1 (seen at 31 s)
    assert!(p.a.is_admitted(c(), u(2), at(59)).await.unwrap());
    p.b.leave(c(), u(42), at(60)).await.unwrap();
    assert!(p.b.is_admitted(c(), u(1), at(60)).await.unwrap());
}

async fn sold_out_admits_nobody_until_on_sale_again<R: Adapter>() {
    let p = R::pair(rules(1, 600, 60));
    enter(&*p.a, 1, 0).await;
    enter(&*p.a, 2, 0).await;
    p.b.set_sold_out(c(), true).await.unwrap();
    assert_eq!(poll(&*p.a, 2, 1).await, Some(RoomStatus::SoldOut));
    assert_eq!(enter(&*p.b, 3, 1).await, RoomStatus::SoldOut);
    assert_eq!(poll(&*p.a, 4, 1).await, None, "no entry, no answer");
    // the admitted user keeps the admission
    assert_eq!(poll(&*p.a, 1, 1).await, Some(admitted_until(600)));
    p.a.leave(c(), u(1), at(2)).await.unwrap();
    assert_eq!(poll(&*p.b, 2, 3).await, Some(RoomStatus::SoldOut));
    assert_eq!(p.a.sizes(c(), at(3)).await.unwrap(), (2, 0));
    // seats come back: the waiting users kept their places
    p.a.set_sold_out(c(), false).await.unwrap();
    assert_eq!(poll(&*p.b, 3, 4).await, Some(waiting(1)));
    assert_eq!(poll(&*p.b, 2, 4).await, Some(admitted_until(604)));
}

async fn time_never_goes_back_in_a_room<R: Adapter>() {
    let p = R::pair(rules(1, 100, 60));
    enter(&*p.a, 1, 50).await;
    enter(&*p.a, 2, 50).await;
    // an instance whose clock is behind: the room's time stays at 50 s
    p.b.leave(c(), u(1), at(10)).await.unwrap();
    assert_eq!(poll(&*p.b, 2, 10).await, Some(admitted_until(150)));
    assert_eq!(enter(&*p.b, 3, 0).await, waiting(1));
    // 3 was seen at 50 s (the room's time), so it idles out at 110 s
    assert_eq!(poll(&*p.a, 3, 109).await, Some(waiting(1)));
}

async fn the_limit_holds_for_500_concurrent_entrants_on_two_instances<R: Adapter>() {
    const USERS: u64 = 500;
    const LIMIT: u64 = 50;
    let p = R::pair(rules(LIMIT as u32, 600, 60));
    // the room's time: every call a millisecond later than the one before
    let clock = Arc::new(AtomicI64::new(t0().timestamp_millis()));
    let tick = {
        let clock = clock.clone();
        move || DateTime::from_timestamp_millis(clock.fetch_add(1, Ordering::SeqCst)).unwrap()
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(USERS as usize));
    let entries: Vec<_> = (1..=USERS)
        .map(|user| {
            let room = if user % 2 == 0 {
                p.a.clone()
            } else {
                p.b.clone()
            };
            let (barrier, tick) = (barrier.clone(), tick.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                room.enter(c(), u(user), tick()).await.unwrap()
            })
        })
        .collect();
    let mut first: HashMap<u64, RoomView> = HashMap::new();
    for (i, task) in entries.into_iter().enumerate() {
        first.insert(i as u64 + 1, task.await.unwrap());
    }
    let admitted_at_entry = first
        .values()
        .filter(|v| matches!(v.status, RoomStatus::Admitted { .. }))
        .count() as u64;
    let positions: BTreeSet<u64> = first
        .values()
        .filter_map(|v| match v.status {
            RoomStatus::Waiting { position } => Some(position),
            _ => None,
        })
        .collect();
    assert_eq!(admitted_at_entry, LIMIT);
    assert_eq!(
        positions,
        (1..=USERS - LIMIT).collect::<BTreeSet<_>>(),
        "one position each, no gap"
    );
    assert_eq!(
        p.a.sizes(c(), tick()).await.unwrap(),
        (USERS - LIMIT, LIMIT)
    );

    // Everyone polls (alternating instances) until admitted, then leaves;
    // positions never grow; a sampler watches the admitted count.
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (room, done, samples, tick) =
            (p.a.clone(), done.clone(), samples.clone(), tick.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(Ordering::SeqCst) {
                let (_, admitted) = room.sizes(c(), tick()).await.unwrap();
                max = max.max(admitted);
                samples.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let users: Vec<_> = (1..=USERS)
        .map(|user| {
            let rooms = [p.a.clone(), p.b.clone()];
            let tick = tick.clone();
            let start = first[&user].status;
            tokio::spawn(async move {
                let mut last = match start {
                    RoomStatus::Waiting { position } => position,
                    _ => 0,
                };
                let mut status = start;
                let mut i = user as usize;
                while let RoomStatus::Waiting { position } = status {
                    assert!(position <= last, "user {user}: {last} -> {position}");
                    last = position;
                    tokio::task::yield_now().await;
                    i += 1;
                    status = rooms[i % 2]
                        .poll(c(), u(user), tick())
                        .await
                        .unwrap()
                        .expect("a polling user keeps the entry")
                        .status;
                }
                let RoomStatus::Admitted { until } = status else {
                    panic!("user {user}: {status:?}");
                };
                assert!(rooms[0].is_admitted(c(), u(user), tick()).await.unwrap());
                rooms[1].leave(c(), u(user), tick()).await.unwrap();
                until
            })
        })
        .collect();
    let mut until: HashMap<u64, DateTime<Utc>> = HashMap::new();
    for (i, task) in users.into_iter().enumerate() {
        until.insert(i as u64 + 1, task.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let max = sampler.await.unwrap();
    assert!(max <= LIMIT, "{max} admitted at once");
    assert!(samples.load(Ordering::SeqCst) > 0);
    assert_eq!(p.b.sizes(c(), tick()).await.unwrap(), (0, 0));
    // FIFO: in order of first entry, admissions never end earlier (the
    // room's time only grows, and admission time is fixed)
    let mut by_entry: Vec<(u64, DateTime<Utc>)> = first
        .iter()
        .map(|(user, v)| {
            let rank = match v.status {
                RoomStatus::Waiting { position } => position,
                _ => 0,
            };
            (rank, until[user])
        })
        .collect();
    by_entry.sort();
    for pair in by_entry.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "admitted out of order: {pair:?}");
    }
}

async fn the_rate_is_observed<R: Adapter>() {
    let p = R::pair(rules(10, 600, 60));
    // nothing admitted yet: no rate
    let first = p.a.enter(c(), u(1), at(0)).await.unwrap();
    assert!(matches!(first.status, RoomStatus::Admitted { .. }));
    for user in 2..=20 {
        p.b.enter(c(), u(user), at(0)).await.unwrap();
    }
    // 10 admissions in the current 10 s bucket: 1 per second
    let view = p.a.poll(c(), u(20), at(0)).await.unwrap().unwrap();
    assert_eq!(view.status, waiting(10));
    assert_eq!(view.admission_rate, 1.0);
    for user in 1..=5 {
        p.a.leave(c(), u(user), at(1)).await.unwrap();
    }
    let view = p.b.poll(c(), u(20), at(1)).await.unwrap().unwrap();
    assert_eq!(view.status, waiting(5));
    assert_eq!(view.admission_rate, 1.5);
}

// ------------------------------------------------ unknown concert (service)

/// The room knows no concerts: the use case refuses an unknown one before
/// the adapter is asked, whichever adapter it is.
async fn unknown_concert<R: Adapter>() {
    let db = TestDb::new().await;
    let (known, _) = db
        .schedule_at(Utc::now() + chrono::Duration::days(3), 500)
        .await;
    let rules = rules(1, 600, 60);
    let p = R::pair(rules);
    let services = db
        .services("pessimistic", ManualClock::new())
        .with_waiting_room(p.a.clone(), rules);
    let room = services.waiting_room.expect("the room is on");
    let unknown = ConcertId::from(known.get() + 1000);
    assert!(matches!(
        room.enter(u(1), unknown).await,
        Err(QueryError::NotFound("concert"))
    ));
    assert!(matches!(
        room.get(u(1), unknown).await,
        Err(QueryError::NotFound("concert"))
    ));
    assert!(matches!(
        room.leave(u(1), unknown).await,
        Err(QueryError::NotFound("concert"))
    ));
    assert_eq!(p.b.sizes(unknown, Utc::now()).await.unwrap(), (0, 0));
    // the known concert works, and a user without an entry is not found
    let entry = room.enter(u(1), known).await.unwrap();
    assert!(matches!(entry.status, RoomStatus::Admitted { .. }));
    assert!(matches!(
        room.get(u(2), known).await,
        Err(QueryError::NotFound("waiting-room entry"))
    ));
}

contract!(unknown_concert);
