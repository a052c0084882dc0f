//! The in-process waiting room: the [`WaitingRoom`] port's whole contract
//! inside one process, for a single instance without Redis (the Redis
//! adapter is the one for many instances). Same rules, step by step, as the
//! Redis scripts (`concert_redis`'s room module), held to the same contract
//! suite.
//!
//! Each step takes the rooms' mutex once: drop lapsed admissions and (a
//! bounded batch of) idle entries, apply the step, admit while places are
//! free. Positions come from a Fenwick tree over the tickets handed out, so
//! a poll is O(log n) like Redis' `ZRANK`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{ConcertId, Failure, RoomRules, RoomStatus, RoomView, UserId, WaitingRoom};

/// Idle entries dropped per step at most (the rest go in later steps; an
/// idle entry is never admitted meanwhile).
pub const IDLE_BATCH: usize = 256;
/// The admission rate is counted in two buckets of this many milliseconds
/// (a sliding window over the last bucket's length).
pub const RATE_BUCKET_MS: i64 = 10_000;

/// The waiting rooms of one process. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LocalWaitingRoom {
    rules: RoomRules,
    rooms: Arc<Mutex<HashMap<ConcertId, Room>>>,
}

impl std::fmt::Debug for LocalWaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWaitingRoom")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl LocalWaitingRoom {
    pub fn new(rules: RoomRules) -> Self {
        Self {
            rules,
            rooms: Arc::default(),
        }
    }

    pub fn rules(&self) -> RoomRules {
        self.rules
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<ConcertId, Room>> {
        // Every step leaves a room consistent before it can panic.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one step on the concert's room (created empty if missing) at
    /// the room's time for `now`: tidy, `apply`, admit; returns where
    /// `user` stands then.
    fn step(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
        apply: impl FnOnce(&mut Room, &Limits, i64),
    ) -> Option<RoomView> {
        let limits = Limits::of(self.rules);
        let mut rooms = self.rooms();
        let room = rooms.entry(concert).or_default();
        let now = room.advance(now.timestamp_millis());
        room.tidy(&limits, now);
        apply(room, &limits, now);
        room.admit(&limits, now);
        room.view(user, now)
    }
}

/// The rules in milliseconds.
struct Limits {
    active: usize,
    admission: i64,
    idle: i64,
}

impl Limits {
    fn of(rules: RoomRules) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            active: rules.active_limit as usize,
            admission: ms(rules.admission).max(1),
            idle: ms(rules.idle).max(1),
        }
    }
}

#[derive(Default)]
struct Room {
    /// The latest `now` seen (ms): the room's time never goes back.
    clock: i64,
    line: Line,
    /// Waiting users: ticket and when last seen (ms).
    waiting: HashMap<UserId, (u64, i64)>,
    /// (last seen, ticket) of every waiting user, oldest first.
    seen: BTreeSet<(i64, u64)>,
    /// Admitted users and the end of their admission (ms).
    admitted: HashMap<UserId, i64>,
    /// (end, user) of every admission, soonest first.
    ends: BTreeSet<(i64, UserId)>,
    sold_out: bool,
    rate: Rate,
}

impl Room {
    fn advance(&mut self, now: i64) -> i64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Drops lapsed admissions and up to [`IDLE_BATCH`] idle entries.
    fn tidy(&mut self, limits: &Limits, now: i64) {
        while let Some(&(end, user)) = self.ends.first() {
            if end > now {
                break;
            }
            self.ends.pop_first();
            self.admitted.remove(&user);
        }
        let cutoff = now.saturating_sub(limits.idle);
        for _ in 0..IDLE_BATCH {
            match self.seen.first() {
                Some(&(seen, ticket)) if seen <= cutoff => {
                    if let Some(user) = self.line.user(ticket) {
                        self.remove_waiting(user);
                    } else {
                        self.seen.pop_first();
                    }
                }
                _ => break,
            }
        }
    }

    /// Admits from the head of the line while places are free, skipping
    /// (and dropping) idle entries, at most [`IDLE_BATCH`] of them.
    fn admit(&mut self, limits: &Limits, now: i64) {
        if self.sold_out {
            return;
        }
        let cutoff = now.saturating_sub(limits.idle);
        let mut skipped = 0;
        while self.admitted.len() < limits.active && skipped < IDLE_BATCH {
            let Some((_, user)) = self.line.first() else {
                break;
            };
            let seen = self.remove_waiting(user);
            if seen.is_some_and(|s| s <= cutoff) {
                skipped += 1;
                continue;
            }
            let end = now.saturating_add(limits.admission);
            self.admitted.insert(user, end);
            self.ends.insert((end, user));
            self.rate.count(now);
        }
    }

    /// Removes a waiting user; returns when they were last seen.
    fn remove_waiting(&mut self, user: UserId) -> Option<i64> {
        let (ticket, seen) = self.waiting.remove(&user)?;
        self.seen.remove(&(seen, ticket));
        self.line.remove(ticket);
        Some(seen)
    }

    fn remove_admitted(&mut self, user: UserId) {
        if let Some(end) = self.admitted.remove(&user) {
            self.ends.remove(&(end, user));
        }
    }

    /// Marks a waiting user seen at `now`, or drops them if they were idle
    /// past the cutoff (their place is lost). True if still waiting.
    fn refresh(&mut self, user: UserId, limits: &Limits, now: i64) -> bool {
        let Some(&(ticket, seen)) = self.waiting.get(&user) else {
            return false;
        };
        if seen <= now.saturating_sub(limits.idle) {
            self.remove_waiting(user);
            return false;
        }
        self.seen.remove(&(seen, ticket));
        self.seen.insert((now, ticket));
        self.waiting.insert(user, (ticket, now));
        true
    }

    fn join(&mut self, user: UserId, now: i64) {
        let ticket = self.line.push(user);
        self.waiting.insert(user, (ticket, now));
        self.seen.insert((now, ticket));
    }

    /// Where `user` stands after the step (`None`: no entry).
    fn view(&mut self, user: UserId, now: i64) -> Option<RoomView> {
        let status = if let Some(end) = self.admitted.get(&user) {
            RoomStatus::Admitted {
                until: from_millis(*end),
            }
        } else if let Some(&(ticket, _)) = self.waiting.get(&user) {
            if self.sold_out {
                RoomStatus::SoldOut
            } else {
                RoomStatus::Waiting {
                    position: self.line.position(ticket),
                }
            }
        } else {
            return None;
        };
        Some(RoomView {
            status,
            admission_rate: self.rate.per_second(now),
        })
    }
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Admissions counted in two fixed buckets; the rate is a sliding-window
/// estimate over the last [`RATE_BUCKET_MS`].
#[derive(Default)]
struct Rate {
    bucket: i64,
    current: u64,
    previous: u64,
}

impl Rate {
    fn roll(&mut self, now: i64) {
        let bucket = now.div_euclid(RATE_BUCKET_MS);
        if bucket == self.bucket {
            return;
        }
        self.previous = if bucket == self.bucket + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.bucket = bucket;
    }

    fn count(&mut self, now: i64) {
        self.roll(now);
        self.current += 1;
    }

    /// Admissions per second over the last bucket's length, to the
    /// thousandth (as the Redis adapter reports it).
    fn per_second(&mut self, now: i64) -> f64 {
        self.roll(now);
        let into = now.rem_euclid(RATE_BUCKET_MS);
        let weight = 1.0 - into as f64 / RATE_BUCKET_MS as f64;
        let window = self.previous as f64 * weight + self.current as f64;
        let rate = window * 1000.0 / RATE_BUCKET_MS as f64;
        (rate * 1000.0).floor() / 1000.0
    }
}

/// The line of waiting users: tickets in order of first entry, and a
/// Fenwick tree over the tickets handed out (1 while the ticket waits, 0
/// once gone) for O(log n) positions.
#[derive(Default)]
struct Line {
    /// The ticket of slot 1 of the tree.
    base: u64,
    /// 1-based Fenwick tree; `tree[0]` is unused.
    tree: Vec<i64>,
    order: BTreeMap<u64, UserId>,
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl Line {
    fn slots(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    fn prefix(&self, mut i: usize) -> i64 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= lowbit(i);
        }
        sum
    }

    fn add(&mut self, mut i: usize, delta: i64) {
        while i <= self.slots() {
            self.tree[i] += delta;
            i += lowbit(i);
        }
    }

    fn slot(&self, ticket: u64) -> usize {
        (ticket - self.base) as usize + 1
    }

    /// Hands out the next ticket to `user`.
    fn push(&mut self, user: UserId) -> u64 {
        if self.tree.is_empty() {
            self.tree.push(0);
        }
        let ticket = self.base + self.slots() as u64;
        let i = self.slots() + 1;
        // tree[i] covers (i - lowbit(i), i]: the slots before i in that
        // range, plus this one.
        let value = 1 + self.prefix(i - 1) - self.prefix(i - lowbit(i));
        self.tree.push(value);
        self.order.insert(ticket, user);
        ticket
    }

    fn remove(&mut self, ticket: u64) {
        if self.order.remove(&ticket).is_none() {
            return;
        }
        let slot = self.slot(ticket);
        self.add(slot, -1);
        self.compact();
    }

    fn user(&self, ticket: u64) -> Option<UserId> {
        self.order.get(&ticket).copied()
    }

    fn first(&self) -> Option<(u64, UserId)> {
        self.order.first_key_value().map(|(t, u)| (*t, *u))
    }

    /// 1 for the first waiting ticket, 2 for the next, ...
    fn position(&self, ticket: u64) -> u64 {
        self.prefix(self.slot(ticket)).max(0) as u64
    }

    /// Forgets the slots before the first waiting ticket once they are
    /// most of the tree, so memory follows the line, not its history.
    fn compact(&mut self) {
        let next = self.base + self.slots() as u64;
        let Some((head, _)) = self.first() else {
            self.base = next;
            self.tree.clear();
            return;
        };
        let dead = (head - self.base) as usize;
        if dead < 1024 || dead * 2 < self.slots() {
            return;
        }
        let n = (next - head) as usize;
        let mut tree = vec![0i64; n + 1];
        for ticket in self.order.keys() {
            tree[(ticket - head) as usize + 1] = 1;
        }
        for i in 1..=n {
            let j = i + lowbit(i);
            if j <= n {
                tree[j] += tree[i];
            }
        }
        self.base = head;
        self.tree = tree;
    }
}

#[async_trait]
impl WaitingRoom for LocalWaitingRoom {
    async fn enter(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<RoomView, Failure> {
        self.step(concert, user, now, |room, limits, now| {
            if !room.admitted.contains_key(&user) && !room.refresh(user, limits, now) {
                room.join(user, now);
            }
        })
        .ok_or_else(|| Failure::unknown(anyhow::anyhow!("an entered user has no entry")))
    }

    async fn poll(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomView>, Failure> {
        Ok(self.step(concert, user, now, |room, limits, now| {
            room.refresh(user, limits, now);
        }))
    }

    async fn leave(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        self.step(concert, user, now, |room, _, _| {
            room.remove_waiting(user);
            room.remove_admitted(user);
        });
        Ok(())
    }

    async fn is_admitted(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let now = now.timestamp_millis();
        Ok(self
            .rooms()
            .get(&concert)
            .and_then(|room| room.admitted.get(&user))
            .is_some_and(|end| *end > now))
    }

    async fn release(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        self.step(concert, user, now, |room, _, _| room.remove_admitted(user));
        Ok(())
    }

    async fn set_sold_out(&self, concert: ConcertId, sold_out: bool) -> Result<(), Failure> {
        self.rooms().entry(concert).or_default().sold_out = sold_out;
        Ok(())
    }

    async fn sizes(&self, concert: ConcertId, now: DateTime<Utc>) -> Result<(u64, u64), Failure> {
        let limits = Limits::of(self.rules);
        let now = now.timestamp_millis();
        let rooms = self.rooms();
        let Some(room) = rooms.get(&concert) else {
            return Ok((0, 0));
        };
        let cutoff = now.saturating_sub(limits.idle);
        let waiting = room.seen.range((cutoff + 1, 0)..).count();
        let admitted = room.ends.range((now + 1, UserId::from(0))..).count();
        Ok((waiting as u64, admitted as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_removals_and_survive_compaction() {
        let mut line = Line::default();
        let tickets: Vec<u64> = (1..=5000).map(|u| line.push(UserId::from(u))).collect();
        assert_eq!(line.position(tickets[0]), 1);
        assert_eq!(line.position(tickets[4999]), 5000);
        line.remove(tickets[10]);
        assert_eq!(line.position(tickets[11]), 11);
        // drop most of the head: the tree compacts, positions stay right
        for t in &tickets[..4000] {
            line.remove(*t);
        }
        assert!(line.base > 0, "compacted");
        assert_eq!(line.position(tickets[4000]), 1);
        assert_eq!(line.position(tickets[4999]), 1000);
        let next = line.push(UserId::from(9_999));
        assert_eq!(next, 5000, "tickets keep growing");
        assert_eq!(line.position(next), 1001);
        for t in &tickets[4000..] {
            line.remove(*t);
        }
        assert_eq!(line.position(next), 1);
        line.remove(next);
        assert!(line.first().is_none());
        let again = line.push(UserId::from(1));
        assert_eq!((again, line.position(again)), (5001, 1));
    }

    #[test]
    fn the_rate_slides_over_two_buckets() {
        let mut rate = Rate::default();
        for _ in 0..50 {
            rate.count(20_000);
        }
        assert_eq!(rate.per_second(20_000), 5.0);
        // half way through the next bucket: half of the previous counts
        assert_eq!(rate.per_second(35_000), 2.5);
        assert_eq!(rate.per_second(60_000), 0.0);
    }
}
