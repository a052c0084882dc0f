//! The waiting room of an on-sale: entering, polling, leaving, and the gate
//! that reservation and payment pass when the room is on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Failure, QueryError};
use crate::ids::{ConcertId, ScheduleId, UserId};
use crate::model::catalogue::SeatStatus;
use crate::model::room::{RoomEntry, RoomRules, RoomStatus, RoomView};
use crate::model::seat::ReservationStatus;
use crate::ports::WaitingRoom;
use crate::services::{Ports, chrono_duration};

/// The waiting room use cases.
#[derive(Clone)]
pub struct WaitingRoomService {
    ports: Ports,
    room: Arc<dyn WaitingRoom>,
    rules: RoomRules,
    known: Arc<Mutex<Known>>,
}

/// Catalogue facts that never change once true, remembered so that the
/// crowd's polls and gate checks do not each cost a database read; and
/// when each concert's sold-out mark was last checked against the seats.
#[derive(Default)]
struct Known {
    concerts: HashSet<ConcertId>,
    schedules: HashMap<ScheduleId, ConcertId>,
    sold_out_checked: HashMap<ConcertId, DateTime<Utc>>,
}

/// How often an instance checks a room's sold-out mark against the seats
/// (on an entry). The mark is set at once by the payment that sells the
/// last seat and cleared by a refund or a new schedule; this check repairs
/// it when the room's state was lost (its store restarted empty) or when a
/// refund and a last sale raced.
pub const SOLD_OUT_RECHECK: Duration = Duration::from_secs(10);

impl WaitingRoomService {
    pub fn new(ports: Ports, room: Arc<dyn WaitingRoom>, rules: RoomRules) -> Self {
        Self {
            ports,
            room,
            rules,
            known: Arc::default(),
        }
    }

    pub fn rules(&self) -> RoomRules {
        self.rules
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters the user into the concert's room (re-entering keeps the
    /// place) and tells where they stand.
    #[tracing::instrument(skip(self))]
    pub async fn enter(&self, user: UserId, concert: ConcertId) -> Result<RoomEntry, QueryError> {
        self.require_concert(concert).await?;
        let now = self.ports.clock.now();
        let mut view = self.room.enter(concert, user, now).await?;
        if self.sold_out_check_due(concert, now) {
            match self.repair_sold_out(concert, user, now, view).await {
                Ok(repaired) => view = repaired,
                Err(e) => {
                    tracing::warn!(error = %e, %concert, "waiting room sold-out mark not checked");
                }
            }
        }
        Ok(RoomEntry::from_view(concert, user, view, self.rules))
    }

    /// True (and noted) when this instance last checked the concert's
    /// sold-out mark more than [`SOLD_OUT_RECHECK`] ago.
    fn sold_out_check_due(&self, concert: ConcertId, now: DateTime<Utc>) -> bool {
        let mut known = self.known();
        let due = known
            .sold_out_checked
            .get(&concert)
            .is_none_or(|at| *at + chrono_duration(SOLD_OUT_RECHECK) <= now || *at > now);
        if due {
            known.sold_out_checked.insert(concert, now);
        }
        due
    }

    /// Sets the room's sold-out mark from the seats when it disagrees with
    /// `view`, and returns the user's view after it.
    async fn repair_sold_out(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
        view: RoomView,
    ) -> Result<RoomView, Failure> {
        let marked = match view.status {
            RoomStatus::SoldOut => true,
            RoomStatus::Waiting { .. } => false,
            // an admitted user's view does not show the mark
            RoomStatus::Admitted { .. } | RoomStatus::Unrestricted => return Ok(view),
        };
        let sold_out = self.sold_out(concert, now).await?;
        if sold_out == marked {
            return Ok(view);
        }
        tracing::info!(%concert, sold_out, "waiting room sold-out mark repaired");
        self.room.set_sold_out(concert, sold_out).await?;
        self.room.enter(concert, user, now).await
    }

    /// Where the user stands; polling keeps a waiting entry alive.
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, user: UserId, concert: ConcertId) -> Result<RoomEntry, QueryError> {
        self.require_concert(concert).await?;
        let view = self
            .room
            .poll(concert, user, self.ports.clock.now())
            .await?
            .ok_or(QueryError::NotFound("waiting-room entry"))?;
        Ok(RoomEntry::from_view(concert, user, view, self.rules))
    }

    /// The user leaves (waiting or admitted); the place is freed at once.
    #[tracing::instrument(skip(self))]
    pub async fn leave(&self, user: UserId, concert: ConcertId) -> Result<(), QueryError> {
        self.require_concert(concert).await?;
        Ok(self
            .room
            .leave(concert, user, self.ports.clock.now())
            .await?)
    }

    /// The concerts whose rooms this instance has served (for metrics).
    pub fn concerts(&self) -> Vec<ConcertId> {
        let mut concerts: Vec<ConcertId> = self.known().concerts.iter().copied().collect();
        concerts.sort();
        concerts
    }

    /// How many users wait and how many are admitted (for metrics).
    pub async fn sizes(&self, concert: ConcertId) -> Result<(u64, u64), Failure> {
        self.room.sizes(concert, self.ports.clock.now()).await
    }

    async fn require_concert(&self, concert: ConcertId) -> Result<(), QueryError> {
        if self.known().concerts.contains(&concert) {
            return Ok(());
        }
        self.ports
            .catalogue
            .concert(concert)
            .await?
            .ok_or(QueryError::NotFound("concert"))?;
        self.known().concerts.insert(concert);
        Ok(())
    }

    /// The concert of `schedule`, `None` for an unknown schedule.
    async fn concert_of(&self, schedule: ScheduleId) -> Result<Option<ConcertId>, Failure> {
        if let Some(concert) = self.known().schedules.get(&schedule) {
            return Ok(Some(*concert));
        }
        let Some(found) = self.ports.catalogue.schedule(schedule).await? else {
            return Ok(None);
        };
        self.known().schedules.insert(schedule, found.concert);
        Ok(Some(found.concert))
    }

    /// The gate: true when `user` may reserve or pay for `schedule` now.
    /// An unknown schedule passes (the use case then reports it unknown).
    pub(crate) async fn admits(&self, user: UserId, schedule: ScheduleId) -> Result<bool, Failure> {
        match self.concert_of(schedule).await? {
            None => Ok(true),
            Some(concert) => {
                self.room
                    .is_admitted(concert, user, self.ports.clock.now())
                    .await
            }
        }
    }

    /// After `user` paid for a seat of `schedule`: the admission ends unless
    /// the user still holds another live reservation of that concert, and
    /// the room is sold out once every seat of every future schedule is
    /// sold. Done in the paying request, after its commit; a failure here
    /// is logged, never undoes the payment (the admission then lapses on its
    /// own time).
    pub(crate) async fn after_payment(&self, user: UserId, schedule: ScheduleId) {
        if let Err(e) = self.release_if_done(user, schedule).await {
            tracing::warn!(error = %e, %user, %schedule, "waiting room not updated after a payment");
        }
    }

    async fn release_if_done(&self, user: UserId, schedule: ScheduleId) -> Result<(), Failure> {
        let Some(concert) = self.concert_of(schedule).await? else {
            return Ok(());
        };
        let now = self.ports.clock.now();
        let mut holds_more = false;
        for r in self.ports.queries.reservations_of(user).await? {
            if r.status_at(now) == ReservationStatus::Held
                && self.concert_of(r.schedule).await? == Some(concert)
            {
                holds_more = true;
                break;
            }
        }
        // Sold out first: the place the release frees must not go to a
        // waiting user when nothing is left to sell.
        if self.sold_out(concert, now).await? {
            self.room.set_sold_out(concert, true).await?;
        }
        if !holds_more {
            self.room.release(concert, user, now).await?;
        }
        Ok(())
    }

    /// After a refund or a new schedule: seats are on sale again.
    pub(crate) async fn on_sale_again(&self, schedule: ScheduleId) {
        let outcome = async {
            if let Some(concert) = self.concert_of(schedule).await? {
                self.room.set_sold_out(concert, false).await?;
            }
            Ok::<_, Failure>(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, %schedule, "waiting room not reopened");
        }
    }

    /// True when every seat of every future schedule of the concert is sold.
    async fn sold_out(&self, concert: ConcertId, now: DateTime<Utc>) -> Result<bool, Failure> {
        let Some(schedules) = self.ports.catalogue.schedules(concert, now).await? else {
            return Ok(false);
        };
        if schedules.is_empty() {
            return Ok(false);
        }
        for schedule in schedules {
            let seats = self.ports.catalogue.seats(schedule.id).await?;
            if seats
                .into_iter()
                .flatten()
                .any(|s| s.status_at(now) != SeatStatus::Sold)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
