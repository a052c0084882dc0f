//! The invariants of the stored data, checked on a live database
//! ([`audit`]; `app audit` runs it, and so do the test suite after every
//! concurrency test and the lab after every run).
//!
//! The contract's four, and three more that make a partial write of a
//! payment, a refund, a hold or a cancel visible:
//!
//! | invariant | holds when |
//! |---|---|
//! | [`Invariant::OneLiveReservationPerSeat`] | no seat has two live (`HELD` or `CONFIRMED`) reservations |
//! | [`Invariant::ConfirmedIsPaidAndSold`] | every `CONFIRMED` reservation has exactly one `PAID` payment and a `SOLD` seat |
//! | [`Invariant::BalanceIsHistorySum`] | every wallet's balance equals the sum of its history (`CHARGE` and `REFUND` add, `USE` subtracts) |
//! | [`Invariant::HistoryChains`] | every history entry's `balanceAfter` is the one before it (0 for the first) plus or minus its amount |
//! | [`Invariant::SoldSeatIsConfirmed`] | every `SOLD` seat has exactly one `CONFIRMED` reservation |
//! | [`Invariant::HeldSeatIsHeld`] | a seat is `HELD` by a user exactly when it has a `HELD` reservation of that user |
//! | [`Invariant::PaymentFollowsReservation`] | a `PAID` payment's reservation is `CONFIRMED`, a `REFUNDED` one's is `REFUNDED`, and it paid the reservation's price |
//!
//! Each check is one read-only statement; the audit reads committed data
//! (`READ COMMITTED`), so run it on a quiet database (after a test, after a
//! lab run, or with the service stopped) for a verdict that means
//! something: a change committing between two checks may show up as a
//! violation.

use std::fmt;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;

use crate::pool::Db;

/// One invariant of the stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    OneLiveReservationPerSeat,
    ConfirmedIsPaidAndSold,
    BalanceIsHistorySum,
    HistoryChains,
    SoldSeatIsConfirmed,
    HeldSeatIsHeld,
    PaymentFollowsReservation,
}

impl Invariant {
    pub const ALL: [Invariant; 7] = [
        Invariant::OneLiveReservationPerSeat,
        Invariant::ConfirmedIsPaidAndSold,
        Invariant::BalanceIsHistorySum,
        Invariant::HistoryChains,
        Invariant::SoldSeatIsConfirmed,
        Invariant::HeldSeatIsHeld,
        Invariant::PaymentFollowsReservation,
    ];

    /// A stable name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::OneLiveReservationPerSeat => "one-live-reservation-per-seat",
            Invariant::ConfirmedIsPaidAndSold => "confirmed-is-paid-and-sold",
            Invariant::BalanceIsHistorySum => "balance-is-history-sum",
            Invariant::HistoryChains => "history-chains",
            Invariant::SoldSeatIsConfirmed => "sold-seat-is-confirmed",
            Invariant::HeldSeatIsHeld => "held-seat-is-held",
            Invariant::PaymentFollowsReservation => "payment-follows-reservation",
        }
    }

    /// What must hold.
    pub fn rule(self) -> &'static str {
        match self {
            Invariant::OneLiveReservationPerSeat => {
                "no seat has two live (HELD or CONFIRMED) reservations"
            }
            Invariant::ConfirmedIsPaidAndSold => {
                "every CONFIRMED reservation has exactly one PAID payment and a SOLD seat"
            }
            Invariant::BalanceIsHistorySum => {
                "every wallet's balance equals the sum of its history"
            }
            Invariant::HistoryChains => {
                "every history entry's balanceAfter follows from the one before"
            }
            Invariant::SoldSeatIsConfirmed => {
                "every SOLD seat has exactly one CONFIRMED reservation"
            }
            Invariant::HeldSeatIsHeld => {
                "a seat is HELD by a user exactly when it has a HELD reservation of that user"
            }
            Invariant::PaymentFollowsReservation => {
                "a PAID payment's reservation is CONFIRMED, a REFUNDED one's REFUNDED, at its price"
            }
        }
    }

    /// The statement that lists the violations, one `detail` text each
    /// naming the ids involved.
    fn query(self) -> &'static str {
        match self {
            Invariant::OneLiveReservationPerSeat => {
                "SELECT CAST(CONCAT('seat ', s.id, ' (schedule ', s.schedule_id, ', number ', \
                 s.number, ') has ', COUNT(*), ' live reservations: ', \
                 GROUP_CONCAT(CONCAT(r.id, ' ', r.status) ORDER BY r.id SEPARATOR ', ')) \
                 AS CHAR) AS detail \
                 FROM reservations r JOIN seats s ON s.id = r.seat_id \
                 WHERE r.status IN ('HELD', 'CONFIRMED') \
                 GROUP BY s.id, s.schedule_id, s.number HAVING COUNT(*) > 1 ORDER BY s.id"
            }
            Invariant::ConfirmedIsPaidAndSold => {
                "SELECT CAST(CONCAT('reservation ', r.id, ' (seat ', r.seat_id, ') is CONFIRMED \
                 with ', (SELECT COUNT(*) FROM payments p \
                          WHERE p.reservation_id = r.id AND p.status = 'PAID'), \
                 ' PAID payments and its seat ', s.status) AS CHAR) AS detail \
                 FROM reservations r JOIN seats s ON s.id = r.seat_id \
                 WHERE r.status = 'CONFIRMED' AND (s.status <> 'SOLD' OR \
                   (SELECT COUNT(*) FROM payments p \
                    WHERE p.reservation_id = r.id AND p.status = 'PAID') <> 1) \
                 ORDER BY r.id"
            }
            Invariant::BalanceIsHistorySum => {
                "SELECT CAST(CONCAT('wallet of user ', t.user_id, ': balance ', t.balance, \
                 ', history sums to ', t.total) AS CHAR) AS detail FROM ( \
                   SELECT w.user_id, w.balance, \
                     COALESCE(SUM(CASE h.kind WHEN 'USE' THEN -CAST(h.amount AS SIGNED) \
                                  ELSE CAST(h.amount AS SIGNED) END), 0) AS total \
                   FROM wallets w LEFT JOIN point_history h ON h.user_id = w.user_id \
                   GROUP BY w.user_id, w.balance) t \
                 WHERE t.balance <> t.total ORDER BY t.user_id"
            }
            Invariant::HistoryChains => {
                "SELECT CAST(CONCAT('history entry ', t.id, ' of user ', t.user_id, ' (', t.kind, \
                 ' ', t.amount, '): balanceAfter ', t.balance_after, ' after ', t.prev_balance, \
                 IF(t.prev_id IS NULL, ' (first entry)', CONCAT(' (entry ', t.prev_id, ')'))) \
                 AS CHAR) AS detail FROM ( \
                   SELECT h.id, h.user_id, h.kind, h.amount, h.balance_after, \
                     LAG(h.id) OVER (PARTITION BY h.user_id ORDER BY h.id) AS prev_id, \
                     COALESCE(LAG(h.balance_after) OVER (PARTITION BY h.user_id ORDER BY h.id), 0) \
                       AS prev_balance \
                   FROM point_history h) t \
                 WHERE CAST(t.balance_after AS SIGNED) <> CAST(t.prev_balance AS SIGNED) + \
                   CASE t.kind WHEN 'USE' THEN -CAST(t.amount AS SIGNED) \
                   ELSE CAST(t.amount AS SIGNED) END \
                 ORDER BY t.id"
            }
            Invariant::SoldSeatIsConfirmed => {
                "SELECT CAST(CONCAT('seat ', s.id, ' (schedule ', s.schedule_id, ', number ', \
                 s.number, ') is SOLD with ', COUNT(r.id), ' CONFIRMED reservations', \
                 IF(COUNT(r.id) = 0, '', CONCAT(': ', GROUP_CONCAT(r.id ORDER BY r.id \
                 SEPARATOR ', ')))) AS CHAR) AS detail \
                 FROM seats s LEFT JOIN reservations r \
                   ON r.seat_id = s.id AND r.status = 'CONFIRMED' \
                 WHERE s.status = 'SOLD' \
                 GROUP BY s.id, s.schedule_id, s.number HAVING COUNT(r.id) <> 1 ORDER BY s.id"
            }
            Invariant::HeldSeatIsHeld => {
                "SELECT CAST(CONCAT('seat ', s.id, ' (schedule ', s.schedule_id, ', number ', \
                 s.number, ') is HELD by user ', s.held_by, ' with ', \
                 (SELECT COUNT(*) FROM reservations r \
                  WHERE r.seat_id = s.id AND r.status = 'HELD' AND r.user_id = s.held_by), \
                 ' HELD reservations of that user') AS CHAR) AS detail \
                 FROM seats s WHERE s.status = 'HELD' AND (SELECT COUNT(*) FROM reservations r \
                   WHERE r.seat_id = s.id AND r.status = 'HELD' AND r.user_id = s.held_by) <> 1 \
                 UNION ALL \
                 SELECT CAST(CONCAT('reservation ', r.id, ' of user ', r.user_id, ' is HELD but \
                 its seat ', s.id, ' is ', s.status, IF(s.held_by IS NULL, '', \
                 CONCAT(' by user ', s.held_by))) AS CHAR) AS detail \
                 FROM reservations r JOIN seats s ON s.id = r.seat_id \
                 WHERE r.status = 'HELD' AND NOT (s.status = 'HELD' AND s.held_by = r.user_id)"
            }
            Invariant::PaymentFollowsReservation => {
                "SELECT CAST(CONCAT('payment ', p.id, ' (', p.status, ', ', p.amount, \
                 ' points) of reservation ', r.id, ' (', r.status, ', price ', r.price, ')') \
                 AS CHAR) AS detail \
                 FROM payments p JOIN reservations r ON r.id = p.reservation_id \
                 WHERE NOT ((p.status = 'PAID' AND r.status = 'CONFIRMED') \
                         OR (p.status = 'REFUNDED' AND r.status = 'REFUNDED')) \
                    OR p.amount <> r.price OR p.user_id <> r.user_id \
                 ORDER BY p.id"
            }
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant, naming the rows involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    /// What is wrong, with the ids of the rows (`reservation 31 (seat 12)
    /// is CONFIRMED with 0 PAID payments and its seat SOLD`).
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Text)]
    detail: String,
}

/// Checks every [`Invariant`] on `db` and returns every violation found,
/// invariant by invariant (empty: the data is consistent). Fails only when
/// the database cannot be read.
pub async fn audit(db: &Db) -> anyhow::Result<Vec<Violation>> {
    let mut violations = Vec::new();
    for invariant in Invariant::ALL {
        violations.extend(check(db, invariant).await?);
    }
    Ok(violations)
}

/// The violations of one invariant.
pub async fn check(db: &Db, invariant: Invariant) -> anyhow::Result<Vec<Violation>> {
    let mut session = db.session().await?;
    let (c, guard) = session.split()?;
    let found: Vec<Found> = guard
        .run(
            "auditing the data",
            diesel::sql_query(invariant.query()).load(c),
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("checking {invariant}")))?;
    Ok(found
        .into_iter()
        .map(|f| Violation {
            invariant,
            detail: f.detail,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Invariant::ALL.iter().map(|i| i.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Invariant::ALL.len());
    }
}
