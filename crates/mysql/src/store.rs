//! [`MysqlStore`] and its units of work.

use std::sync::Arc;

use async_trait::async_trait;
use concert_domain::{
    Failure, Fence, LockKey, NewHistoryEntry, Protection, Transactions, UnitOfWork, UserId,
};

use crate::commit::{DeferredWallet, held_back};
use crate::memo::WalletMemo;
use crate::pool::{Db, Session};
use crate::rows::NewOutboxRow;

/// The domain's storage on MySQL/MariaDB: [`Transactions`] (units of work
/// handing out every repository on one transaction), `Queries` and
/// `CatalogueRepository`. Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct MysqlStore {
    db: Db,
}

impl MysqlStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The pool the store runs on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn session(&self) -> Result<Session, Failure> {
        self.db.session().await
    }
}

#[async_trait]
impl Transactions for MysqlStore {
    /// Checks a unit-of-work connection out; its transaction begins with
    /// the unit's first statement (no `BEGIN` round trip, see [`Db`]).
    async fn begin(&self, protection: Protection) -> Result<Box<dyn UnitOfWork>, Failure> {
        let mut session = self.db.unit_session().await?;
        session.begin().await?;
        Ok(Box::new(MysqlUnit {
            session,
            memo: self.db.memo.clone(),
            protection,
            wallet: None,
            history: Vec::new(),
            events: Vec::new(),
            locked_wallets: Vec::new(),
            written: false,
        }))
    }
}

/// One transaction on one pooled connection, protected as its
/// [`Protection`] says (see the repository implementations):
///
/// - `Pessimistic`: seat and wallet `find`s lock the rows (`FOR UPDATE`).
/// - every `save` checks the version it read (`WHERE version = ?`);
///   `Fenced` also refuses a row a newer fencing token wrote, records its
///   own token, and [`UnitOfWork::commit`] refuses a lost fence.
/// - `Atomic`: the use cases call the single-statement methods.
///
/// Point history lines and the events recorded in the outbox are written by
/// the commit, in the same round trip as the `COMMIT`: appending them costs
/// no round trip, and none inside the critical section of a hot row. A unit
/// that passes its locks on before it commits writes them (with the
/// deferred wallet) in [`UnitOfWork::write`]'s round trip instead, and the
/// `COMMIT` follows alone.
///
/// Dropped without commit or rollback (a cancelled request), its connection
/// is closed instead of going back to the pool, so the server rolls back
/// and no lock outlives the unit.
pub(crate) struct MysqlUnit {
    pub(crate) session: Session,
    /// What fenced units committed to wallets (see [`WalletMemo`]).
    pub(crate) memo: Arc<WalletMemo>,
    pub(crate) protection: Protection,
    /// A wallet saved with `save_at_commit`, written (and checked) by the
    /// commit.
    pub(crate) wallet: Option<DeferredWallet>,
    /// History lines appended, written by the commit.
    pub(crate) history: Vec<NewHistoryEntry>,
    /// Outbox rows recorded, written by the commit.
    pub(crate) events: Vec<NewOutboxRow>,
    /// The wallets whose rows this unit read `FOR UPDATE`: it holds their
    /// row locks until it ends.
    pub(crate) locked_wallets: Vec<UserId>,
    /// [`UnitOfWork::write`] wrote what the unit held back; only `COMMIT`
    /// is left.
    pub(crate) written: bool,
}

impl MysqlUnit {
    /// The statements that write what the unit held back, joined for one
    /// round trip (none after [`UnitOfWork::write`]); [`Failure::LockLost`]
    /// when a fence of a `Fenced` unit is lost before they are written.
    fn checked_writes(&self) -> Result<Option<String>, Failure> {
        if self.written {
            return Ok(None);
        }
        if self.protection.fences().is_some_and(|f| f.any_lost()) {
            return Err(Failure::LockLost);
        }
        Ok(held_back(self.wallet.as_ref(), &self.history, &self.events))
    }

    pub(crate) fn pessimistic(&self) -> bool {
        matches!(self.protection, Protection::Pessimistic)
    }

    /// The fence the unit runs under for `key`, if fenced and held.
    pub(crate) fn fence(&self, key: &LockKey) -> Option<&Fence> {
        self.protection.fences().and_then(|f| f.get(key))
    }
}

#[async_trait]
impl UnitOfWork for MysqlUnit {
    fn repositories(&mut self) -> &mut dyn concert_domain::Repositories {
        self
    }

    /// The wallet saved at commit (its checked `UPDATE`, see
    /// [`DeferredWallet`]) and the appended history lines' and recorded
    /// events' `INSERT`s, in one round trip, without `COMMIT`; unless a
    /// fence of a `Fenced` unit is lost: then [`Failure::LockLost`]. The
    /// rows written stay locked by InnoDB until the commit or rollback.
    ///
    /// A fenced wallet written is kept in the [`WalletMemo`] under its
    /// token from here (the next local holder of the lock may read it
    /// before this unit has committed: its own write waits for the row
    /// lock, and its version check refuses it if this unit then rolls
    /// back); a wallet whose write failed is forgotten there.
    async fn write(&mut self) -> Result<(), Failure> {
        if self.written {
            return Ok(());
        }
        let written = match self.checked_writes() {
            Ok(Some(statements)) => self.session.write(&statements).await,
            Ok(None) => Ok(()),
            Err(lost) => Err(lost),
        };
        if let Some(deferred) = self.wallet {
            match (&written, deferred.token) {
                (Ok(()), Some(token)) => self.memo.put(deferred.wallet, token),
                _ => self.memo.forget(deferred.wallet.user),
            }
        }
        self.written = written.is_ok();
        written
    }

    /// [`UnitOfWork::write`]'s statements (unless written already) and
    /// `COMMIT`, in one round trip. A failed commit rolls back.
    ///
    /// A fenced wallet committed is kept in the [`WalletMemo`] under its
    /// token; a wallet whose write failed, or was written unfenced, is
    /// forgotten there.
    async fn commit(mut self: Box<Self>) -> Result<(), Failure> {
        let statements = match self.checked_writes() {
            Ok(statements) => statements,
            Err(lost) => {
                if let Some(deferred) = &self.wallet {
                    self.memo.forget(deferred.wallet.user);
                }
                self.session.rollback().await;
                return Err(lost);
            }
        };
        let committed = self.session.commit(statements.as_deref()).await;
        if committed.is_err() {
            self.session.rollback().await;
        }
        if let Some(deferred) = self.wallet {
            match (&committed, deferred.token) {
                // put by the write already: a later holder may have put
                // its own since
                (Ok(()), Some(_)) if self.written => {}
                (Ok(()), Some(token)) => self.memo.put(deferred.wallet, token),
                _ => self.memo.forget(deferred.wallet.user),
            }
        }
        committed
    }

    /// Also forgets, in the [`WalletMemo`], a wallet [`UnitOfWork::write`]
    /// put there.
    async fn rollback(mut self: Box<Self>) {
        if let Some(deferred) = self.wallet.filter(|_| self.written) {
            self.memo.forget(deferred.wallet.user);
        }
        self.session.rollback().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::Utc;
    use concert_domain::{
        CatalogueRepository, ConcertId, Failure, NewSchedule, PaymentId, Points, Protection,
        Queries, ReservationId, ScheduleId, SeatNumber, Title, Transactions, UserId,
    };

    use super::MysqlStore;
    use crate::{DatabaseUrl, Db, PoolOptions};

    async fn unreachable() -> MysqlStore {
        // Port 1 on loopback: connection refused at once.
        let url = DatabaseUrl::parse("mysql://root@127.0.0.1:1/nothing").unwrap();
        let db = Db::connect(
            &url,
            PoolOptions {
                max_size: 2,
                wait_timeout: Duration::from_millis(500),
                connect_timeout: Duration::from_millis(500),
                statement_timeout: Some(Duration::from_secs(1)),
            },
        )
        .await
        .expect("building a pool contacts nothing");
        MysqlStore::new(db)
    }

    fn unavailable<T: std::fmt::Debug>(what: &str, outcome: Result<T, Failure>) {
        assert!(
            matches!(outcome, Err(Failure::Unavailable(_))),
            "{what}: {outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_on_every_port_promptly() {
        let store = unreachable().await;
        let started = Instant::now();
        assert!(store.db().ping().await.is_err());
        let user = UserId::from(1);
        for protection in [
            Protection::Optimistic,
            Protection::Pessimistic,
            Protection::Atomic,
            Protection::Fenced(Default::default()),
        ] {
            unavailable("begin", store.begin(protection).await.map(|_| ()));
        }
        unavailable(
            "reservation",
            store.reservation(ReservationId::from(1)).await,
        );
        unavailable("reservations_of", store.reservations_of(user).await);
        unavailable("wallet", store.wallet(user).await);
        unavailable("history", store.history(user).await);
        unavailable("payment", store.payment(PaymentId::from(1)).await);
        unavailable("concerts", store.concerts().await);
        unavailable("concert", store.concert(ConcertId::from(1)).await);
        unavailable("schedule", store.schedule(ScheduleId::from(1)).await);
        unavailable(
            "schedules",
            store.schedules(ConcertId::from(1), Utc::now()).await,
        );
        unavailable("seats", store.seats(ScheduleId::from(1)).await);
        unavailable(
            "create_concert",
            store.create_concert(&Title::new("x").unwrap()).await,
        );
        let now = Utc::now();
        let new = NewSchedule::new(
            ConcertId::from(1),
            now + chrono::Duration::days(1),
            vec![Points::new(1).unwrap(); usize::from(SeatNumber::MAX)],
            now,
        )
        .unwrap();
        unavailable("create_schedule", store.create_schedule(&new).await);
        // Every failure came from a refused connection, not a timeout.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_closed_pool_is_unavailable() {
        let store = unreachable().await;
        store.db().close();
        unavailable("concerts", store.concerts().await);
        unavailable(
            "begin",
            store.begin(Protection::Optimistic).await.map(|_| ()),
        );
        let status = store.db().status();
        assert_eq!((status.size, status.available), (0, 0));
    }
}
