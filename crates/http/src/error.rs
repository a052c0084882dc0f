//! [`ApiError`]: every failure the API reports, written as RFC 9457
//! `application/problem+json` with the contract's status and stable `code`.
//!
//! The mapping from the domain is written once: [`Failure`] (what can happen
//! to any operation) has one `From`, and each operation's enum maps only its
//! business refusals and hands `Failed(f)` to it.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use concert_domain::{
    AdminError, CancelError, ChargeError, Failure, InvalidValue, PayError, QueryError, RefundError,
    ReserveError, SeatNumber, UseError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::log_limit;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is asked to wait before retrying a 503 or a
/// `lock-timeout`.
pub const RETRY_AFTER_SECONDS: u32 = 1;

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
            /// Every code, in the order of [`CODES`].
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
        let mut problem = ApiError::new(self, self.info().example).problem();
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
const INTERNAL_DETAIL: &str = Code::Internal.info().example;

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

/// Whether a 401 is for a missing token or for a bad one (it changes the
/// `WWW-Authenticate` challenge, RFC 6750).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    Missing,
    InvalidToken,
}

/// An error answer. Built from [`Failure`] and from every operation's
/// error enum (`From`), from invalid input ([`ApiError::validation`]) and
/// from authentication failures. Guarantees: a client error is never a 5xx;
/// an `Unknown` cause is logged with its chain and never shown to the
/// client; 503 and `lock-timeout` carry `Retry-After`; `seat-unavailable`
/// always lists `unavailableSeats`.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    detail: String,
    challenge: Challenge,
    retry_after: Option<u32>,
    allow: Option<String>,
    unavailable_seats: Option<Vec<u8>>,
}

impl ApiError {
    fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            challenge: Challenge::None,
            retry_after: None,
            allow: None,
            unavailable_seats: None,
        }
    }

    fn with_retry_after(mut self) -> Self {
        self.retry_after = Some(RETRY_AFTER_SECONDS);
        self
    }

    /// 400 `validation`: the request is malformed or a value is out of range.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(Code::Validation, detail)
    }

    /// 401 `unauthorized` for a request without a bearer token.
    pub fn missing_token() -> Self {
        Self {
            challenge: Challenge::Missing,
            ..Self::new(Code::Unauthorized, "a bearer token is required")
        }
    }

    /// 401 `unauthorized` for a token that is malformed, forged, expired or
    /// names no valid user.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self {
            challenge: Challenge::InvalidToken,
            ..Self::new(Code::Unauthorized, detail)
        }
    }

    /// 403 `forbidden`: the caller is authenticated but may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, detail)
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Code::NotFound, detail)
    }

    /// 405 `method-not-allowed` with the `Allow` header listing `allowed`.
    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        Self {
            allow: Some(allow.clone()),
            ..Self::new(
                Code::MethodNotAllowed,
                format!("{method} is not supported here; allowed: {allow}"),
            )
        }
    }

    /// 408 `request-timeout`: the body did not arrive in time.
    pub fn body_timeout(detail: impl Into<String>) -> Self {
        Self::new(Code::RequestTimeout, detail)
    }

    /// 413 `payload-too-large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            Code::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// 503 `unavailable` from `/health/ready`, naming the dependencies
    /// that did not answer (the checks log their causes).
    pub fn not_ready(failed: &[&str]) -> Self {
        Self::new(
            Code::Unavailable,
            format!("not ready: {} did not answer", failed.join(", ")),
        )
        .with_retry_after()
    }

    /// 500 `internal`: a bug or an unexpected failure. The cause chain is
    /// logged; the client gets a generic message.
    pub fn internal(cause: &anyhow::Error) -> Self {
        tracing::error!(error = %format_args!("{cause:#}"), "internal error");
        Self::new(Code::Internal, INTERNAL_DETAIL)
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The stable machine code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The problem document this error writes.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:concert:problem:{}", self.code),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
            unavailable_seats: self.unavailable_seats.clone(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code,
            self.detail
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self.challenge {
            Challenge::None => {}
            Challenge::Missing => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Challenge::InvalidToken => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        if let Some(allow) = &self.allow {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        // Serializing a struct of strings and integers cannot fail; should
        // it ever, the client still gets the status and the code.
        let body = serde_json::to_vec(&self.problem())
            .unwrap_or_else(|_| format!("{{\"code\":\"{}\"}}", self.code).into_bytes());
        response.body(body)
    }
}

impl From<InvalidValue> for ApiError {
    fn from(e: InvalidValue) -> Self {
        ApiError::validation(e.to_string())
    }
}

/// What can happen to any operation, mapped once.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Conflict => ApiError::new(
                Code::ConcurrentUpdate,
                "the data changed concurrently; retry",
            ),
            Failure::LockTimeout => ApiError::new(
                Code::LockTimeout,
                "another request holds the lock on this resource; retry later",
            )
            .with_retry_after(),
            Failure::LockLost => ApiError::new(
                Code::ConcurrentUpdate,
                "the lock on this resource was lost before the write, so nothing was written; \
                 retry",
            ),
            Failure::Unavailable(cause) => {
                log_limit::unavailable(&cause);
                ApiError::new(
                    Code::Unavailable,
                    "a dependency is unavailable; retry later",
                )
                .with_retry_after()
            }
            Failure::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            QueryError::Failed(f) => f.into(),
        }
    }
}

impl From<ReserveError> for ApiError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::SeatNotFound => ApiError::not_found("schedule or seat not found"),
            ReserveError::SeatUnavailable { seats, yours } => seat_unavailable(&seats, yours),
            ReserveError::HoldLimit { limit } => ApiError::new(
                Code::HoldLimit,
                format!("at most {limit} live holds per user and schedule"),
            ),
            ReserveError::NotAdmitted => not_admitted(),
            ReserveError::Failed(f) => f.into(),
        }
    }
}

fn seat_unavailable(
    seats: &[SeatNumber],
    yours: Option<concert_domain::ReservationId>,
) -> ApiError {
    let numbers: Vec<u8> = seats.iter().map(|s| s.get()).collect();
    let list = numbers
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let detail = match (yours, numbers.as_slice()) {
        (Some(id), _) => format!("you already hold seat {list} (reservation {id})"),
        (None, [_]) => format!("seat {list} is already held or sold"),
        (None, _) => format!("seats {list} are already held or sold"),
    };
    ApiError {
        unavailable_seats: Some(numbers),
        ..ApiError::new(Code::SeatUnavailable, detail)
    }
}

fn not_admitted() -> ApiError {
    ApiError::new(
        Code::NotAdmitted,
        "you are not admitted to this concert's waiting room; enter it and wait for your turn",
    )
}

fn insufficient_points(balance: u64, needed: u64) -> ApiError {
    ApiError::new(
        Code::InsufficientPoints,
        format!("the balance {balance} does not cover {needed}"),
    )
}

fn key_reused() -> ApiError {
    ApiError::new(
        Code::IdempotencyKeyReused,
        "the Idempotency-Key was used for a different request; use a new key",
    )
}

fn already_paid(detail: &str) -> ApiError {
    ApiError::new(Code::AlreadyPaid, detail)
}

fn expired(detail: &str) -> ApiError {
    ApiError::new(Code::ReservationExpired, detail)
}

impl From<ChargeError> for ApiError {
    fn from(e: ChargeError) -> Self {
        match e {
            ChargeError::BalanceLimit {
                balance,
                amount,
                max,
            } => ApiError::new(
                Code::BalanceLimit,
                format!("balance {balance} + {amount} would exceed the maximum balance {max}"),
            ),
            ChargeError::KeyReused => key_reused(),
            ChargeError::Failed(f) => f.into(),
        }
    }
}

impl From<UseError> for ApiError {
    fn from(e: UseError) -> Self {
        match e {
            UseError::InsufficientPoints { balance, needed } => {
                insufficient_points(balance, needed)
            }
            UseError::Failed(f) => f.into(),
        }
    }
}

impl From<PayError> for ApiError {
    fn from(e: PayError) -> Self {
        match e {
            PayError::NotFound => ApiError::not_found("reservation not found"),
            PayError::Expired => expired("the hold expired before payment"),
            PayError::AlreadyPaid => already_paid("the reservation is already paid"),
            PayError::InsufficientPoints { balance, needed } => {
                insufficient_points(balance, needed)
            }
            PayError::KeyReused => key_reused(),
            PayError::NotAdmitted => not_admitted(),
            PayError::Failed(f) => f.into(),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound => ApiError::not_found("reservation not found"),
            CancelError::AlreadyPaid => {
                already_paid("the reservation is paid; refund its payment instead")
            }
            CancelError::Expired => expired("the hold has already expired"),
            CancelError::Failed(f) => f.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::NotFound => ApiError::not_found("payment not found"),
            RefundError::Closed { hours } => ApiError::new(
                Code::RefundClosed,
                format!("refunds close {hours} hours before the show"),
            ),
            RefundError::Failed(f) => f.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(invalid) => invalid.into(),
            AdminError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            AdminError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use concert_domain::ReservationId;

    fn check(e: impl Into<ApiError>, status: u16, code: &str) {
        let e = e.into();
        assert_eq!(
            (e.status().as_u16(), e.code().as_str()),
            (status, code),
            "{e}"
        );
    }

    fn cause() -> anyhow::Error {
        anyhow::anyhow!("connection refused").context("pool timed out")
    }

    fn seat(n: i64) -> SeatNumber {
        SeatNumber::new(n).unwrap()
    }

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

    #[test]
    fn failures_are_mapped_once() {
        check(Failure::Conflict, 409, "concurrent-update");
        check(Failure::LockTimeout, 409, "lock-timeout");
        check(Failure::LockLost, 409, "concurrent-update");
        check(Failure::unavailable(cause()), 503, "unavailable");
        check(Failure::unknown(cause()), 500, "internal");
        let lost = ApiError::from(Failure::LockLost);
        assert!(lost.detail.contains("retry"), "{lost}");
        // and every operation delegates to it
        check(
            QueryError::Failed(Failure::Conflict),
            409,
            "concurrent-update",
        );
        check(
            ReserveError::Failed(Failure::LockTimeout),
            409,
            "lock-timeout",
        );
        check(
            ChargeError::Failed(Failure::LockLost),
            409,
            "concurrent-update",
        );
        check(
            UseError::Failed(Failure::unavailable(cause())),
            503,
            "unavailable",
        );
        check(PayError::Failed(Failure::unknown(cause())), 500, "internal");
        check(
            CancelError::Failed(Failure::Conflict),
            409,
            "concurrent-update",
        );
        check(
            RefundError::Failed(Failure::LockTimeout),
            409,
            "lock-timeout",
        );
        check(
            AdminError::Failed(Failure::unavailable(cause())),
            503,
            "unavailable",
        );
    }

    #[test]
    fn query_errors() {
        check(QueryError::NotFound("concert"), 404, "not-found");
    }

    #[test]
    fn reserve_errors() {
        check(ReserveError::SeatNotFound, 404, "not-found");
        let taken = ReserveError::SeatUnavailable {
            seats: vec![seat(3), seat(9)],
            yours: None,
        };
        check(taken, 409, "seat-unavailable");
        check(ReserveError::HoldLimit { limit: 2 }, 409, "hold-limit");
        check(ReserveError::NotAdmitted, 403, "not-admitted");
    }

    #[test]
    fn seat_unavailable_lists_the_seats_and_names_the_callers_own_hold() {
        let theirs = ApiError::from(ReserveError::SeatUnavailable {
            seats: vec![seat(3), seat(9)],
            yours: None,
        })
        .problem();
        assert_eq!(theirs.unavailable_seats, Some(vec![3, 9]));
        assert_eq!(theirs.detail, "seats 3, 9 are already held or sold");
        let mine = ApiError::from(ReserveError::SeatUnavailable {
            seats: vec![seat(7)],
            yours: Some(ReservationId::from(31)),
        })
        .problem();
        assert_eq!(mine.unavailable_seats, Some(vec![7]));
        assert_eq!(mine.detail, "you already hold seat 7 (reservation 31)");
    }

    #[test]
    fn charge_and_use_errors() {
        let limit = ChargeError::BalanceLimit {
            balance: 9,
            amount: 2,
            max: 10,
        };
        check(limit, 422, "balance-limit");
        check(ChargeError::KeyReused, 422, "idempotency-key-reused");
        let short = UseError::InsufficientPoints {
            balance: 1,
            needed: 2,
        };
        check(short, 409, "insufficient-points");
    }

    #[test]
    fn pay_errors() {
        check(PayError::NotFound, 404, "not-found");
        check(PayError::Expired, 410, "reservation-expired");
        check(PayError::AlreadyPaid, 409, "already-paid");
        let short = PayError::InsufficientPoints {
            balance: 100,
            needed: 500,
        };
        check(short, 409, "insufficient-points");
        check(PayError::KeyReused, 422, "idempotency-key-reused");
        check(PayError::NotAdmitted, 403, "not-admitted");
    }

    #[test]
    fn cancel_refund_and_admin_errors() {
        check(CancelError::NotFound, 404, "not-found");
        check(CancelError::AlreadyPaid, 409, "already-paid");
        check(CancelError::Expired, 410, "reservation-expired");
        check(RefundError::NotFound, 404, "not-found");
        check(RefundError::Closed { hours: 24 }, 409, "refund-closed");
        check(
            AdminError::Invalid(InvalidValue::new("title", "must be 1 to 200 characters")),
            400,
            "validation",
        );
        check(AdminError::NotFound("concert"), 404, "not-found");
    }

    #[test]
    fn invalid_values_are_validation_errors() {
        check(InvalidValue::new("amount", "too big"), 400, "validation");
    }

    async fn body(e: ApiError) -> (HttpResponse<()>, Problem) {
        let (response, body) = e.error_response().into_parts();
        let bytes = to_bytes(body).await.unwrap();
        (response, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn writes_problem_json() {
        let (response, problem) = body(PayError::Expired.into()).await;
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        assert_eq!(
            problem,
            Problem {
                problem_type: "urn:concert:problem:reservation-expired".into(),
                title: "Reservation expired".into(),
                status: 410,
                detail: "the hold expired before payment".into(),
                code: "reservation-expired".into(),
                unavailable_seats: None,
            }
        );
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let (response, problem) = body(QueryError::Failed(Failure::unknown(cause())).into()).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.detail.contains("pool"), "{}", problem.detail);
        assert!(!problem.detail.contains("refused"), "{}", problem.detail);
    }

    #[actix_web::test]
    async fn unauthorized_challenges_bearer() {
        let (response, problem) = body(ApiError::missing_token()).await;
        assert_eq!(problem.code, "unauthorized");
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        let (response, _) = body(ApiError::invalid_token("expired")).await;
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge.to_str().unwrap().starts_with("Bearer "));
    }

    #[actix_web::test]
    async fn retryable_answers_say_when() {
        let (response, _) = body(ReserveError::Failed(Failure::LockTimeout).into()).await;
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let (response, _) = body(Failure::unavailable(cause()).into()).await;
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let (response, _) = body(Failure::Conflict.into()).await;
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[actix_web::test]
    async fn method_not_allowed_lists_the_allowed_methods() {
        let (response, problem) =
            body(ApiError::method_not_allowed("PUT", &["GET", "DELETE"])).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers().get(header::ALLOW).unwrap(),
            "GET, DELETE"
        );
        assert_eq!(problem.code, "method-not-allowed");
    }
}
