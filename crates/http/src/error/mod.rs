//! [`ApiError`]: every failure the API reports, written as RFC 9457
//! `application/problem+json` with the contract's status and stable `code`.
//!
//! The mapping from the domain is written once: [`Failure`] (what can happen
//! to any operation) has one `From` here, and each operation's enum maps only
//! its business refusals, next to its route (`crate::routes`), and hands
//! `Failed(f)` to it. The problem codes are one table, in `error/code.rs`.

mod code;

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use concert_domain::{Failure, InvalidValue, QueryError};

use crate::log_limit;

use code::INTERNAL_DETAIL;
pub use code::{Code, Problem};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is asked to wait before retrying a 503 or a
/// `lock-timeout`.
pub const RETRY_AFTER_SECONDS: u32 = 1;

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
    /// A problem of `code`; the routes build their refusals with it.
    pub(crate) fn new(code: Code, detail: impl Into<String>) -> Self {
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

    /// 404 `not-found` for `what` (a concert, a schedule, ...).
    pub(crate) fn not_found_of(what: &str) -> Self {
        Self::not_found(format!("{what} not found"))
    }

    /// 403 `not-admitted`: the waiting room has not let the caller in.
    pub(crate) fn not_admitted() -> Self {
        Self::new(
            Code::NotAdmitted,
            "you are not admitted to this concert's waiting room; enter it and wait for your turn",
        )
    }

    /// 409 `seat-unavailable`, listing the `seats` held or sold.
    pub(crate) fn seat_unavailable(seats: Vec<u8>, detail: impl Into<String>) -> Self {
        Self {
            unavailable_seats: Some(seats),
            ..Self::new(Code::SeatUnavailable, detail)
        }
    }

    /// 409 `insufficient-points`.
    pub(crate) fn insufficient_points(balance: u64, needed: u64) -> Self {
        Self::new(
            Code::InsufficientPoints,
            format!("the balance {balance} does not cover {needed}"),
        )
    }

    /// 422 `idempotency-key-reused`.
    pub(crate) fn key_reused() -> Self {
        Self::new(
            Code::IdempotencyKeyReused,
            "the Idempotency-Key was used for a different request; use a new key",
        )
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
            unavailable_seats: self.unavailable_seats.clone(),
            ..Problem::new(self.code, self.detail.clone())
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
            QueryError::NotFound(what) => ApiError::not_found_of(what),
            QueryError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use concert_domain::{
        AdminError, CancelError, ChargeError, PayError, RefundError, ReserveError, UseError,
    };

    /// `e` answers `status` with `code`.
    pub(crate) fn check(e: impl Into<ApiError>, status: u16, code: &str) {
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
        let operations: [fn(Failure) -> ApiError; 8] = [
            |f| QueryError::Failed(f).into(),
            |f| ReserveError::Failed(f).into(),
            |f| ChargeError::Failed(f).into(),
            |f| UseError::Failed(f).into(),
            |f| PayError::Failed(f).into(),
            |f| CancelError::Failed(f).into(),
            |f| RefundError::Failed(f).into(),
            |f| AdminError::Failed(f).into(),
        ];
        for failed in operations {
            check(failed(Failure::Conflict), 409, "concurrent-update");
            check(failed(Failure::LockTimeout), 409, "lock-timeout");
            check(failed(Failure::unavailable(cause())), 503, "unavailable");
            check(failed(Failure::unknown(cause())), 500, "internal");
        }
    }

    #[test]
    fn query_errors() {
        check(QueryError::NotFound("concert"), 404, "not-found");
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
