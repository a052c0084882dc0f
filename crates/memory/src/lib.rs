//! An in-memory implementation of the storage ports, for unit tests of the
//! use cases (and of adapters built on them) without a database.
//!
//! It keeps the ports' contracts that a use case can observe: version
//! checks and fencing tokens on save, compare-and-set of statuses, one live
//! reservation per seat, one payment per reservation, idempotency claims,
//! the outbox. Isolation is simple and strict: a unit of work works on a
//! copy of the whole store taken at `begin`, and its commit fails with
//! [`Failure::Conflict`] if any other unit committed in between (first
//! committer wins). Nothing waits, so pessimistic units behave like
//! optimistic ones here. The storage contract (`tests/tests/it/storage`)
//! runs against this store and the MySQL one; real locking is tested on
//! MySQL only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use concert_domain::error::Failure;
use concert_domain::events::Event;
use concert_domain::ids::{
    ConcertId, IdempotencyKey, PaymentId, ReservationId, ScheduleId, SeatId, SeatNumber, UserId,
};
use concert_domain::lock::LockKey;
use concert_domain::model::catalogue::{
    Concert, NewSchedule, Schedule, ScheduleSummary, SeatStatus, Title,
};
use concert_domain::model::payment::{NewPayment, Payment, PaymentStatus};
use concert_domain::model::seat::{
    NewReservation, Reservation, ReservationStatus, Seat, SeatState,
};
use concert_domain::model::wallet::{
    HistoryEntry, MAX_BALANCE, NewHistoryEntry, PointChange, Points, Wallet,
};
use concert_domain::ports::{
    CatalogueRepository, Claim, IdempotencyRepository, KeyScope, Outbox, PaymentRepository,
    Queries, ReservationRepository, SeatRepository, Stored, Transactions, UnitOfWork,
    WalletRepository,
};
use concert_domain::protection::Protection;

#[derive(Debug, Clone, Default)]
struct State {
    generation: u64,
    next_id: u64,
    concerts: BTreeMap<ConcertId, Concert>,
    schedules: BTreeMap<ScheduleId, Schedule>,
    /// Seats with the highest fencing token that wrote them.
    seats: BTreeMap<SeatId, (Seat, u64)>,
    reservations: BTreeMap<ReservationId, Reservation>,
    /// Wallets with the highest fencing token that wrote them.
    wallets: BTreeMap<UserId, (Wallet, u64)>,
    history: Vec<(UserId, HistoryEntry)>,
    payments: BTreeMap<PaymentId, Payment>,
    keys: HashMap<(UserId, KeyScope, String), (String, Option<Stored>)>,
    outbox: Vec<Event>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn seat_by_number(&self, schedule: ScheduleId, number: SeatNumber) -> Option<&Seat> {
        self.seats
            .values()
            .map(|(s, _)| s)
            .find(|s| s.schedule == schedule && s.number == number)
    }
}

/// The in-memory store. Clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    fail_next_commit: Arc<Mutex<Option<Failure>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store as ports for [`concert_domain::Services`].
    pub fn ports(&self, clock: Arc<dyn concert_domain::Clock>) -> concert_domain::Ports {
        concert_domain::Ports {
            transactions: Arc::new(self.clone()),
            queries: Arc::new(self.clone()),
            catalogue: Arc::new(self.clone()),
            clock,
        }
    }

    /// A concert with one schedule starting at `starts_at`, every seat at
    /// `price`.
    pub fn add_schedule(&self, starts_at: DateTime<Utc>, price: u64) -> (ConcertId, ScheduleId) {
        let mut s = self.state();
        let concert = ConcertId::from(s.id());
        s.concerts.insert(
            concert,
            Concert {
                id: concert,
                title: format!("Concert {concert}"),
            },
        );
        let schedule = ScheduleId::from(s.id());
        insert_schedule(&mut s, schedule, concert, starts_at, |_| price);
        s.generation += 1;
        (concert, schedule)
    }

    /// Sets a wallet's balance directly (test set-up).
    pub fn set_balance(&self, user: UserId, balance: u64) {
        let mut s = self.state();
        let entry = s.wallets.entry(user).or_insert((Wallet::empty(user), 0));
        entry.0.balance = balance;
        entry.0.version += 1;
        s.generation += 1;
    }

    /// The seat as stored.
    pub fn seat(&self, schedule: ScheduleId, number: SeatNumber) -> Option<Seat> {
        self.state().seat_by_number(schedule, number).cloned()
    }

    /// The fencing token last recorded on the seat.
    pub fn seat_fence(&self, schedule: ScheduleId, number: SeatNumber) -> u64 {
        let s = self.state();
        s.seats
            .values()
            .find(|(seat, _)| seat.schedule == schedule && seat.number == number)
            .map_or(0, |(_, t)| *t)
    }

    /// Records `token` as the seat's fencing token (test set-up).
    pub fn set_seat_fence(&self, schedule: ScheduleId, number: SeatNumber, token: u64) {
        let mut s = self.state();
        if let Some((_, t)) = s
            .seats
            .values_mut()
            .find(|(seat, _)| seat.schedule == schedule && seat.number == number)
        {
            *t = token;
        }
        s.generation += 1;
    }

    /// The fencing token last recorded on the wallet (0 without a wallet).
    pub fn wallet_fence(&self, user: UserId) -> u64 {
        self.state().wallets.get(&user).map_or(0, |(_, t)| *t)
    }

    /// Records `token` as the wallet's fencing token, if the wallet exists
    /// (test set-up).
    pub fn set_wallet_fence(&self, user: UserId, token: u64) {
        let mut s = self.state();
        if let Some((_, t)) = s.wallets.get_mut(&user) {
            *t = token;
        }
        s.generation += 1;
    }

    /// Every reservation, by id.
    pub fn reservations(&self) -> Vec<Reservation> {
        self.state().reservations.values().cloned().collect()
    }

    /// Every payment, by id.
    pub fn payments(&self) -> Vec<Payment> {
        self.state().payments.values().cloned().collect()
    }

    /// The user's history, oldest first.
    pub fn history_of(&self, user: UserId) -> Vec<HistoryEntry> {
        self.state()
            .history
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The wallet's balance (0 without a wallet).
    pub fn balance(&self, user: UserId) -> u64 {
        self.state()
            .wallets
            .get(&user)
            .map_or(0, |(w, _)| w.balance)
    }

    /// Every event recorded by committed units, in order.
    pub fn events(&self) -> Vec<Event> {
        self.state().outbox.clone()
    }

    /// The next commit fails with `failure` (and commits nothing).
    pub fn fail_next_commit(&self, failure: Failure) {
        *self
            .fail_next_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(failure);
    }
}

fn insert_schedule(
    s: &mut State,
    schedule: ScheduleId,
    concert: ConcertId,
    starts_at: DateTime<Utc>,
    price: impl Fn(SeatNumber) -> u64,
) {
    s.schedules.insert(
        schedule,
        Schedule {
            id: schedule,
            concert,
            starts_at,
        },
    );
    for number in SeatNumber::all() {
        let id = SeatId::from(s.id());
        let price = Points::new(i64::try_from(price(number)).unwrap_or(i64::MAX))
            .unwrap_or_else(|_| Points::new(1).expect("1 is a valid amount"));
        s.seats.insert(
            id,
            (
                Seat {
                    id,
                    schedule,
                    number,
                    price,
                    state: SeatState::Available,
                    version: 0,
                },
                0,
            ),
        );
    }
}

/// A unit of work on a copy of the store.
pub struct MemoryUnit {
    store: MemoryStore,
    base: u64,
    state: State,
    protection: Protection,
    /// After [`UnitOfWork::write`]: the shared state it replaced, put back
    /// by a rollback.
    written_over: Option<State>,
}

#[async_trait]
impl Transactions for MemoryStore {
    async fn begin(&self, protection: Protection) -> Result<Box<dyn UnitOfWork>, Failure> {
        let state = self.state().clone();
        Ok(Box::new(MemoryUnit {
            store: self.clone(),
            base: state.generation,
            state,
            protection,
            written_over: None,
        }))
    }
}

impl MemoryUnit {
    /// Puts back what [`UnitOfWork::write`] replaced, if it did and no
    /// unit committed on top of it since (as a generation of its own, so
    /// that units begun from the writes conflict).
    fn undo(&mut self) {
        if let Some(mut before) = self.written_over.take() {
            let mut shared = self.store.state();
            if shared.generation == self.base + 1 {
                before.generation = shared.generation + 1;
                *shared = before;
            }
        }
    }

    /// Checks `token` against the fence of `key` under a fenced protection;
    /// returns the token to record.
    fn fence_check(&self, key: &LockKey, recorded: u64) -> Result<u64, Failure> {
        match self.protection.fences().and_then(|f| f.get(key)) {
            Some(fence) if fence.token() < recorded => Err(Failure::LockLost),
            Some(fence) => Ok(fence.token()),
            None => Ok(recorded),
        }
    }
}

/// Dropped without commit, the unit rolls back: also what
/// [`UnitOfWork::write`] applied is put back.
impl Drop for MemoryUnit {
    fn drop(&mut self) {
        self.undo();
    }
}

#[async_trait]
impl UnitOfWork for MemoryUnit {
    fn repositories(&mut self) -> &mut dyn concert_domain::Repositories {
        self
    }

    /// Applies the unit's copy to the store, as the store's next
    /// generation (every unit begun before conflicts), after the checks of
    /// a commit; a failure the store was told to inject for the next commit
    /// fails this instead. Memory needs no durable step: the commit that
    /// follows has nothing left to do.
    async fn write(&mut self) -> Result<(), Failure> {
        if self.written_over.is_some() {
            return Ok(());
        }
        if let Some(failure) = self
            .store
            .fail_next_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(failure);
        }
        if self.protection.fences().is_some_and(|f| f.any_lost()) {
            return Err(Failure::LockLost);
        }
        let mut shared = self.store.state();
        if shared.generation != self.base {
            return Err(Failure::Conflict);
        }
        let mut state = self.state.clone();
        state.generation = self.base + 1;
        self.written_over = Some(std::mem::replace(&mut *shared, state));
        Ok(())
    }

    /// [`UnitOfWork::write`], unless done already.
    async fn commit(mut self: Box<Self>) -> Result<(), Failure> {
        self.write().await?;
        // committed: nothing left for the drop to put back
        self.written_over = None;
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) {
        self.undo();
    }
}

#[async_trait]
impl SeatRepository for MemoryUnit {
    async fn find(
        &mut self,
        schedule: ScheduleId,
        numbers: &[SeatNumber],
    ) -> Result<Vec<Seat>, Failure> {
        let mut numbers = numbers.to_vec();
        numbers.sort();
        numbers.dedup();
        let seats: Vec<Seat> = numbers
            .iter()
            .filter_map(|n| self.state.seat_by_number(schedule, *n).cloned())
            .collect();
        // a stale holder decides nothing: a lost fence, or a newer token
        // that wrote the seat, refuses the read
        if let Some(fences) = self.protection.fences() {
            for seat in &seats {
                let key = LockKey::seat(seat.schedule, seat.number);
                let recorded = self.state.seats.get(&seat.id).map_or(0, |(_, t)| *t);
                if let Some(fence) = fences.get(&key)
                    && (fence.is_lost() || fence.token() < recorded)
                {
                    return Err(Failure::LockLost);
                }
            }
        }
        Ok(seats)
    }

    async fn lock(&mut self, id: SeatId) -> Result<Option<Seat>, Failure> {
        Ok(self.state.seats.get(&id).map(|(s, _)| s.clone()))
    }

    async fn save(&mut self, seat: &Seat) -> Result<(), Failure> {
        let key = LockKey::seat(seat.schedule, seat.number);
        let (stored, token) = self
            .state
            .seats
            .get(&seat.id)
            .cloned()
            .ok_or(Failure::Conflict)?;
        let token = self.fence_check(&key, token)?;
        if stored.version + 1 != seat.version {
            return Err(Failure::Conflict);
        }
        self.state.seats.insert(seat.id, (seat.clone(), token));
        Ok(())
    }

    async fn hold_if_free(
        &mut self,
        schedule: ScheduleId,
        number: SeatNumber,
        user: UserId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let Some(seat) = self.state.seat_by_number(schedule, number).cloned() else {
            return Ok(false);
        };
        if seat.status_at(now) != SeatStatus::Available {
            return Ok(false);
        }
        let token = self.state.seats.get(&seat.id).map_or(0, |(_, t)| *t);
        let held = Seat {
            state: SeatState::Held { by: user, until },
            version: seat.version + 1,
            ..seat
        };
        self.state.seats.insert(held.id, (held, token));
        Ok(true)
    }

    async fn release_expired(
        &mut self,
        seats: &[SeatId],
        now: DateTime<Utc>,
    ) -> Result<u64, Failure> {
        let mut freed = 0;
        for id in seats {
            if let Some((seat, _)) = self.state.seats.get_mut(id)
                && matches!(seat.state, SeatState::Held { until, .. } if until <= now)
            {
                *seat = seat.release();
                freed += 1;
            }
        }
        Ok(freed)
    }
}

#[async_trait]
impl ReservationRepository for MemoryUnit {
    async fn find(&mut self, id: ReservationId) -> Result<Option<Reservation>, Failure> {
        Ok(self.state.reservations.get(&id).cloned())
    }

    async fn held_for_seat(&mut self, seat: SeatId) -> Result<Option<Reservation>, Failure> {
        Ok(self
            .state
            .reservations
            .values()
            .find(|r| r.seat == seat && r.status == ReservationStatus::Held)
            .cloned())
    }

    async fn insert(&mut self, new: &NewReservation) -> Result<Reservation, Failure> {
        let live = self.state.reservations.values().any(|r| {
            r.seat == new.seat
                && matches!(
                    r.status,
                    ReservationStatus::Held | ReservationStatus::Confirmed
                )
        });
        if live {
            return Err(Failure::Conflict);
        }
        let reservation = Reservation {
            id: ReservationId::from(self.state.id()),
            seat: new.seat,
            schedule: new.schedule,
            seat_number: new.seat_number,
            user: new.user,
            price: new.price,
            status: ReservationStatus::Held,
            expires_at: new.expires_at,
        };
        self.state
            .reservations
            .insert(reservation.id, reservation.clone());
        Ok(reservation)
    }

    async fn save(
        &mut self,
        reservation: &Reservation,
        expected: ReservationStatus,
    ) -> Result<(), Failure> {
        match self.state.reservations.get_mut(&reservation.id) {
            Some(stored) if stored.status == expected => {
                stored.status = reservation.status;
                Ok(())
            }
            _ => Err(Failure::Conflict),
        }
    }

    async fn lock_holds_of(
        &mut self,
        user: UserId,
        schedule: ScheduleId,
        now: DateTime<Utc>,
    ) -> Result<u32, Failure> {
        let live = self
            .state
            .reservations
            .values()
            .filter(|r| {
                r.user == user
                    && r.schedule == schedule
                    && r.status_at(now) == ReservationStatus::Held
            })
            .count();
        Ok(u32::try_from(live).unwrap_or(u32::MAX))
    }

    async fn stale(&mut self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Reservation>, Failure> {
        let mut stale: Vec<_> = self
            .state
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Held && r.expires_at <= now)
            .cloned()
            .collect();
        // oldest hold end first (ties by id: the map's order, kept by a
        // stable sort)
        stale.sort_by_key(|r| r.expires_at);
        stale.truncate(limit as usize);
        Ok(stale)
    }

    async fn expire(
        &mut self,
        ids: &[ReservationId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservationId>, Failure> {
        let mut expired = Vec::new();
        for id in ids {
            if let Some(r) = self.state.reservations.get_mut(id)
                && r.status == ReservationStatus::Held
                && r.expires_at <= now
            {
                r.status = ReservationStatus::Expired;
                expired.push(*id);
            }
        }
        Ok(expired)
    }
}

#[async_trait]
impl WalletRepository for MemoryUnit {
    async fn find(&mut self, user: UserId) -> Result<Option<Wallet>, Failure> {
        Ok(self.state.wallets.get(&user).map(|(w, _)| *w))
    }

    async fn create(&mut self, user: UserId) -> Result<(), Failure> {
        self.state
            .wallets
            .entry(user)
            .or_insert((Wallet::empty(user), 0));
        Ok(())
    }

    async fn save(&mut self, wallet: &Wallet) -> Result<(), Failure> {
        let (stored, token) = self
            .state
            .wallets
            .get(&wallet.user)
            .copied()
            .ok_or(Failure::Conflict)?;
        let token = self.fence_check(&LockKey::wallet(wallet.user), token)?;
        if stored.version + 1 != wallet.version {
            return Err(Failure::Conflict);
        }
        self.state.wallets.insert(wallet.user, (*wallet, token));
        Ok(())
    }

    async fn append(&mut self, entry: &NewHistoryEntry) -> Result<(), Failure> {
        let id = self.state.id();
        self.state.history.push((
            entry.user,
            HistoryEntry {
                id,
                kind: entry.change.kind(),
                amount: entry.change.amount().get(),
                balance_after: entry.balance_after,
                created_at: entry.at,
            },
        ));
        Ok(())
    }

    async fn change_atomically(
        &mut self,
        user: UserId,
        change: PointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, Failure> {
        let Some((wallet, token)) = self.state.wallets.get(&user).copied() else {
            return Ok(None);
        };
        let amount = change.amount().get();
        let balance = match change {
            PointChange::Charge(_) if wallet.balance + amount <= MAX_BALANCE => {
                wallet.balance + amount
            }
            PointChange::Use(_) if wallet.balance >= amount => wallet.balance - amount,
            PointChange::Refund(_) => wallet.balance + amount,
            _ => return Ok(None),
        };
        let next = Wallet {
            balance,
            version: wallet.version + 1,
            ..wallet
        };
        self.state.wallets.insert(user, (next, token));
        self.append(&NewHistoryEntry {
            user,
            change,
            balance_after: balance,
            at,
        })
        .await?;
        Ok(Some(balance))
    }
}

#[async_trait]
impl PaymentRepository for MemoryUnit {
    async fn insert(&mut self, new: &NewPayment) -> Result<Payment, Failure> {
        if self
            .state
            .payments
            .values()
            .any(|p| p.reservation == new.reservation)
        {
            return Err(Failure::Conflict);
        }
        let payment = Payment {
            id: PaymentId::from(self.state.id()),
            reservation: new.reservation,
            user: new.user,
            amount: new.amount,
            paid_at: new.paid_at,
            status: PaymentStatus::Paid,
        };
        self.state.payments.insert(payment.id, payment.clone());
        Ok(payment)
    }

    async fn find(&mut self, id: PaymentId) -> Result<Option<Payment>, Failure> {
        Ok(self.state.payments.get(&id).cloned())
    }

    async fn save(&mut self, payment: &Payment, expected: PaymentStatus) -> Result<(), Failure> {
        match self.state.payments.get_mut(&payment.id) {
            Some(stored) if stored.status == expected => {
                stored.status = payment.status;
                Ok(())
            }
            _ => Err(Failure::Conflict),
        }
    }
}

#[async_trait]
impl IdempotencyRepository for MemoryUnit {
    async fn claim(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        request: &str,
    ) -> Result<Claim, Failure> {
        let entry = (user, scope, key.as_str().to_owned());
        match self.state.keys.get(&entry) {
            None => {
                self.state.keys.insert(entry, (request.to_owned(), None));
                Ok(Claim::New)
            }
            Some((first, _)) if first != request => Ok(Claim::Mismatch),
            Some((_, Some(stored))) => Ok(Claim::Done(*stored)),
            Some((_, None)) => Err(Failure::unknown(anyhow::anyhow!(
                "idempotency key {} has no result",
                key.as_str()
            ))),
        }
    }

    async fn complete(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        result: Stored,
    ) -> Result<(), Failure> {
        let entry = (user, scope, key.as_str().to_owned());
        match self.state.keys.get_mut(&entry) {
            Some(slot) => {
                slot.1 = Some(result);
                Ok(())
            }
            None => Err(Failure::unknown(anyhow::anyhow!("key completed unclaimed"))),
        }
    }
}

#[async_trait]
impl Outbox for MemoryUnit {
    async fn record(&mut self, events: &[Event]) -> Result<(), Failure> {
        self.state.outbox.extend_from_slice(events);
        Ok(())
    }
}

#[async_trait]
impl Queries for MemoryStore {
    async fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, Failure> {
        Ok(self.state().reservations.get(&id).cloned())
    }

    async fn reservations_of(&self, user: UserId) -> Result<Vec<Reservation>, Failure> {
        Ok(self
            .state()
            .reservations
            .values()
            .rev()
            .filter(|r| r.user == user)
            .cloned()
            .collect())
    }

    async fn wallet(&self, user: UserId) -> Result<Option<Wallet>, Failure> {
        Ok(self.state().wallets.get(&user).map(|(w, _)| *w))
    }

    async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, Failure> {
        let mut entries = self.history_of(user);
        entries.reverse();
        Ok(entries)
    }

    async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, Failure> {
        Ok(self.state().payments.get(&id).cloned())
    }
}

#[async_trait]
impl CatalogueRepository for MemoryStore {
    async fn concerts(&self) -> Result<Vec<Concert>, Failure> {
        Ok(self.state().concerts.values().cloned().collect())
    }

    async fn concert(&self, id: ConcertId) -> Result<Option<Concert>, Failure> {
        Ok(self.state().concerts.get(&id).cloned())
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, Failure> {
        Ok(self.state().schedules.get(&id).cloned())
    }

    async fn schedules(
        &self,
        concert: ConcertId,
        after: DateTime<Utc>,
    ) -> Result<Option<Vec<ScheduleSummary>>, Failure> {
        let s = self.state();
        if !s.concerts.contains_key(&concert) {
            return Ok(None);
        }
        let mut found: Vec<_> = s
            .schedules
            .values()
            .filter(|sch| sch.concert == concert && sch.starts_at > after)
            .map(|sch| ScheduleSummary {
                id: sch.id,
                concert,
                starts_at: sch.starts_at,
                available_seats: u32::try_from(
                    s.seats
                        .values()
                        .filter(|(seat, _)| {
                            seat.schedule == sch.id
                                && seat.status_at(after) == SeatStatus::Available
                        })
                        .count(),
                )
                .unwrap_or(u32::MAX),
            })
            .collect();
        found.sort_by_key(|sch| sch.starts_at);
        Ok(Some(found))
    }

    async fn seats(&self, schedule: ScheduleId) -> Result<Option<Vec<Seat>>, Failure> {
        let s = self.state();
        if !s.schedules.contains_key(&schedule) {
            return Ok(None);
        }
        let mut seats: Vec<_> = s
            .seats
            .values()
            .map(|(seat, _)| seat.clone())
            .filter(|seat| seat.schedule == schedule)
            .collect();
        seats.sort_by_key(|seat| seat.number);
        Ok(Some(seats))
    }

    async fn create_concert(&self, title: &Title) -> Result<Concert, Failure> {
        let mut s = self.state();
        let concert = Concert {
            id: ConcertId::from(s.id()),
            title: title.as_str().to_owned(),
        };
        s.concerts.insert(concert.id, concert.clone());
        s.generation += 1;
        Ok(concert)
    }

    async fn create_schedule(&self, new: &NewSchedule) -> Result<Option<Schedule>, Failure> {
        let mut s = self.state();
        if !s.concerts.contains_key(&new.concert) {
            return Ok(None);
        }
        let id = ScheduleId::from(s.id());
        let prices: BTreeMap<SeatNumber, Points> = new.seats().collect();
        insert_schedule(&mut s, id, new.concert, new.starts_at, |n| {
            prices.get(&n).map_or(1, |p| p.get())
        });
        s.generation += 1;
        Ok(s.schedules.get(&id).cloned())
    }
}
