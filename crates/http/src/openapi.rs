//! The OpenAPI 3 document, generated from the handlers and DTOs.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::{
    BalanceResponse, ChargeRequest, ConcertResponse, HealthResponse, HistoryEntryResponse,
    PayRequest, PaymentResponse, PointKindDto, ReservationResponse, ReservationStatusDto,
    ReserveRequest, ScheduleResponse, SeatResponse, SeatStatusDto,
};
use crate::error::Problem;
use crate::routes;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// The API description: every path of the contract, its schemas, and the
/// `bearer` (JWT) security scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Concert reservation API",
        description = "Browse concerts, hold seats, charge points and pay, correct under contention. \
Errors are `application/problem+json` with a stable `code`.",
    ),
    paths(
        routes::list_concerts,
        routes::list_schedules,
        routes::list_seats,
        routes::reserve,
        routes::get_reservation,
        routes::balance,
        routes::charge,
        routes::history,
        routes::pay,
        routes::live,
        routes::ready,
    ),
    components(schemas(
        ConcertResponse,
        ScheduleResponse,
        SeatResponse,
        SeatStatusDto,
        ReserveRequest,
        ReservationResponse,
        ReservationStatusDto,
        BalanceResponse,
        ChargeRequest,
        HistoryEntryResponse,
        PointKindDto,
        PayRequest,
        PaymentResponse,
        HealthResponse,
        Problem,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "catalogue", description = "Concerts, dates and seats (no token needed)"),
        (name = "reservations", description = "Seat holds"),
        (name = "points", description = "Point balance, charge and history"),
        (name = "payments", description = "Paying a held seat with points"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` HTTP security scheme (HS256 JWT, `sub` = user id).
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("HS256 JWT whose `sub` claim is the user id"))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_path_is_documented() {
        let doc = ApiDoc::openapi();
        let paths: Vec<_> = doc.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/api/v1/concerts",
            "/api/v1/concerts/{concertId}/schedules",
            "/api/v1/schedules/{scheduleId}/seats",
            "/api/v1/reservations",
            "/api/v1/reservations/{reservationId}",
            "/api/v1/points",
            "/api/v1/points/charge",
            "/api/v1/points/history",
            "/api/v1/payments",
            "/health/live",
            "/health/ready",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
        let components = doc.components.expect("components");
        assert!(components.security_schemes.contains_key("bearer"));
        assert!(components.schemas.contains_key("Problem"));
    }
}
