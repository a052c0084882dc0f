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

use crate::commit::DeferredWallet;
use crate::error::corrupt;
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

    /// Kept in the unit for its commit to write (see [`crate::commit`]):
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
