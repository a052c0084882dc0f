//! Handlers. Each route is declared once: its actix route macro and its
//! `#[utoipa::path]` sit on the handler, and [`register`] adds it to the
//! app and to the OpenAPI document together, so a route cannot be served
//! undocumented or documented unserved.
//!
//! Each handler validates its input into domain values, calls one use case
//! of [`concert_domain::Services`], and maps the outcome to a DTO or an
//! [`ApiError`](crate::ApiError). No handler touches storage or locks.
//!
//! One slice per resource: its handlers in `<resource>.rs`, with the
//! mapping of its operations' refusals to problems (`From<…Error> for
//! ApiError`), and its request and response bodies in `<resource>/dto.rs`.
//! What they share stays common: [`crate::error`] and `crate::dto`.
//!
//! The problem codes an operation can answer are listed once, in its
//! `x-problems` extension; [`crate::openapi`] turns them into documented
//! problem+json responses (see there for the codes added implicitly).

pub mod admin;
pub mod catalogue;
pub mod health;
pub mod payments;
pub mod points;
pub mod requests;
pub mod reservations;
pub mod waiting_room;

use actix_web::dev::{ServiceFactory, ServiceRequest};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use utoipa_actix_web::UtoipaApp;

use crate::error::ApiError;
use crate::openapi::RouteTable;

/// Registers every documented route (public for the tests of the
/// OpenAPI document, which read the routes before [`crate::openapi`]
/// completes them).
pub fn register<T>(app: UtoipaApp<T>) -> UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = actix_web::Error, InitError = ()>,
{
    app.service(catalogue::list_concerts)
        .service(catalogue::get_concert)
        .service(catalogue::list_schedules)
        .service(catalogue::list_seats)
        .service(waiting_room::enter_room)
        .service(waiting_room::poll_room)
        .service(waiting_room::leave_room)
        .service(reservations::reserve)
        .service(reservations::reserve_batch)
        .service(reservations::list_reservations)
        .service(reservations::get_reservation)
        .service(reservations::cancel_reservation)
        .service(requests::get_request)
        .service(points::balance)
        .service(points::charge)
        .service(points::history)
        .service(payments::pay)
        .service(payments::get_payment)
        .service(payments::refund)
        .service(admin::create_concert)
        .service(admin::create_schedule)
        .service(health::live)
        .service(health::ready)
        .service(health::metrics)
}

/// A 201 with `Location` and a JSON body.
pub(crate) fn created(location: String, body: impl serde::Serialize) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(body)
}

/// Whatever no route took: a known path with another method is 405
/// `method-not-allowed` with `Allow`; anything else 404 `not-found`.
pub(crate) async fn fallback(
    req: HttpRequest,
    routes: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    let allowed = req
        .match_pattern()
        .and_then(|pattern| routes.methods(&pattern));
    Err(match allowed {
        Some(methods) => ApiError::method_not_allowed(req.method().as_str(), methods),
        None => ApiError::not_found(format!("no route for {} {}", req.method(), req.path())),
    })
}
