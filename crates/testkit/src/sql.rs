//! [`Sql`]: direct SQL on a test or lab database.

use anyhow::{Context, anyhow};
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use concert_domain::{
    ConcertId, Payment, PaymentId, PointKind, Points, Reservation, ReservationId, ScheduleId, Seat,
    SeatId, SeatNumber, SeatState, SeatStatus, UserId,
};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Datetime, Nullable, Text, TinyInt, Unsigned};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::prepared::Reused;

/// Set-up and inspection of one database with direct SQL, on a small pool
/// of its own (4 connections, `READ COMMITTED` and no check per checkout,
/// like the service's). Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Sql {
    pool: Pool<AsyncMysqlConnection>,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").finish_non_exhaustive()
    }
}

/// One row of the outbox, as stored.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OutboxEvent {
    #[diesel(sql_type = Unsigned<BigInt>)]
    pub id: u64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub stream: String,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub aggregate: String,
    /// The JSON payload, as written.
    #[diesel(sql_type = Text)]
    pub payload: String,
    #[diesel(sql_type = Datetime)]
    pub created_at: NaiveDateTime,
    #[diesel(sql_type = Nullable<Datetime>)]
    pub published_at: Option<NaiveDateTime>,
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Pair {
    #[diesel(sql_type = BigInt)]
    k: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = Unsigned<BigInt>)]
    value: u64,
}

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct SeatRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    schedule_id: u64,
    #[diesel(sql_type = Unsigned<TinyInt>)]
    number: u8,
    #[diesel(sql_type = Unsigned<BigInt>)]
    price: u64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Unsigned<BigInt>>)]
    held_by: Option<u64>,
    #[diesel(sql_type = Nullable<Datetime>)]
    held_until: Option<NaiveDateTime>,
    #[diesel(sql_type = Unsigned<BigInt>)]
    version: u64,
}

#[derive(QueryableByName)]
struct ReservationRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    seat_id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    schedule_id: u64,
    #[diesel(sql_type = Unsigned<TinyInt>)]
    seat_number: u8,
    #[diesel(sql_type = Unsigned<BigInt>)]
    user_id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    price: u64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Datetime)]
    expires_at: NaiveDateTime,
}

#[derive(QueryableByName)]
struct PaymentRow {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    reservation_id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    user_id: u64,
    #[diesel(sql_type = Unsigned<BigInt>)]
    amount: u64,
    #[diesel(sql_type = Datetime)]
    paid_at: NaiveDateTime,
    #[diesel(sql_type = Text)]
    status: String,
}

const SEAT_COLUMNS: &str = "id, schedule_id, number, price, status, held_by, held_until, version";
const RESERVATION_COLUMNS: &str =
    "id, seat_id, schedule_id, seat_number, user_id, price, status, expires_at";

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn points(value: u64) -> anyhow::Result<Points> {
    Points::new(i64::try_from(value)?).map_err(anyhow::Error::from)
}

fn to_db(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(6)
}

fn signed(amount: u64) -> anyhow::Result<i64> {
    i64::try_from(amount).map_err(|_| anyhow!("amount {amount} out of range"))
}

impl SeatRow {
    fn to_domain(&self) -> anyhow::Result<Seat> {
        let state = match self.status.parse::<SeatStatus>()? {
            SeatStatus::Available => SeatState::Available,
            SeatStatus::Held => SeatState::Held {
                by: UserId::from(self.held_by.context("held seat without holder")?),
                until: self
                    .held_until
                    .context("held seat without end time")?
                    .and_utc(),
            },
            SeatStatus::Sold => SeatState::Sold,
        };
        Ok(Seat {
            id: SeatId::from(self.id),
            schedule: ScheduleId::from(self.schedule_id),
            number: SeatNumber::new(i64::from(self.number))?,
            price: points(self.price)?,
            state,
            version: self.version,
        })
    }
}

impl ReservationRow {
    fn to_domain(&self) -> anyhow::Result<Reservation> {
        Ok(Reservation {
            id: ReservationId::from(self.id),
            seat: SeatId::from(self.seat_id),
            schedule: ScheduleId::from(self.schedule_id),
            seat_number: SeatNumber::new(i64::from(self.seat_number))?,
            user: UserId::from(self.user_id),
            price: points(self.price)?,
            status: self.status.parse()?,
            expires_at: self.expires_at.and_utc(),
        })
    }
}

impl PaymentRow {
    fn to_domain(&self) -> anyhow::Result<Payment> {
        Ok(Payment {
            id: PaymentId::from(self.id),
            reservation: ReservationId::from(self.reservation_id),
            user: UserId::from(self.user_id),
            amount: points(self.amount)?,
            paid_at: self.paid_at.and_utc(),
            status: self.status.parse()?,
        })
    }
}

impl Sql {
    /// Opens a pool of up to 4 connections on `url` (connections are made
    /// on first use).
    pub async fn connect(url: &str) -> anyhow::Result<Sql> {
        Self::connect_with(url, 4).await
    }

    /// Like [`Sql::connect`] with up to `max_size` connections (the lab's
    /// raw baselines use a pool as large as the service's).
    pub async fn connect_with(url: &str, max_size: usize) -> anyhow::Result<Sql> {
        let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
        // Like the service: no `SELECT 1` per checkout (the raw baselines
        // must not pay one the service does not pay).
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(|url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = AsyncMysqlConnection::establish(&url).await?;
                conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .context("building the test SQL pool")?;
        Ok(Sql { pool })
    }

    /// Closes the pool.
    pub fn close(&self) {
        self.pool.close();
    }

    async fn conn(&self) -> anyhow::Result<Object<AsyncMysqlConnection>> {
        self.pool
            .get()
            .await
            .map_err(|e| anyhow!("checking out a test connection: {e}"))
    }

    /// Creates a concert; returns its id.
    pub async fn create_concert(&self, title: &str) -> anyhow::Result<ConcertId> {
        let mut c = self.conn().await?;
        let row: NewId = diesel::sql_query("INSERT INTO concerts (title) VALUES (?) RETURNING id")
            .bind::<Text, _>(title)
            .get_result(&mut *c)
            .await
            .context("inserting a concert")?;
        Ok(ConcertId::from(row.id))
    }

    /// Creates a schedule of `concert` starting at `starts_at` (past or
    /// future) with its 50 seats, seat `n` priced `price_of(n)` (1 to
    /// `MAX_AMOUNT`), all available, in one transaction; returns its id.
    pub async fn create_schedule(
        &self,
        concert: ConcertId,
        starts_at: DateTime<Utc>,
        price_of: impl Fn(SeatNumber) -> u64 + Send + Sync,
    ) -> anyhow::Result<ScheduleId> {
        let values = SeatNumber::all()
            .map(|n| format!("(?, {}, {}, 'AVAILABLE')", n.get(), price_of(n)))
            .collect::<Vec<_>>()
            .join(", ");
        let seats_sql =
            format!("INSERT INTO seats (schedule_id, number, price, status) VALUES {values}");
        let mut c = self.conn().await?;
        c.transaction(async |c| {
            let row: NewId = diesel::sql_query(
                "INSERT INTO schedules (concert_id, starts_at) VALUES (?, ?) RETURNING id",
            )
            .bind::<Unsigned<BigInt>, _>(concert.get())
            .bind::<Datetime, _>(to_db(starts_at))
            .get_result(c)
            .await?;
            let mut seats = diesel::sql_query(&seats_sql).into_boxed::<diesel::mysql::Mysql>();
            for _ in SeatNumber::all() {
                seats = seats.bind::<Unsigned<BigInt>, _>(row.id);
            }
            seats.execute(c).await?;
            Ok::<_, anyhow::Error>(ScheduleId::from(row.id))
        })
        .await
        .context("creating a schedule")
    }

    /// Sets `user`'s balance, creating the wallet if needed, and keeps the
    /// history consistent: when the balance changes, one history row records
    /// the difference (`CHARGE` when it grows, `USE` when it shrinks) with
    /// `balance_after` = `balance`, dated now (wall clock), and the version
    /// is bumped. Setting the same balance again writes nothing.
    pub async fn set_balance(&self, user: UserId, balance: u64) -> anyhow::Result<()> {
        let target = signed(balance)?;
        let mut c = self.conn().await?;
        c.transaction(async |c| {
            diesel::sql_query(
                "INSERT INTO wallets (user_id) VALUES (?) ON DUPLICATE KEY UPDATE user_id = user_id",
            )
            .bind::<Unsigned<BigInt>, _>(user.get())
            .execute(c)
            .await?;
            let current: Balance =
                diesel::sql_query("SELECT balance FROM wallets WHERE user_id = ? FOR UPDATE")
                    .bind::<Unsigned<BigInt>, _>(user.get())
                    .get_result(c)
                    .await?;
            let current = current.balance;
            if current == target {
                return Ok(());
            }
            diesel::sql_query(
                "UPDATE wallets SET balance = ?, version = version + 1 WHERE user_id = ?",
            )
            .bind::<BigInt, _>(target)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .execute(c)
            .await?;
            let (kind, amount) = if target > current {
                (PointKind::Charge, target - current)
            } else {
                (PointKind::Use, current - target)
            };
            diesel::sql_query(
                "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<Text, _>(kind.as_str())
            .bind::<BigInt, _>(amount)
            .bind::<Unsigned<BigInt>, _>(balance)
            .bind::<Datetime, _>(to_db(Utc::now()))
            .execute(c)
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await
        .with_context(|| format!("setting the balance of user {user}"))
    }

    /// The seat as stored, or `None`.
    pub async fn seat(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> anyhow::Result<Option<Seat>> {
        let mut c = self.conn().await?;
        let rows: Vec<SeatRow> = diesel::sql_query(format!(
            "SELECT {SEAT_COLUMNS} FROM seats WHERE schedule_id = ? AND number = ?"
        ))
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .bind::<Unsigned<TinyInt>, _>(number.get())
        .load(&mut *c)
        .await
        .context("reading a seat")?;
        rows.as_slice().first().map(SeatRow::to_domain).transpose()
    }

    /// The highest fencing token that wrote the seat (0 if none).
    pub async fn seat_fence_token(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let rows: Vec<Number> = diesel::sql_query(
            "SELECT fence_token AS value FROM seats WHERE schedule_id = ? AND number = ?",
        )
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .bind::<Unsigned<TinyInt>, _>(number.get())
        .load(&mut *c)
        .await
        .context("reading a seat's fence token")?;
        rows.as_slice()
            .first()
            .map(|r| r.value)
            .ok_or_else(|| anyhow!("no seat {number} in schedule {schedule}"))
    }

    /// Records `token` on the seat as if a lock holder with that token had
    /// written it (for fencing tests).
    pub async fn set_seat_fence_token(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
        token: u64,
    ) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        diesel::sql_query("UPDATE seats SET fence_token = ? WHERE schedule_id = ? AND number = ?")
            .bind::<Unsigned<BigInt>, _>(token)
            .bind::<Unsigned<BigInt>, _>(schedule.get())
            .bind::<Unsigned<TinyInt>, _>(number.get())
            .execute(&mut *c)
            .await
            .context("setting a seat's fence token")?;
        Ok(())
    }

    /// Sets a seat's status directly, behind the service's back (no event,
    /// no reservation): `AVAILABLE` or `SOLD`.
    pub async fn set_seat_status(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
        status: &str,
    ) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        diesel::sql_query(
            "UPDATE seats SET status = ?, held_by = NULL, held_until = NULL, \
             version = version + 1 WHERE schedule_id = ? AND number = ?",
        )
        .bind::<Text, _>(status)
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .bind::<Unsigned<TinyInt>, _>(number.get())
        .execute(&mut *c)
        .await
        .context("setting a seat's status")?;
        Ok(())
    }

    /// The highest fencing token that wrote the wallet (0 if none or no
    /// wallet).
    pub async fn wallet_fence_token(&self, user: UserId) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let rows: Vec<Number> =
            diesel::sql_query("SELECT fence_token AS value FROM wallets WHERE user_id = ?")
                .bind::<Unsigned<BigInt>, _>(user.get())
                .load(&mut *c)
                .await
                .context("reading a wallet's fence token")?;
        Ok(rows.as_slice().first().map_or(0, |r| r.value))
    }

    /// Records `token` on the wallet (which must exist), as if a lock holder
    /// with that token had written it.
    pub async fn set_wallet_fence_token(&self, user: UserId, token: u64) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        diesel::sql_query("UPDATE wallets SET fence_token = ? WHERE user_id = ?")
            .bind::<Unsigned<BigInt>, _>(token)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .execute(&mut *c)
            .await
            .context("setting a wallet's fence token")?;
        Ok(())
    }

    /// Every reservation of the seat, oldest first, with its stored status.
    pub async fn reservations_of_seat(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> anyhow::Result<Vec<Reservation>> {
        let mut c = self.conn().await?;
        let rows: Vec<ReservationRow> = diesel::sql_query(format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations \
             WHERE schedule_id = ? AND seat_number = ? ORDER BY id"
        ))
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .bind::<Unsigned<TinyInt>, _>(number.get())
        .load(&mut *c)
        .await
        .context("reading reservations of a seat")?;
        rows.iter().map(ReservationRow::to_domain).collect()
    }

    /// How many live (`HELD` or `CONFIRMED`) reservations the seat has, as
    /// stored (a hold past its time still counts until it is expired).
    pub async fn live_reservations(
        &self,
        schedule: ScheduleId,
        number: SeatNumber,
    ) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM reservations \
             WHERE schedule_id = ? AND seat_number = ? AND live_seat_id IS NOT NULL",
            &[schedule.get(), u64::from(number.get())],
        )
        .await
        .context("counting live reservations")
    }

    /// Per seat number of `schedule`, how many live (`HELD` or
    /// `CONFIRMED`) reservations it has; seats with none are left out.
    pub async fn live_reservations_by_seat(
        &self,
        schedule: ScheduleId,
    ) -> anyhow::Result<Vec<(u8, u64)>> {
        let mut c = self.conn().await?;
        let rows: Vec<Pair> = diesel::sql_query(
            "SELECT CAST(seat_number AS SIGNED) AS k, COUNT(*) AS n FROM reservations \
             WHERE schedule_id = ? AND live_seat_id IS NOT NULL GROUP BY seat_number ORDER BY seat_number",
        )
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .load(&mut *c)
        .await
        .context("counting live reservations per seat")?;
        Ok(rows
            .into_iter()
            .map(|p| (u8::try_from(p.k).unwrap_or(0), count(p.n)))
            .collect())
    }

    /// Per user with reservations on `schedule`, how many they have (any
    /// status).
    pub async fn reservations_by_user(
        &self,
        schedule: ScheduleId,
    ) -> anyhow::Result<Vec<(UserId, u64)>> {
        let mut c = self.conn().await?;
        let rows: Vec<Pair> = diesel::sql_query(
            "SELECT CAST(user_id AS SIGNED) AS k, COUNT(*) AS n FROM reservations \
             WHERE schedule_id = ? GROUP BY user_id ORDER BY user_id",
        )
        .bind::<Unsigned<BigInt>, _>(schedule.get())
        .load(&mut *c)
        .await
        .context("counting reservations per user")?;
        Ok(rows
            .into_iter()
            .map(|p| (UserId::from(u64::try_from(p.k).unwrap_or(0)), count(p.n)))
            .collect())
    }

    /// The server's version string (`SELECT VERSION()`).
    pub async fn server_version(&self) -> anyhow::Result<String> {
        let mut c = self.conn().await?;
        let row: Name = diesel::sql_query("SELECT CAST(VERSION() AS CHAR(128)) AS name")
            .get_result(&mut *c)
            .await
            .context("reading the server version")?;
        Ok(row.name)
    }

    /// How many reservations `user` has, in any status.
    pub async fn reservations_of_user(&self, user: UserId) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM reservations WHERE user_id = ?",
            &[user.get()],
        )
        .await
        .context("counting reservations")
    }

    /// The payments of one reservation (0 or 1 by the unique key).
    pub async fn payments_of_reservation(
        &self,
        reservation: ReservationId,
    ) -> anyhow::Result<Vec<Payment>> {
        let mut c = self.conn().await?;
        let rows: Vec<PaymentRow> = diesel::sql_query(
            "SELECT id, reservation_id, user_id, amount, paid_at, status FROM payments \
             WHERE reservation_id = ? ORDER BY id",
        )
        .bind::<Unsigned<BigInt>, _>(reservation.get())
        .load(&mut *c)
        .await
        .context("reading payments")?;
        rows.iter().map(PaymentRow::to_domain).collect()
    }

    /// How many payments exist in all.
    pub async fn payment_count(&self) -> anyhow::Result<u64> {
        self.count("SELECT COUNT(*) AS n FROM payments", &[])
            .await
            .context("counting payments")
    }

    /// How many history rows `user` has.
    pub async fn history_count(&self, user: UserId) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM point_history WHERE user_id = ?",
            &[user.get()],
        )
        .await
        .context("counting history rows")
    }

    /// How many seats are `SOLD` without a confirmed reservation that has a
    /// payment: must always be 0.
    pub async fn sold_seats_without_payment(&self) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM seats s \
             WHERE s.status = 'SOLD' AND NOT EXISTS ( \
               SELECT 1 FROM reservations r JOIN payments p ON p.reservation_id = r.id \
               WHERE r.seat_id = s.id AND r.status = 'CONFIRMED')",
            &[],
        )
        .await
        .context("checking sold seats")
    }

    /// How many seats of `concert`'s schedules are `SOLD`.
    pub async fn sold_seats_of_concert(&self, concert: ConcertId) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM seats s JOIN schedules sc ON sc.id = s.schedule_id \
             WHERE sc.concert_id = ? AND s.status = 'SOLD'",
            &[concert.get()],
        )
        .await
        .context("counting sold seats")
    }

    /// How many seats were sold more than once: seats with more than one
    /// `CONFIRMED` reservation or more than one `PAID` payment. Must always
    /// be 0.
    pub async fn double_sales(&self) -> anyhow::Result<u64> {
        self.count(
            "SELECT COUNT(*) AS n FROM ( \
               SELECT r.seat_id FROM reservations r \
               LEFT JOIN payments p ON p.reservation_id = r.id AND p.status = 'PAID' \
               WHERE r.status = 'CONFIRMED' OR p.id IS NOT NULL \
               GROUP BY r.seat_id HAVING COUNT(DISTINCT r.id) > 1 OR COUNT(p.id) > 1) d",
            &[],
        )
        .await
        .context("counting double sales")
    }

    /// The number of concerts and schedules stored.
    pub async fn catalogue_size(&self) -> anyhow::Result<(u64, u64)> {
        let concerts = self
            .count("SELECT COUNT(*) AS n FROM concerts", &[])
            .await?;
        let schedules = self
            .count("SELECT COUNT(*) AS n FROM schedules", &[])
            .await?;
        Ok((concerts, schedules))
    }

    /// How many events the outbox holds.
    pub async fn outbox_count(&self) -> anyhow::Result<u64> {
        self.count("SELECT COUNT(*) AS n FROM outbox", &[])
            .await
            .context("counting outbox rows")
    }

    /// Every event of the outbox, in the order recorded.
    pub async fn outbox(&self) -> anyhow::Result<Vec<OutboxEvent>> {
        let mut c = self.conn().await?;
        diesel::sql_query(
            "SELECT id, event_id, stream, event_type, aggregate, payload, created_at, \
             published_at FROM outbox ORDER BY id",
        )
        .load(&mut *c)
        .await
        .context("reading the outbox")
    }

    /// The events recorded after position `id`, in the order recorded.
    pub async fn outbox_after(&self, id: u64) -> anyhow::Result<Vec<OutboxEvent>> {
        let mut c = self.conn().await?;
        diesel::sql_query(
            "SELECT id, event_id, stream, event_type, aggregate, payload, created_at, \
             published_at FROM outbox WHERE id > ? ORDER BY id",
        )
        .bind::<Unsigned<BigInt>, _>(id)
        .load(&mut *c)
        .await
        .context("reading the outbox")
    }

    /// The last position of the outbox (0 when empty).
    pub async fn outbox_last(&self) -> anyhow::Result<u64> {
        self.count(
            "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) AS n FROM outbox",
            &[],
        )
        .await
        .context("reading the last outbox position")
    }

    /// Deletes every outbox row (the events of earlier lab experiments,
    /// which no relay published): a relay started afterwards begins with
    /// an empty outbox, as on a fresh deployment.
    pub async fn clear_outbox(&self) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let n = diesel::sql_query("DELETE FROM outbox")
            .execute(&mut *c)
            .await
            .context("clearing the outbox")?;
        Ok(n as u64)
    }

    /// Waits (polling, at most 20 s) until another connection on this
    /// database has been running a statement whose text contains
    /// `fragment` (e.g. `"FOR UPDATE"`) for at least 200 ms: a test then
    /// knows its contender is blocked (on a row lock) without measuring the
    /// outcome in time. (`information_schema.innodb_trx` would be the
    /// direct witness, but InnoDB refreshes it only when nobody read it for
    /// 100 ms, so polling it starves.)
    pub async fn until_blocked(&self, fragment: &str) -> anyhow::Result<()> {
        let pattern = format!("%{fragment}%");
        for _ in 0..2_000 {
            let mut c = self.conn().await?;
            let row: Count = diesel::sql_query(
                "SELECT COUNT(*) AS n FROM information_schema.processlist \
                 WHERE db = DATABASE() AND id <> CONNECTION_ID() \
                   AND command IN ('Query', 'Execute') AND time_ms >= 200 AND info LIKE ?",
            )
            .bind::<Text, _>(&pattern)
            .get_result(&mut *c)
            .await
            .context("reading the process list")?;
            drop(c);
            if row.n > 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(anyhow!("no statement like {fragment:?} ever blocked"))
    }

    /// The base tables of the database, by name (diesel's own
    /// `__diesel_schema_migrations` included).
    pub async fn tables(&self) -> anyhow::Result<Vec<String>> {
        let mut c = self.conn().await?;
        let rows: Vec<Name> = diesel::sql_query(
            "SELECT CAST(table_name AS CHAR(64)) AS name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name",
        )
        .load(&mut *c)
        .await
        .context("listing tables")?;
        Ok(rows.into_iter().map(|t| t.name).collect())
    }

    /// Kills every other server connection whose current database is this
    /// one (for tests of lost connections); returns how many. The
    /// connection this runs on is spared; this pool opens fresh ones
    /// afterwards.
    pub async fn kill_other_connections(&self) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let ids: Vec<Number> = diesel::sql_query(
            "SELECT CAST(id AS UNSIGNED) AS value FROM information_schema.processlist \
             WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        )
        .load(&mut *c)
        .await
        .context("listing connections")?;
        for Number { value } in &ids {
            // A connection may end on its own in between: ignore "unknown
            // thread".
            let _ = diesel::sql_query(format!("KILL CONNECTION {value}"))
                .execute(&mut *c)
                .await;
        }
        // Some of the killed connections were this pool's idle ones.
        drop(c);
        self.pool.retain(|_, _| false);
        Ok(ids.len() as u64)
    }

    /// Runs one statement as written (set-up, or corrupting a database on
    /// purpose); returns the rows it affected.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let affected = diesel::sql_query(sql)
            .execute(&mut *c)
            .await
            .with_context(|| format!("running {sql}"))?;
        Ok(affected as u64)
    }

    /// The value of a query that selects one integer as `n` (e.g.
    /// `SELECT COUNT(*) AS n FROM ...`).
    pub async fn number(&self, sql: &str) -> anyhow::Result<u64> {
        self.count(sql, &[])
            .await
            .with_context(|| format!("running {sql}"))
    }

    async fn count(&self, sql: &str, binds: &[u64]) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let mut query = diesel::sql_query(sql).into_boxed::<diesel::mysql::Mysql>();
        for bind in binds {
            query = query.bind::<Unsigned<BigInt>, _>(*bind);
        }
        let row: Count = query.get_result(&mut *c).await?;
        Ok(count(row.n))
    }

    /// The lab's conditional baseline, in one transaction: `UPDATE wallets
    /// SET balance = balance - ? ... WHERE user_id = ? AND balance >= ?`,
    /// and when it matched, the history row via `INSERT ... SELECT` from the
    /// wallet. True if the use was applied. Statements are prepared once per
    /// connection, like the service's.
    pub async fn use_conditional(&self, user: u64, amount: u64) -> anyhow::Result<bool> {
        let amount = signed(amount)?;
        let now = to_db(Utc::now());
        let mut c = self.conn().await?;
        c.transaction(async |c| {
            let updated = Reused(
                diesel::sql_query(
                    "UPDATE wallets SET balance = balance - ?, version = version + 1 \
                     WHERE user_id = ? AND balance >= ?",
                )
                .bind::<BigInt, _>(amount)
                .bind::<Unsigned<BigInt>, _>(user)
                .bind::<BigInt, _>(amount),
            )
            .execute(c)
            .await?;
            if updated == 0 {
                return Ok(false);
            }
            Reused(
                diesel::sql_query(
                    "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
                     SELECT user_id, 'USE', ?, balance, ? FROM wallets WHERE user_id = ?",
                )
                .bind::<BigInt, _>(amount)
                .bind::<Datetime, _>(now)
                .bind::<Unsigned<BigInt>, _>(user),
            )
            .execute(c)
            .await?;
            Ok::<_, anyhow::Error>(true)
        })
        .await
    }

    /// The lab's locking baseline, in one transaction: `SELECT balance ...
    /// FOR UPDATE`, check, `UPDATE`, history row, `COMMIT`. True if the use
    /// was applied. Statements are prepared once per connection, like the
    /// service's.
    pub async fn use_for_update(&self, user: u64, amount: u64) -> anyhow::Result<bool> {
        let amount = signed(amount)?;
        let now = to_db(Utc::now());
        let mut c = self.conn().await?;
        c.transaction(async |c| {
            let rows: Vec<Balance> = Reused(
                diesel::sql_query("SELECT balance FROM wallets WHERE user_id = ? FOR UPDATE")
                    .bind::<Unsigned<BigInt>, _>(user),
            )
            .load(c)
            .await?;
            let Some(Balance { balance }) = rows.into_iter().next() else {
                return Ok(false);
            };
            if balance < amount {
                return Ok(false);
            }
            let after = balance - amount;
            Reused(
                diesel::sql_query(
                    "UPDATE wallets SET balance = ?, version = version + 1 WHERE user_id = ?",
                )
                .bind::<BigInt, _>(after)
                .bind::<Unsigned<BigInt>, _>(user),
            )
            .execute(c)
            .await?;
            Reused(
                diesel::sql_query(
                    "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
                     VALUES (?, 'USE', ?, ?, ?)",
                )
                .bind::<Unsigned<BigInt>, _>(user)
                .bind::<BigInt, _>(amount)
                .bind::<BigInt, _>(after)
                .bind::<Datetime, _>(now),
            )
            .execute(c)
            .await?;
            Ok::<_, anyhow::Error>(true)
        })
        .await
    }
}
