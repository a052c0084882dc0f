//! The lab's baselines: the point-use transaction written as plain SQL
//! through diesel-async, with no domain layer, on one wallet. They show what
//! the service's layers cost on top of the database work.

use chrono::Utc;
use diesel::OptionalExtension;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Datetime, Unsigned};
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::pool::Db;
use crate::rows::to_db;

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

fn signed(amount: u64) -> anyhow::Result<i64> {
    i64::try_from(amount).map_err(|_| anyhow::anyhow!("amount {amount} out of range"))
}

/// One transaction: `UPDATE wallets SET balance = balance - ? ... WHERE
/// user_id = ? AND balance >= ?`, and when it matched, the history row via
/// `INSERT ... SELECT` from the wallet. True if the use was applied.
pub async fn use_conditional(db: &Db, user: u64, amount: u64) -> anyhow::Result<bool> {
    let amount = signed(amount)?;
    let now = to_db(Utc::now());
    let mut conn = db.get::<anyhow::Error>().await?;
    conn.transaction(async |c| {
        let updated = diesel::sql_query(
            "UPDATE wallets SET balance = balance - ?, version = version + 1 \
             WHERE user_id = ? AND balance >= ?",
        )
        .bind::<BigInt, _>(amount)
        .bind::<Unsigned<BigInt>, _>(user)
        .bind::<BigInt, _>(amount)
        .execute(c)
        .await?;
        if updated == 0 {
            return Ok(false);
        }
        diesel::sql_query(
            "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
             SELECT user_id, 'USE', ?, balance, ? FROM wallets WHERE user_id = ?",
        )
        .bind::<BigInt, _>(amount)
        .bind::<Datetime, _>(now)
        .bind::<Unsigned<BigInt>, _>(user)
        .execute(c)
        .await?;
        Ok::<_, anyhow::Error>(true)
    })
    .await
}

/// One transaction: `SELECT balance ... FOR UPDATE`, check, `UPDATE`,
/// history row, `COMMIT`. True if the use was applied.
pub async fn use_for_update(db: &Db, user: u64, amount: u64) -> anyhow::Result<bool> {
    let amount = signed(amount)?;
    let now = to_db(Utc::now());
    let mut conn = db.get::<anyhow::Error>().await?;
    conn.transaction(async |c| {
        let row: Option<Balance> =
            diesel::sql_query("SELECT balance FROM wallets WHERE user_id = ? FOR UPDATE")
                .bind::<Unsigned<BigInt>, _>(user)
                .get_result(c)
                .await
                .optional()?;
        let Some(Balance { balance }) = row else {
            return Ok(false);
        };
        if balance < amount {
            return Ok(false);
        }
        let after = balance - amount;
        diesel::sql_query(
            "UPDATE wallets SET balance = ?, version = version + 1 WHERE user_id = ?",
        )
        .bind::<BigInt, _>(after)
        .bind::<Unsigned<BigInt>, _>(user)
        .execute(c)
        .await?;
        diesel::sql_query(
            "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) \
             VALUES (?, 'USE', ?, ?, ?)",
        )
        .bind::<Unsigned<BigInt>, _>(user)
        .bind::<BigInt, _>(amount)
        .bind::<BigInt, _>(after)
        .bind::<Datetime, _>(now)
        .execute(c)
        .await?;
        Ok::<_, anyhow::Error>(true)
    })
    .await
}
