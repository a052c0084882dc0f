//! The demo catalogue (`app seed`), put on sale through the catalogue use
//! cases like an operator would.

use anyhow::Context;
use chrono::{DateTime, Days, NaiveTime, Utc};
use concert_domain::{CatalogueService, ConcertId, Points, SeatNumber};

/// The demo concerts, by title (the seed recognises them by title).
pub const DEMO_CONCERTS: [&str; 2] = ["Aurora Live in Seoul", "The Midnight Orchestra"];

/// Future schedules each demo concert keeps.
pub const DEMO_SCHEDULES: usize = 3;

/// What [`seed_demo`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// The demo concerts, in [`DEMO_CONCERTS`] order.
    pub concerts: Vec<ConcertId>,
    pub concerts_created: u32,
    pub schedules_created: u32,
}

/// Demo prices: seats 1-10 cost 1500, 11-30 cost 1000, 31-50 cost 500.
pub fn demo_price(seat: SeatNumber) -> u64 {
    match seat.get() {
        1..=10 => 1_500,
        11..=30 => 1_000,
        _ => 500,
    }
}

/// Makes sure the demo catalogue exists: the [`DEMO_CONCERTS`], each with
/// at least [`DEMO_SCHEDULES`] schedules starting after `now` (new ones a
/// week after the latest, at 19:00 UTC), 50 seats each priced by
/// [`demo_price`]. Idempotent: a second run creates nothing (until
/// schedules fall into the past). Run one seed at a time.
pub async fn seed_demo(
    catalogue: &CatalogueService,
    now: DateTime<Utc>,
) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport {
        concerts: Vec::new(),
        concerts_created: 0,
        schedules_created: 0,
    };
    let prices: Vec<Points> = SeatNumber::all()
        .map(|n| Points::new(i64::try_from(demo_price(n)).unwrap_or(1)))
        .collect::<Result<_, _>>()
        .context("demo prices are valid amounts")?;
    let evening = NaiveTime::from_hms_opt(19, 0, 0).context("19:00 is a time")?;
    let existing = catalogue.concerts().await?;
    for title in DEMO_CONCERTS {
        let concert = match existing.iter().find(|c| c.title == title) {
            Some(c) => c.id,
            None => {
                report.concerts_created += 1;
                catalogue.create_concert(title).await?.id
            }
        };
        let future = catalogue.schedules(concert).await?;
        let mut latest = future.last().map_or(now, |s| s.starts_at);
        for _ in future.len()..DEMO_SCHEDULES {
            let day = latest
                .date_naive()
                .checked_add_days(Days::new(7))
                .context("date out of range")?;
            let starts_at = day.and_time(evening).and_utc();
            catalogue
                .create_schedule(concert, starts_at, prices.clone())
                .await
                .with_context(|| format!("adding a date to {title:?}"))?;
            latest = starts_at;
            report.schedules_created += 1;
        }
        report.concerts.push(concert);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use concert_domain::{Control, Controls, Policy, Services};
    use concert_inprocess::SystemClock;
    use concert_memory::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn seeding_twice_creates_the_catalogue_once() {
        let store = MemoryStore::new();
        let control = Control::atomic("atomic");
        let services = Services::new(
            store.ports(Arc::new(SystemClock)),
            Controls {
                seats: control.clone(),
                charge: control.clone(),
                spend: control,
            },
            Policy::default(),
        );
        let now = Utc::now();
        let first = seed_demo(&services.catalogue, now).await.unwrap();
        assert_eq!((first.concerts_created, first.schedules_created), (2, 6));
        let second = seed_demo(&services.catalogue, now).await.unwrap();
        assert_eq!((second.concerts_created, second.schedules_created), (0, 0));
        assert_eq!(first.concerts, second.concerts);
        let dates = services
            .catalogue
            .schedules(first.concerts[0])
            .await
            .unwrap();
        assert_eq!(dates.len(), DEMO_SCHEDULES);
        let seats = services.catalogue.seats(dates[0].id, None).await.unwrap();
        let prices: Vec<_> = [0, 10, 49].iter().map(|i| seats[*i].price.get()).collect();
        assert_eq!(prices, [1_500, 1_000, 500]);
    }
}
