//! The SQL a unit of work holds back for its commit, sent with the
//! `COMMIT` in one round trip (or by [`concert_domain::UnitOfWork::write`]'s
//! round trip, the `COMMIT` following alone).
//!
//! The statements go over the text protocol, so their values are literals:
//! strings outside a small safe alphabet are written as hexadecimal
//! `utf8mb4` literals, which no `sql_mode` or character in the data can turn
//! into SQL.

use std::fmt::Write as _;

use crate::rows::NewOutboxRow;

/// The one `INSERT` of the outbox `rows`, or `None` for no row.
pub(crate) fn outbox_statement(rows: &[NewOutboxRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let mut sql = String::with_capacity(128 + rows.len() * 512);
    sql.push_str(
        "INSERT INTO outbox (event_id, stream, event_type, aggregate, payload, created_at) VALUES ",
    );
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (j, value) in [
            row.event_id.as_str(),
            row.stream,
            row.event_type,
            row.aggregate.as_str(),
            row.payload.as_str(),
        ]
        .into_iter()
        .enumerate()
        {
            if j > 0 {
                sql.push_str(", ");
            }
            push_literal(&mut sql, value);
        }
        sql.push_str(", ");
        push_literal(
            &mut sql,
            &row.created_at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        );
        sql.push(')');
    }
    Some(sql)
}

/// Appends `value` as an SQL string literal: quoted as is when every byte
/// is in `[A-Za-z0-9 _:.-]`, else as `_utf8mb4 X'<hex>'`.
pub(crate) fn push_literal(sql: &mut String, value: &str) {
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
    use chrono::NaiveDateTime;

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
}
