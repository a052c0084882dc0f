//! A concert's waiting room: entering, polling, leaving.
//!
//! With the room off (`APP_WAITING_ROOM=off`), reservation and payment
//! need no admission: entering shows the caller ADMITTED, without end
//! (`admittedUntil` null); no entry is kept, so a poll answers 404 like a
//! poll without an entry (enter again), and leaving changes nothing. A
//! client written for the room works unchanged.

pub mod dto;

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use concert_domain::{ConcertId, RoomEntry, UserId};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::PathId;
use dto::RoomEntryResponse;

/// Enters the caller into a concert's waiting room
///
/// Users are admitted in order of first entry, at most the configured
/// number at once per concert (100 by default); an admitted user may
/// reserve and pay for the concert until admittedUntil. Entering again
/// returns the same entry: the place is never lost by re-entering. Poll
/// (GET) at pollAfterSeconds: a waiting entry not polled for the idle time
/// (60 s by default) loses its place.
#[utoipa::path(
    tag = "waiting-room",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The caller's entry", body = RoomEntryResponse,
        headers(("Retry-After" = u64, description = "Seconds until the next poll: pollAfterSeconds")),
    )),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[post("/api/v1/concerts/{concertId}/waiting-room")]
pub async fn enter_room(
    user: AuthUser,
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
) -> Result<HttpResponse, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    let entry = match &state.services.waiting_room {
        Some(room) => room.enter(user.id, concert).await?,
        None => unrestricted(&state, user.id, concert).await?,
    };
    Ok(entry_response(entry))
}

/// The caller's entry in a concert's waiting room
///
/// Where the caller stands now; polling also keeps a waiting entry alive.
/// 404 when the caller has no entry (never entered, left, idled out, or
/// the admission ended): enter again.
#[utoipa::path(
    tag = "waiting-room",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The caller's entry", body = RoomEntryResponse,
        headers(("Retry-After" = u64, description = "Seconds until the next poll: pollAfterSeconds")),
    )),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/concerts/{concertId}/waiting-room")]
pub async fn poll_room(
    user: AuthUser,
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
) -> Result<HttpResponse, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    let entry = match &state.services.waiting_room {
        Some(room) => room.get(user.id, concert).await?,
        None => {
            unrestricted(&state, user.id, concert).await?;
            return Err(ApiError::not_found(
                "the waiting room is off: no entry is kept (enter to be shown admitted, \
                 or reserve directly)",
            ));
        }
    };
    Ok(entry_response(entry))
}

/// Leaves a concert's waiting room
///
/// The caller leaves, waiting or admitted; the place is freed at once and
/// goes to the next waiting user. Leaving without an entry changes
/// nothing.
#[utoipa::path(
    tag = "waiting-room",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    security(("bearer" = [])),
    responses((status = 204, description = "The caller has no entry any more")),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[delete("/api/v1/concerts/{concertId}/waiting-room")]
pub async fn leave_room(
    user: AuthUser,
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
) -> Result<HttpResponse, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    match &state.services.waiting_room {
        Some(room) => room.leave(user.id, concert).await?,
        None => {
            unrestricted(&state, user.id, concert).await?;
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The entry of a service without a waiting room (after checking that
/// the concert exists).
async fn unrestricted(
    state: &AppState,
    user: UserId,
    concert: ConcertId,
) -> Result<RoomEntry, ApiError> {
    state.services.catalogue.concert(concert).await?;
    Ok(RoomEntry::unrestricted(concert, user))
}

fn entry_response(entry: RoomEntry) -> HttpResponse {
    let body = RoomEntryResponse::from(entry);
    HttpResponse::Ok()
        .insert_header((header::RETRY_AFTER, body.poll_after_seconds.to_string()))
        .json(body)
}
