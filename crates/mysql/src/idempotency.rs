//! [`IdempotencyRepository`] on a unit of work.
//!
//! The first request with a key claims it inside its transaction with
//! `INSERT ... ON DUPLICATE KEY UPDATE repeats = repeats + 1`: a new key is
//! inserted (1 row affected) and stays locked until the unit ends, so a
//! concurrent claim of it waits; an existing key is locked exclusively
//! (never a shared lock that several waiters would later try to upgrade,
//! which deadlocks when the first claimer rolls back) and counted as a
//! repeat (2 rows affected), and its row tells the request it was first
//! used for and the result committed. A rolled-back claim leaves no row.

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::Utc;
use concert_domain::{
    Claim, Failure, IdempotencyKey, IdempotencyRepository, KeyScope, PaymentId, Stored, UserId,
};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Datetime, Nullable, Unsigned, Varchar};
use diesel_async::RunQueryDsl;

use crate::error::corrupt;
use crate::prepared::reuse;
use crate::rows::{IdempotencyRow, to_db};
use crate::schema::idempotency_keys;
use crate::store::MysqlUnit;

const CLAIM: &str = "INSERT INTO idempotency_keys \
     (user_id, scope, idem_key, request, created_at) VALUES (?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE repeats = repeats + 1";
const COMPLETE: &str = "UPDATE idempotency_keys SET result_balance = ?, payment_id = ? \
     WHERE user_id = ? AND scope = ? AND idem_key = ?";

/// The scope as stored.
fn scope_to_db(scope: KeyScope) -> &'static str {
    match scope {
        KeyScope::Charge => "CHARGE",
        KeyScope::Payment => "PAYMENT",
    }
}

/// What an existing key's row says about a claim for `request`. A key
/// recorded before requests were (`request` NULL) matches any request.
fn claim_of(row: &IdempotencyRow, request: &str) -> anyhow::Result<Claim> {
    if row.request.as_deref().is_some_and(|first| first != request) {
        return Ok(Claim::Mismatch);
    }
    match (row.result_balance, row.payment_id) {
        (Some(balance), None) => Ok(Claim::Done(Stored::Balance(balance))),
        (None, Some(payment)) => Ok(Claim::Done(Stored::Payment(PaymentId::from(payment)))),
        (None, None) => Err(anyhow!("the key has no result")),
        (Some(_), Some(_)) => Err(anyhow!("the key has two results")),
    }
}

#[async_trait]
impl IdempotencyRepository for MysqlUnit {
    async fn claim(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        request: &str,
    ) -> Result<Claim, Failure> {
        let context = "claiming an idempotency key";
        let scope = scope_to_db(scope);
        let query = diesel::sql_query(CLAIM)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<Varchar, _>(scope)
            .bind::<Varchar, _>(key.as_str())
            .bind::<Varchar, _>(request)
            .bind::<Datetime, _>(to_db(Utc::now()));
        let (c, guard) = self.session.split()?;
        let affected = guard.run(context, reuse(query).execute(c)).await?;
        if affected == 1 {
            return Ok(Claim::New);
        }
        let query = idempotency_keys::table
            .find((user.get(), scope, key.as_str()))
            .select(IdempotencyRow::as_select());
        let row: IdempotencyRow = guard.run(context, reuse(query).get_result(c)).await?;
        claim_of(&row, request).map_err(|e| corrupt(e, context))
    }

    async fn complete(
        &mut self,
        user: UserId,
        scope: KeyScope,
        key: &IdempotencyKey,
        result: Stored,
    ) -> Result<(), Failure> {
        let (balance, payment) = match result {
            Stored::Balance(b) => (Some(b), None),
            Stored::Payment(p) => (None, Some(p.get())),
        };
        let query = diesel::sql_query(COMPLETE)
            .bind::<Nullable<Unsigned<BigInt>>, _>(balance)
            .bind::<Nullable<Unsigned<BigInt>>, _>(payment)
            .bind::<Unsigned<BigInt>, _>(user.get())
            .bind::<Varchar, _>(scope_to_db(scope))
            .bind::<Varchar, _>(key.as_str());
        let (c, guard) = self.session.split()?;
        let written = guard
            .run(
                "storing the result of an idempotency key",
                reuse(query).execute(c),
            )
            .await?;
        if written == 1 {
            Ok(())
        } else {
            Err(Failure::Unknown(anyhow!(
                "idempotency key {:?} of user {user} completed without a claim",
                key.as_str()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(request: Option<&str>, balance: Option<u64>, payment: Option<u64>) -> IdempotencyRow {
        IdempotencyRow {
            request: request.map(str::to_owned),
            result_balance: balance,
            payment_id: payment,
        }
    }

    #[test]
    fn an_existing_key_answers_its_result_or_a_mismatch() {
        assert_eq!(
            claim_of(&row(Some("amount=5"), Some(105), None), "amount=5").unwrap(),
            Claim::Done(Stored::Balance(105))
        );
        assert_eq!(
            claim_of(&row(Some("reservation=3"), None, Some(9)), "reservation=3").unwrap(),
            Claim::Done(Stored::Payment(PaymentId::from(9)))
        );
        assert_eq!(
            claim_of(&row(Some("amount=5"), Some(105), None), "amount=6").unwrap(),
            Claim::Mismatch
        );
        // recorded before fingerprints: matches any request
        assert_eq!(
            claim_of(&row(None, Some(105), None), "amount=6").unwrap(),
            Claim::Done(Stored::Balance(105))
        );
        assert!(claim_of(&row(Some("a"), None, None), "a").is_err());
        assert!(claim_of(&row(Some("a"), Some(1), Some(2)), "a").is_err());
        assert_eq!(scope_to_db(KeyScope::Charge), "CHARGE");
        assert_eq!(scope_to_db(KeyScope::Payment), "PAYMENT");
    }
}
