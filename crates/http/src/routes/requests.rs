//! Seat requests answered later: under the `queue` seat strategy, a hold
//! whose outcome is not ready within the reply budget answers 202 with a
//! request id, and its owner polls the request here.

pub mod dto;

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use concert_domain::RequestId;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;

use dto::{RequestAccepted, RequestStatusDto, ReservationRequestResponse};

/// Seconds a client is asked to wait before polling a queued request.
pub const POLL_AFTER_SECONDS: u32 = 1;

/// Where a queued request is polled.
pub(crate) fn location(id: &RequestId) -> String {
    format!("/api/v1/reservation-requests/{id}")
}

/// The 202 of a request still queued: its id in the body and in Location.
pub(crate) fn accepted(id: &RequestId) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, location(id)))
        .insert_header((header::RETRY_AFTER, POLL_AFTER_SECONDS))
        .json(RequestAccepted {
            request_id: id.to_string(),
            status: RequestStatusDto::Pending,
        })
}

/// One of the caller's queued seat requests
///
/// Under the queue seat strategy, a hold whose outcome was not ready in
/// time answered 202 with this request's id. PENDING until applied; then
/// DONE with the reservation (or reservations, for a batch) or the problem
/// the hold would have answered directly. Another user's request, like an
/// unknown one, is not-found. Requests are kept 15 minutes from submission.
#[utoipa::path(
    tag = "reservations",
    params(("requestId" = String, Path, description = "The request id the 202 answered",
        pattern = "^[0-9a-f]{32}$", min_length = 32, max_length = 32,
        example = "4f1c2d9a8b7e6f5a4c3b2a1908f7e6d5")),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The request: PENDING, or DONE with its outcome",
        body = ReservationRequestResponse,
    )),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/reservation-requests/{requestId}")]
pub async fn get_request(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<ReservationRequestResponse>, ApiError> {
    // An id that cannot exist is answered like one that does not.
    let id = RequestId::new(&id.into_inner())
        .map_err(|_| ApiError::not_found("reservation request not found"))?;
    let view = state
        .services
        .reservations
        .request_state(user.id, &id)
        .await?;
    Ok(web::Json(view.into()))
}
