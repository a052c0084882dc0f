//! Browsing: concerts, their bookable dates, and a date's seat map.

use crate::catalogue::{Concert, ScheduleSummary, SeatStatus, SeatView};
use crate::clock::Clock;
use crate::error::QueryError;
use crate::ids::{ConcertId, ScheduleId};
use crate::ports::CatalogueRepository;

pub struct CatalogueService<R, C> {
    repo: R,
    clock: C,
}

impl<R: CatalogueRepository, C: Clock> CatalogueService<R, C> {
    pub fn new(repo: R, clock: C) -> Self {
        Self { repo, clock }
    }

    #[tracing::instrument(skip(self))]
    pub async fn concerts(&self) -> Result<Vec<Concert>, QueryError> {
        self.repo.concerts().await
    }

    /// The concert's future schedules (bookable dates) with their number of
    /// available seats.
    #[tracing::instrument(skip(self))]
    pub async fn schedules(&self, concert: ConcertId) -> Result<Vec<ScheduleSummary>, QueryError> {
        self.repo.schedules(concert, self.clock.now()).await
    }

    /// The schedule's seats as a client sees them now (an expired hold is
    /// available), optionally only those with `status`.
    #[tracing::instrument(skip(self))]
    pub async fn seats(
        &self,
        schedule: ScheduleId,
        status: Option<SeatStatus>,
    ) -> Result<Vec<SeatView>, QueryError> {
        let now = self.clock.now();
        let seats = self.repo.seats(schedule).await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{SeatId, SeatNumber, UserId};
    use crate::points::Points;
    use crate::ports::MockCatalogueRepository;
    use crate::seat::{Seat, SeatState};
    use crate::services::testing::{frozen_clock, t0};
    use chrono::Duration;

    fn seat(number: i64, state: SeatState) -> Seat {
        Seat {
            id: SeatId::from(number as u64),
            schedule: ScheduleId::from(1),
            number: SeatNumber::new(number).unwrap(),
            price: Points::new(1000 * number).unwrap(),
            state,
            version: 0,
        }
    }

    fn seat_repo() -> MockCatalogueRepository {
        let mut repo = MockCatalogueRepository::new();
        let user = UserId::from(9);
        repo.expect_seats().returning(move |_| {
            Ok(vec![
                seat(1, SeatState::Available),
                seat(
                    2,
                    SeatState::Held {
                        by: user,
                        until: t0() + Duration::seconds(30),
                    },
                ),
                seat(
                    3,
                    SeatState::Held {
                        by: user,
                        until: t0(),
                    },
                ),
                seat(4, SeatState::Sold),
            ])
        });
        repo
    }

    #[tokio::test]
    async fn seat_map_shows_expired_holds_as_available() {
        let service = CatalogueService::new(seat_repo(), frozen_clock());
        let seats = service.seats(ScheduleId::from(1), None).await.unwrap();
        let statuses: Vec<_> = seats.iter().map(|s| (s.number.get(), s.status)).collect();
        assert_eq!(
            statuses,
            [
                (1, SeatStatus::Available),
                (2, SeatStatus::Held),
                (3, SeatStatus::Available),
                (4, SeatStatus::Sold)
            ]
        );
        assert_eq!(seats[3].price.get(), 4000);
    }

    #[tokio::test]
    async fn seat_map_filters_by_status() {
        let service = CatalogueService::new(seat_repo(), frozen_clock());
        let available = service
            .seats(ScheduleId::from(1), Some(SeatStatus::Available))
            .await
            .unwrap();
        let numbers: Vec<_> = available.iter().map(|s| s.number.get()).collect();
        assert_eq!(numbers, [1, 3]);
        let sold = service
            .seats(ScheduleId::from(1), Some(SeatStatus::Sold))
            .await
            .unwrap();
        assert_eq!(sold.len(), 1);
    }

    #[tokio::test]
    async fn unknown_schedule_is_not_found() {
        let mut repo = MockCatalogueRepository::new();
        repo.expect_seats()
            .returning(|_| Err(QueryError::NotFound("schedule")));
        let service = CatalogueService::new(repo, frozen_clock());
        assert!(matches!(
            service.seats(ScheduleId::from(5), None).await,
            Err(QueryError::NotFound("schedule"))
        ));
    }

    #[tokio::test]
    async fn schedules_are_asked_for_after_now() {
        let mut repo = MockCatalogueRepository::new();
        repo.expect_schedules()
            .withf(|concert, after| concert.get() == 2 && *after == t0())
            .times(1)
            .returning(|concert, after| {
                Ok(vec![ScheduleSummary {
                    id: ScheduleId::from(8),
                    concert,
                    starts_at: after + Duration::days(3),
                    available_seats: 50,
                }])
            });
        repo.expect_concerts().returning(|| {
            Ok(vec![Concert {
                id: ConcertId::from(2),
                title: "Night".into(),
            }])
        });
        let service = CatalogueService::new(repo, frozen_clock());
        let schedules = service.schedules(ConcertId::from(2)).await.unwrap();
        assert_eq!(schedules[0].available_seats, 50);
        assert_eq!(service.concerts().await.unwrap()[0].title, "Night");
    }

    #[tokio::test]
    async fn storage_failures_pass_through() {
        let mut repo = MockCatalogueRepository::new();
        repo.expect_concerts()
            .returning(|| Err(QueryError::Unavailable(anyhow::anyhow!("pool timed out"))));
        let service = CatalogueService::new(repo, frozen_clock());
        assert!(matches!(
            service.concerts().await,
            Err(QueryError::Unavailable(_))
        ));
    }
}
