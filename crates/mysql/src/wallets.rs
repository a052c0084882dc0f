//! Point wallets and their history: [`MysqlWallets`], and the wallet write
//! shared with payments.

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::NaiveDateTime;
use concert_domain::{
    ChangePoints, ChargeError, Fence, HistoryEntry, MAX_BALANCE, PointBalance, PointChange,
    PointRule, QueryError, UsePointsError, UserId, Wallet, WalletRepository, WriteMode,
};
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Datetime, Unsigned, Varchar};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use crate::error::TxError;
use crate::idempotency::{self, Outcome, Scope};
use crate::pool::Db;
use crate::rows::{HistoryRow, NewHistory, WalletRow, balance_to_db, to_db};
use crate::schema::{point_history, wallets};

/// [`WalletRepository`] on MySQL. Per [`WriteMode`]:
///
/// - `Pessimistic`: `SELECT ... FOR UPDATE`, [`Wallet::apply`], `UPDATE`,
///   `INSERT` history, commit.
/// - `Optimistic`: plain `SELECT`, [`Wallet::apply`], `UPDATE ... WHERE
///   version = ?` (no row matched: `Conflict`), `INSERT` history, commit.
/// - `Atomic`: one conditional `UPDATE ... WHERE balance >= ?` (a charge:
///   `balance <= MAX_BALANCE - amount`), then the history row copied from
///   the wallet by `INSERT ... SELECT ... RETURNING`, commit.
///
/// A charge creates a missing wallet in its transaction; a use of a missing
/// wallet is `InsufficientPoints { balance: 0 }`. Under a fence the token is
/// recorded on the wallet and a lower one is refused (`LockLost`).
#[derive(Clone, Debug)]
pub struct MysqlWallets {
    db: Db,
}

impl MysqlWallets {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// Why a wallet change was not written (the transaction rolls back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalletStop {
    /// The user has no wallet row (and none was to be created).
    Missing,
    /// [`Wallet::apply`] refused.
    Rule(PointRule),
    /// The optimistic version check failed.
    Conflict,
    /// A newer fencing token already wrote this wallet.
    LockLost,
}

/// True when the write may go ahead under `fence` (none, or not lost).
pub(crate) fn fence_held(fence: Option<&Fence>) -> bool {
    !fence.is_some_and(Fence::is_lost)
}

#[derive(QueryableByName)]
struct BalanceAfter {
    #[diesel(sql_type = Unsigned<BigInt>)]
    balance_after: u64,
}

/// Inside the caller's transaction: applies `change` to `user`'s wallet with
/// the locking `mode` names, writes the wallet (version bumped, fence token
/// recorded) and one history row whose `balance_after` is the new balance.
/// Returns the new balance.
///
/// - `Pessimistic`: `SELECT ... FOR UPDATE`, [`Wallet::apply`], `UPDATE`,
///   `INSERT` history.
/// - `Optimistic`: plain `SELECT`, [`Wallet::apply`], `UPDATE ... WHERE
///   version = ?` (0 rows: [`WalletStop::Conflict`]), `INSERT` history.
/// - `Atomic`: one conditional `UPDATE ... WHERE balance >= ?` (or, for a
///   charge, `balance <= max - amount`), then `INSERT ... SELECT ...
///   RETURNING` the history row from the wallet (MariaDB 10.5+); only a
///   refusal costs a further read, to report the balance.
///
/// With `create_missing` (charges), a user without a wallet gets an empty
/// one first ([`create_wallet`]); otherwise a missing wallet is
/// [`WalletStop::Missing`].
pub(crate) async fn change_wallet(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    change: PointChange,
    now: NaiveDateTime,
    mode: WriteMode,
    fence: Option<&Fence>,
    create_missing: bool,
) -> Result<u64, TxError<WalletStop>> {
    match mode {
        WriteMode::Optimistic | WriteMode::Pessimistic => {
            match read_decide_write(c, user, change, now, mode, fence).await {
                Err(TxError::Refused(WalletStop::Missing)) if create_missing => {
                    create_wallet(c, user).await?;
                    read_decide_write(c, user, change, now, mode, fence).await
                }
                outcome => outcome,
            }
        }
        WriteMode::Atomic => conditional_update(c, user, change, now, fence, create_missing).await,
    }
}

/// Creates an empty wallet for `user` unless one exists, inside the
/// caller's transaction. `ON DUPLICATE KEY UPDATE` takes the row's write
/// lock even when the row already exists, so concurrent first charges queue
/// on it; `INSERT IGNORE` would take a shared lock there, and two
/// transactions upgrading their shared locks deadlock each other.
async fn create_wallet(c: &mut AsyncMysqlConnection, user: UserId) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO wallets (user_id) VALUES (?) ON DUPLICATE KEY UPDATE user_id = user_id",
    )
    .bind::<Unsigned<BigInt>, _>(user.get())
    .execute(c)
    .await
    .map(drop)
}

async fn read_decide_write(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    change: PointChange,
    now: NaiveDateTime,
    mode: WriteMode,
    fence: Option<&Fence>,
) -> Result<u64, TxError<WalletStop>> {
    let query = wallets::table
        .find(user.get())
        .select(WalletRow::as_select());
    let row = if mode == WriteMode::Pessimistic {
        query.for_update().first(c).await.optional()?
    } else {
        query.first(c).await.optional()?
    };
    let row = row.ok_or(TxError::Refused(WalletStop::Missing))?;
    if fence.is_some_and(|f| row.fence_token > f.token()) {
        return Err(TxError::Refused(WalletStop::LockLost));
    }
    let wallet = row.to_domain().map_err(TxError::Corrupt)?;
    let next = wallet
        .apply(change)
        .map_err(|rule| TxError::Refused(WalletStop::Rule(rule)))?;
    // The version check makes the fence check on the read row stand: any
    // write in between bumped the version.
    let updated = diesel::update(
        wallets::table
            .find(user.get())
            .filter(wallets::version.eq(row.version)),
    )
    .set((
        wallets::balance.eq(balance_to_db(next.balance).map_err(TxError::Corrupt)?),
        wallets::version.eq(wallets::version + 1),
        wallets::fence_token.eq(fence.map_or(row.fence_token, Fence::token)),
    ))
    .execute(c)
    .await?;
    if updated == 0 {
        return Err(TxError::Refused(WalletStop::Conflict));
    }
    diesel::insert_into(point_history::table)
        .values(NewHistory {
            user_id: user.get(),
            kind: change.kind().as_str(),
            amount: change.amount().get(),
            balance_after: next.balance,
            created_at: now,
        })
        .execute(c)
        .await?;
    Ok(next.balance)
}

const ATOMIC_USE: &str = "UPDATE wallets \
     SET balance = balance - ?, version = version + 1, fence_token = GREATEST(fence_token, ?) \
     WHERE user_id = ? AND balance >= ? AND fence_token <= ?";
const ATOMIC_CHARGE: &str = "UPDATE wallets \
     SET balance = balance + ?, version = version + 1, fence_token = GREATEST(fence_token, ?) \
     WHERE user_id = ? AND balance <= ? AND fence_token <= ?";
const HISTORY_FROM_WALLET: &str = "INSERT INTO point_history \
     (user_id, kind, amount, balance_after, created_at) \
     SELECT user_id, ?, ?, balance, ? FROM wallets WHERE user_id = ? \
     RETURNING balance_after";

async fn conditional_update(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    change: PointChange,
    now: NaiveDateTime,
    fence: Option<&Fence>,
    create_missing: bool,
) -> Result<u64, TxError<WalletStop>> {
    let amount = change.amount().get();
    let amount_db = balance_to_db(amount).map_err(TxError::Corrupt)?;
    let (sql, bound) = match change {
        PointChange::Use(_) => (ATOMIC_USE, amount_db),
        PointChange::Charge(_) => (
            ATOMIC_CHARGE,
            balance_to_db(MAX_BALANCE.saturating_sub(amount)).map_err(TxError::Corrupt)?,
        ),
    };
    // Without a fence: record nothing (GREATEST with 0) and check nothing.
    let (record, limit) = fence.map_or((0, u64::MAX), |f| (f.token(), f.token()));
    // A refusal is explained by a second read; when that read finds the
    // rule would pass (the row changed in between, or was just created)
    // the update is simply tried again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let updated = diesel::sql_query(sql)
            .bind::<BigInt, _>(amount_db)
            .bind::<Unsigned<BigInt>, _>(record)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<BigInt, _>(bound)
            .bind::<Unsigned<BigInt>, _>(limit)
            .execute(c)
            .await?;
        if updated > 0 {
            break;
        }
        match explain_refusal(c, user, change, fence).await? {
            WalletStop::Missing if create_missing && attempts < 3 => create_wallet(c, user).await?,
            WalletStop::Conflict if attempts < 3 => {}
            stop => return Err(TxError::Refused(stop)),
        }
    }
    let row: BalanceAfter = diesel::sql_query(HISTORY_FROM_WALLET)
        .bind::<Varchar, _>(change.kind().as_str())
        .bind::<Unsigned<BigInt>, _>(amount)
        .bind::<Datetime, _>(now)
        .bind::<Unsigned<BigInt>, _>(user.get())
        .get_result(c)
        .await?;
    Ok(row.balance_after)
}

/// Why the conditional update matched no row.
async fn explain_refusal(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    change: PointChange,
    fence: Option<&Fence>,
) -> Result<WalletStop, TxError<WalletStop>> {
    let row = wallets::table
        .find(user.get())
        .select(WalletRow::as_select())
        .first(c)
        .await
        .optional()?;
    let Some(row) = row else {
        return Ok(WalletStop::Missing);
    };
    if fence.is_some_and(|f| row.fence_token > f.token()) {
        return Ok(WalletStop::LockLost);
    }
    let wallet = row.to_domain().map_err(TxError::Corrupt)?;
    Ok(match wallet.apply(change) {
        Err(rule) => WalletStop::Rule(rule),
        // It would pass now: the balance changed between the two statements.
        Ok(_) => WalletStop::Conflict,
    })
}

async fn charge_tx(
    c: &mut AsyncMysqlConnection,
    cmd: &ChangePoints,
    mode: WriteMode,
) -> Result<PointBalance, TxError<ChargeError>> {
    let now = to_db(cmd.now);
    if let Some(key) = &cmd.idempotency
        && let Some(first) = idempotency::claim(c, cmd.user, Scope::Charge, key, now).await?
    {
        let balance = first.result_balance.ok_or_else(|| {
            TxError::Corrupt(anyhow!(
                "idempotency key of user {} has no result",
                cmd.user
            ))
        })?;
        return Ok(PointBalance {
            user: cmd.user,
            balance,
        });
    }
    let balance = change_wallet(c, cmd.user, cmd.change, now, mode, cmd.fence.as_ref(), true)
        .await
        .map_err(|e| {
            e.map_refused(|stop| match stop {
                WalletStop::Rule(rule) => ChargeError::from(rule),
                WalletStop::Conflict => ChargeError::Conflict,
                WalletStop::LockLost => ChargeError::LockLost,
                WalletStop::Missing => {
                    ChargeError::Unknown(anyhow!("the wallet of user {} vanished", cmd.user))
                }
            })
        })?;
    if let Some(key) = &cmd.idempotency {
        idempotency::record(c, cmd.user, Scope::Charge, key, Outcome::Balance(balance)).await?;
    }
    if !fence_held(cmd.fence.as_ref()) {
        return Err(TxError::Refused(ChargeError::LockLost));
    }
    Ok(PointBalance {
        user: cmd.user,
        balance,
    })
}

async fn spend_tx(
    c: &mut AsyncMysqlConnection,
    cmd: &ChangePoints,
    mode: WriteMode,
) -> Result<PointBalance, TxError<UsePointsError>> {
    let needed = cmd.change.amount().get();
    let balance = change_wallet(
        c,
        cmd.user,
        cmd.change,
        to_db(cmd.now),
        mode,
        cmd.fence.as_ref(),
        false,
    )
    .await
    .map_err(|e| {
        e.map_refused(|stop| match stop {
            WalletStop::Missing => UsePointsError::InsufficientPoints { balance: 0, needed },
            WalletStop::Rule(rule) => UsePointsError::from(rule),
            WalletStop::Conflict => UsePointsError::Conflict,
            WalletStop::LockLost => UsePointsError::LockLost,
        })
    })?;
    if !fence_held(cmd.fence.as_ref()) {
        return Err(TxError::Refused(UsePointsError::LockLost));
    }
    Ok(PointBalance {
        user: cmd.user,
        balance,
    })
}

#[async_trait]
impl WalletRepository for MysqlWallets {
    async fn wallet(&self, user: UserId) -> Result<Wallet, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = async {
            let row = wallets::table
                .find(user.get())
                .select(WalletRow::as_select())
                .first(&mut *conn)
                .await
                .optional()?;
            match row {
                Some(row) => row.to_domain().map_err(TxError::Corrupt),
                None => Ok(Wallet::empty(user)),
            }
        }
        .await;
        self.db.finish(conn, outcome, "reading a wallet")
    }

    async fn history(&self, user: UserId) -> Result<Vec<HistoryEntry>, QueryError> {
        let mut conn = self.db.get::<QueryError>().await?;
        let outcome = async {
            let rows: Vec<HistoryRow> = point_history::table
                .filter(point_history::user_id.eq(user.get()))
                .order(point_history::id.desc())
                .select(HistoryRow::as_select())
                .load(&mut *conn)
                .await?;
            rows.iter()
                .map(HistoryRow::to_domain)
                .collect::<anyhow::Result<_>>()
                .map_err(TxError::Corrupt)
        }
        .await;
        self.db.finish(conn, outcome, "reading point history")
    }

    async fn charge(
        &self,
        cmd: ChangePoints,
        mode: WriteMode,
    ) -> Result<PointBalance, ChargeError> {
        let mut conn = self.db.get::<ChargeError>().await?;
        let outcome = conn
            .transaction(async |c| charge_tx(c, &cmd, mode).await)
            .await;
        self.db.finish(conn, outcome, "charging points")
    }

    async fn spend(
        &self,
        cmd: ChangePoints,
        mode: WriteMode,
    ) -> Result<PointBalance, UsePointsError> {
        let mut conn = self.db.get::<UsePointsError>().await?;
        let outcome = conn
            .transaction(async |c| spend_tx(c, &cmd, mode).await)
            .await;
        self.db.finish(conn, outcome, "using points")
    }
}
