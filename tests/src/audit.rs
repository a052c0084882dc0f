//! The audit (`app audit`'s checks) after a concurrency test: every
//! invariant of the stored data must hold once the dust has settled.

use concert_mysql::{Db, Violation};

/// The violations on `db`.
pub async fn violations(db: &Db) -> Vec<Violation> {
    concert_mysql::audit(db)
        .await
        .unwrap_or_else(|e| panic!("the audit could not read the database: {e:#}"))
}

/// Panics, listing every violation, unless every invariant holds on `db`.
pub async fn assert_consistent(db: &Db) {
    let found = violations(db).await;
    assert!(
        found.is_empty(),
        "the audit found {} violation(s):\n{}",
        found.len(),
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
