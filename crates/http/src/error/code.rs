//! The problem codes, one table of them ([`CODES`]), and the problem
//! document ([`Problem`]) every error body is.

use std::fmt;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the API says about one problem code: a row of [`CODES`].
#[derive(Debug)]
struct CodeInfo {
    code: Code,
    /// The stable machine code written in the problem's `code`.
    name: &'static str,
    /// The one status this code answers with.
    status: StatusCode,
    /// A short, human-readable summary of the problem type.
    title: &'static str,
    /// When the API answers this code (for the OpenAPI document).
    meaning: &'static str,
    /// The detail of a realistic problem of this code (for the OpenAPI
    /// examples).
    example: &'static str,
}

/// Declares [`Code`], [`Code::ALL`] and [`CODES`] from one list of rows,
/// so that a code cannot be added to one and missed in another.
macro_rules! problem_codes {
    ($(
        $code:ident {
            name: $name:literal,
            status: $status:ident,
            title: $title:literal,
            meaning: $meaning:literal,
            example: $example:literal $(,)?
        }
    )*) => {
        /// Every problem `code` the API answers, with its one HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($code,)*
        }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: [Code; CODES.len()] = [$(Code::$code,)*];
        }

        /// The codes, a row each, in the order of [`Code`]'s variants.
        const CODES: &[CodeInfo] = &[$(
            CodeInfo {
                code: Code::$code,
                name: $name,
                status: StatusCode::$status,
                title: $title,
                meaning: $meaning,
                example: $example,
            },
        )*];
    };
}

problem_codes! {
    Validation {
        name: "validation",
        status: BAD_REQUEST,
        title: "Invalid request",
        meaning: "malformed JSON, a missing field, a wrong type, a value out of range, a bad \
                  path id, query value or header",
        example: "seatNumber: must be between 1 and 50",
    }
    Unauthorized {
        name: "unauthorized",
        status: UNAUTHORIZED,
        title: "Unauthorized",
        meaning: "no bearer token, or one that is invalid or expired",
        example: "the token has expired",
    }
    Forbidden {
        name: "forbidden",
        status: FORBIDDEN,
        title: "Forbidden",
        meaning: "the token lacks the admin role",
        example: "this operation needs a token with the admin role",
    }
    NotAdmitted {
        name: "not-admitted",
        status: FORBIDDEN,
        title: "Not admitted",
        meaning: "the waiting room is on and the caller is not admitted",
        example: "you are not admitted to this concert's waiting room",
    }
    NotFound {
        name: "not-found",
        status: NOT_FOUND,
        title: "Not found",
        meaning: "unknown, or not the caller's",
        example: "reservation not found",
    }
    MethodNotAllowed {
        name: "method-not-allowed",
        status: METHOD_NOT_ALLOWED,
        title: "Method not allowed",
        meaning: "the path does not support this method (see Allow)",
        example: "PUT is not supported here; allowed: GET, DELETE",
    }
    RequestTimeout {
        name: "request-timeout",
        status: REQUEST_TIMEOUT,
        title: "Request timeout",
        meaning: "the request body did not arrive in time",
        example: "the request body did not arrive within 10 seconds",
    }
    SeatUnavailable {
        name: "seat-unavailable",
        status: CONFLICT,
        title: "Seat unavailable",
        meaning: "a seat is held by someone else (or by the caller) or sold; \
                  unavailableSeats lists them",
        example: "seat 7 is already held or sold",
    }
    ConcurrentUpdate {
        name: "concurrent-update",
        status: CONFLICT,
        title: "Concurrent update",
        meaning: "a concurrent change won; retrying may succeed",
        example: "the data changed concurrently; retry",
    }
    InsufficientPoints {
        name: "insufficient-points",
        status: CONFLICT,
        title: "Insufficient points",
        meaning: "the balance does not cover the payment",
        example: "the balance 300 does not cover 500",
    }
    AlreadyPaid {
        name: "already-paid",
        status: CONFLICT,
        title: "Already paid",
        meaning: "the reservation is already confirmed (or no longer payable)",
        example: "the reservation is already paid",
    }
    LockTimeout {
        name: "lock-timeout",
        status: CONFLICT,
        title: "Lock timeout",
        meaning: "another request holds the lock; retry after Retry-After",
        example: "another request holds the lock on this resource; retry later",
    }
    HoldLimit {
        name: "hold-limit",
        status: CONFLICT,
        title: "Hold limit",
        meaning: "the caller already holds the maximum of live holds",
        example: "at most 4 live holds per user and schedule",
    }
    RefundClosed {
        name: "refund-closed",
        status: CONFLICT,
        title: "Refund closed",
        meaning: "the show starts too soon to refund",
        example: "refunds close 24 hours before the show",
    }
    ReservationExpired {
        name: "reservation-expired",
        status: GONE,
        title: "Reservation expired",
        meaning: "the hold has expired",
        example: "the hold expired before payment",
    }
    PayloadTooLarge {
        name: "payload-too-large",
        status: PAYLOAD_TOO_LARGE,
        title: "Payload too large",
        meaning: "the body is larger than the limit",
        example: "the body is larger than 16384 bytes",
    }
    BalanceLimit {
        name: "balance-limit",
        status: UNPROCESSABLE_ENTITY,
        title: "Balance limit",
        meaning: "the charge would exceed the maximum balance",
        example: "balance 9950000 + 100000 would exceed the maximum balance 10000000",
    }
    IdempotencyKeyReused {
        name: "idempotency-key-reused",
        status: UNPROCESSABLE_ENTITY,
        title: "Idempotency key reused",
        meaning: "the Idempotency-Key was used before with a different request",
        example: "the Idempotency-Key was used for a different request; use a new key",
    }
    Internal {
        name: "internal",
        status: INTERNAL_SERVER_ERROR,
        title: "Internal error",
        meaning: "a bug; it has been logged",
        example: "an unexpected error occurred; it has been logged",
    }
    Unavailable {
        name: "unavailable",
        status: SERVICE_UNAVAILABLE,
        title: "Service unavailable",
        meaning: "storage or the lock service is unreachable; retry later",
        example: "a dependency is unavailable; retry later",
    }
}

impl Code {
    /// This code's row of [`CODES`].
    const fn info(self) -> &'static CodeInfo {
        &CODES[self as usize]
    }

    /// The stable machine code written in the problem's `code`.
    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// The code named `s`, if any.
    pub fn parse(s: &str) -> Option<Code> {
        CODES.iter().find(|row| row.name == s).map(|row| row.code)
    }

    /// The one status this code answers with.
    pub fn status(self) -> StatusCode {
        self.info().status
    }

    /// A short, human-readable summary of the problem type.
    pub fn title(self) -> &'static str {
        self.info().title
    }

    /// When the API answers this code (for the OpenAPI document).
    pub fn meaning(self) -> &'static str {
        self.info().meaning
    }

    /// A realistic problem of this code (for the OpenAPI examples).
    pub fn example(self) -> Problem {
        let mut problem = Problem::new(self, self.info().example);
        if self == Code::SeatUnavailable {
            problem.unavailable_seats = Some(vec![7]);
        }
        problem
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client is told of an internal error.
pub(crate) const INTERNAL_DETAIL: &str = Code::Internal.info().example;

/// An RFC 9457 problem document, as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the problem type: urn:concert:problem:CODE.
    #[serde(rename = "type")]
    #[schema(example = "urn:concert:problem:not-found")]
    pub problem_type: String,
    /// A short, human-readable summary of the problem type.
    #[schema(example = "Not found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong with this request.
    #[schema(example = "reservation not found")]
    pub detail: String,
    /// The stable machine code (see the contract's error table).
    #[schema(example = "not-found")]
    pub code: String,
    /// With `seat-unavailable` only (always there): the seats asked for
    /// that are held or sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!([7]), nullable = false)]
    pub unavailable_seats: Option<Vec<u8>>,
}

impl Problem {
    /// The document of a problem of `code`, without `unavailableSeats`.
    pub(crate) fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:concert:problem:{code}"),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            unavailable_seats: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_code_in_order_with_distinct_names() {
        assert_eq!(Code::ALL.len(), CODES.len());
        for (i, row) in CODES.iter().enumerate() {
            assert_eq!((row.code as usize, row.code), (i, Code::ALL[i]));
            assert_eq!(CODES.iter().filter(|r| r.name == row.name).count(), 1);
        }
    }

    #[test]
    fn every_code_has_one_status_and_parses_back() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let example = code.example();
            assert_eq!(example.status, code.status().as_u16());
            assert_eq!(example.code, code.as_str());
        }
        assert_eq!(Code::parse("nope"), None);
    }
}
