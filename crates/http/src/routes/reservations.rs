//! Seat holds: taking one or several, reading one's own, cancelling.

pub mod dto;

use actix_web::{HttpResponse, delete, get, post, web};
use concert_domain::{CancelError, Requested, ReservationId, ReserveError, SeatNumber};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Code};
use crate::extract::JsonObject;
use crate::extract::PathId;
use crate::routes::created;
use crate::routes::requests::accepted;
use crate::routes::requests::dto::RequestAccepted;
use dto::{ReservationResponse, ReservationsQuery, ReserveBatchRequest, ReserveRequest};

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

impl From<ReserveError> for ApiError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::SeatNotFound => ApiError::not_found("schedule or seat not found"),
            ReserveError::SeatUnavailable { seats, yours } => seat_unavailable(&seats, yours),
            ReserveError::HoldLimit { limit } => ApiError::new(
                Code::HoldLimit,
                format!("at most {limit} live holds per user and schedule"),
            ),
            ReserveError::NotAdmitted => ApiError::not_admitted(),
            ReserveError::Failed(f) => f.into(),
        }
    }
}

/// 409 `seat-unavailable`: the `seats` taken, one of them perhaps by the
/// caller (`yours`).
fn seat_unavailable(seats: &[SeatNumber], yours: Option<ReservationId>) -> ApiError {
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
    ApiError::seat_unavailable(numbers, detail)
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound => ApiError::not_found("reservation not found"),
            CancelError::AlreadyPaid => ApiError::new(
                Code::AlreadyPaid,
                "the reservation is paid; refund its payment instead",
            ),
            CancelError::Expired => {
                ApiError::new(Code::ReservationExpired, "the hold has already expired")
            }
            CancelError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::check;

    fn seat(n: i64) -> SeatNumber {
        SeatNumber::new(n).unwrap()
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
    fn cancel_errors() {
        check(CancelError::NotFound, 404, "not-found");
        check(CancelError::AlreadyPaid, 409, "already-paid");
        check(CancelError::Expired, 410, "reservation-expired");
    }
}
