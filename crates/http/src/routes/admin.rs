//! Catalogue administration: tokens with `role: "admin"` only.

pub mod dto;

use actix_web::{HttpResponse, post, web};
use concert_domain::{AdminError, ConcertId};

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::extract::PathId;
use crate::routes::catalogue::dto::{ConcertResponse, ScheduleResponse};
use crate::routes::created;
use dto::{CreateConcertRequest, CreateScheduleRequest};

/// Creates a concert (admin)
#[utoipa::path(
    tag = "admin",
    request_body = CreateConcertRequest,
    security(("bearer" = [])),
    responses((
        status = 201, description = "The concert", body = ConcertResponse,
        headers(("Location" = String, description = "The concert: /api/v1/concerts/{id}")),
    )),
    extensions(("x-problems" = json!(["forbidden", "unavailable"]))),
)]
#[post("/api/v1/admin/concerts")]
pub async fn create_concert(
    _admin: Admin,
    state: web::Data<AppState>,
    body: JsonObject<CreateConcertRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert = state
        .services
        .catalogue
        .create_concert(&body.into_inner().title)
        .await?;
    Ok(created(
        format!("/api/v1/concerts/{}", concert.id),
        ConcertResponse::from(concert),
    ))
}

/// Puts a date of a concert on sale (admin)
///
/// A schedule starting in the future with 50 seats, priced one by one.
#[utoipa::path(
    tag = "admin",
    params(("concertId" = i64, Path, minimum = 1, description = "The concert", example = 1)),
    request_body = CreateScheduleRequest,
    security(("bearer" = [])),
    responses((
        status = 201, description = "The schedule, every seat available", body = ScheduleResponse,
        headers(("Location" = String, description = "Its seat map: /api/v1/schedules/{id}/seats")),
    )),
    extensions(("x-problems" = json!(["forbidden", "not-found", "unavailable"]))),
)]
#[post("/api/v1/admin/concerts/{concertId}/schedules")]
pub async fn create_schedule(
    _admin: Admin,
    state: web::Data<AppState>,
    concert: web::Path<PathId>,
    body: JsonObject<CreateScheduleRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert = ConcertId::new(concert.into_inner().get())?;
    let (starts_at, prices) = body.into_inner().try_into_domain()?;
    let schedule = state
        .services
        .catalogue
        .create_schedule(concert, starts_at, prices)
        .await?;
    Ok(created(
        format!("/api/v1/schedules/{}/seats", schedule.id),
        ScheduleResponse::from(schedule),
    ))
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(invalid) => invalid.into(),
            AdminError::NotFound(what) => ApiError::not_found_of(what),
            AdminError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use concert_domain::InvalidValue;

    use super::*;
    use crate::error::tests::check;

    #[test]
    fn admin_errors() {
        check(
            AdminError::Invalid(InvalidValue::new("title", "must be 1 to 200 characters")),
            400,
            "validation",
        );
        check(AdminError::NotFound("concert"), 404, "not-found");
    }
}
