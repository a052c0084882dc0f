//! Browsing: concerts, their dates, a date's seats. No token needed.

pub mod dto;

use actix_web::{get, web};
use concert_domain::{ConcertId, ScheduleId};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::PathId;
use dto::{ConcertResponse, ScheduleResponse, SeatResponse, SeatsQuery};

/// Every concert
#[utoipa::path(
    tag = "catalogue",
    responses((status = 200, description = "Every concert, by id", body = [ConcertResponse])),
    extensions(("x-problems" = json!(["unavailable"]))),
)]
#[get("/api/v1/concerts")]
pub async fn list_concerts(
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<ConcertResponse>>, ApiError> {
    let concerts = state.services.catalogue.concerts().await?;
    Ok(web::Json(concerts.into_iter().map(Into::into).collect()))
}

/// One concert
#[utoipa::path(
    tag = "catalogue",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    responses((status = 200, description = "The concert", body = ConcertResponse)),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/concerts/{concertId}")]
pub async fn get_concert(
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
) -> Result<web::Json<ConcertResponse>, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    Ok(web::Json(
        state.services.catalogue.concert(concert).await?.into(),
    ))
}

/// The bookable dates of a concert
///
/// Future schedules only, by start time, each with its number of seats
/// bookable now.
#[utoipa::path(
    tag = "catalogue",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    responses((status = 200, description = "Future schedules by start time", body = [ScheduleResponse])),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/concerts/{concertId}/schedules")]
pub async fn list_schedules(
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
) -> Result<web::Json<Vec<ScheduleResponse>>, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    let schedules = state.services.catalogue.schedules(concert).await?;
    Ok(web::Json(schedules.into_iter().map(Into::into).collect()))
}

/// The seat map of a date
///
/// Every seat with its price and its status now (a hold past its time is
/// AVAILABLE), optionally only those with one status.
#[utoipa::path(
    tag = "catalogue",
    params(
        ("scheduleId" = i64, Path, minimum = 1, description = "The schedule", example = 3),
        SeatsQuery,
    ),
    responses((status = 200, description = "The schedule's seats by number", body = [SeatResponse])),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/schedules/{scheduleId}/seats")]
pub async fn list_seats(
    state: web::Data<AppState>,
    schedule: web::Path<PathId>,
    query: web::Query<SeatsQuery>,
) -> Result<web::Json<Vec<SeatResponse>>, ApiError> {
    let schedule = ScheduleId::new(schedule.into_inner().get())?;
    let status = query.into_inner().try_into_domain()?;
    let seats = state.services.catalogue.seats(schedule, status).await?;
    Ok(web::Json(seats.into_iter().map(Into::into).collect()))
}
