//! The connection pool.

use std::time::Duration;

use diesel::result::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::error::{StorageError, TxError};

/// A pooled connection (internal).
pub(crate) type Conn = Object<AsyncMysqlConnection>;

/// Sizing and timeouts of the connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections open at once (default 32).
    pub max_size: usize,
    /// How long a request waits for a free connection before it fails with
    /// "unavailable" (default 10 s).
    pub wait_timeout: Duration,
    /// How long opening a new connection may take (default 5 s); also bounds
    /// the recycling of a returned one.
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 32,
            wait_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle to the database: a pool of connections, cheap to clone (clones
/// share the pool).
///
/// Every connection runs its transactions at `READ COMMITTED`: each
/// statement reads the latest committed rows, and InnoDB takes no gap locks
/// for locking reads of missing rows, so concurrent wallet creations and
/// `SELECT ... FOR UPDATE` misses do not deadlock each other. Every write in
/// this crate either locks the rows it depends on or checks a `version`, so
/// nothing relies on repeatable reads.
#[derive(Clone)]
pub struct Db {
    pool: Pool<AsyncMysqlConnection>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Db")
            .field("max_size", &status.max_size)
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl Db {
    /// Builds the pool. It does **not** contact the server: connections are
    /// opened on first use, so a service can start while the database is
    /// still down and report it through [`Db::ping`] (`/health/ready`).
    /// Fails only for an invalid pool configuration. Must be called inside
    /// a tokio runtime (the pool's timeouts use it).
    pub async fn connect(url: &str, options: PoolOptions) -> anyhow::Result<Db> {
        let connect_timeout = options.connect_timeout;
        let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
        // No `SELECT 1` per checkout: a dead connection shows up as an
        // "unavailable" error on first use and is then discarded.
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            Box::pin(async move { establish(&url, connect_timeout).await })
        });
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(options.max_size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| anyhow::anyhow!("building the MySQL connection pool: {e}"))?;
        Ok(Db { pool })
    }

    /// Succeeds when the database answers a trivial query within the pool's
    /// timeouts. A pooled connection that turns out dead is discarded and
    /// the check is tried once more on a fresh one.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..2 {
            let mut conn = self.get::<anyhow::Error>().await?;
            match diesel::sql_query("SELECT 1").execute(&mut *conn).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let outcome: TxError<()> = TxError::Db(e);
                    if outcome.breaks_connection() {
                        let _ = Object::take(conn);
                    }
                    last = Some(outcome);
                }
            }
        }
        match last {
            Some(TxError::Db(e)) => Err(anyhow::Error::new(e).context("pinging the database")),
            _ => Err(anyhow::anyhow!("pinging the database failed")),
        }
    }

    /// Closes the pool: waiting and later checkouts fail, idle connections
    /// are closed. Clones share the pool, so this closes it for all of them.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Checks a connection out, translating pool failures.
    pub(crate) async fn get<E: StorageError>(&self) -> Result<Conn, E> {
        self.pool.get().await.map_err(E::from_pool)
    }

    /// Translates the outcome of work done on `conn` (typically a whole
    /// transaction). A connection that failed at the network level is
    /// discarded instead of going back to the pool.
    pub(crate) fn finish<T, E: StorageError>(
        &self,
        conn: Conn,
        outcome: Result<T, TxError<E>>,
        context: &'static str,
    ) -> Result<T, E> {
        match outcome {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.breaks_connection() {
                    let _ = Object::take(conn);
                }
                Err(E::from_tx(e, context))
            }
        }
    }
}

/// Opens one connection and sets the session up (see [`Db`]).
async fn establish(url: &str, timeout: Duration) -> Result<AsyncMysqlConnection, ConnectionError> {
    let setup = async {
        let mut conn = AsyncMysqlConnection::establish(url).await?;
        conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    };
    tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| ConnectionError::BadConnection(format!("connecting took over {timeout:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MysqlCatalogue, MysqlPayments, MysqlSeats, MysqlWallets};
    use chrono::Utc;
    use concert_domain::{
        CatalogueRepository, ChangePoints, ChargeError, HoldSeat, PayError, PayReservation,
        PaymentRepository, PointChange, Points, QueryError, ReserveError, ScheduleId, SeatNumber,
        SeatRepository, UserId, WalletRepository, WriteMode,
    };

    async fn unreachable() -> Db {
        // Port 1 on loopback: connection refused at once.
        Db::connect(
            "mysql://root@127.0.0.1:1/nothing",
            PoolOptions {
                max_size: 2,
                wait_timeout: Duration::from_millis(500),
                connect_timeout: Duration::from_millis(500),
            },
        )
        .await
        .expect("building a pool contacts nothing")
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_everywhere() {
        let db = unreachable().await;
        assert!(db.ping().await.is_err());
        let user = UserId::from(1);
        let now = Utc::now();

        let q = MysqlCatalogue::new(db.clone()).concerts().await;
        assert!(matches!(q, Err(QueryError::Unavailable(_))), "{q:?}");
        let q = MysqlWallets::new(db.clone()).wallet(user).await;
        assert!(matches!(q, Err(QueryError::Unavailable(_))), "{q:?}");
        let change = ChangePoints {
            user,
            change: PointChange::Charge(Points::new(5).unwrap()),
            now,
            fence: None,
            idempotency: None,
        };
        let c = MysqlWallets::new(db.clone())
            .charge(change, WriteMode::Pessimistic)
            .await;
        assert!(matches!(c, Err(ChargeError::Unavailable(_))), "{c:?}");
        let h = MysqlSeats::new(db.clone())
            .hold(
                HoldSeat {
                    user,
                    schedule: ScheduleId::from(1),
                    seat: SeatNumber::new(1).unwrap(),
                    now,
                    until: now,
                    fence: None,
                },
                WriteMode::Atomic,
            )
            .await;
        assert!(matches!(h, Err(ReserveError::Unavailable(_))), "{h:?}");
        let p = MysqlPayments::new(db.clone())
            .pay(
                PayReservation {
                    user,
                    reservation: concert_domain::ReservationId::from(1),
                    now,
                    fence: None,
                    idempotency: None,
                },
                WriteMode::Optimistic,
            )
            .await;
        assert!(matches!(p, Err(PayError::Unavailable(_))), "{p:?}");
    }

    #[tokio::test]
    async fn a_closed_pool_is_unavailable() {
        let db = unreachable().await;
        db.close();
        let q = MysqlCatalogue::new(db).concerts().await;
        assert!(matches!(q, Err(QueryError::Unavailable(_))), "{q:?}");
    }
}
