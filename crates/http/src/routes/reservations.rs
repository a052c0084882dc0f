//! Seat holds: taking one or several, reading one's own, cancelling.

use actix_web::{HttpResponse, delete, get, post, web};
use concert_domain::{Requested, ReservationId};

use crate::AppState;
use crate::auth::AuthUser;
use crate::dto::{ReservationResponse, ReservationsQuery, ReserveBatchRequest, ReserveRequest};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::extract::PathId;
use crate::routes::created;
use crate::routes::requests::{RequestAccepted, accepted};

/// Holds a seat for the caller
///
/// The seat is held for the configured hold time (5 minutes by default);
/// pay it before expiresAt. Exactly one of many concurrent callers wins a
/// seat. A seat the caller already holds answers seat-unavailable naming
/// the caller's reservation. Under the queue seat strategy, an outcome not
/// ready within the reply budget answers 202 with a request to poll.
#[utoipa::path(
    tag = "reservations",
    request_body = ReserveRequest,
    security(("bearer" = [])),
    responses((
        status = 201, description = "The seat is held", body = ReservationResponse,
        headers(("Location" = String, description = "The reservation: /api/v1/reservations/{id}")),
    ), (
        status = 202, description = "Queued (queue strategy): poll the request", body = RequestAccepted,
        headers(("Location" = String, description = "The request: /api/v1/reservation-requests/{requestId}")),
    )),
    extensions(("x-problems" = json!([
        "not-admitted", "not-found", "seat-unavailable", "hold-limit", "concurrent-update",
        "lock-timeout", "unavailable"
    ]))),
)]
#[post("/api/v1/reservations")]
pub async fn reserve(
    user: AuthUser,
    state: web::Data<AppState>,
    body: JsonObject<ReserveRequest>,
) -> Result<HttpResponse, ApiError> {
    let cmd = body.into_inner().try_into_domain(user.id)?;
    match state.services.reservations.request(cmd).await? {
        Requested::Done(reservation) => Ok(created(
            format!("/api/v1/reservations/{}", reservation.id),
            ReservationResponse::from(reservation),
        )),
        Requested::Queued(id) => Ok(accepted(&id)),
    }
}

/// Holds several seats of one date for the caller, all or none
///
/// 1 to the configured maximum (4 by default) distinct seats. When any is
/// taken, nothing is held and unavailableSeats lists the taken ones. Under
/// the queue seat strategy, like a single hold, it may answer 202.
#[utoipa::path(
    tag = "reservations",
    request_body = ReserveBatchRequest,
    security(("bearer" = [])),
    responses((
        status = 201, description = "Every seat is held; the reservations in seat order",
        body = [ReservationResponse],
    ), (
        status = 202, description = "Queued (queue strategy): poll the request", body = RequestAccepted,
        headers(("Location" = String, description = "The request: /api/v1/reservation-requests/{requestId}")),
    )),
    extensions(("x-problems" = json!([
        "not-admitted", "not-found", "seat-unavailable", "hold-limit", "concurrent-update",
        "lock-timeout", "unavailable"
    ]))),
)]
#[post("/api/v1/reservations/batch")]
pub async fn reserve_batch(
    user: AuthUser,
    state: web::Data<AppState>,
    body: JsonObject<ReserveBatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let reservations = &state.services.reservations;
    let max = reservations.policy().max_seats_per_request;
    let cmd = body.into_inner().try_into_domain(user.id, max)?;
    match reservations.request_many(cmd).await? {
        Requested::Done(held) => {
            let body: Vec<ReservationResponse> = held.into_iter().map(Into::into).collect();
            Ok(HttpResponse::Created().json(body))
        }
        Requested::Queued(id) => Ok(accepted(&id)),
    }
}

/// The caller's reservations, newest first
#[utoipa::path(
    tag = "reservations",
    params(ReservationsQuery),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The caller's reservations as they stand now, newest first",
        body = [ReservationResponse],
    )),
    extensions(("x-problems" = json!(["unavailable"]))),
)]
#[get("/api/v1/reservations")]
pub async fn list_reservations(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<ReservationsQuery>,
) -> Result<web::Json<Vec<ReservationResponse>>, ApiError> {
    let status = query.into_inner().try_into_domain()?;
    let found = state.services.reservations.list(user.id, status).await?;
    Ok(web::Json(found.into_iter().map(Into::into).collect()))
}

/// One of the caller's reservations
#[utoipa::path(
    tag = "reservations",
    params(("reservationId" = i64, Path, minimum = 1, description = "The reservation", example = 31)),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The reservation as its owner sees it now",
        body = ReservationResponse,
    )),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/reservations/{reservationId}")]
pub async fn get_reservation(
    // the path first: `/reservations/batch` with this method is a 405,
    // whoever asks
    id: web::Path<PathId>,
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<ReservationResponse>, ApiError> {
    let id = ReservationId::new(id.into_inner().get())?;
    let reservation = state.services.reservations.get(user.id, id).await?;
    Ok(web::Json(reservation.into()))
}

/// Cancels one of the caller's holds
///
/// The seat is available at once. Cancelling a cancelled reservation again
/// answers it unchanged; a paid one is refunded instead (already-paid); an
/// ended hold cannot be cancelled (reservation-expired).
#[utoipa::path(
    tag = "reservations",
    params(("reservationId" = i64, Path, minimum = 1, description = "The reservation", example = 31)),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The reservation, CANCELLED", body = ReservationResponse,
        example = json!({
            "id": 31, "scheduleId": 3, "seatNumber": 7, "userId": 42, "price": 5000,
            "status": "CANCELLED", "expiresAt": null
        }),
    )),
    extensions(("x-problems" = json!([
        "not-found", "already-paid", "concurrent-update", "reservation-expired", "unavailable"
    ]))),
)]
#[delete("/api/v1/reservations/{reservationId}")]
pub async fn cancel_reservation(
    // the path first: `/reservations/batch` with this method is a 405,
    // whoever asks
    id: web::Path<PathId>,
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<ReservationResponse>, ApiError> {
    let id = ReservationId::new(id.into_inner().get())?;
    let cancelled = state.services.reservations.cancel(user.id, id).await?;
    Ok(web::Json(cancelled.into()))
}
