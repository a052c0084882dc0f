//! The SQL a unit of work holds back for its commit, sent with the
//! `COMMIT` in one round trip (or by [`concert_domain::UnitOfWork::write`]'s
//! round trip, the `COMMIT` following alone).
//!
//! The statements go over the text protocol, so their values are literals:
//! strings outside a small safe alphabet are written as hexadecimal
//! `utf8mb4` literals, which no `sql_mode` or character in the data can turn
//! into SQL.

use std::fmt::Write as _;

use chrono::NaiveDateTime;
use concert_domain::{NewHistoryEntry, Wallet};

use crate::error::{CONFLICT_SIGNAL, LOCK_LOST_SIGNAL};
use crate::rows::{NewOutboxRow, to_db};

/// The statements that write what a unit held back: its deferred wallet's
/// `UPDATE`, the `INSERT` of its history lines and that of its events,
/// joined for one round trip; `None` for nothing.
pub(crate) fn held_back(
    wallet: Option<&DeferredWallet>,
    history: &[NewHistoryEntry],
    events: &[NewOutboxRow],
) -> Option<String> {
    let statements: Vec<String> = [
        wallet.map(DeferredWallet::statement),
        history_statement(history),
        outbox_statement(events),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!statements.is_empty()).then(|| statements.join("; "))
}

/// A wallet saved with [`WalletRepository::save_at_commit`]: its `UPDATE`
/// goes with the unit's `COMMIT`, in one compound statement that checks
/// the version (and the fence) and signals a refusal, which stops the
/// round trip before the `COMMIT` (the error is classified as a conflict,
/// or as a lost lock, by [`crate::error`]).
///
/// [`WalletRepository::save_at_commit`]: concert_domain::WalletRepository::save_at_commit
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
    fn statement(&self) -> String {
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

/// The one `INSERT` of the history lines a unit appended, or `None` for
/// none: every value is a number, a kind name or a time, all written as
/// plain literals.
fn history_statement(entries: &[NewHistoryEntry]) -> Option<String> {
    let head =
        "INSERT INTO point_history (user_id, kind, amount, balance_after, created_at) VALUES ";
    insert(head, entries, 80, |sql, entry| {
        let _ = write!(sql, "{}, ", entry.user.get());
        push_literal(sql, entry.change.kind().as_str());
        let _ = write!(
            sql,
            ", {}, {}, ",
            entry.change.amount().get(),
            entry.balance_after
        );
        push_time(sql, to_db(entry.at));
    })
}

/// The one `INSERT` of the outbox `rows`, or `None` for no row.
fn outbox_statement(rows: &[NewOutboxRow]) -> Option<String> {
    let head =
        "INSERT INTO outbox (event_id, stream, event_type, aggregate, payload, created_at) VALUES ";
    insert(head, rows, 512, |sql, row| {
        for value in [
            row.event_id.as_str(),
            row.stream,
            row.event_type,
            row.aggregate.as_str(),
            row.payload.as_str(),
        ] {
            push_literal(sql, value);
            sql.push_str(", ");
        }
        push_time(sql, row.created_at);
    })
}

/// One multi-row `INSERT`: `head` (up to `VALUES `), then every row's
/// values, as `values` appends them, in parentheses and separated by
/// commas; `None` for no row. `row_size` is a guess of a row's length.
fn insert<T>(
    head: &str,
    rows: &[T],
    row_size: usize,
    mut values: impl FnMut(&mut String, &T),
) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let mut sql = String::with_capacity(head.len() + rows.len() * row_size);
    sql.push_str(head);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        values(&mut sql, row);
        sql.push(')');
    }
    Some(sql)
}

/// Appends a time as a literal to the microsecond
/// (`'YYYY-MM-DD HH:MM:SS.ffffff'`).
fn push_time(sql: &mut String, at: NaiveDateTime) {
    push_literal(sql, &at.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
}

/// Appends `value` as an SQL string literal: quoted as is when every byte
/// is in `[A-Za-z0-9 _:.-]`, else as `_utf8mb4 X'<hex>'`.
fn push_literal(sql: &mut String, value: &str) {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b':' | b'.' | b'-'));
    if plain {
        sql.push('\'');
        sql.push_str(value);
        sql.push('\'');
    } else {
        sql.push_str("_utf8mb4 X'");
        for b in value.bytes() {
            // Writing to a String cannot fail.
            let _ = write!(sql, "{b:02X}");
        }
        sql.push('\'');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use concert_domain::{PointChange, Points, UserId};

    fn literal(value: &str) -> String {
        let mut sql = String::new();
        push_literal(&mut sql, value);
        sql
    }

    #[test]
    fn literals_are_plain_only_in_the_safe_alphabet() {
        assert_eq!(literal("PointsUsed"), "'PointsUsed'");
        assert_eq!(literal("user:7"), "'user:7'");
        assert_eq!(
            literal("2030-01-01 00:00:00.000001"),
            "'2030-01-01 00:00:00.000001'"
        );
        assert_eq!(literal(""), "''");
        assert_eq!(literal("it's"), "_utf8mb4 X'69742773'");
        assert_eq!(literal("a\\b"), "_utf8mb4 X'615C62'");
        assert_eq!(literal("{\"a\":1}"), "_utf8mb4 X'7B2261223A317D'");
        assert_eq!(literal("é"), "_utf8mb4 X'C3A9'");
    }

    #[test]
    fn one_statement_for_every_row() {
        assert_eq!(outbox_statement(&[]), None);
        let row = NewOutboxRow {
            event_id: "0b7d3f6e-7c1a-4e0b-9a55-3c3c8b1f2d10".into(),
            stream: "points",
            event_type: "PointsUsed",
            aggregate: "user:5".into(),
            payload: "{\"userId\":5}".into(),
            created_at: NaiveDateTime::parse_from_str(
                "2030-01-02 03:04:05.123456",
                "%Y-%m-%d %H:%M:%S%.f",
            )
            .unwrap(),
        };
        let sql = outbox_statement(&[row.clone(), row]).unwrap();
        assert_eq!(
            sql,
            "INSERT INTO outbox (event_id, stream, event_type, aggregate, payload, created_at) \
             VALUES ('0b7d3f6e-7c1a-4e0b-9a55-3c3c8b1f2d10', 'points', 'PointsUsed', 'user:5', \
             _utf8mb4 X'7B22757365724964223A357D', '2030-01-02 03:04:05.123456'), \
             ('0b7d3f6e-7c1a-4e0b-9a55-3c3c8b1f2d10', 'points', 'PointsUsed', 'user:5', \
             _utf8mb4 X'7B22757365724964223A357D', '2030-01-02 03:04:05.123456')"
        );
    }

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
