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
use crate::services::{Policy, Ports, WaitingRoomService, begin_claimed, chrono_duration, finish};

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
        let (mut uow, claim) = begin_claimed(
            &self.ports,
            &protection,
            cmd.user,
            KeyScope::Payment,
            cmd.idempotency.as_ref(),
            || format!("reservation={}", cmd.reservation),
        )
        .await?;
        let outcome = async {
            match claim {
                Claim::New => {}
                Claim::Done(Stored::Payment(id)) => {
                    return uow.payments().find(id).await?.ok_or_else(|| {
                        Failure::unknown(anyhow::anyhow!("payment {id} of a key is missing")).into()
                    });
                }
                Claim::Done(Stored::Balance(_)) | Claim::Mismatch => {
                    return Err(PayError::KeyReused);
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
