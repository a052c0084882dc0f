//! Browsing (concerts, their bookable dates, a date's seat map) and
//! putting concerts on sale.

use chrono::{DateTime, Utc};

use crate::error::{AdminError, QueryError};
use crate::ids::{ConcertId, ScheduleId};
use crate::model::catalogue::{
    Concert, NewSchedule, Schedule, ScheduleSummary, SeatStatus, SeatView, Title,
};
use crate::model::wallet::Points;
use crate::services::{Ports, WaitingRoomService};

#[derive(Clone)]
pub struct CatalogueService {
    ports: Ports,
    room: Option<WaitingRoomService>,
}

impl CatalogueService {
    pub fn new(ports: Ports) -> Self {
        Self { ports, room: None }
    }

    pub(crate) fn with_room(mut self, room: WaitingRoomService) -> Self {
        self.room = Some(room);
        self
    }

    pub(crate) fn ports(&self) -> &Ports {
        &self.ports
    }

    #[tracing::instrument(skip(self))]
    pub async fn concerts(&self) -> Result<Vec<Concert>, QueryError> {
        Ok(self.ports.catalogue.concerts().await?)
    }

    #[tracing::instrument(skip(self))]
    pub async fn concert(&self, id: ConcertId) -> Result<Concert, QueryError> {
        self.ports
            .catalogue
            .concert(id)
            .await?
            .ok_or(QueryError::NotFound("concert"))
    }

    /// The concert's future schedules (bookable dates) with their number of
    /// available seats.
    #[tracing::instrument(skip(self))]
    pub async fn schedules(&self, concert: ConcertId) -> Result<Vec<ScheduleSummary>, QueryError> {
        self.ports
            .catalogue
            .schedules(concert, self.ports.clock.now())
            .await?
            .ok_or(QueryError::NotFound("concert"))
    }

    /// One schedule (any date).
    #[tracing::instrument(skip(self))]
    pub async fn schedule(&self, id: ScheduleId) -> Result<Schedule, QueryError> {
        self.ports
            .catalogue
            .schedule(id)
            .await?
            .ok_or(QueryError::NotFound("schedule"))
    }

    /// The schedule's seats as a client sees them now (an expired hold is
    /// available), optionally only those with `status`.
    #[tracing::instrument(skip(self))]
    pub async fn seats(
        &self,
        schedule: ScheduleId,
        status: Option<SeatStatus>,
    ) -> Result<Vec<SeatView>, QueryError> {
        let now = self.ports.clock.now();
        let seats = self
            .ports
            .catalogue
            .seats(schedule)
            .await?
            .ok_or(QueryError::NotFound("schedule"))?;
        Ok(seats
            .into_iter()
            .map(|seat| SeatView {
                number: seat.number,
                price: seat.price,
                status: seat.status_at(now),
            })
            .filter(|view| status.is_none_or(|wanted| view.status == wanted))
            .collect())
    }

    /// Creates a concert (no schedules yet).
    #[tracing::instrument(skip(self))]
    pub async fn create_concert(&self, title: &str) -> Result<Concert, AdminError> {
        let title = Title::new(title)?;
        Ok(self.ports.catalogue.create_concert(&title).await?)
    }

    /// Creates a schedule of `concert` starting at `starts_at` (in the
    /// future) with one price per seat, seats 1 to 50 in order.
    #[tracing::instrument(skip(self, prices))]
    pub async fn create_schedule(
        &self,
        concert: ConcertId,
        starts_at: DateTime<Utc>,
        prices: Vec<Points>,
    ) -> Result<ScheduleSummary, AdminError> {
        let new = NewSchedule::new(concert, starts_at, prices, self.ports.clock.now())?;
        let schedule = self
            .ports
            .catalogue
            .create_schedule(&new)
            .await?
            .ok_or(AdminError::NotFound("concert"))?;
        if let Some(room) = &self.room {
            room.on_sale_again(schedule.id).await;
        }
        Ok(ScheduleSummary {
            id: schedule.id,
            concert: schedule.concert,
            starts_at: schedule.starts_at,
            available_seats: u32::from(crate::ids::SeatNumber::MAX),
        })
    }
}
