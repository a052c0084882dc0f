//! `app audit`: checks the invariants of the stored data on the configured
//! database (see [`concert_mysql::audit`]), prints every violation with the
//! ids involved, and fails when there is any.

use std::fmt::Write as _;

use anyhow::Context;
use concert_mysql::{Db, Invariant, PoolOptions, Violation};

use crate::Settings;

/// Every violation on the database of `settings` (empty: consistent).
pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Violation>> {
    let url = &settings.database.url;
    let options = PoolOptions {
        max_size: 1,
        wait_timeout: settings.database.wait,
        // An audit reads whole tables: no per-statement limit.
        statement_timeout: None,
        ..PoolOptions::default()
    };
    let db = Db::connect(url, options)
        .await
        .context("configuring the MySQL pool")?;
    let outcome = concert_mysql::audit(&db)
        .await
        .with_context(|| format!("auditing {}", url.redacted()));
    db.close();
    outcome
}

/// The report `app audit` prints: one line per violation, then a summary.
pub fn report(database: &str, violations: &[Violation]) -> String {
    let mut out = String::new();
    for v in violations {
        let _ = writeln!(out, "VIOLATION {v}");
    }
    if violations.is_empty() {
        let _ = writeln!(
            out,
            "audit of {database}: all {} invariants hold",
            Invariant::ALL.len()
        );
        for invariant in Invariant::ALL {
            let _ = writeln!(out, "  ok  {invariant}: {}", invariant.rule());
        }
    } else {
        let mut broken: Vec<Invariant> = violations.iter().map(|v| v.invariant).collect();
        broken.sort();
        broken.dedup();
        let _ = writeln!(
            out,
            "audit of {database}: {} violation(s) of {} invariant(s)",
            violations.len(),
            broken.len()
        );
        for invariant in broken {
            let _ = writeln!(out, "  BROKEN  {invariant}: {}", invariant.rule());
        }
    }
    out
}

/// `app audit`: prints the report; an error (exit status 1) when any
/// invariant is broken.
pub async fn command(settings: &Settings) -> anyhow::Result<()> {
    let violations = run(settings).await?;
    print!("{}", report(&settings.database.url.redacted(), &violations));
    anyhow::ensure!(
        violations.is_empty(),
        "the audit found {} violation(s)",
        violations.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_every_violation_and_the_broken_invariants() {
        let clean = report("mysql://db/x", &[]);
        assert!(clean.contains("all 7 invariants hold"), "{clean}");
        let violations = [
            Violation {
                invariant: Invariant::HistoryChains,
                detail: "history entry 9 of user 4".into(),
            },
            Violation {
                invariant: Invariant::HistoryChains,
                detail: "history entry 11 of user 4".into(),
            },
        ];
        let text = report("mysql://db/x", &violations);
        assert!(
            text.contains("VIOLATION history-chains: history entry 9 of user 4"),
            "{text}"
        );
        assert!(text.contains("entry 11"), "{text}");
        assert!(text.contains("2 violation(s) of 1 invariant(s)"), "{text}");
    }
}
