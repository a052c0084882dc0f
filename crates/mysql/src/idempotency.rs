//! Idempotency keys: the first request with a key claims it inside its
//! transaction (a concurrent repeat blocks on the key row until that
//! transaction ends), stores its result, and commits with it. A repeat
//! finds the committed row and answers the stored result. If the first
//! request fails, its rollback removes the claim, so a retry runs afresh.
//!
//! The claim is `INSERT ... ON DUPLICATE KEY UPDATE repeats = repeats + 1`:
//! on an existing key it takes the row's write lock (never a shared lock
//! that several waiters would later try to upgrade, which deadlocks when the
//! first claimer rolls back), and its affected-row count (1 inserted, 2
//! updated) says which case we are in.

use chrono::NaiveDateTime;
use concert_domain::{IdempotencyKey, UserId};
use diesel::prelude::*;
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Datetime, Unsigned, Varchar};
use diesel_async::{AsyncMysqlConnection, RunQueryDsl};

use crate::rows::IdempotencyRow;
use crate::schema::idempotency_keys;

/// Which operation a key belongs to (keys of a charge and of a payment
/// never collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Charge,
    Payment,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Charge => "CHARGE",
            Scope::Payment => "PAYMENT",
        }
    }
}

/// Claims `key` for this transaction. `None`: claimed, go ahead and store
/// the result with [`record`]. `Some`: an earlier request with this key
/// committed; here is what it stored.
pub(crate) async fn claim(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    scope: Scope,
    key: &IdempotencyKey,
    now: NaiveDateTime,
) -> QueryResult<Option<IdempotencyRow>> {
    let affected = diesel::sql_query(
        "INSERT INTO idempotency_keys (user_id, scope, idem_key, created_at) \
         VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE repeats = repeats + 1",
    )
    .bind::<Unsigned<BigInt>, _>(user.get())
    .bind::<Varchar, _>(scope.as_str())
    .bind::<Varchar, _>(key.as_str())
    .bind::<Datetime, _>(now)
    .execute(c)
    .await?;
    if affected == 1 {
        return Ok(None);
    }
    idempotency_keys::table
        .find((user.get(), scope.as_str(), key.as_str()))
        .select(IdempotencyRow::as_select())
        .first(c)
        .await
        .map(Some)
}

/// What a request stores as its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Balance(u64),
    Payment(u64),
}

/// Stores the result of the request that claimed `key`.
pub(crate) async fn record(
    c: &mut AsyncMysqlConnection,
    user: UserId,
    scope: Scope,
    key: &IdempotencyKey,
    outcome: Outcome,
) -> QueryResult<()> {
    let (balance, payment) = match outcome {
        Outcome::Balance(b) => (Some(b), None),
        Outcome::Payment(p) => (None, Some(p)),
    };
    diesel::update(idempotency_keys::table.find((user.get(), scope.as_str(), key.as_str())))
        .set((
            idempotency_keys::result_balance.eq(balance),
            idempotency_keys::payment_id.eq(payment),
        ))
        .execute(c)
        .await
        .map(drop)
}
