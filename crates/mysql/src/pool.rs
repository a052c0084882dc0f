//! The connection pool ([`Db`]) and the checked-out connection every
//! statement of this crate runs on ([`Session`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use concert_domain::Failure;
use diesel::result::{ConnectionError, QueryResult};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};

use crate::error::{self, classify};
use crate::memo::WalletMemo;
use crate::url::DatabaseUrl;

/// A pooled connection (internal).
type Conn = Object<AsyncMysqlConnection>;

/// How much longer than the server-side statement limit the client waits
/// for an answer before it gives the connection up (a server cut off by the
/// network never answers at all).
const CLIENT_MARGIN: Duration = Duration::from_secs(2);

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
    /// The server-side limit of every statement of a session (MariaDB's
    /// `max_statement_time`), row-lock waits included: a statement that
    /// runs longer fails as "unavailable". Row-lock waits are also limited
    /// to its whole seconds (`innodb_lock_wait_timeout`, at least 1 s), so a
    /// wait ends as a conflict no later than the statement limit. The client
    /// gives a connection that does not answer within the limit plus 2 s up.
    /// `None` (or zero): the server's defaults and no client limit. Default
    /// 5 s.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 32,
            wait_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }
}

impl PoolOptions {
    fn statement_limit(&self) -> Option<Duration> {
        self.statement_timeout.filter(|t| !t.is_zero())
    }
}

/// How busy the pool is, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now (idle or in use).
    pub size: usize,
    /// Idle connections ready to be checked out.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// The most connections the pool opens.
    pub max_size: usize,
}

/// Handle to the database: two pools of connections, cheap to clone (clones
/// share them).
///
/// - **Units of work** run on connections with `autocommit = 0`: a
///   transaction begins implicitly with its first statement, so beginning a
///   unit costs no round trip (no `BEGIN`), which matters most inside the
///   critical section of a hot row under a lock. Such a connection only
///   ever runs statements of a unit, which ends with `COMMIT` or
///   `ROLLBACK` (or the connection is closed), so an idle one holds no
///   transaction, lock or metadata lock.
/// - **Everything else** (queries, the catalogue, readiness, background
///   work) runs on ordinary `autocommit` connections: a statement that is
///   not inside an explicit `BEGIN` ... `COMMIT` commits on its own.
///
/// Every connection runs its transactions at `READ COMMITTED`: each
/// statement reads the latest committed rows, and InnoDB takes no gap locks
/// for locking reads of missing rows, so concurrent wallet creations and
/// `SELECT ... FOR UPDATE` misses do not deadlock each other. Every write of
/// this crate either locks the rows it depends on or checks a `version`, so
/// nothing relies on repeatable reads. Sessions also get the statement
/// limits of [`PoolOptions::statement_timeout`].
#[derive(Clone)]
pub struct Db {
    /// `autocommit = 0`: units of work only.
    units: Pool<AsyncMysqlConnection>,
    /// `autocommit = 1`: everything else.
    pool: Pool<AsyncMysqlConnection>,
    /// The client-side bound of one statement.
    answer_within: Option<Duration>,
    /// What fenced units committed to wallets, shared by every store on
    /// this pool (see [`WalletMemo`]).
    pub(crate) memo: Arc<WalletMemo>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Builds the pool. It does **not** contact the server: connections are
    /// opened on first use, so a service can start while the database is
    /// still down and report it through [`Db::ping`] (`/health/ready`).
    /// Fails only for an invalid pool configuration. Must be called inside
    /// a tokio runtime (the pool's timeouts use it).
    pub async fn connect(url: &DatabaseUrl, options: PoolOptions) -> anyhow::Result<Db> {
        // The units get three quarters of the connections, the rest the
        // others (single statements that return their connection at once).
        let total = options.max_size.max(2);
        let others = (total / 4).max(1);
        Ok(Db {
            units: build_pool(url, options, total - others, Autocommit::Off)?,
            pool: build_pool(url, options, others, Autocommit::On)?,
            answer_within: options.statement_limit().map(|t| t + CLIENT_MARGIN),
            memo: Arc::default(),
        })
    }

    /// Succeeds when the database answers a trivial query within the pool's
    /// timeouts. A pooled connection that turns out dead is discarded and
    /// the check is tried once more on a fresh one.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..2 {
            let mut session = self.session().await.map_err(anyhow::Error::new)?;
            let (c, guard) = session.split()?;
            match guard
                .run("pinging the database", c.batch_execute("SELECT 1"))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || anyhow::anyhow!("pinging the database failed"),
            anyhow::Error::new,
        ))
    }

    /// Closes the pools: waiting and later checkouts fail, idle
    /// connections are closed. Clones share the pools, so this closes them
    /// for all of them.
    pub fn close(&self) {
        self.units.close();
        self.pool.close();
    }

    /// How busy the pools are now (both together).
    pub fn status(&self) -> PoolStatus {
        let (u, p) = (self.units.status(), self.pool.status());
        PoolStatus {
            size: u.size + p.size,
            available: u.available + p.available,
            waiting: u.waiting + p.waiting,
            max_size: u.max_size + p.max_size,
        }
    }

    /// Checks an `autocommit` connection out (queries, single statements,
    /// explicit transactions with [`Session::begin`]).
    pub(crate) async fn session(&self) -> Result<Session, Failure> {
        let conn = self.pool.get().await.map_err(error::pool_failure)?;
        Ok(self.wrap(conn, Autocommit::On))
    }

    /// Checks a unit-of-work connection out (`autocommit = 0`): the unit's
    /// transaction begins with its first statement.
    pub(crate) async fn unit_session(&self) -> Result<Session, Failure> {
        let conn = self.units.get().await.map_err(error::pool_failure)?;
        Ok(self.wrap(conn, Autocommit::Off))
    }

    fn wrap(&self, conn: Conn, autocommit: Autocommit) -> Session {
        Session {
            conn: Some(conn),
            guard: Guard {
                answer_within: self.answer_within,
                broken: false,
            },
            open: false,
            autocommit,
        }
    }
}

/// Whether a connection commits each statement on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Autocommit {
    On,
    /// `SET autocommit = 0`: a transaction begins with the first statement
    /// and lasts until `COMMIT` or `ROLLBACK`.
    Off,
}

fn build_pool(
    url: &DatabaseUrl,
    options: PoolOptions,
    size: usize,
    autocommit: Autocommit,
) -> anyhow::Result<Pool<AsyncMysqlConnection>> {
    let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
    // No `SELECT 1` per checkout: a dead connection shows up as an
    // "unavailable" error on first use and is then discarded. A connection
    // is never returned with an open transaction: [`Session`] discards it
    // on drop.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        Box::pin(async move { establish(&url, options, autocommit).await })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url.as_str(), config);
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| anyhow::anyhow!("building the MySQL connection pool: {e}"))
}

/// Opens one connection and sets the session up (see [`Db`] and
/// [`PoolOptions::statement_timeout`]).
async fn establish(
    url: &str,
    options: PoolOptions,
    autocommit: Autocommit,
) -> Result<AsyncMysqlConnection, ConnectionError> {
    let timeout = options.connect_timeout;
    let setup = async {
        let mut conn = AsyncMysqlConnection::establish(url).await?;
        let mut sql = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned();
        if autocommit == Autocommit::Off {
            sql.push_str("; SET SESSION autocommit = 0");
        }
        conn.batch_execute(&sql)
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        if let Some(limit) = options.statement_limit() {
            conn.batch_execute(&session_limits(limit))
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
        }
        Ok(conn)
    };
    tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| ConnectionError::BadConnection(format!("connecting took over {timeout:?}")))?
}

/// The `SET` statement of a session's statement and row-lock limits.
fn session_limits(limit: Duration) -> String {
    // innodb_lock_wait_timeout takes whole seconds, 1 to 1073741824.
    let lock_wait = limit.as_secs().clamp(1, 1_073_741_824);
    format!(
        "SET SESSION max_statement_time = {:.6}, SESSION innodb_lock_wait_timeout = {lock_wait}",
        limit.as_secs_f64()
    )
}

/// A checked-out connection. Dropped, it goes back to the pool, unless it
/// failed at the network level or still has a transaction open (a unit of
/// work dropped before it ended): then it is closed, which makes the server
/// roll back and release every lock at once.
pub(crate) struct Session {
    conn: Option<Conn>,
    guard: Guard,
    /// True between a successful `BEGIN` and the end of the transaction.
    open: bool,
    autocommit: Autocommit,
}

/// Runs statements: bounds their wait for an answer, translates their
/// errors, and remembers whether the connection broke.
pub(crate) struct Guard {
    answer_within: Option<Duration>,
    broken: bool,
}

impl Guard {
    /// Awaits one statement of `work` (what `context` names) and translates
    /// its outcome. A connection that fails at the network level, or gives
    /// no answer in time, is marked broken (never reused).
    ///
    /// So is one whose statement never finished because the caller's future
    /// was dropped while it ran (a cancelled request, an aborted task): the
    /// connection is marked broken until the answer is in, so a session
    /// dropped mid-statement is closed, never handed to the next user with
    /// the rest of an answer still to read.
    pub(crate) async fn run<T>(
        &mut self,
        context: &'static str,
        work: impl Future<Output = QueryResult<T>>,
    ) -> Result<T, Failure> {
        let was_broken = std::mem::replace(&mut self.broken, true);
        let outcome = self.answer(context, work).await;
        // answered: broken only if it was, or the error says so
        let breaks = outcome.as_ref().err().is_some_and(|(_, breaks)| *breaks);
        self.broken = was_broken || breaks;
        outcome.map_err(|(failure, _)| failure)
    }

    async fn answer<T>(
        &self,
        context: &'static str,
        work: impl Future<Output = QueryResult<T>>,
    ) -> Result<T, (Failure, bool)> {
        let outcome = match self.answer_within {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err((
                        Failure::Unavailable(
                            anyhow::anyhow!("the database did not answer within {limit:?}")
                                .context(context),
                        ),
                        true,
                    ));
                }
            },
            None => work.await,
        };
        outcome.map_err(|e| {
            let class = classify(&e);
            let breaks = class.breaks_connection();
            (error::failure(e, class, context), breaks)
        })
    }
}

impl Guard {
    /// Like [`Guard::run`] for a statement that may find no row: `None`.
    pub(crate) async fn optional<T>(
        &mut self,
        context: &'static str,
        work: impl Future<Output = QueryResult<T>>,
    ) -> Result<Option<T>, Failure> {
        use diesel::OptionalExtension;
        self.run(context, async { work.await.optional() }).await
    }
}

impl Session {
    /// The connection and the guard to run its statements with.
    pub(crate) fn split(&mut self) -> Result<(&mut AsyncMysqlConnection, &mut Guard), Failure> {
        match self.conn.as_mut() {
            Some(conn) => Ok((&mut **conn, &mut self.guard)),
            None => Err(Failure::Unknown(anyhow::anyhow!(
                "the database session has ended"
            ))),
        }
    }

    /// Begins a transaction: `BEGIN` on an `autocommit` connection; on a
    /// unit-of-work connection nothing is sent (the transaction begins with
    /// the first statement).
    ///
    /// The session sends `BEGIN`, `COMMIT` and `ROLLBACK` itself (diesel's
    /// transaction manager is not used) so that a commit can carry the
    /// statement that must run last in the same round trip (see
    /// [`Session::commit`]); it tracks the open transaction, and [`Drop`]
    /// closes a connection dropped with one open.
    pub(crate) async fn begin(&mut self) -> Result<(), Failure> {
        if self.autocommit == Autocommit::On {
            let (c, guard) = self.split()?;
            guard
                .run("beginning a transaction", c.batch_execute("BEGIN"))
                .await?;
        }
        self.open = true;
        Ok(())
    }

    /// Runs `last` (statements separated by `;`, or none) and `COMMIT` in
    /// one round trip. When one of them fails the server stops there:
    /// nothing is committed, and
    /// the transaction stays open for [`Session::rollback`] (or the drop).
    /// On any failure the connection is discarded when the session drops
    /// (whether the commit happened is unknown only when the connection
    /// broke).
    pub(crate) async fn commit(&mut self, last: Option<&str>) -> Result<(), Failure> {
        let sql = match last {
            Some(statement) => format!("{statement}; COMMIT"),
            None => "COMMIT".to_owned(),
        };
        let (c, guard) = self.split()?;
        guard
            .run("committing a transaction", c.batch_execute(&sql))
            .await?;
        self.open = false;
        Ok(())
    }

    /// Runs `statements` (separated by `;`) in the open transaction, in one
    /// round trip, without ending it. When one fails the server stops
    /// there, and the transaction stays open for [`Session::rollback`].
    pub(crate) async fn write(&mut self, statements: &str) -> Result<(), Failure> {
        let (c, guard) = self.split()?;
        guard
            .run("writing a transaction", c.batch_execute(statements))
            .await
    }

    /// Rolls the open transaction back (`ROLLBACK`). Never fails: when the
    /// rollback does not succeed, the connection is closed on drop, which
    /// rolls back on the server.
    pub(crate) async fn rollback(&mut self) {
        if !self.open || self.guard.broken {
            return;
        }
        if let Ok((c, guard)) = self.split() {
            let rolled_back = guard
                .run("rolling a transaction back", c.batch_execute("ROLLBACK"))
                .await;
            match rolled_back {
                Ok(()) => self.open = false,
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "rollback failed; closing"),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && (self.guard.broken || self.open)
        {
            // Out of the pool for good; dropping it closes it.
            drop(Object::take(conn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limits_cover_statements_and_lock_waits() {
        assert_eq!(
            session_limits(Duration::from_secs(5)),
            "SET SESSION max_statement_time = 5.000000, SESSION innodb_lock_wait_timeout = 5"
        );
        assert_eq!(
            session_limits(Duration::from_millis(2500)),
            "SET SESSION max_statement_time = 2.500000, SESSION innodb_lock_wait_timeout = 2"
        );
        assert_eq!(
            session_limits(Duration::from_millis(300)),
            "SET SESSION max_statement_time = 0.300000, SESSION innodb_lock_wait_timeout = 1"
        );
        let none = PoolOptions {
            statement_timeout: Some(Duration::ZERO),
            ..PoolOptions::default()
        };
        assert_eq!(none.statement_limit(), None);
        assert_eq!(
            PoolOptions::default().statement_limit(),
            Some(Duration::from_secs(5))
        );
    }
}
