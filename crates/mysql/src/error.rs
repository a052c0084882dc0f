//! The one translation of storage errors into the domain's [`Failure`].
//!
//! diesel-async reports MariaDB server errors by message (the numeric code
//! is not kept) and client-side failures (I/O, closed connection) as
//! messages starting with the driver's prefix; [`classify`] sorts them.

use concert_domain::Failure;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The pool error type of our deadpool pool.
pub(crate) type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

/// The message of the signal a compound statement raises to refuse a stale
/// version: [`Class::Conflict`].
pub(crate) const CONFLICT_SIGNAL: &str = "concert-conflict";
/// The message of the signal a compound statement raises to refuse a stale
/// fencing token: [`Class::LockLost`].
pub(crate) const LOCK_LOST_SIGNAL: &str = "concert-lock-lost";

/// What a storage error means to the caller and to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection failed at the network level (refused, reset, closed,
    /// killed, server gone or shutting down): unavailable, and the
    /// connection must never be reused.
    Gone,
    /// The server did not do it in time (statement time limit, query
    /// killed, too many connections, read-only): unavailable, but the
    /// connection itself is fine.
    Busy,
    /// Deadlock, lock wait timeout, a unique key refusing a concurrent
    /// twin, or a version check signalled by a compound statement: the
    /// transaction lost a race and may be retried.
    Conflict,
    /// A fencing-token check signalled by a compound statement: a newer
    /// lock holder wrote the row.
    LockLost,
    /// Anything else: a bug or a misconfiguration.
    Other,
}

impl Class {
    /// Whether a connection that produced this error must be discarded.
    pub(crate) fn breaks_connection(self) -> bool {
        self == Class::Gone
    }
}

/// Sorts a diesel error into a [`Class`].
pub(crate) fn classify(e: &DieselError) -> Class {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Class::Conflict,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::BrokenTransactionManager => Class::Gone,
        DieselError::DatabaseError(_, info) => classify_message(info.message()),
        _ => Class::Other,
    }
}

fn classify_message(message: &str) -> Class {
    // Client-side failures: mysql_async's `Io` and `Driver` errors
    // (connection refused/reset, "Connection to the server is closed.").
    const GONE_PREFIXES: [&str; 2] = ["Input/output error", "Driver error"];
    // Server errors that end the session: shutdown (1053), killed (1927),
    // gone away (2006), idle disconnect (4031).
    const GONE_FRAGMENTS: [&str; 4] = [
        "shutdown in progress",
        "Connection was killed",
        "server has gone away",
        "disconnected by the server",
    ];
    // Server errors meaning "not now": statement time limit (1969), query
    // killed (1317), too many connections (1040), read-only (1290/1836).
    const BUSY_FRAGMENTS: [&str; 4] = [
        "max_statement_time exceeded",
        "Query execution was interrupted",
        "Too many connections",
        "--read-only option",
    ];
    const CONFLICT_FRAGMENTS: [&str; 3] = [
        "Deadlock found",
        "Lock wait timeout exceeded",
        CONFLICT_SIGNAL,
    ];

    if GONE_PREFIXES.iter().any(|p| message.starts_with(p))
        || GONE_FRAGMENTS.iter().any(|f| message.contains(f))
    {
        Class::Gone
    } else if BUSY_FRAGMENTS.iter().any(|f| message.contains(f)) {
        Class::Busy
    } else if message.contains(LOCK_LOST_SIGNAL) {
        Class::LockLost
    } else if CONFLICT_FRAGMENTS.iter().any(|f| message.contains(f)) {
        Class::Conflict
    } else {
        Class::Other
    }
}

/// Translates a diesel error met while `context` (what was being done).
pub(crate) fn failure(e: DieselError, class: Class, context: &'static str) -> Failure {
    match class {
        Class::Gone | Class::Busy => Failure::Unavailable(anyhow::Error::new(e).context(context)),
        Class::Conflict => {
            tracing::debug!(error = %e, context, "storage conflict");
            Failure::Conflict
        }
        Class::LockLost => {
            tracing::debug!(error = %e, context, "a newer lock holder wrote the row");
            Failure::LockLost
        }
        Class::Other => Failure::Unknown(anyhow::Error::new(e).context(context)),
    }
}

/// Translates a pool checkout failure: every one means the database cannot
/// serve us now, except a missing runtime or an invalid URL (bugs or
/// misconfiguration).
pub(crate) fn pool_failure(e: PoolError) -> Failure {
    use diesel::ConnectionError;
    use diesel_async::pooled_connection::PoolError as Backend;
    let misconfigured = matches!(
        e,
        PoolError::NoRuntimeSpecified
            | PoolError::Backend(Backend::ConnectionError(
                ConnectionError::InvalidConnectionUrl(_)
            ))
    );
    let cause = anyhow::Error::new(e).context("checking out a database connection");
    if misconfigured {
        Failure::Unknown(cause)
    } else {
        Failure::Unavailable(cause)
    }
}

/// A row that does not convert into a domain value: a bug or a hand edit.
pub(crate) fn corrupt(e: anyhow::Error, context: &'static str) -> Failure {
    Failure::Unknown(e.context(context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool::managed::TimeoutType;

    fn server(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    fn unknown(message: &str) -> DieselError {
        server(DatabaseErrorKind::Unknown, message)
    }

    fn translated(e: DieselError) -> Failure {
        let class = classify(&e);
        failure(e, class, "testing")
    }

    #[test]
    fn network_failures_break_the_connection() {
        for message in [
            "Input/output error: Input/output error: Connection refused (os error 111)",
            "Driver error: `Connection to the server is closed.'",
            "Server shutdown in progress",
            "Connection was killed",
            "MySQL server has gone away",
            "The client was disconnected by the server because of inactivity",
        ] {
            let class = classify(&unknown(message));
            assert_eq!(class, Class::Gone, "{message}");
            assert!(class.breaks_connection());
            assert!(matches!(
                translated(unknown(message)),
                Failure::Unavailable(_)
            ));
        }
        assert_eq!(
            classify(&DieselError::BrokenTransactionManager),
            Class::Gone
        );
    }

    #[test]
    fn time_limits_are_unavailable_but_keep_the_connection() {
        for message in [
            "Query execution was interrupted (max_statement_time exceeded)",
            "Query execution was interrupted",
            "Too many connections",
        ] {
            let class = classify(&unknown(message));
            assert_eq!(class, Class::Busy, "{message}");
            assert!(!class.breaks_connection());
            assert!(matches!(
                translated(unknown(message)),
                Failure::Unavailable(_)
            ));
        }
    }

    #[test]
    fn deadlocks_lock_waits_and_unique_races_are_conflicts() {
        for e in [
            unknown("Deadlock found when trying to get lock; try restarting transaction"),
            unknown("Lock wait timeout exceeded; try restarting transaction"),
            server(
                DatabaseErrorKind::UniqueViolation,
                "Duplicate entry '7' for key 'uq_reservations_live_seat'",
            ),
        ] {
            assert_eq!(classify(&e), Class::Conflict);
            assert!(matches!(translated(e), Failure::Conflict));
        }
    }

    #[test]
    fn the_rest_is_unknown_with_its_context() {
        for e in [
            unknown("Unknown column 'x' in 'field list'"),
            server(
                DatabaseErrorKind::CheckViolation,
                "CONSTRAINT `ck_wallets_balance` failed",
            ),
            DieselError::NotFound,
        ] {
            assert_eq!(classify(&e), Class::Other);
            match translated(e) {
                Failure::Unknown(cause) => assert!(format!("{cause:#}").starts_with("testing")),
                other => panic!("{other:?}"),
            }
        }
        let corrupt = corrupt(anyhow::anyhow!("bad row"), "reading a seat");
        assert!(matches!(corrupt, Failure::Unknown(_)));
    }

    #[test]
    fn pool_failures_are_unavailable_unless_misconfigured() {
        assert!(matches!(
            pool_failure(PoolError::Timeout(TimeoutType::Wait)),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            pool_failure(PoolError::Closed),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            pool_failure(PoolError::NoRuntimeSpecified),
            Failure::Unknown(_)
        ));
    }
}
