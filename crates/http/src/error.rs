//! [`ApiError`]: every failure the API reports, written as RFC 9457
//! `application/problem+json` with the contract's status and stable `code`.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use concert_domain::{
    ChargeError, InvalidValue, PayError, QueryError, ReserveError, UsePointsError,
};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:concert:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:concert:problem:seat-unavailable")]
    pub problem_type: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The stable machine code (see the contract's error table).
    #[schema(example = "seat-unavailable")]
    pub code: String,
}

/// Whether a 401 is for a missing token or for a bad one (it changes the
/// `WWW-Authenticate` challenge, RFC 6750).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    Missing,
    InvalidToken,
}

/// An error answer. Built from every domain error enum (`From`), from
/// invalid input ([`ApiError::validation`]) and from authentication
/// failures. Guarantees: client errors are never 5xx; `Unknown` causes are
/// logged with their chain and never shown to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    challenge: Challenge,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            code,
            title,
            detail,
            challenge: Challenge::None,
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `validation`: the request is malformed or a value is out of range.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation",
            "Invalid request",
            detail.into(),
        )
    }

    /// 401 `unauthorized` for a request without a bearer token.
    pub fn missing_token() -> Self {
        Self {
            challenge: Challenge::Missing,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "a bearer token is required".into(),
            )
        }
    }

    /// 401 `unauthorized` for a token that is malformed, forged, expired or
    /// names no valid user.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        Self {
            challenge: Challenge::InvalidToken,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                detail.into(),
            )
        }
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
    }

    /// 405 `method-not-allowed`: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path does not accept this method".into(),
        )
    }

    /// 503 `unavailable`: a dependency (MySQL, Redis) cannot be reached.
    /// The cause is logged, the client gets `detail`.
    pub fn unavailable(detail: impl Into<String>, cause: &anyhow::Error) -> Self {
        tracing::warn!(error = ?cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail.into(),
        )
        .retry_after(1)
    }

    /// 503 `unavailable` from `/health/ready`, naming the dependencies
    /// that did not answer.
    pub fn not_ready(failed: &[&str]) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            format!("not ready: {} did not answer", failed.join(", ")),
        )
        .retry_after(1)
    }

    /// 500 `internal`: a bug or an unexpected infrastructure failure. The
    /// cause chain is logged; the client gets a generic message.
    pub fn internal(cause: &anyhow::Error) -> Self {
        tracing::error!(error = ?cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an unexpected error occurred; it has been logged".into(),
        )
    }

    fn seat_unavailable() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "seat-unavailable",
            "Seat unavailable",
            "the seat is held by someone else or sold".into(),
        )
    }

    fn concurrent_update(detail: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "concurrent-update",
            "Concurrent update",
            format!("{detail}; retry"),
        )
    }

    fn lock_timeout(what: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "lock-timeout",
            "Lock timeout",
            format!("another request holds the lock on this {what}; retry later"),
        )
        .retry_after(1)
    }

    fn insufficient_points(balance: u64, needed: u64) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "insufficient-points",
            "Insufficient points",
            format!("the balance {balance} does not cover {needed}"),
        )
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine code (`validation`, `not-found`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The problem document this error writes.
    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:concert:problem:{}", self.code),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
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

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            QueryError::Unavailable(cause) => {
                ApiError::unavailable("the database is unavailable", &cause)
            }
            QueryError::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

impl From<ReserveError> for ApiError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::SeatNotFound => ApiError::not_found("seat not found"),
            ReserveError::SeatUnavailable => ApiError::seat_unavailable(),
            ReserveError::Conflict => ApiError::concurrent_update("the seat changed concurrently"),
            ReserveError::LockTimeout => ApiError::lock_timeout("seat"),
            ReserveError::LockLost => {
                ApiError::concurrent_update("the lock on this seat was lost before the write")
            }
            ReserveError::Unavailable(cause) => {
                ApiError::unavailable("storage or lock service unavailable", &cause)
            }
            ReserveError::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

impl From<ChargeError> for ApiError {
    fn from(e: ChargeError) -> Self {
        match e {
            ChargeError::BalanceLimit {
                balance,
                amount,
                max,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "balance-limit",
                "Balance limit",
                format!("balance {balance} + {amount} would exceed the maximum balance {max}"),
            ),
            ChargeError::Conflict => ApiError::concurrent_update("the wallet changed concurrently"),
            ChargeError::LockTimeout => ApiError::lock_timeout("wallet"),
            ChargeError::LockLost => {
                ApiError::concurrent_update("the lock on this wallet was lost before the write")
            }
            ChargeError::Unavailable(cause) => {
                ApiError::unavailable("storage or lock service unavailable", &cause)
            }
            ChargeError::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

impl From<UsePointsError> for ApiError {
    fn from(e: UsePointsError) -> Self {
        match e {
            UsePointsError::InsufficientPoints { balance, needed } => {
                ApiError::insufficient_points(balance, needed)
            }
            UsePointsError::Conflict => {
                ApiError::concurrent_update("the wallet changed concurrently")
            }
            UsePointsError::LockTimeout => ApiError::lock_timeout("wallet"),
            UsePointsError::LockLost => {
                ApiError::concurrent_update("the lock on this wallet was lost before the write")
            }
            UsePointsError::Unavailable(cause) => {
                ApiError::unavailable("storage or lock service unavailable", &cause)
            }
            UsePointsError::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

impl From<PayError> for ApiError {
    fn from(e: PayError) -> Self {
        match e {
            PayError::NotFound => ApiError::not_found("reservation not found"),
            PayError::Expired => ApiError::new(
                StatusCode::GONE,
                "reservation-expired",
                "Reservation expired",
                "the hold expired before payment".into(),
            ),
            PayError::AlreadyPaid => ApiError::new(
                StatusCode::CONFLICT,
                "already-paid",
                "Already paid",
                "the reservation is already paid".into(),
            ),
            PayError::InsufficientPoints { balance, needed } => {
                ApiError::insufficient_points(balance, needed)
            }
            PayError::Conflict => {
                ApiError::concurrent_update("the wallet or reservation changed concurrently")
            }
            PayError::LockTimeout => ApiError::lock_timeout("wallet"),
            PayError::LockLost => {
                ApiError::concurrent_update("the lock on this wallet was lost before the write")
            }
            PayError::Unavailable(cause) => {
                ApiError::unavailable("storage or lock service unavailable", &cause)
            }
            PayError::Unknown(cause) => ApiError::internal(&cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    fn check(e: impl Into<ApiError>, status: u16, code: &str) {
        let e = e.into();
        assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e}");
    }

    fn cause() -> anyhow::Error {
        anyhow::anyhow!("connection refused").context("pool timed out")
    }

    #[test]
    fn query_errors() {
        check(QueryError::NotFound("concert"), 404, "not-found");
        check(QueryError::Unavailable(cause()), 503, "unavailable");
        check(QueryError::Unknown(cause()), 500, "internal");
    }

    #[test]
    fn reserve_errors() {
        check(ReserveError::SeatNotFound, 404, "not-found");
        check(ReserveError::SeatUnavailable, 409, "seat-unavailable");
        check(ReserveError::Conflict, 409, "concurrent-update");
        check(ReserveError::LockTimeout, 409, "lock-timeout");
        check(ReserveError::LockLost, 409, "concurrent-update");
        check(ReserveError::Unavailable(cause()), 503, "unavailable");
        check(ReserveError::Unknown(cause()), 500, "internal");
    }

    #[test]
    fn charge_errors() {
        let limit = ChargeError::BalanceLimit {
            balance: 9,
            amount: 2,
            max: 10,
        };
        check(limit, 422, "balance-limit");
        check(ChargeError::Conflict, 409, "concurrent-update");
        check(ChargeError::LockTimeout, 409, "lock-timeout");
        check(ChargeError::LockLost, 409, "concurrent-update");
        check(ChargeError::Unavailable(cause()), 503, "unavailable");
        check(ChargeError::Unknown(cause()), 500, "internal");
    }

    #[test]
    fn use_points_errors() {
        let short = UsePointsError::InsufficientPoints {
            balance: 1,
            needed: 2,
        };
        check(short, 409, "insufficient-points");
        check(UsePointsError::Conflict, 409, "concurrent-update");
        check(UsePointsError::LockTimeout, 409, "lock-timeout");
        check(UsePointsError::LockLost, 409, "concurrent-update");
        check(UsePointsError::Unavailable(cause()), 503, "unavailable");
        check(UsePointsError::Unknown(cause()), 500, "internal");
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
        check(PayError::Conflict, 409, "concurrent-update");
        check(PayError::LockTimeout, 409, "lock-timeout");
        check(PayError::LockLost, 409, "concurrent-update");
        check(PayError::Unavailable(cause()), 503, "unavailable");
        check(PayError::Unknown(cause()), 500, "internal");
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
            }
        );
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let (response, problem) = body(QueryError::Unknown(cause()).into()).await;
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
        let (response, _) = body(ReserveError::LockTimeout.into()).await;
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }
}
