//! The catalogue use cases over the in-memory store (moved from the domain
//! crate, which cannot depend on an adapter).

use chrono::Duration;

use super::{services, t0};
use concert_domain::control::Control;
use concert_domain::ids::{SeatNumber, UserId};
use concert_domain::services::{Policy, ReserveSeat};
use concert_domain::*;

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
