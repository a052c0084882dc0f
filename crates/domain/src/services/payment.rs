//! Paying a held seat with points, looking a payment up, refunding it.

use crate::control::{Control, Operation, Protection};
use crate::error::{Failure, PayError, QueryError, RefundError};
use crate::events::Event;
use crate::ids::{PaymentId, UserId};
use crate::lock::LockKey;
use crate::model::commands::PayReservation;
use crate::model::payment::{NewPayment, Payment, PaymentStatus};
use crate::model::seat::{Reservation, ReservationStatus, SeatState};
use crate::model::wallet::{PointChange, PointRule};
use crate::ports::{Claim, KeyScope, Stored, UnitOfWork};
use crate::services::points::change_balance;
use crate::services::{Policy, Ports, WaitingRoomService, chrono_duration, finish};

#[derive(Clone)]
pub struct PaymentService {
    ports: Ports,
    control: Control,
    policy: Policy,
    room: Option<WaitingRoomService>,
}

impl PaymentService {
    /// `control` protects the payer's wallet (the point-use strategy).
    pub fn new(ports: Ports, control: Control, policy: Policy) -> Self {
        Self {
            ports,
            control,
            policy,
            room: None,
        }
    }

    pub(crate) fn with_room(mut self, room: WaitingRoomService) -> Self {
        self.room = Some(room);
        self
    }

    /// Pays the user's held reservation from their points, all or nothing:
    /// the seat sold, the reservation confirmed, the payment recorded, the
    /// balance down, and the events of all of it. With an idempotency key, a
    /// repeat answers the first payment; the key reused for another
    /// reservation is refused.
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn pay(&self, cmd: PayReservation) -> Result<Payment, PayError> {
        let schedule = match &self.room {
            Some(room) => {
                // The gate needs the concert: the reservation names it. A
                // reservation that is no longer held cannot be paid: the
                // request changes nothing (an idempotent repeat answers
                // the first payment, anything else is refused below), so
                // it passes the gate, whose admission may rightly have
                // ended with that first payment.
                let held = self.ports.queries.reservation(cmd.reservation).await?;
                match held.filter(|r| r.is_visible_to(cmd.user)) {
                    Some(r) if r.status != ReservationStatus::Held => None,
                    Some(r) if !room.admits(cmd.user, r.schedule).await? => {
                        return Err(PayError::NotAdmitted);
                    }
                    Some(r) => Some(r.schedule),
                    None => None,
                }
            }
            None => None,
        };
        let keys = [LockKey::wallet(cmd.user)];
        let payment = self
            .control
            .run(
                Operation::Pay,
                &keys,
                self.ports.clock.as_ref(),
                |protection| self.pay_once(&cmd, protection),
            )
            .await?;
        if let (Some(room), Some(schedule)) = (&self.room, schedule) {
            room.after_payment(cmd.user, schedule).await;
        }
        Ok(payment)
    }

    async fn pay_once(
        &self,
        cmd: &PayReservation,
        protection: Protection,
    ) -> Result<Payment, PayError> {
        let now = self.ports.clock.now();
        let atomic = matches!(protection, Protection::Atomic);
        let mut uow = self.ports.transactions.begin(protection.clone()).await?;
        let outcome = async {
            if let Some(key) = &cmd.idempotency {
                let request = format!("reservation={}", cmd.reservation);
                match uow
                    .idempotency()
                    .claim(cmd.user, KeyScope::Payment, key, &request)
                    .await?
                {
                    Claim::New => {}
                    Claim::Done(Stored::Payment(id)) => {
                        return uow.payments().find(id).await?.ok_or_else(|| {
                            Failure::unknown(anyhow::anyhow!("payment {id} of a key is missing"))
                                .into()
                        });
                    }
                    Claim::Done(Stored::Balance(_)) | Claim::Mismatch => {
                        return Err(PayError::KeyReused);
                    }
                }
            }
            let reservation = payable(&mut *uow, cmd, now).await?;
            // The seat first, locked: it serializes every change of its
            // reservations; then the reservation as it stands under it.
            let seat = uow.seats().lock(reservation.seat).await?;
            let reservation = payable(&mut *uow, cmd, now).await?;
            let sold = seat
                .and_then(|s| s.sell(&reservation, now))
                .ok_or(Failure::Conflict)?;
            uow.seats().save(&sold).await?;
            let confirmed = reservation.confirm();
            uow.reservations()
                .save(&confirmed, ReservationStatus::Held)
                .await?;
            let payment = uow
                .payments()
                .insert(&NewPayment {
                    reservation: confirmed.id,
                    user: cmd.user,
                    amount: confirmed.price,
                    paid_at: now,
                })
                .await?;
            // The contended wallet last, so its lock is held the shortest.
            let change = PointChange::Use(confirmed.price);
            let balance = change_balance(&mut *uow, cmd.user, change, now, atomic)
                .await?
                .map_err(|rule| match rule {
                    PointRule::Insufficient { balance, needed } => {
                        PayError::InsufficientPoints { balance, needed }
                    }
                    other => {
                        Failure::unknown(anyhow::anyhow!("a payment was refused: {other}")).into()
                    }
                })?;
            if let Some(key) = &cmd.idempotency {
                uow.idempotency()
                    .complete(
                        cmd.user,
                        KeyScope::Payment,
                        key,
                        Stored::Payment(payment.id),
                    )
                    .await?;
            }
            uow.outbox()
                .record(&[
                    Event::reservation_confirmed(&confirmed, &payment),
                    Event::points(cmd.user, change, balance, Some(payment.id), now),
                    Event::payment_completed(&payment, &confirmed),
                ])
                .await?;
            Ok(payment)
        }
        .await;
        finish(uow, &protection, outcome).await
    }

    /// The payment as its payer sees it; anyone else's is `NotFound`.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, user: UserId, id: PaymentId) -> Result<Payment, QueryError> {
        self.ports
            .queries
            .payment(id)
            .await?
            .filter(|p| p.is_visible_to(user))
            .ok_or(QueryError::NotFound("payment"))
    }

    /// Refunds the user's payment, all or nothing: the price back to the
    /// wallet (history `REFUND`), the payment and the reservation
    /// `REFUNDED`, the seat available. A refunded payment is answered as it
    /// is; the refund closes `refund_cutoff` before the show.
    #[tracing::instrument(skip(self), fields(strategy = self.control.name()))]
    pub async fn refund(&self, user: UserId, id: PaymentId) -> Result<Payment, RefundError> {
        let payment = self.get(user, id).await.map_err(|e| match e {
            QueryError::NotFound(_) => RefundError::NotFound,
            QueryError::Failed(f) => RefundError::Failed(f),
        })?;
        let reservation = self
            .ports
            .queries
            .reservation(payment.reservation)
            .await?
            .ok_or_else(|| Failure::unknown(anyhow::anyhow!("payment {id} has no reservation")))?;
        let show = self
            .ports
            .catalogue
            .schedule(reservation.schedule)
            .await?
            .ok_or_else(|| Failure::unknown(anyhow::anyhow!("reservation without schedule")))?;
        let keys = [LockKey::wallet(user)];
        let refunded = self
            .control
            .run(
                Operation::Refund,
                &keys,
                self.ports.clock.as_ref(),
                |protection| self.refund_once(user, &reservation, id, show.starts_at, protection),
            )
            .await?;
        if let Some(room) = &self.room {
            room.on_sale_again(reservation.schedule).await;
        }
        Ok(refunded)
    }

    async fn refund_once(
        &self,
        user: UserId,
        reservation: &Reservation,
        id: PaymentId,
        show_starts: chrono::DateTime<chrono::Utc>,
        protection: Protection,
    ) -> Result<Payment, RefundError> {
        let now = self.ports.clock.now();
        let atomic = matches!(protection, Protection::Atomic);
        let mut uow = self.ports.transactions.begin(protection.clone()).await?;
        let outcome = async {
            let seat = uow.seats().lock(reservation.seat).await?;
            let payment = uow
                .payments()
                .find(id)
                .await?
                .filter(|p| p.is_visible_to(user))
                .ok_or(RefundError::NotFound)?;
            let cutoff = chrono_duration(self.policy.refund_cutoff);
            let Some(refunded) = payment.refund(user, now, show_starts, cutoff)? else {
                return Ok(payment);
            };
            let current = uow
                .reservations()
                .find(payment.reservation)
                .await?
                .ok_or_else(|| {
                    Failure::unknown(anyhow::anyhow!("payment {id} has no reservation"))
                })?;
            uow.payments().save(&refunded, PaymentStatus::Paid).await?;
            let refunded_reservation = current.refund();
            uow.reservations()
                .save(&refunded_reservation, ReservationStatus::Confirmed)
                .await?;
            match seat {
                Some(seat) if seat.state == SeatState::Sold => {
                    uow.seats().save(&seat.release()).await?;
                }
                _ => return Err(Failure::Conflict.into()),
            }
            let change = PointChange::Refund(refunded.amount);
            let balance = change_balance(&mut *uow, user, change, now, atomic)
                .await?
                .map_err(|rule| {
                    Failure::unknown(anyhow::anyhow!("a refund was refused: {rule}"))
                })?;
            uow.outbox()
                .record(&[
                    Event::payment_refunded(&refunded, &refunded_reservation, now),
                    Event::reservation_refunded(&refunded_reservation, &refunded, now),
                    Event::points(user, change, balance, Some(refunded.id), now),
                ])
                .await?;
            Ok(refunded)
        }
        .await;
        finish(uow, &protection, outcome).await
    }
}

/// The payer's reservation as stored now, checked payable at `now`.
async fn payable(
    uow: &mut dyn UnitOfWork,
    cmd: &PayReservation,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Reservation, PayError> {
    let reservation = uow
        .reservations()
        .find(cmd.reservation)
        .await?
        .ok_or(PayError::NotFound)?;
    reservation.check_payable(cmd.user, now)?;
    Ok(reservation)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::ids::IdempotencyKey;

    use chrono::Duration;

    use super::*;
    use crate::control::RetryPolicy;
    use crate::error::RefundError;
    use crate::events::EventType;
    use crate::ids::{ScheduleId, SeatNumber};
    use crate::lock::{LockOptions, MockDistributedLock};
    use crate::memory::MemoryStore;
    use crate::model::seat::SeatState;
    use crate::model::wallet::PointKind;
    use crate::services::testing::{TestClock, services, t0};
    use crate::services::{ReserveSeat, Services};

    fn user(n: u64) -> UserId {
        UserId::from(n)
    }

    fn controls() -> Vec<Control> {
        let lock = Arc::new(MockDistributedLock::granting(1, Arc::default()));
        vec![
            Control::optimistic("optimistic"),
            Control::pessimistic("pessimistic"),
            Control::atomic("atomic"),
            Control::retrying("optimistic-retry", RetryPolicy::default()),
            Control::locked("local", lock, LockOptions::default()),
        ]
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

        async fn pay(
            &self,
            who: u64,
            r: &Reservation,
            key: Option<&str>,
        ) -> Result<Payment, PayError> {
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
        for control in controls() {
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
        for control in controls() {
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
        for control in controls() {
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
}
