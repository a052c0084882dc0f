//! The demo catalogue (`app seed`).

use anyhow::Context;
use chrono::{DateTime, Days, NaiveTime, Utc};
use concert_domain::{ConcertId, SeatNumber};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Varchar};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::admin::{insert_concert, insert_schedule};
use crate::pool::Db;
use crate::rows::{from_db, to_db};
use crate::schema::{concerts, schedules};

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

#[derive(QueryableByName)]
struct Acquired {
    #[diesel(sql_type = Nullable<Integer>)]
    acquired: Option<i32>,
}

/// Makes sure the demo catalogue exists: the [`DEMO_CONCERTS`], each with
/// at least [`DEMO_SCHEDULES`] schedules starting after `now` (new ones a
/// week after the latest, at 19:00 UTC), 50 seats each priced by
/// [`demo_price`]. Idempotent: a second run creates nothing (until
/// schedules fall into the past). Concurrent runs are serialised by a
/// MySQL named lock.
pub async fn seed_demo(db: &Db, now: DateTime<Utc>) -> anyhow::Result<SeedReport> {
    let mut conn = db.get::<anyhow::Error>().await?;
    let lock: Acquired = diesel::sql_query("SELECT GET_LOCK(?, 30) AS acquired")
        .bind::<Varchar, _>("concert-seed")
        .get_result(&mut *conn)
        .await
        .context("taking the seed lock")?;
    anyhow::ensure!(lock.acquired == Some(1), "another seed is running");
    let outcome = seed_locked(&mut conn, now).await;
    let released = diesel::sql_query("SELECT RELEASE_LOCK('concert-seed') AS acquired")
        .get_result::<Acquired>(&mut *conn)
        .await
        .context("releasing the seed lock");
    let report = outcome?;
    released?;
    Ok(report)
}

async fn seed_locked(
    conn: &mut AsyncMysqlConnection,
    now: DateTime<Utc>,
) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport {
        concerts: Vec::new(),
        concerts_created: 0,
        schedules_created: 0,
    };
    for title in DEMO_CONCERTS {
        let (concert, created, schedules) = conn
            .transaction(async |c| seed_concert(c, title, now).await)
            .await
            .with_context(|| format!("seeding {title:?}"))?;
        report.concerts.push(concert);
        report.concerts_created += u32::from(created);
        report.schedules_created += schedules;
    }
    Ok(report)
}

async fn seed_concert(
    c: &mut AsyncMysqlConnection,
    title: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(ConcertId, bool, u32)> {
    let existing: Option<u64> = concerts::table
        .filter(concerts::title.eq(title))
        .order(concerts::id)
        .select(concerts::id)
        .first(c)
        .await
        .optional()?;
    let (concert, created) = match existing {
        Some(id) => (ConcertId::from(id), false),
        None => (insert_concert(c, title).await?, true),
    };
    let future: Vec<chrono::NaiveDateTime> = schedules::table
        .filter(schedules::concert_id.eq(concert.get()))
        .filter(schedules::starts_at.gt(to_db(now)))
        .order(schedules::starts_at)
        .select(schedules::starts_at)
        .load(c)
        .await?;
    let evening = NaiveTime::from_hms_opt(19, 0, 0).context("19:00 is a time")?;
    let mut latest = future.last().map_or(now, |t| from_db(*t));
    let mut made = 0;
    for _ in future.len()..DEMO_SCHEDULES {
        let day = latest
            .date_naive()
            .checked_add_days(Days::new(7))
            .context("date out of range")?;
        let starts_at = day.and_time(evening).and_utc();
        insert_schedule(c, concert, starts_at, &demo_price).await?;
        latest = starts_at;
        made += 1;
    }
    Ok((concert, created, made))
}
