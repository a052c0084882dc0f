//! Translation of storage failures into the domain's error variants.
//!
//! diesel-async reports MySQL server errors by message (the numeric code is
//! not kept), and client-side failures (I/O, closed connection) as messages
//! starting with the driver's prefix; [`classify`] sorts them into the
//! classes the domain cares about.

use concert_domain::{ChargeError, PayError, QueryError, ReserveError, UsePointsError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The pool error type of our deadpool pool.
pub(crate) type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

/// What a storage failure means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server cannot be reached, went away, or is shutting down: 503.
    Unavailable,
    /// Deadlock (1213) or lock wait timeout (1205): the transaction was
    /// rolled back and may be retried.
    Contention,
    /// A unique key refused the write (a concurrent writer won).
    Duplicate,
    /// Anything else: a bug or a misconfiguration.
    Other,
}

/// Sorts a diesel error into a [`Failure`] class.
pub(crate) fn classify(e: &DieselError) -> Failure {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Failure::Duplicate,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::BrokenTransactionManager => Failure::Unavailable,
        DieselError::DatabaseError(_, info) => classify_message(info.message()),
        _ => Failure::Other,
    }
}

fn classify_message(message: &str) -> Failure {
    // Client-side failures: mysql_async's `Io` and `Driver` errors
    // (connection refused/reset, "Connection to the server is closed.").
    const UNAVAILABLE_PREFIXES: [&str; 2] = ["Input/output error", "Driver error"];
    // Server errors meaning "not now": shutdown (1053), killed (1927),
    // too many connections (1040), read-only (1290/1836).
    const UNAVAILABLE_FRAGMENTS: [&str; 5] = [
        "shutdown in progress",
        "Connection was killed",
        "Too many connections",
        "--read-only option",
        "server has gone away",
    ];
    const CONTENTION_FRAGMENTS: [&str; 2] = ["Deadlock found", "Lock wait timeout exceeded"];

    if UNAVAILABLE_PREFIXES.iter().any(|p| message.starts_with(p))
        || UNAVAILABLE_FRAGMENTS.iter().any(|f| message.contains(f))
    {
        Failure::Unavailable
    } else if CONTENTION_FRAGMENTS.iter().any(|f| message.contains(f)) {
        Failure::Contention
    } else {
        Failure::Other
    }
}

/// The error a transaction closure returns: a business refusal (rolls back
/// and reaches the caller as is), a database error, or a row that does not
/// convert into a domain value.
#[derive(Debug)]
pub(crate) enum TxError<E> {
    Refused(E),
    Db(DieselError),
    Corrupt(anyhow::Error),
}

impl<E> From<DieselError> for TxError<E> {
    fn from(e: DieselError) -> Self {
        TxError::Db(e)
    }
}

impl<E> TxError<E> {
    /// Maps the refusal, keeping storage failures as they are.
    pub(crate) fn map_refused<F>(self, f: impl FnOnce(E) -> F) -> TxError<F> {
        match self {
            TxError::Refused(e) => TxError::Refused(f(e)),
            TxError::Db(e) => TxError::Db(e),
            TxError::Corrupt(e) => TxError::Corrupt(e),
        }
    }

    /// Whether the connection that produced this error should be discarded
    /// instead of going back to the pool.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(self, TxError::Db(e) if classify(e) == Failure::Unavailable)
    }
}

/// Builds a domain error from a storage failure. Implemented for every
/// operation's error enum.
pub(crate) trait StorageError: Sized {
    fn unavailable(cause: anyhow::Error) -> Self;
    /// A deadlock, lock wait timeout or unique-key race: retryable.
    fn conflict(cause: anyhow::Error) -> Self;
    fn unknown(cause: anyhow::Error) -> Self;

    /// Translates a diesel error, with `context` naming the operation.
    fn from_diesel(e: DieselError, context: &'static str) -> Self {
        let class = classify(&e);
        let cause = anyhow::Error::new(e).context(context);
        match class {
            Failure::Unavailable => Self::unavailable(cause),
            Failure::Contention | Failure::Duplicate => Self::conflict(cause),
            Failure::Other => Self::unknown(cause),
        }
    }

    /// Translates a pool checkout failure: every one of them means the
    /// database cannot serve us now, except a missing runtime (a bug).
    fn from_pool(e: PoolError) -> Self {
        let unavailable = !matches!(e, PoolError::NoRuntimeSpecified);
        let cause = anyhow::Error::new(e).context("checking out a database connection");
        if unavailable {
            Self::unavailable(cause)
        } else {
            Self::unknown(cause)
        }
    }

    /// Translates the outcome of a transaction.
    fn from_tx(e: TxError<Self>, context: &'static str) -> Self {
        match e {
            TxError::Refused(e) => e,
            TxError::Db(e) => Self::from_diesel(e, context),
            TxError::Corrupt(e) => Self::unknown(e.context(context)),
        }
    }
}

macro_rules! storage_error {
    ($ty:ident, conflict: $conflict:expr) => {
        impl StorageError for $ty {
            fn unavailable(cause: anyhow::Error) -> Self {
                $ty::Unavailable(cause)
            }
            fn conflict(cause: anyhow::Error) -> Self {
                #[allow(clippy::redundant_closure_call)]
                ($conflict)(cause)
            }
            fn unknown(cause: anyhow::Error) -> Self {
                $ty::Unknown(cause)
            }
        }
    };
}

storage_error!(ReserveError, conflict: |cause: anyhow::Error| {
    tracing::debug!(error = %format!("{cause:#}"), "seat write conflict");
    ReserveError::Conflict
});
storage_error!(ChargeError, conflict: |cause: anyhow::Error| {
    tracing::debug!(error = %format!("{cause:#}"), "wallet write conflict");
    ChargeError::Conflict
});
storage_error!(UsePointsError, conflict: |cause: anyhow::Error| {
    tracing::debug!(error = %format!("{cause:#}"), "wallet write conflict");
    UsePointsError::Conflict
});
storage_error!(PayError, conflict: |cause: anyhow::Error| {
    tracing::debug!(error = %format!("{cause:#}"), "payment conflict");
    PayError::Conflict
});
// A read cannot conflict; a deadlock in the sweeper is just a failed run.
storage_error!(QueryError, conflict: QueryError::Unknown);

/// Storage errors for the plain `anyhow` helpers (admin, seed, raw).
impl StorageError for anyhow::Error {
    fn unavailable(cause: anyhow::Error) -> Self {
        cause
    }
    fn conflict(cause: anyhow::Error) -> Self {
        cause
    }
    fn unknown(cause: anyhow::Error) -> Self {
        cause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn connection_failures_are_unavailable() {
        for message in [
            "Input/output error: Input/output error: Connection refused (os error 111)",
            "Driver error: `Connection to the server is closed.'",
            "Server shutdown in progress",
            "Connection was killed",
            "Too many connections",
        ] {
            assert_eq!(
                classify(&server(DatabaseErrorKind::Unknown, message)),
                Failure::Unavailable,
                "{message}"
            );
        }
        assert_eq!(
            classify(&DieselError::BrokenTransactionManager),
            Failure::Unavailable
        );
    }

    #[test]
    fn deadlocks_and_lock_waits_are_contention() {
        for message in [
            "Deadlock found when trying to get lock; try restarting transaction",
            "Lock wait timeout exceeded; try restarting transaction",
        ] {
            assert_eq!(
                classify(&server(DatabaseErrorKind::Unknown, message)),
                Failure::Contention
            );
        }
    }

    #[test]
    fn unique_violations_are_duplicates_and_the_rest_is_other() {
        assert_eq!(
            classify(&server(
                DatabaseErrorKind::UniqueViolation,
                "Duplicate entry '7' for key 'uq_reservations_live_seat'"
            )),
            Failure::Duplicate
        );
        assert_eq!(
            classify(&server(DatabaseErrorKind::Unknown, "Unknown column 'x'")),
            Failure::Other
        );
        assert_eq!(classify(&DieselError::NotFound), Failure::Other);
    }

    #[test]
    fn domain_errors_by_class() {
        let deadlock = || server(DatabaseErrorKind::Unknown, "Deadlock found when ...");
        let gone = || {
            server(
                DatabaseErrorKind::Unknown,
                "Input/output error: broken pipe",
            )
        };
        let odd = || server(DatabaseErrorKind::Unknown, "Unknown column");
        assert!(matches!(
            ReserveError::from_diesel(deadlock(), "t"),
            ReserveError::Conflict
        ));
        assert!(matches!(
            PayError::from_diesel(gone(), "t"),
            PayError::Unavailable(_)
        ));
        assert!(matches!(
            ChargeError::from_diesel(odd(), "t"),
            ChargeError::Unknown(_)
        ));
        assert!(matches!(
            QueryError::from_diesel(deadlock(), "t"),
            QueryError::Unknown(_)
        ));
        assert!(matches!(
            UsePointsError::from_pool(PoolError::Timeout(deadpool::managed::TimeoutType::Wait)),
            UsePointsError::Unavailable(_)
        ));
        assert!(matches!(
            UsePointsError::from_pool(PoolError::NoRuntimeSpecified),
            UsePointsError::Unknown(_)
        ));
    }

    #[test]
    fn transaction_outcomes_keep_refusals() {
        let refused: TxError<PayError> = TxError::Refused(PayError::AlreadyPaid);
        assert_eq!(PayError::from_tx(refused, "t"), PayError::AlreadyPaid);
        let corrupt: TxError<PayError> = TxError::Corrupt(anyhow::anyhow!("bad row"));
        assert!(matches!(
            PayError::from_tx(corrupt, "t"),
            PayError::Unknown(_)
        ));
        let gone: TxError<PayError> =
            TxError::Db(server(DatabaseErrorKind::Unknown, "Driver error: closed"));
        assert!(gone.breaks_connection());
        assert!(!TxError::<PayError>::Refused(PayError::NotFound).breaks_connection());
    }
}
