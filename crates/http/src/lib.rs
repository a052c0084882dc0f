//! HTTP adapter: actix-web handlers, DTOs, problem+json errors, bearer auth,
//! OpenAPI.
//!
//! The inbound side of the hexagon. Handlers validate requests into domain
//! values and call the domain services held in [`AppState`]; they never
//! touch a database or a lock service. The contract they implement is the
//! project's `api.md`: every path, camelCase field, status and problem
//! `code` in it.
//!
//! Entry points: [`server`] (what the app binary runs), [`app`] (the same
//! `App`, for in-process tests) and [`configure`] (the routes and extractor
//! settings alone).

pub mod auth;
pub mod dto;
pub mod error;
pub mod openapi;
pub mod routes;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpMessage, HttpServer, web};
use async_trait::async_trait;
use concert_domain::{
    CatalogueRepository, CatalogueService, Clock, DistributedLock, PaymentRepository,
    PaymentService, PointService, ReservationService, SeatRepository, WalletRepository,
};
use tracing_actix_web::{RequestId, TracingLogger};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use actix_web::dev::{Server, ServerHandle};
pub use auth::{Auth, AuthUser, TokenError};
pub use error::{ApiError, PROBLEM_JSON, Problem};
pub use openapi::{ApiDoc, OPENAPI_PATH};

/// The catalogue use cases over run-time chosen adapters.
pub type Catalogue = CatalogueService<Arc<dyn CatalogueRepository>, Arc<dyn Clock>>;
/// Seat holds and reservation lookups.
pub type Reservations =
    ReservationService<Arc<dyn SeatRepository>, Arc<dyn DistributedLock>, Arc<dyn Clock>>;
/// Point balance, history and charge.
pub type Points = PointService<Arc<dyn WalletRepository>, Arc<dyn DistributedLock>, Arc<dyn Clock>>;
/// Payments.
pub type Payments =
    PaymentService<Arc<dyn PaymentRepository>, Arc<dyn DistributedLock>, Arc<dyn Clock>>;

/// The response header that carries the request id of the request's span.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Largest JSON body accepted (bodies here are a few dozen bytes).
const JSON_LIMIT: usize = 16 * 1024;

/// A dependency `/health/ready` checks. The app implements it for MySQL and,
/// when a Redis strategy is configured, for Redis.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// A short name for the readiness report and logs (`mysql`, `redis`).
    fn name(&self) -> &'static str;
    /// Ok when the dependency answers a trivial request now.
    async fn check(&self) -> anyhow::Result<()>;
}

/// Everything the handlers need, shared by every worker.
pub struct AppState {
    pub catalogue: Catalogue,
    pub reservations: Reservations,
    pub points: Points,
    pub payments: Payments,
    pub auth: Auth,
    pub readiness: Vec<Arc<dyn Readiness>>,
}

/// Registers every route of the contract, the OpenAPI document and Swagger
/// UI, extractor settings that turn malformed JSON, paths and queries into
/// 400 `validation` problems, and a 404 problem for unknown paths. The
/// caller registers the `web::Data<AppState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(|e, _| json_error(e).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|e, _| path_error(e).into()))
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
    .service(resource("/api/v1/concerts").route(web::get().to(routes::list_concerts)))
    .service(
        resource("/api/v1/concerts/{concertId}/schedules")
            .route(web::get().to(routes::list_schedules)),
    )
    .service(
        resource("/api/v1/schedules/{scheduleId}/seats").route(web::get().to(routes::list_seats)),
    )
    .service(resource("/api/v1/reservations").route(web::post().to(routes::reserve)))
    .service(
        resource("/api/v1/reservations/{reservationId}")
            .route(web::get().to(routes::get_reservation)),
    )
    .service(resource("/api/v1/points").route(web::get().to(routes::balance)))
    .service(resource("/api/v1/points/charge").route(web::post().to(routes::charge)))
    .service(resource("/api/v1/points/history").route(web::get().to(routes::history)))
    .service(resource("/api/v1/payments").route(web::post().to(routes::pay)))
    .service(resource("/health/live").route(web::get().to(routes::live)))
    .service(resource("/health/ready").route(web::get().to(routes::ready)))
    .service(web::redirect("/swagger-ui", "/swagger-ui/"))
    .service(SwaggerUi::new("/swagger-ui/{_:.*}").url(OPENAPI_PATH, ApiDoc::openapi()))
    .default_service(web::to(routes::unknown_route));
}

/// A resource whose unmatched methods answer 405 problem+json.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(routes::wrong_method))
}

fn json_error(e: JsonPayloadError) -> ApiError {
    let detail = match &e {
        JsonPayloadError::ContentType => "expected Content-Type: application/json".to_owned(),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            format!("the body is larger than {JSON_LIMIT} bytes")
        }
        JsonPayloadError::Deserialize(inner) => format!("invalid JSON body: {inner}"),
        other => format!("invalid JSON body: {other}"),
    };
    ApiError::validation(detail)
}

fn path_error(e: PathError) -> ApiError {
    ApiError::validation(match e {
        PathError::Deserialize(inner) => format!("invalid path parameter: {inner}"),
        other => format!("invalid path parameter: {other}"),
    })
}

fn query_error(e: QueryPayloadError) -> ApiError {
    ApiError::validation(match e {
        QueryPayloadError::Deserialize(inner) => format!("invalid query string: {inner}"),
        other => format!("invalid query string: {other}"),
    })
}

/// The whole application: [`configure`]d routes, the shared state, a request
/// span per request (tracing-actix-web) and its request id returned in the
/// `x-request-id` response header.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .configure(configure)
        .wrap_fn(|req, srv| {
            let request_id = req.extensions().get::<RequestId>().copied();
            let response = srv.call(req);
            async move {
                let mut response = response.await?;
                if let Some(id) = request_id
                    && let Ok(value) = HeaderValue::from_str(&id.to_string())
                {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
                }
                Ok(response)
            }
        })
        .wrap(TracingLogger::default())
}

/// Starts serving `state` on `listener` with `workers` worker threads (the
/// number of cores when `None`). The returned server runs when awaited and
/// stops gracefully on SIGINT/SIGTERM or through its handle.
pub fn server(
    listener: TcpListener,
    state: AppState,
    workers: Option<usize>,
) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    let mut server = HttpServer::new(move || app(state.clone())).listen(listener)?;
    if let Some(workers) = workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.run())
}

#[cfg(test)]
mod tests;
