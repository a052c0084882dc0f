//! HTTP adapter: actix-web handlers, DTOs, problem+json errors, bearer auth,
//! OpenAPI.
//!
//! The inbound side of the hexagon. Handlers validate requests into domain
//! values and call the use cases of [`concert_domain::Services`] held in
//! [`AppState`]; they never touch storage or locks. The contract they
//! implement is the project's `api.md`: every path, camelCase field, status
//! and problem `code` in it.
//!
//! Entry points: [`server`] (what the app binary runs), [`app`] and
//! [`app_with`] (the same `App`, for in-process tests), [`openapi`] (the
//! document alone).

pub mod auth;
mod dto;
pub mod error;
pub mod extract;
pub mod log_limit;
pub mod middleware;
pub mod openapi;
pub mod routes;

use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::{App, HttpServer, web};
use async_trait::async_trait;
use concert_domain::Services;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

pub use actix_web::dev::{Server, ServerHandle};
pub use auth::{Admin, Auth, AuthOptions, AuthUser, TokenError};
pub use error::{ApiError, Code, PROBLEM_JSON, Problem};
pub use extract::BodyLimits;
pub use middleware::{Cors, Observed, REQUEST_ID_HEADER, RequestId, RequestObserver};
pub use openapi::{ApiDoc, OPENAPI_PATH};

/// A dependency `/health/ready` checks. The app implements it for MySQL and,
/// when something configured needs it, for Redis.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// A short name for the readiness report and logs (`mysql`, `redis`).
    fn name(&self) -> &'static str;
    /// Ok when the dependency answers a trivial request now.
    async fn check(&self) -> anyhow::Result<()>;
}

/// Everything the handlers need, shared by every worker.
pub struct AppState {
    /// The use cases (cheap to clone: they hold their ports as `Arc`s).
    pub services: Services,
    pub auth: Auth,
    pub readiness: Vec<Arc<dyn Readiness>>,
}

/// Renders the metrics in the Prometheus text format (`GET /metrics`).
pub type MetricsRender = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// How the server runs; every field has a default.
#[derive(Clone)]
pub struct HttpOptions {
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Origins a browser front end may call from (empty: no CORS header
    /// at all). See [`Cors`].
    pub cors_origins: Vec<String>,
    /// How long a stop (SIGTERM, or [`ServerHandle::stop`] with `true`)
    /// waits for accepted requests to finish; they are answered with
    /// `Connection: close`. Whole seconds, rounded up.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request head, and separately
    /// its body (a slower body answers 408 `request-timeout`).
    pub client_timeout: Duration,
    /// Largest JSON body accepted (a larger one answers 413).
    pub json_limit: usize,
    /// Told about every request (route template, status, latency).
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Serves `GET /metrics` when set (else it answers 404).
    pub metrics: Option<MetricsRender>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        let body = BodyLimits::default();
        Self {
            workers: None,
            cors_origins: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            client_timeout: body.timeout,
            json_limit: body.max_bytes,
            observer: None,
            metrics: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("workers", &self.workers)
            .field("cors_origins", &self.cors_origins)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("client_timeout", &self.client_timeout)
            .field("json_limit", &self.json_limit)
            .field("observer", &self.observer.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The OpenAPI document of every route [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) =
        routes::register(App::new().into_utoipa_app().openapi(ApiDoc::openapi())).split_for_parts();
    openapi::finish(doc)
}

/// [`app_with`] under the default [`HttpOptions`].
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
    app_with(state, HttpOptions::default())
}

/// The whole application: every documented route (see [`routes`]), the
/// OpenAPI document at [`OPENAPI_PATH`] and Swagger UI at `/swagger-ui/`
/// (fully offline), 400 problems for bad paths and queries, 405 with
/// `Allow` for a known path with another method, 404 for the rest; CORS
/// when origins are configured; and, outermost, the request id, the access
/// log line and the observer (see [`middleware::observe`]).
pub fn app_with(
    state: web::Data<AppState>,
    options: HttpOptions,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (app, doc) =
        routes::register(App::new().into_utoipa_app().openapi(ApiDoc::openapi())).split_for_parts();
    let max_seats = state.services.reservations.policy().max_seats_per_request;
    let doc = openapi::finish_for(doc, max_seats);
    let table = openapi::RouteTable::new(&doc);
    app.app_data(state)
        .app_data(BodyLimits {
            max_bytes: options.json_limit,
            timeout: options.client_timeout,
        })
        .app_data(web::PathConfig::default().error_handler(|e, req| {
            // `GET /reservations/batch` matched `/reservations/{id}`: the
            // path is a route of its own, for other methods
            match req
                .app_data::<web::Data<openapi::RouteTable>>()
                .and_then(|t| t.methods(req.path()))
            {
                Some(allowed) => {
                    ApiError::method_not_allowed(req.method().as_str(), allowed).into()
                }
                None => path_error(e).into(),
            }
        }))
        .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
        .app_data(web::Data::new(table))
        .app_data(web::Data::new(options.metrics.clone()))
        .service(web::redirect("/swagger-ui", openapi::SWAGGER_UI_PATH))
        .service(SwaggerUi::new("/swagger-ui/{_:.*}").url(OPENAPI_PATH, doc))
        .default_service(web::to(routes::fallback))
        .wrap_fn(Cors::new(&options.cors_origins).middleware())
        .wrap_fn(middleware::observe(options.observer.clone()))
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

/// Starts serving `state` on `listener` under `options`. The returned
/// server runs when awaited. It stops gracefully on SIGTERM (and on
/// [`ServerHandle::stop`] with `true`): it accepts no new connection,
/// finishes the accepted requests within `options.shutdown_timeout`,
/// answering them with `Connection: close`, and closes idle connections.
/// SIGINT/SIGQUIT stop it at once.
pub fn server(
    listener: TcpListener,
    state: AppState,
    options: HttpOptions,
) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    let shutdown_secs =
        options.shutdown_timeout.as_secs() + u64::from(options.shutdown_timeout.subsec_nanos() > 0);
    let client_timeout = options.client_timeout;
    let workers = options.workers;
    let mut server = HttpServer::new(move || app_with(state.clone(), options.clone()))
        .client_request_timeout(client_timeout)
        .shutdown_timeout(shutdown_secs)
        .listen(listener)?;
    if let Some(workers) = workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.run())
}
