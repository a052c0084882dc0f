//! [`SeatMapCache`]: the schedules' seat maps (and the bookable dates with
//! their available seats) served from this process's memory, kept current
//! by invalidation.
//!
//! It wraps the real [`CatalogueRepository`] and is itself one, so the use
//! cases do not know it is there. What invalidates an entry:
//!
//! - this process's own commits, told at once (the app's commit listener):
//!   a client always sees its own hold in the seat map;
//! - the events of every instance, from the event streams (the app's
//!   seat-map consumer), so another instance's hold, cancel, sale or
//!   refund shows as soon as it is consumed;
//! - age: an entry older than `max_age` is loaded again, a bound on
//!   staleness should events stop flowing;
//! - the consumer losing its stream: while it is not live
//!   ([`SeatMapCache::set_live`]) nothing is cached and every read goes to
//!   storage, as without the cache.
//!
//! Expiry needs no invalidation: entries keep each seat's hold end, and the
//! use case turns a hold that has ended into `AVAILABLE` with its clock at
//! read time. Storage stays the truth for every write: only reads go
//! through the cache.
//!
//! A load that an invalidation overtakes stores nothing (generations), so a
//! slow read of the old state cannot overwrite a newer invalidation; and
//! concurrent misses of one schedule wait for a single load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    CatalogueRepository, Concert, ConcertId, Failure, NewSchedule, Schedule, ScheduleId,
    ScheduleSummary, Seat, SeatStatus, Title,
};

/// Entries kept before stale ones are dropped.
const MAX_ENTRIES: usize = 10_000;

/// What the cache did since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeatMapStats {
    /// Seat maps answered from memory.
    pub hits: u64,
    /// Seat maps (and date lists) loaded from storage.
    pub loads: u64,
    /// Seat maps invalidated (one schedule each).
    pub invalidations: u64,
    /// Reads passed straight to storage while not live.
    pub bypassed: u64,
}

/// The seat-map cache (see the module documentation).
pub struct SeatMapCache {
    inner: Arc<dyn CatalogueRepository>,
    max_age: Duration,
    live: AtomicBool,
    state: Mutex<State>,
    hits: AtomicU64,
    loads: AtomicU64,
    invalidations: AtomicU64,
    bypassed: AtomicU64,
}

#[derive(Default)]
struct State {
    maps: HashMap<ScheduleId, Slot<Vec<Seat>>>,
    lists: HashMap<ConcertId, Slot<Dates>>,
    /// Bumped when everything is dropped: loads begun before store nothing.
    epoch: u64,
}

/// A concert's future dates as loaded at `after`.
struct Dates {
    after: DateTime<Utc>,
    dates: Vec<ScheduleSummary>,
}

struct Slot<T> {
    generation: u64,
    cached: Option<(Arc<T>, Instant)>,
    /// Held by the one load in flight.
    loading: Arc<tokio::sync::Mutex<()>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            generation: 0,
            cached: None,
            loading: Arc::default(),
        }
    }
}

impl<T> Slot<T> {
    fn fresh(&self, max_age: Duration) -> Option<Arc<T>> {
        self.cached
            .as_ref()
            .filter(|(_, at)| at.elapsed() < max_age)
            .map(|(value, _)| value.clone())
    }

    fn invalidate(&mut self) {
        self.generation += 1;
        self.cached = None;
    }

    /// Kept when cached and fresh, or while a load is in flight.
    fn worth_keeping(&self, max_age: Duration) -> bool {
        self.fresh(max_age).is_some() || Arc::strong_count(&self.loading) > 1
    }
}

/// Which slot a load fills.
#[derive(Clone, Copy)]
enum Key {
    Map(ScheduleId),
    List(ConcertId),
}

impl SeatMapCache {
    /// A cache in front of `inner`; entries live at most `max_age`. It
    /// starts not live: nothing is cached until [`SeatMapCache::set_live`].
    pub fn new(inner: Arc<dyn CatalogueRepository>, max_age: Duration) -> Self {
        Self {
            inner,
            max_age,
            live: AtomicBool::new(false),
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Only whole values are written under the lock: a panic cannot
        // leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether invalidations arrive (the event consumer is connected).
    /// Every change drops everything: while not live nothing is cached;
    /// once live again, nothing cached before can have missed an event.
    pub fn set_live(&self, live: bool) {
        if self.live.swap(live, Ordering::AcqRel) != live {
            self.invalidate_all();
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The seat map of `schedule` changed.
    pub fn invalidate(&self, schedule: ScheduleId) {
        self.state().maps.entry(schedule).or_default().invalidate();
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// The dates of `concert` changed.
    pub fn invalidate_dates(&self, concert: ConcertId) {
        self.state().lists.entry(concert).or_default().invalidate();
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        let mut state = self.state();
        state.epoch += 1;
        state.maps.clear();
        state.lists.clear();
    }

    pub fn stats(&self) -> SeatMapStats {
        SeatMapStats {
            hits: self.hits.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
        }
    }

    /// The cached seat map of `schedule`, loading it if needed; `None` for
    /// an unknown schedule.
    async fn seat_map(&self, schedule: ScheduleId) -> Result<Option<Arc<Vec<Seat>>>, Failure> {
        let loading = {
            let mut state = self.state();
            let slot = state.maps.entry(schedule).or_default();
            if let Some(map) = slot.fresh(self.max_age) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(map));
            }
            slot.loading.clone()
        };
        let _one_load = loading.lock().await;
        let (generation, epoch) = {
            let mut state = self.state();
            let epoch = state.epoch;
            let slot = state.maps.entry(schedule).or_default();
            if let Some(map) = slot.fresh(self.max_age) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(map));
            }
            (slot.generation, epoch)
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        let Some(seats) = self.inner.seats(schedule).await? else {
            return Ok(None);
        };
        let seats = Arc::new(seats);
        self.store(
            Key::Map(schedule),
            generation,
            epoch,
            |state| &mut state.maps.entry(schedule).or_default().cached,
            seats.clone(),
        );
        Ok(Some(seats))
    }

    /// The cached dates of `concert` as of `after` or later; `None` for an
    /// unknown concert.
    async fn dates(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
        let usable = |dates: &Dates| dates.after <= after;
        let loading = {
            let mut state = self.state();
            let slot = state.lists.entry(concert).or_default();
            if let Some(dates) = slot.fresh(self.max_age).filter(|d| usable(d)) {
                return Ok(Some(upcoming(&dates, after)));
            }
            slot.loading.clone()
        };
        let _one_load = loading.lock().await;
        let (generation, epoch) = {
            let mut state = self.state();
            let epoch = state.epoch;
            let slot = state.lists.entry(concert).or_default();
            if let Some(dates) = slot.fresh(self.max_age).filter(|d| usable(d)) {
                return Ok(Some(upcoming(&dates, after)));
            }
            (slot.generation, epoch)
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        let Some(dates) = self.inner.schedules(concert, after).await? else {
            return Ok(None);
        };
        let dates = Arc::new(Dates { after, dates });
        self.store(
            Key::List(concert),
            generation,
            epoch,
            |state| &mut state.lists.entry(concert).or_default().cached,
            dates.clone(),
        );
        Ok(Some(upcoming(&dates, after)))
    }

    /// Stores a loaded value unless an invalidation overtook its load (or
    /// the cache stopped being live meanwhile).
    fn store<T>(
        &self,
        key: Key,
        generation: u64,
        epoch: u64,
        cell: impl FnOnce(&mut State) -> &mut Option<(Arc<T>, Instant)>,
        value: Arc<T>,
    ) {
        let mut state = self.state();
        let current = match key {
            Key::Map(s) => state.maps.get(&s).map(|slot| slot.generation),
            Key::List(c) => state.lists.get(&c).map(|slot| slot.generation),
        };
        if state.epoch != epoch || current != Some(generation) || !self.is_live() {
            return;
        }
        *cell(&mut state) = Some((value, Instant::now()));
        if state.maps.len() + state.lists.len() > MAX_ENTRIES {
            let max_age = self.max_age;
            state.maps.retain(|_, slot| slot.worth_keeping(max_age));
            state.lists.retain(|_, slot| slot.worth_keeping(max_age));
        }
    }
}

/// The dates still after `after`, as loaded (their seat counts are
/// recomputed by the caller).
fn upcoming(dates: &Dates, after: DateTime<Utc>) -> Vec<ScheduleSummary> {
    dates
        .dates
        .iter()
        .filter(|d| d.starts_at > after)
        .cloned()
        .collect()
}

#[async_trait]
impl CatalogueRepository for SeatMapCache {
    async fn concerts(&self) -> Result<Vec<Concert>, Failure> {
        self.inner.concerts().await
    }

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, Failure> {
        self.inner.concert(id).await
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, Failure> {
        self.inner.schedule(id).await
    }

    /// The dates from memory, each with its seats available at `after`
    /// counted on its cached seat map.
    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
        if !self.is_live() {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
            return self.inner.schedules(concert, after).await;
        }
        let Some(mut dates) = self.dates(concert, after).await? else {
            return Ok(None);
        };
        for date in &mut dates {
            if let Some(seats) = self.seat_map(date.id).await? {
                date.available_seats = u32::try_from(
                    seats
                        .iter()
                        .filter(|s| s.status_at(after) == SeatStatus::Available)
                        .count(),
                )
                .unwrap_or(u32::MAX);
            }
        }
        Ok(Some(dates))
    }

    async fn seats(&self, schedule: ScheduleId) -> Result<Option<Vec<Seat>>, Failure> {
        if !self.is_live() {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
            return self.inner.seats(schedule).await;
        }
        Ok(self
            .seat_map(schedule)
            .await?
            .map(|seats| seats.as_ref().clone()))
    }

    async fn create_concert(&self, title: &Title) -> Result<Concert, Failure> {
        self.inner.create_concert(title).await
    }

    async fn create_schedule(&self, schedule: &NewSchedule) -> Result<Option<Schedule>, Failure> {
        let created = self.inner.create_schedule(schedule).await?;
        self.invalidate_dates(schedule.concert);
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use chrono::Duration as Span;
    use concert_domain::{Points, SeatId, SeatNumber, SeatState, UserId};

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap()
    }

    /// One concert (1) with one schedule (10) whose seats the test sets;
    /// counts the loads; a load can be held until released.
    #[derive(Default)]
    struct Catalogue {
        seats: Mutex<Vec<Seat>>,
        seat_loads: AtomicUsize,
        list_loads: AtomicUsize,
        gate: tokio::sync::RwLock<()>,
        read: tokio::sync::Notify,
    }

    impl Catalogue {
        fn new() -> Arc<Self> {
            let seats = SeatNumber::all()
                .map(|number| Seat {
                    id: SeatId::from(u64::from(number.get())),
                    schedule: ScheduleId::from(10),
                    number,
                    price: Points::new(100).unwrap(),
                    state: SeatState::Available,
                    version: 0,
                })
                .collect();
            Arc::new(Self {
                seats: Mutex::new(seats),
                ..Self::default()
            })
        }

        fn hold(&self, number: usize, until: DateTime<Utc>) {
            self.seats.lock().unwrap()[number - 1].state = SeatState::Held {
                by: UserId::from(1),
                until,
            };
        }
    }

    #[async_trait]
    impl CatalogueRepository for Catalogue {
        async fn concerts(&self) -> Result<Vec<Concert>, Failure> {
            Ok(vec![])
        }
        async fn concert(&self, _: ConcertId) -> Result<Option<Concert>, Failure> {
            Ok(None)
        }
        async fn schedule(&self, _: ScheduleId) -> Result<Option<Schedule>, Failure> {
            Ok(None)
        }
        async fn schedules(
            &self,
            concert: ConcertId,
            _after: DateTime<Utc>,
        ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
            self.list_loads.fetch_add(1, Ordering::SeqCst);
            Ok((concert == ConcertId::from(1)).then(|| {
                vec![ScheduleSummary {
                    id: ScheduleId::from(10),
                    concert,
                    starts_at: t0() + Span::days(1),
                    available_seats: 0,
                }]
            }))
        }
        async fn seats(&self, schedule: ScheduleId) -> Result<Option<Vec<Seat>>, Failure> {
            // read first, then wait at the gate: a held gate models a slow
            // read of the state as it was
            let seats = self.seats.lock().unwrap().clone();
            self.read.notify_one();
            let _open = self.gate.read().await;
            self.seat_loads.fetch_add(1, Ordering::SeqCst);
            Ok((schedule == ScheduleId::from(10)).then_some(seats))
        }
        async fn create_concert(&self, _: &Title) -> Result<Concert, Failure> {
            unimplemented!()
        }
        async fn create_schedule(&self, _: &NewSchedule) -> Result<Option<Schedule>, Failure> {
            Ok(None)
        }
    }

    fn statuses(seats: &[Seat], at: DateTime<Utc>) -> Vec<SeatStatus> {
        seats.iter().take(3).map(|s| s.status_at(at)).collect()
    }

    #[tokio::test]
    async fn reads_come_from_memory_until_invalidated() {
        let catalogue = Catalogue::new();
        let cache = SeatMapCache::new(catalogue.clone(), Duration::from_secs(3600));
        cache.set_live(true);
        let s10 = ScheduleId::from(10);
        for _ in 0..5 {
            assert_eq!(cache.seats(s10).await.unwrap().unwrap().len(), 50);
        }
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 1);
        catalogue.hold(1, t0() + Span::minutes(5));
        // not invalidated yet: the cached map
        let seats = cache.seats(s10).await.unwrap().unwrap();
        assert_eq!(statuses(&seats, t0())[0], SeatStatus::Available);
        cache.invalidate(s10);
        let seats = cache.seats(s10).await.unwrap().unwrap();
        assert_eq!(statuses(&seats, t0())[0], SeatStatus::Held);
        // an ended hold reads as available without any invalidation
        assert_eq!(
            statuses(&seats, t0() + Span::minutes(5))[0],
            SeatStatus::Available
        );
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 2);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.loads, stats.invalidations), (5, 2, 1));
        // unknown schedules are not cached
        assert_eq!(cache.seats(ScheduleId::from(11)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn not_live_reads_storage_and_going_live_again_starts_empty() {
        let catalogue = Catalogue::new();
        let cache = SeatMapCache::new(catalogue.clone(), Duration::from_secs(3600));
        let s10 = ScheduleId::from(10);
        cache.seats(s10).await.unwrap();
        cache.seats(s10).await.unwrap();
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats().bypassed, 2);
        cache.set_live(true);
        cache.seats(s10).await.unwrap();
        cache.set_live(false);
        cache.set_live(true);
        cache.seats(s10).await.unwrap();
        cache.seats(s10).await.unwrap();
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn entries_older_than_the_maximum_age_are_loaded_again() {
        let catalogue = Catalogue::new();
        let cache = SeatMapCache::new(catalogue.clone(), Duration::ZERO);
        cache.set_live(true);
        let s10 = ScheduleId::from(10);
        cache.seats(s10).await.unwrap();
        cache.seats(s10).await.unwrap();
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_stores_nothing() {
        let catalogue = Catalogue::new();
        let cache = Arc::new(SeatMapCache::new(
            catalogue.clone(),
            Duration::from_secs(3600),
        ));
        cache.set_live(true);
        let s10 = ScheduleId::from(10);
        // a slow load reads the old state...
        let gate = catalogue.gate.write().await;
        let slow = tokio::spawn({
            let cache = cache.clone();
            async move { cache.seats(s10).await.unwrap().unwrap() }
        });
        catalogue.read.notified().await;
        // ...a hold commits and invalidates meanwhile...
        catalogue.hold(2, t0() + Span::minutes(5));
        cache.invalidate(s10);
        drop(gate);
        let old = slow.await.unwrap();
        assert_eq!(statuses(&old, t0())[1], SeatStatus::Available);
        // ...so the old state was not kept
        let now = cache.seats(s10).await.unwrap().unwrap();
        assert_eq!(statuses(&now, t0())[1], SeatStatus::Held);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let catalogue = Catalogue::new();
        let cache = Arc::new(SeatMapCache::new(
            catalogue.clone(),
            Duration::from_secs(3600),
        ));
        cache.set_live(true);
        let gate = catalogue.gate.write().await;
        let readers: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.seats(ScheduleId::from(10)).await })
            })
            .collect();
        // the first load is in flight; the others wait for it or find its
        // result
        catalogue.read.notified().await;
        drop(gate);
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap().unwrap().len(), 50);
        }
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dates_count_the_available_seats_of_the_cached_maps() {
        let catalogue = Catalogue::new();
        let cache = SeatMapCache::new(catalogue.clone(), Duration::from_secs(3600));
        cache.set_live(true);
        let concert = ConcertId::from(1);
        let dates = cache.schedules(concert, t0()).await.unwrap().unwrap();
        assert_eq!(dates[0].available_seats, 50);
        catalogue.hold(1, t0() + Span::minutes(5));
        cache.invalidate(ScheduleId::from(10));
        let dates = cache.schedules(concert, t0()).await.unwrap().unwrap();
        assert_eq!(dates[0].available_seats, 49);
        // the hold ends: available again, without any load
        let later = t0() + Span::minutes(6);
        let dates = cache.schedules(concert, later).await.unwrap().unwrap();
        assert_eq!(dates[0].available_seats, 50);
        // past the show: no bookable date
        let after_show = t0() + Span::days(2);
        assert!(
            cache
                .schedules(concert, after_show)
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        assert_eq!(catalogue.list_loads.load(Ordering::SeqCst), 1);
        assert_eq!(catalogue.seat_loads.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache.schedules(ConcertId::from(2), t0()).await.unwrap(),
            None
        );
    }
}
