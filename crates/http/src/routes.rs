//! Handlers. Each one validates its input into domain values, calls one
//! domain service, and maps the outcome to a DTO or an [`ApiError`]. No
//! handler touches storage or locks directly.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use concert_domain::{ChargePoints, ConcertId, ReservationId, ScheduleId};

use crate::AppState;
use crate::auth::AuthUser;
use crate::dto::{
    BalanceResponse, ChargeRequest, ConcertResponse, HealthResponse, HistoryEntryResponse,
    PayRequest, PaymentResponse, ReservationResponse, ReserveRequest, ScheduleResponse,
    SeatResponse, SeatsQuery, idempotency_key,
};
use crate::error::{ApiError, Problem};

type Json<T> = Result<web::Json<T>, ApiError>;

/// How long `/health/ready` waits for one dependency.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Every concert.
#[utoipa::path(
    get, path = "/api/v1/concerts", tag = "catalogue",
    responses(
        (status = 200, description = "Every concert, by id", body = [ConcertResponse]),
        (status = 503, description = "The database is unreachable (`unavailable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_concerts(state: web::Data<AppState>) -> Json<Vec<ConcertResponse>> {
    let concerts = state.catalogue.concerts().await?;
    Ok(web::Json(concerts.into_iter().map(Into::into).collect()))
}

/// The bookable (future) dates of a concert.
#[utoipa::path(
    get, path = "/api/v1/concerts/{concertId}/schedules", tag = "catalogue",
    params(("concertId" = u64, Path, description = "The concert")),
    responses(
        (status = 200, description = "Future schedules by start time, with their available seats", body = [ScheduleResponse]),
        (status = 400, description = "The id is not a positive integer (`validation`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown concert (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_schedules(
    state: web::Data<AppState>,
    concert: web::Path<i64>,
) -> Json<Vec<ScheduleResponse>> {
    let concert = ConcertId::new(concert.into_inner())?;
    let schedules = state.catalogue.schedules(concert).await?;
    Ok(web::Json(schedules.into_iter().map(Into::into).collect()))
}

/// The seat map of a date, optionally filtered by status.
#[utoipa::path(
    get, path = "/api/v1/schedules/{scheduleId}/seats", tag = "catalogue",
    params(("scheduleId" = u64, Path, description = "The schedule"), SeatsQuery),
    responses(
        (status = 200, description = "The schedule's seats by number", body = [SeatResponse]),
        (status = 400, description = "Bad id or status filter (`validation`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown schedule (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_seats(
    state: web::Data<AppState>,
    schedule: web::Path<i64>,
    query: web::Query<SeatsQuery>,
) -> Json<Vec<SeatResponse>> {
    let schedule = ScheduleId::new(schedule.into_inner())?;
    let status = query.into_inner().try_into_domain()?;
    let seats = state.catalogue.seats(schedule, status).await?;
    Ok(web::Json(seats.into_iter().map(Into::into).collect()))
}

/// Holds a seat for the caller for the configured hold time.
#[utoipa::path(
    post, path = "/api/v1/reservations", tag = "reservations",
    request_body = ReserveRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The seat is held; `Location` names the reservation", body = ReservationResponse),
        (status = 400, description = "Malformed body or seat number outside 1..=50 (`validation`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown schedule or seat (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`seat-unavailable`, `concurrent-update` or `lock-timeout`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reserve(
    AuthUser(user): AuthUser,
    state: web::Data<AppState>,
    body: web::Json<ReserveRequest>,
) -> Result<HttpResponse, ApiError> {
    let cmd = body.into_inner().try_into_domain(user)?;
    let reservation = state.reservations.reserve(cmd).await?;
    let location = format!("/api/v1/reservations/{}", reservation.id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(ReservationResponse::from(reservation)))
}

/// One of the caller's reservations.
#[utoipa::path(
    get, path = "/api/v1/reservations/{reservationId}", tag = "reservations",
    params(("reservationId" = u64, Path, description = "The reservation")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The reservation as its owner sees it now", body = ReservationResponse),
        (status = 400, description = "`validation`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, or somebody else's (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_reservation(
    AuthUser(user): AuthUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Json<ReservationResponse> {
    let id = ReservationId::new(id.into_inner())?;
    let reservation = state.reservations.get(user, id).await?;
    Ok(web::Json(reservation.into()))
}

/// The caller's point balance (0 for a user never charged).
#[utoipa::path(
    get, path = "/api/v1/points", tag = "points",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The balance", body = BalanceResponse),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn balance(
    AuthUser(user): AuthUser,
    state: web::Data<AppState>,
) -> Json<BalanceResponse> {
    Ok(web::Json(state.points.balance(user).await?.into()))
}

/// Adds points to the caller's balance. With an `Idempotency-Key`, a repeat
/// returns the first answer and changes nothing.
#[utoipa::path(
    post, path = "/api/v1/points/charge", tag = "points",
    request_body = ChargeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 100 visible ASCII characters; a repeat returns the first answer")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new balance", body = BalanceResponse),
        (status = 400, description = "Malformed body, amount <= 0 or above 1000000, bad key (`validation`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`concurrent-update` or `lock-timeout`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The balance would exceed its maximum (`balance-limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn charge(
    AuthUser(user): AuthUser,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<ChargeRequest>,
) -> Json<BalanceResponse> {
    let cmd = ChargePoints {
        user,
        amount: body.into_inner().try_into_domain()?,
        idempotency: idempotency_key(&req)?,
    };
    Ok(web::Json(state.points.charge(cmd).await?.into()))
}

/// Every change to the caller's balance, newest first.
#[utoipa::path(
    get, path = "/api/v1/points/history", tag = "points",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The history, newest first", body = [HistoryEntryResponse]),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    AuthUser(user): AuthUser,
    state: web::Data<AppState>,
) -> Json<Vec<HistoryEntryResponse>> {
    let entries = state.points.history(user).await?;
    Ok(web::Json(entries.into_iter().map(Into::into).collect()))
}

/// Pays one of the caller's held reservations with points: the balance goes
/// down, the reservation becomes `CONFIRMED` and the seat `SOLD`, all or
/// nothing. With an `Idempotency-Key`, a repeat returns the first payment.
#[utoipa::path(
    post, path = "/api/v1/payments", tag = "payments",
    request_body = PayRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 100 visible ASCII characters; a repeat returns the first payment")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Paid", body = PaymentResponse),
        (status = 400, description = "`validation`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, or somebody else's reservation (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already-paid`, `insufficient-points`, `concurrent-update` or `lock-timeout`", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The hold expired (`reservation-expired`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pay(
    AuthUser(user): AuthUser,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let reservation = body.into_inner().try_into_domain()?;
    let key = idempotency_key(&req)?;
    let payment = state.payments.pay(user, reservation, key).await?;
    Ok(HttpResponse::Created().json(PaymentResponse::from(payment)))
}

/// 200 while the process serves requests.
#[utoipa::path(
    get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process runs", body = HealthResponse))
)]
pub async fn live() -> web::Json<HealthResponse> {
    web::Json(HealthResponse {
        status: "ok".into(),
        checked: Vec::new(),
    })
}

/// 200 when every dependency answers (MySQL, and Redis when a Redis
/// strategy is configured), else 503 naming the ones that failed.
#[utoipa::path(
    get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency answers", body = HealthResponse),
        (status = 503, description = "`unavailable`: the detail names what failed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> Json<HealthResponse> {
    let mut failed = Vec::new();
    let mut checked = Vec::new();
    for dependency in &state.readiness {
        let name = dependency.name();
        match actix_web::rt::time::timeout(READINESS_TIMEOUT, dependency.check()).await {
            Ok(Ok(())) => checked.push(name.to_owned()),
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = ?e, "readiness check failed");
                failed.push(name);
            }
            Err(_) => {
                tracing::warn!(dependency = name, "readiness check timed out");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(web::Json(HealthResponse {
            status: "ok".into(),
            checked,
        }))
    } else {
        Err(ApiError::not_ready(&failed))
    }
}

/// Any path no route matches: 404 problem+json.
pub async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// A known path with a method it does not accept: 405 problem+json.
pub async fn wrong_method() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed())
}
