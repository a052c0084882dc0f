//! [`WalletRepository`] on a unit of work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{
    Failure, LockKey, MAX_BALANCE, NewHistoryEntry, PointChange, UserId, Wallet, WalletRepository,
};
use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Unsigned, Varchar};
use diesel_async::RunQueryDsl;
use std::fmt::Write as _;

use crate::commit::push_literal;
use crate::error::{CONFLICT_SIGNAL, LOCK_LOST_SIGNAL, corrupt};
use crate::prepared::reuse;
use crate::rows::{WalletRow, balance_to_db, to_db};
use crate::schema::wallets;
use crate::store::MysqlUnit;

/// Creates the wallet unless it exists. `ON DUPLICATE KEY UPDATE` takes the
/// row's write lock even when it exists, so concurrent creators queue on
/// it; `INSERT IGNORE` would take a shared lock there, and two transactions
/// upgrading their shared locks deadlock each other.
const CREATE: &str =
    "INSERT INTO wallets (user_id) VALUES (?) ON DUPLICATE KEY UPDATE user_id = user_id";
const SAVE: &str = "UPDATE wallets SET balance = ?, version = ? WHERE user_id = ? AND version = ?";
const SAVE_FENCED: &str = "UPDATE wallets SET balance = ?, version = ?, fence_token = ? \
     WHERE user_id = ? AND version = ? AND fence_token <= ?";
/// Atomic use: only while the balance covers it.
const ATOMIC_USE: &str = "UPDATE wallets SET balance = balance - ?, version = version + 1 \
     WHERE user_id = ? AND balance >= ?";
/// Atomic charge: only up to the maximum balance (bound: max - amount).
const ATOMIC_CHARGE: &str = "UPDATE wallets SET balance = balance + ?, version = version + 1 \
     WHERE user_id = ? AND balance <= ?";
/// Atomic refund: always.
const ATOMIC_REFUND: &str = "UPDATE wallets SET balance = balance + ?, version = version + 1 \
     WHERE user_id = ?";
/// The history line of an atomic change, its balance copied from the
/// wallet just written (MariaDB 10.5+: `INSERT ... RETURNING`).
const HISTORY_FROM_WALLET: &str = "INSERT INTO point_history \
     (user_id, kind, amount, balance_after, created_at) \
     SELECT user_id, ?, ?, balance, ? FROM wallets WHERE user_id = ? \
     RETURNING balance_after";

#[derive(QueryableByName)]
struct BalanceAfter {
    #[diesel(sql_type = Unsigned<BigInt>)]
    balance_after: u64,
}

#[async_trait]
impl WalletRepository for MysqlUnit {
    /// `SELECT ... WHERE user_id = ?`, `FOR UPDATE` when pessimistic; none
    /// when fenced under the token that committed the wallet last (see
    /// [`crate::memo::WalletMemo`]).
    async fn find(&mut self, user: UserId) -> Result<Option<Wallet>, Failure> {
        if let Some(token) = self.fence(&LockKey::wallet(user)).map(|f| f.token())
            && let Some(wallet) = self.memo.get(user, token)
        {
            return Ok(Some(wallet));
        }
        let query = wallets::table
            .find(user.get())
            .select(WalletRow::as_select());
        let lock = self.pessimistic();
        let (c, guard) = self.session.split()?;
        let row: Option<WalletRow> = if lock {
            let row = guard
                .optional("locking a wallet", reuse(query.for_update()).get_result(c))
                .await?;
            if row.is_some() && !self.locked_wallets.contains(&user) {
                self.locked_wallets.push(user);
            }
            row
        } else {
            guard
                .optional("reading a wallet", reuse(query).get_result(c))
                .await?
        };
        row.as_ref()
            .map(WalletRow::to_domain)
            .transpose()
            .map_err(|e| corrupt(e, "reading a wallet"))
    }

    async fn create(&mut self, user: UserId) -> Result<(), Failure> {
        let query = diesel::sql_query(CREATE).bind::<Unsigned<BigInt>, _>(user.get());
        let (c, guard) = self.session.split()?;
        guard
            .run("creating a wallet", reuse(query).execute(c))
            .await?;
        Ok(())
    }

    async fn save(&mut self, wallet: &Wallet) -> Result<(), Failure> {
        // written now, not by the commit: the memo does not follow it
        self.memo.forget(wallet.user);
        let read = wallet.version.checked_sub(1).ok_or(Failure::Conflict)?;
        let balance = balance_to_db(wallet.balance).map_err(|e| corrupt(e, "writing a wallet"))?;
        let fence = self.fence(&LockKey::wallet(wallet.user)).map(|f| f.token());
        let (c, guard) = self.session.split()?;
        let written = match fence {
            None => {
                let query = diesel::sql_query(SAVE)
                    .bind::<BigInt, _>(balance)
                    .bind::<Unsigned<BigInt>, _>(wallet.version)
                    .bind::<Unsigned<BigInt>, _>(wallet.user.get())
                    .bind::<Unsigned<BigInt>, _>(read);
                guard
                    .run("writing a wallet", reuse(query).execute(c))
                    .await?
            }
            Some(token) => {
                let query = diesel::sql_query(SAVE_FENCED)
                    .bind::<BigInt, _>(balance)
                    .bind::<Unsigned<BigInt>, _>(wallet.version)
                    .bind::<Unsigned<BigInt>, _>(token)
                    .bind::<Unsigned<BigInt>, _>(wallet.user.get())
                    .bind::<Unsigned<BigInt>, _>(read)
                    .bind::<Unsigned<BigInt>, _>(token);
                guard
                    .run("writing a wallet", reuse(query).execute(c))
                    .await?
            }
        };
        if written == 1 {
            return Ok(());
        }
        let Some(token) = fence else {
            return Err(Failure::Conflict);
        };
        // Refused: a newer token, or only a newer version?
        let query = wallets::table
            .find(wallet.user.get())
            .select(wallets::fence_token);
        let stored: Option<u64> = guard
            .optional("reading a wallet's fence", reuse(query).get_result(c))
            .await?;
        match stored {
            Some(stored) if stored > token => Err(Failure::LockLost),
            _ => Err(Failure::Conflict),
        }
    }

    /// Kept in the unit for its commit to write and check, in the commit's
    /// round trip (see [`DeferredWallet`]).
    async fn save_at_commit(&mut self, wallet: &Wallet) -> Result<(), Failure> {
        if let Some(earlier) = self.wallet.take() {
            // a second wallet in one unit: the first is written now
            self.save(&earlier.wallet).await?;
        }
        let token = self.fence(&LockKey::wallet(wallet.user)).map(|f| f.token());
        balance_to_db(wallet.balance).map_err(|e| corrupt(e, "writing a wallet"))?;
        wallet.version.checked_sub(1).ok_or(Failure::Conflict)?;
        self.wallet = Some(DeferredWallet {
            wallet: *wallet,
            token,
            locked: self.locked_wallets.contains(&wallet.user),
        });
        Ok(())
    }

    /// Kept in the unit for its commit to write (see [`history_statement`]):
    /// nothing in a unit reads the history it appends.
    async fn append(&mut self, entry: &NewHistoryEntry) -> Result<(), Failure> {
        self.history.push(*entry);
        Ok(())
    }

    /// One conditional `UPDATE` (see the statements above), then the
    /// history line copied from the wallet with `INSERT ... SELECT ...
    /// RETURNING`. Nothing is written when the update matched no row.
    async fn change_atomically(
        &mut self,
        user: UserId,
        change: PointChange,
        at: DateTime<Utc>,
    ) -> Result<Option<u64>, Failure> {
        let context = "changing a balance atomically";
        self.memo.forget(user);
        let amount = change.amount().get();
        let signed = balance_to_db(amount).map_err(|e| corrupt(e, context))?;
        let (c, guard) = self.session.split()?;
        let written = match change {
            PointChange::Use(_) => {
                let query = diesel::sql_query(ATOMIC_USE)
                    .bind::<BigInt, _>(signed)
                    .bind::<Unsigned<BigInt>, _>(user.get())
                    .bind::<BigInt, _>(signed);
                guard.run(context, reuse(query).execute(c)).await?
            }
            PointChange::Charge(_) => {
                let Some(ceiling) = MAX_BALANCE.checked_sub(amount) else {
                    return Ok(None);
                };
                let ceiling = balance_to_db(ceiling).map_err(|e| corrupt(e, context))?;
                let query = diesel::sql_query(ATOMIC_CHARGE)
                    .bind::<BigInt, _>(signed)
                    .bind::<Unsigned<BigInt>, _>(user.get())
                    .bind::<BigInt, _>(ceiling);
                guard.run(context, reuse(query).execute(c)).await?
            }
            PointChange::Refund(_) => {
                let query = diesel::sql_query(ATOMIC_REFUND)
                    .bind::<BigInt, _>(signed)
                    .bind::<Unsigned<BigInt>, _>(user.get());
                guard.run(context, reuse(query).execute(c)).await?
            }
        };
        if written != 1 {
            return Ok(None);
        }
        let query = diesel::sql_query(HISTORY_FROM_WALLET)
            .bind::<Varchar, _>(change.kind().as_str())
            .bind::<Unsigned<BigInt>, _>(amount)
            .bind::<Datetime, _>(to_db(at))
            .bind::<Unsigned<BigInt>, _>(user.get());
        let row: BalanceAfter = guard
            .run("appending point history", reuse(query).get_result(c))
            .await?;
        Ok(Some(row.balance_after))
    }
}

/// The one `INSERT` of the history lines a unit appended, or `None` for
/// none. It goes over the text protocol with the unit's `COMMIT` (see
/// [`crate::commit`]): every value is a number, a kind name or a time, all
/// written as plain literals.
pub(crate) fn history_statement(entries: &[NewHistoryEntry]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let mut sql = String::with_capacity(96 + entries.len() * 80);
    sql.push_str(
        "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) VALUES ",
    );
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "({}, ", entry.user.get());
        push_literal(&mut sql, entry.change.kind().as_str());
        let _ = write!(
            sql,
            ", {}, {}, ",
            entry.change.amount().get(),
            entry.balance_after
        );
        push_literal(
            &mut sql,
            &to_db(entry.at).format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        );
        sql.push(')');
    }
    Some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concert_domain::Points;

    #[test]
    fn a_deferred_wallet_is_one_checked_compound_statement() {
        let wallet = Wallet {
            user: UserId::from(5),
            balance: 1_500,
            version: 8,
        };
        let plain = DeferredWallet {
            wallet,
            token: None,
            locked: false,
        };
        assert_eq!(
            plain.statement(),
            "BEGIN NOT ATOMIC UPDATE wallets SET balance = 1500, version = 8 \
             WHERE user_id = 5 AND version = 7; IF ROW_COUNT() <> 1 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'concert-conflict'; END IF; END"
        );
        let fenced = DeferredWallet {
            wallet,
            token: Some(42),
            locked: false,
        };
        assert_eq!(
            fenced.statement(),
            "BEGIN NOT ATOMIC UPDATE wallets SET balance = 1500, version = 8, fence_token = 42 \
             WHERE user_id = 5 AND version = 7 AND fence_token <= 42; IF ROW_COUNT() <> 1 THEN \
             IF (SELECT fence_token FROM wallets WHERE user_id = 5) > 42 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'concert-lock-lost'; END IF; \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'concert-conflict'; END IF; END"
        );
        // the unit holds the row locked: nothing to check
        let locked = DeferredWallet {
            wallet,
            token: None,
            locked: true,
        };
        assert_eq!(
            locked.statement(),
            "UPDATE wallets SET balance = 1500, version = 8 WHERE user_id = 5"
        );
    }

    #[test]
    fn one_statement_for_every_history_line() {
        assert_eq!(history_statement(&[]), None);
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let line = |change, balance_after| NewHistoryEntry {
            user: UserId::from(5),
            change,
            balance_after,
            at,
        };
        let sql = history_statement(&[
            line(PointChange::Charge(Points::new(700).unwrap()), 700),
            line(PointChange::Use(Points::new(500).unwrap()), 200),
        ])
        .unwrap();
        assert_eq!(
            sql,
            "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
             VALUES (5, 'CHARGE', 700, 700, '2030-01-02 03:04:05.123456'), \
             (5, 'USE', 500, 200, '2030-01-02 03:04:05.123456')"
        );
    }
}

/// A wallet saved with [`WalletRepository::save_at_commit`]: its `UPDATE`
/// goes with the unit's `COMMIT`, in one compound statement that checks
/// the version (and the fence) and signals a refusal, which stops the
/// round trip before the `COMMIT` (the error is classified as a conflict,
/// or as a lost lock, by [`crate::error`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeferredWallet {
    pub wallet: Wallet,
    /// The unit's fencing token for the wallet's lock key, if fenced.
    pub token: Option<u64>,
    /// The unit read the row `FOR UPDATE` (and so holds its lock): nobody
    /// can have changed it since, and the write needs no check.
    pub locked: bool,
}

impl DeferredWallet {
    /// `BEGIN NOT ATOMIC UPDATE ...; IF ROW_COUNT() <> 1 THEN SIGNAL ...
    /// END IF; END` (MariaDB's compound statement outside a stored
    /// program); a plain `UPDATE` of a row the unit holds locked (its
    /// version cannot have moved: the check would cost the server a
    /// compound statement's parse for nothing). Every value is a number.
    pub(crate) fn statement(&self) -> String {
        let w = &self.wallet;
        // checked when saved: the balance fits and the version is at least 1
        let balance = i64::try_from(w.balance).unwrap_or(i64::MAX);
        let read = w.version.saturating_sub(1);
        let user = w.user.get();
        if self.locked && self.token.is_none() {
            return format!(
                "UPDATE wallets SET balance = {balance}, version = {} WHERE user_id = {user}",
                w.version
            );
        }
        let mut sql = String::with_capacity(400);
        let _ = write!(
            sql,
            "BEGIN NOT ATOMIC UPDATE wallets SET balance = {balance}, version = {}",
            w.version
        );
        if let Some(token) = self.token {
            let _ = write!(sql, ", fence_token = {token}");
        }
        let _ = write!(sql, " WHERE user_id = {user} AND version = {read}");
        if let Some(token) = self.token {
            let _ = write!(sql, " AND fence_token <= {token}");
        }
        sql.push_str("; IF ROW_COUNT() <> 1 THEN ");
        if let Some(token) = self.token {
            let _ = write!(
                sql,
                "IF (SELECT fence_token FROM wallets WHERE user_id = {user}) > {token} THEN \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{LOCK_LOST_SIGNAL}'; END IF; "
            );
        }
        let _ = write!(
            sql,
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{CONFLICT_SIGNAL}'; END IF; END"
        );
        sql
    }
}
