//! The payment use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use concert_domain::ids::IdempotencyKey;

use chrono::Duration;

use super::{TestClock, every_control, services, t0};
use concert_domain::error::RefundError;
use concert_domain::events::EventType;
use concert_domain::ids::{ScheduleId, SeatNumber};
use concert_domain::model::seat::SeatState;
use concert_domain::model::wallet::PointKind;
use concert_domain::services::{ReserveSeat, Services};
use concert_domain::*;
use concert_memory::MemoryStore;

fn user(n: u64) -> UserId {
    UserId::from(n)
}

struct Fixture {
    svc: Services,
    store: MemoryStore,
    clock: TestClock,
    schedule: ScheduleId,
}

fn fixture(control: Control) -> Fixture {
    let (svc, store, clock) = services(control, Policy::default());
    let (_, schedule) = store.add_schedule(t0() + Duration::days(3), 500);
    Fixture {
        svc,
        store,
        clock,
        schedule,
    }
}

impl Fixture {
    async fn hold(&self, who: u64, seat: i64) -> Reservation {
        self.svc
            .reservations
            .reserve(ReserveSeat {
                user: user(who),
                schedule: self.schedule,
                seat: SeatNumber::new(seat).unwrap(),
            })
            .await
            .unwrap()
    }

    async fn pay(&self, who: u64, r: &Reservation, key: Option<&str>) -> Result<Payment, PayError> {
        self.svc
            .payments
            .pay(PayReservation {
                user: user(who),
                reservation: r.id,
                idempotency: key.map(|k| IdempotencyKey::new(k).unwrap()),
            })
            .await
    }

    fn types(&self) -> Vec<EventType> {
        self.store.events().iter().map(|e| e.kind).collect()
    }
}

#[tokio::test]
async fn paying_sells_confirms_records_and_debits_at_once() {
    for control in every_control() {
        let name = control.name().to_owned();
        let f = fixture(control);
        f.store.set_balance(user(1), 1_000);
        let r = f.hold(1, 7).await;
        let p = f.pay(1, &r, None).await.unwrap();
        assert_eq!(
            (p.reservation, p.user, p.amount.get(), p.status),
            (r.id, user(1), 500, PaymentStatus::Paid),
            "{name}"
        );
        assert_eq!(f.store.balance(user(1)), 500, "{name}");
        assert_eq!(
            f.store.seat(f.schedule, r.seat_number).unwrap().state,
            SeatState::Sold
        );
        assert_eq!(
            f.store.reservations()[0].status,
            ReservationStatus::Confirmed
        );
        assert_eq!(
            f.types(),
            [
                EventType::SeatHeld,
                EventType::ReservationConfirmed,
                EventType::PointsUsed,
                EventType::PaymentCompleted
            ],
            "{name}"
        );
        let used = &f.store.events()[2];
        assert_eq!(used.payload.payment_id, Some(p.id));
        assert_eq!(used.payload.balance_after, Some(500));
        assert!(matches!(
            f.pay(1, &r, None).await,
            Err(PayError::AlreadyPaid)
        ));
    }
}

#[tokio::test]
async fn refused_payments_change_nothing() {
    for control in every_control() {
        let name = control.name().to_owned();
        let f = fixture(control);
        f.store.set_balance(user(1), 400);
        let r = f.hold(1, 7).await;
        let before = (f.store.reservations(), f.store.events().len());
        assert!(
            matches!(f.pay(2, &r, None).await, Err(PayError::NotFound)),
            "{name}"
        );
        assert!(
            matches!(
                f.pay(1, &r, None).await,
                Err(PayError::InsufficientPoints {
                    balance: 400,
                    needed: 500
                })
            ),
            "{name}"
        );
        f.clock.advance(Duration::minutes(5));
        assert!(
            matches!(f.pay(1, &r, None).await, Err(PayError::Expired)),
            "{name}"
        );
        assert_eq!((f.store.reservations(), f.store.events().len()), before);
        assert_eq!(f.store.balance(user(1)), 400);
        assert!(f.store.payments().is_empty());
        assert!(f.store.history_of(user(1)).is_empty());
    }
}

#[tokio::test]
async fn a_payment_key_answers_the_first_payment_and_refuses_another_reservation() {
    let f = fixture(Control::pessimistic("pessimistic"));
    f.store.set_balance(user(1), 5_000);
    let a = f.hold(1, 1).await;
    let b = f.hold(1, 2).await;
    let first = f.pay(1, &a, Some("pay-a")).await.unwrap();
    assert_eq!(f.pay(1, &a, Some("pay-a")).await.unwrap(), first);
    assert!(matches!(
        f.pay(1, &b, Some("pay-a")).await,
        Err(PayError::KeyReused)
    ));
    assert_eq!(f.store.payments().len(), 1);
    assert_eq!(f.store.balance(user(1)), 4_500);
}

#[tokio::test]
async fn a_refund_gives_everything_back_once() {
    for control in every_control() {
        let name = control.name().to_owned();
        let f = fixture(control);
        f.store.set_balance(user(1), 1_000);
        let r = f.hold(1, 7).await;
        let p = f.pay(1, &r, None).await.unwrap();
        assert!(matches!(
            f.svc.payments.refund(user(2), p.id).await,
            Err(RefundError::NotFound)
        ));
        let refunded = f.svc.payments.refund(user(1), p.id).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded, "{name}");
        assert_eq!(
            f.svc.payments.refund(user(1), p.id).await.unwrap(),
            refunded
        );
        assert_eq!(f.store.balance(user(1)), 1_000, "{name}");
        assert_eq!(
            f.store.reservations()[0].status,
            ReservationStatus::Refunded
        );
        assert_eq!(
            f.store.seat(f.schedule, r.seat_number).unwrap().state,
            SeatState::Available
        );
        let kinds: Vec<_> = f.store.history_of(user(1)).iter().map(|h| h.kind).collect();
        assert_eq!(kinds, [PointKind::Use, PointKind::Refund], "{name}");
        assert_eq!(
            f.types()[4..],
            [
                EventType::PaymentRefunded,
                EventType::ReservationRefunded,
                EventType::PointsRefunded
            ],
            "{name}"
        );
        assert_eq!(f.svc.payments.get(user(1), p.id).await.unwrap(), refunded);
        // the seat sells again
        let again = f.hold(2, 7).await;
        assert_eq!(again.status, ReservationStatus::Held);
    }
}

#[tokio::test]
async fn refunds_close_before_the_show() {
    let f = fixture(Control::pessimistic("pessimistic"));
    f.store.set_balance(user(1), 1_000);
    let r = f.hold(1, 7).await;
    let p = f.pay(1, &r, None).await.unwrap();
    f.clock.advance(Duration::hours(48) + Duration::seconds(1));
    assert!(matches!(
        f.svc.payments.refund(user(1), p.id).await,
        Err(RefundError::Closed { hours: 24 })
    ));
    assert_eq!(f.store.balance(user(1)), 500);
}
