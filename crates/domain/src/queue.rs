//! The queue strategy: seat requests travel to the one applier of their
//! partition instead of running where they arrived.
//!
//! A submitting instance appends the request ([`QueuedRequest`]) to its
//! partition (chosen by hashing the schedule, so a batch of one schedule's
//! seats lands in one partition) through the outbound port [`SeatQueue`],
//! and waits for the outcome up to a reply budget. Whichever instance holds
//! the partition's lease applies the partition's requests in arrival order
//! through the inbound ports [`Appliers`] / [`PartitionApplier`], under
//! that lease's [`Fence`]: storage refuses the writes of a holder whose
//! lease was taken over, exactly as it refuses a stale lock holder's.
//!
//! The values here are plain: a request is ids only, so it can travel
//! between processes; adapters encode and decode them through the
//! constructors.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Failure, ReserveError};
use crate::ids::{InvalidValue, ScheduleId, SeatNumber, UserId};
use crate::lock::Fence;
use crate::model::commands::{ReserveSeat, ReserveSeats};
use crate::model::seat::Reservation;

/// Identifies one queued request: 32 lower-case hex digits (128 random
/// bits), so that ids cannot be guessed or enumerated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Characters in an id.
    pub const LEN: usize = 32;

    /// A new random id.
    pub fn generate() -> Self {
        Self(format!("{:032x}", fastrand::u128(..)))
    }

    /// An id given by a client or read back from the queue.
    pub fn new(raw: &str) -> Result<Self, InvalidValue> {
        if raw.len() == Self::LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "requestId",
                format!("must be {} lower-case hex digits", Self::LEN),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A seat request as it travels: one seat, or several of one schedule
/// (all or none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatRequest {
    One(ReserveSeat),
    Many(ReserveSeats),
}

impl SeatRequest {
    pub fn user(&self) -> UserId {
        match self {
            SeatRequest::One(cmd) => cmd.user,
            SeatRequest::Many(cmd) => cmd.user,
        }
    }

    /// The partition key: every seat of a request belongs to this schedule.
    pub fn schedule(&self) -> ScheduleId {
        match self {
            SeatRequest::One(cmd) => cmd.schedule,
            SeatRequest::Many(cmd) => cmd.schedule,
        }
    }

    /// The seats asked for, ascending.
    pub fn seats(&self) -> &[SeatNumber] {
        match self {
            SeatRequest::One(cmd) => std::slice::from_ref(&cmd.seat),
            SeatRequest::Many(cmd) => cmd.seats(),
        }
    }

    /// True for a batch (its outcome is a list; a single seat's is one
    /// reservation).
    pub fn is_many(&self) -> bool {
        matches!(self, SeatRequest::Many(_))
    }
}

/// A request in the queue: its id, the request, and when it was submitted
/// (by the submitting instance's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    pub id: RequestId,
    pub request: SeatRequest,
    pub submitted_at: DateTime<Utc>,
}

/// What a seat request came to: the holds taken (one per seat, in seat
/// order), or the refusal the same request would get from any other
/// strategy.
pub type SeatOutcome = Result<Vec<Reservation>, ReserveError>;

/// What [`SeatQueue::submit`] saw within its wait.
#[derive(Debug)]
pub enum Submitted {
    /// The applier answered in time.
    Done(SeatOutcome),
    /// Still queued: it will be applied, and its outcome kept for
    /// [`SeatQueue::state`].
    Pending,
}

/// A request as [`SeatQueue::state`] finds it.
#[derive(Debug)]
pub struct RequestState {
    /// Who submitted it: nobody else may see it.
    pub owner: UserId,
    /// A batch request.
    pub many: bool,
    /// `None` while it is still queued.
    pub outcome: Option<SeatOutcome>,
}

/// The queue of seat requests, partitioned by schedule (outbound port).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SeatQueue: Send + Sync {
    /// Appends `request` to its partition's queue and waits up to `wait`
    /// for its outcome: [`Submitted::Done`] when the applier answered in
    /// time, else [`Submitted::Pending`] (the request stays queued and is
    /// applied later; its state is then kept for [`SeatQueue::state`] for
    /// a while). With a zero `wait` it is always [`Submitted::Pending`].
    ///
    /// MUST return [`Failure::Unavailable`] when the request could not be
    /// queued: it is then never applied.
    async fn submit(&self, request: &QueuedRequest, wait: Duration) -> Result<Submitted, Failure>;

    /// A request that was answered [`Submitted::Pending`]: its owner and
    /// its outcome once applied. `None` for an id never answered pending,
    /// or whose state has expired.
    async fn state(&self, id: &RequestId) -> Result<Option<RequestState>, Failure>;
}

/// One request delivered to a partition's applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub request: QueuedRequest,
    /// Delivered before to an earlier holder of the partition, which may
    /// have applied it without answering (it died, or lost its lease).
    pub redelivered: bool,
}

/// What the applier made of one delivery.
#[derive(Debug)]
pub enum Applied {
    /// Applied (or refused); answer the submitter with this outcome.
    Done(SeatOutcome),
    /// The partition's lease was lost: nothing was decided here; leave the
    /// request to the next holder.
    Abandoned,
}

/// Opens a [`PartitionApplier`] for each tenure of a partition's lease
/// (inbound port: the queue adapter's partition consumers call it).
pub trait Appliers: Send + Sync {
    /// A fresh applier for a partition whose lease was just taken with
    /// `fence`. It knows nothing from earlier tenures: others may have
    /// applied requests meanwhile.
    fn open(&self, fence: Fence) -> Box<dyn PartitionApplier>;
}

/// Applies the requests of one partition while its lease lasts.
#[async_trait]
pub trait PartitionApplier: Send {
    /// Applies `batch`, whose requests are in arrival order, and returns
    /// one [`Applied`] per delivery, in the same order. Requests for one
    /// seat are decided in arrival order; requests for other seats may be
    /// decided concurrently. Once the lease is lost, every request not yet
    /// decided is [`Applied::Abandoned`].
    async fn apply(&mut self, batch: Vec<Delivery>) -> Vec<Applied>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_random_hex_and_validated() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), RequestId::LEN);
        assert_eq!(RequestId::new(a.as_str()).unwrap(), a);
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
            "0123456789abcdef0123456789abcde-",
        ] {
            assert!(RequestId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_names_its_user_schedule_and_seats() {
        let seat = |n| SeatNumber::new(n).unwrap();
        let one = SeatRequest::One(ReserveSeat {
            user: UserId::from(4),
            schedule: ScheduleId::from(9),
            seat: seat(7),
        });
        assert_eq!(
            (one.user(), one.schedule(), one.seats(), one.is_many()),
            (UserId::from(4), ScheduleId::from(9), &[seat(7)][..], false)
        );
        let many = SeatRequest::Many(
            ReserveSeats::new(
                UserId::from(4),
                ScheduleId::from(9),
                vec![seat(9), seat(2)],
                4,
            )
            .unwrap(),
        );
        assert_eq!(many.seats(), [seat(2), seat(9)]);
        assert!(many.is_many());
    }
}
