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

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::control::Control;
    use crate::ids::{SeatNumber, UserId};
    use crate::services::testing::{services, t0};
    use crate::services::{Policy, ReserveSeat};

    #[tokio::test]
    async fn the_seat_map_shows_ended_holds_as_available_and_filters() {
        let (svc, store, clock) = services(Control::atomic("atomic"), Policy::default());
        let (concert, schedule) = store.add_schedule(t0() + Duration::days(3), 700);
        for (user, seat) in [(1, 1), (2, 2)] {
            svc.reservations
                .reserve(ReserveSeat {
                    user: UserId::from(user),
                    schedule,
                    seat: SeatNumber::new(seat).unwrap(),
                })
                .await
                .unwrap();
            clock.advance(Duration::minutes(3));
        }
        // seat 1's hold has ended, seat 2's has not
        let seats = svc.catalogue.seats(schedule, None).await.unwrap();
        assert_eq!(seats.len(), 50);
        let statuses: Vec<_> = seats[..3].iter().map(|s| s.status).collect();
        assert_eq!(
            statuses,
            [
                SeatStatus::Available,
                SeatStatus::Held,
                SeatStatus::Available
            ]
        );
        assert_eq!(seats[0].price.get(), 700);
        let held = svc
            .catalogue
            .seats(schedule, Some(SeatStatus::Held))
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        let dates = svc.catalogue.schedules(concert).await.unwrap();
        assert_eq!(dates[0].available_seats, 49);
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        let (svc, _, _) = services(Control::atomic("atomic"), Policy::default());
        assert!(matches!(
            svc.catalogue.seats(ScheduleId::from(5), None).await,
            Err(QueryError::NotFound("schedule"))
        ));
        assert!(matches!(
            svc.catalogue.schedules(ConcertId::from(5)).await,
            Err(QueryError::NotFound("concert"))
        ));
        assert!(matches!(
            svc.catalogue.concert(ConcertId::from(5)).await,
            Err(QueryError::NotFound("concert"))
        ));
    }

    #[tokio::test]
    async fn past_schedules_are_not_bookable() {
        let (svc, store, clock) = services(Control::atomic("atomic"), Policy::default());
        let (concert, _) = store.add_schedule(t0() + Duration::hours(1), 100);
        assert_eq!(svc.catalogue.schedules(concert).await.unwrap().len(), 1);
        clock.advance(Duration::hours(1));
        assert!(svc.catalogue.schedules(concert).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_operator_creates_a_concert_and_a_priced_schedule() {
        let (svc, _, _) = services(Control::atomic("atomic"), Policy::default());
        let concert = svc.catalogue.create_concert("  Night Show ").await.unwrap();
        assert_eq!(concert.title, "Night Show");
        assert!(matches!(
            svc.catalogue.create_concert(" ").await,
            Err(AdminError::Invalid(_))
        ));
        let prices: Vec<_> = (1..=50).map(|p| Points::new(p * 100).unwrap()).collect();
        let starts = t0() + Duration::days(10);
        let created = svc
            .catalogue
            .create_schedule(concert.id, starts, prices.clone())
            .await
            .unwrap();
        assert_eq!((created.concert, created.available_seats), (concert.id, 50));
        let seats = svc.catalogue.seats(created.id, None).await.unwrap();
        assert_eq!(seats[49].price.get(), 5_000);
        assert_eq!(
            svc.catalogue.schedule(created.id).await.unwrap().starts_at,
            starts
        );
        assert!(matches!(
            svc.catalogue
                .create_schedule(ConcertId::from(999), starts, prices.clone())
                .await,
            Err(AdminError::NotFound("concert"))
        ));
        assert!(matches!(
            svc.catalogue
                .create_schedule(concert.id, t0(), prices)
                .await,
            Err(AdminError::Invalid(_))
        ));
    }
}
