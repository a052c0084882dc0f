//! The waiting room use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Duration;

use super::{TestClock, controls, t0};
use concert_domain::control::Control;
use concert_domain::error::{PayError, ReserveError};
use concert_domain::ids::{IdempotencyKey, SeatNumber};
use concert_domain::model::room::{RoomStatus, RoomView};
use concert_domain::ports::MockWaitingRoom;
use concert_domain::services::{PayReservation, Policy, ReserveSeat, Services};
use concert_domain::*;
use concert_memory::MemoryStore;

fn seat(n: i64) -> SeatNumber {
    SeatNumber::new(n).unwrap()
}

/// Users 1..=50 each hold and pay one seat of `schedule` (priced 500).
async fn sell_every_seat(svc: &Services, store: &MemoryStore, schedule: ScheduleId) {
    for n in 1..=50u64 {
        let user = UserId::from(n);
        store.set_balance(user, 500);
        let r = svc
            .reservations
            .reserve(ReserveSeat {
                user,
                schedule,
                seat: seat(n as i64),
            })
            .await
            .unwrap();
        svc.payments
            .pay(PayReservation {
                user,
                reservation: r.id,
                idempotency: None,
            })
            .await
            .unwrap();
    }
}

fn services_with(room: MockWaitingRoom) -> (Services, MemoryStore, ScheduleId, ConcertId) {
    let store = MemoryStore::new();
    let (concert, schedule) = store.add_schedule(t0() + Duration::days(3), 500);
    let services = Services::new(
        store.ports(Arc::new(TestClock::new())),
        controls(Control::pessimistic("pessimistic")),
        Policy::default(),
    )
    .with_waiting_room(Arc::new(room), RoomRules::default());
    (services, store, schedule, concert)
}

#[tokio::test]
async fn reserve_and_pay_need_an_admission() {
    let admitted = Arc::new(AtomicBool::new(false));
    let mut room = MockWaitingRoom::new();
    let gate = admitted.clone();
    room.expect_is_admitted()
        .returning(move |_, _, _| Ok(gate.load(Ordering::SeqCst)));
    room.expect_release().times(1).returning(|_, _, _| Ok(()));
    room.expect_set_sold_out().never();
    let (svc, store, schedule, _) = services_with(room);
    let cmd = ReserveSeat {
        user: UserId::from(1),
        schedule,
        seat: seat(1),
    };
    assert!(matches!(
        svc.reservations.reserve(cmd).await,
        Err(ReserveError::NotAdmitted)
    ));
    assert!(store.reservations().is_empty());

    admitted.store(true, Ordering::SeqCst);
    let r = svc.reservations.reserve(cmd).await.unwrap();
    store.set_balance(UserId::from(1), 1_000);
    admitted.store(false, Ordering::SeqCst);
    let pay = PayReservation {
        user: UserId::from(1),
        reservation: r.id,
        idempotency: None::<IdempotencyKey>,
    };
    assert!(matches!(
        svc.payments.pay(pay.clone()).await,
        Err(PayError::NotAdmitted)
    ));
    assert!(store.payments().is_empty());
    admitted.store(true, Ordering::SeqCst);
    svc.payments.pay(pay).await.unwrap();
}

#[tokio::test]
async fn a_payment_keeps_the_admission_while_another_hold_lives() {
    let mut room = MockWaitingRoom::new();
    room.expect_is_admitted().returning(|_, _, _| Ok(true));
    room.expect_release().never();
    let (svc, store, schedule, _) = services_with(room);
    let user = UserId::from(1);
    store.set_balance(user, 5_000);
    let a = svc
        .reservations
        .reserve(ReserveSeat {
            user,
            schedule,
            seat: seat(1),
        })
        .await
        .unwrap();
    svc.reservations
        .reserve(ReserveSeat {
            user,
            schedule,
            seat: seat(2),
        })
        .await
        .unwrap();
    svc.payments
        .pay(PayReservation {
            user,
            reservation: a.id,
            idempotency: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn selling_the_last_seat_closes_the_room() {
    let mut room = MockWaitingRoom::new();
    room.expect_is_admitted().returning(|_, _, _| Ok(true));
    room.expect_release().returning(|_, _, _| Ok(()));
    room.expect_set_sold_out()
        .withf(|_, sold_out| *sold_out)
        .times(1)
        .returning(|_, _| Ok(()));
    let (svc, store, schedule, _) = services_with(room);
    sell_every_seat(&svc, &store, schedule).await;
}

#[tokio::test]
async fn entries_exist_for_known_concerts_only() {
    let mut room = MockWaitingRoom::new();
    room.expect_enter().times(1).returning(|_, _, _| {
        Ok(RoomView {
            status: RoomStatus::Waiting { position: 3 },
            admission_rate: 0.0,
        })
    });
    room.expect_poll().times(1).returning(|_, _, _| Ok(None));
    let (svc, _, _, concert) = services_with(room);
    let room = svc.waiting_room.as_ref().unwrap();
    let entry = room.enter(UserId::from(1), concert).await.unwrap();
    assert_eq!(entry.status, RoomStatus::Waiting { position: 3 });
    assert!(matches!(
        room.enter(UserId::from(1), ConcertId::from(999)).await,
        Err(QueryError::NotFound("concert"))
    ));
    assert!(matches!(
        room.get(UserId::from(2), concert).await,
        Err(QueryError::NotFound("waiting-room entry"))
    ));
}

#[tokio::test]
async fn an_entry_repairs_a_lost_sold_out_mark_at_most_every_few_seconds() {
    let marked = Arc::new(AtomicBool::new(false));
    let mut room = MockWaitingRoom::new();
    room.expect_is_admitted().returning(|_, _, _| Ok(true));
    room.expect_release().returning(|_, _, _| Ok(()));
    let mark = marked.clone();
    room.expect_set_sold_out().returning(move |_, sold_out| {
        mark.store(sold_out, Ordering::SeqCst);
        Ok(())
    });
    let mark = marked.clone();
    room.expect_enter().returning(move |_, _, _| {
        Ok(RoomView {
            status: if mark.load(Ordering::SeqCst) {
                RoomStatus::SoldOut
            } else {
                RoomStatus::Waiting { position: 1 }
            },
            admission_rate: 0.0,
        })
    });
    let (svc, store, schedule, concert) = services_with(room);
    sell_every_seat(&svc, &store, schedule).await;
    assert!(marked.load(Ordering::SeqCst), "the last sale marks it");
    let room = svc.waiting_room.as_ref().unwrap();
    // the room's state is lost (its store restarted empty)
    marked.store(false, Ordering::SeqCst);
    let entry = room.enter(UserId::from(99), concert).await.unwrap();
    assert_eq!(entry.status, RoomStatus::SoldOut, "repaired on entry");
    // lost again: not checked again before SOLD_OUT_RECHECK has passed
    marked.store(false, Ordering::SeqCst);
    let entry = room.enter(UserId::from(98), concert).await.unwrap();
    assert_eq!(entry.status, RoomStatus::Waiting { position: 1 });
}

#[tokio::test]
async fn paying_again_with_the_same_key_needs_no_admission() {
    let admitted = Arc::new(AtomicBool::new(true));
    let mut room = MockWaitingRoom::new();
    let gate = admitted.clone();
    room.expect_is_admitted()
        .returning(move |_, _, _| Ok(gate.load(Ordering::SeqCst)));
    let gate = admitted.clone();
    room.expect_release().times(1).returning(move |_, _, _| {
        gate.store(false, Ordering::SeqCst);
        Ok(())
    });
    room.expect_set_sold_out().never();
    let (svc, store, schedule, _) = services_with(room);
    let user = UserId::from(1);
    store.set_balance(user, 1_000);
    let r = svc
        .reservations
        .reserve(ReserveSeat {
            user,
            schedule,
            seat: seat(1),
        })
        .await
        .unwrap();
    let pay = PayReservation {
        user,
        reservation: r.id,
        idempotency: Some(IdempotencyKey::new("k-1").unwrap()),
    };
    let first = svc.payments.pay(pay.clone()).await.unwrap();
    assert!(!admitted.load(Ordering::SeqCst), "the payment ended it");
    let again = svc.payments.pay(pay).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(store.payments().len(), 1);
    assert_eq!(store.balance(user), 500);
}
