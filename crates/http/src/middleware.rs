//! Per-request plumbing: the request id, the access log line and the
//! [`RequestObserver`] hook ([`observe`]), and CORS ([`Cors`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

use crate::error::ApiError;

/// What a `wrap_fn` middleware returns.
type Answer<B> =
    std::pin::Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, actix_web::Error>>>>;

/// The header that carries the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The `tracing` target of the access log lines (filter it, e.g.
/// `RUST_LOG=info,http_access=warn`, to silence them).
pub const ACCESS_LOG_TARGET: &str = "http_access";

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Longest caller-supplied request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The request id of a request (request extension): the caller's
/// `x-request-id` when it is 1 to 128 visible ASCII characters, else a new
/// UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// One finished request, as [`RequestObserver`]s see it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub method: &'a Method,
    /// The route template (`/api/v1/reservations/{reservationId}`), never
    /// the raw path; [`UNMATCHED_ROUTE`] when no route matched.
    pub route: &'a str,
    pub status: StatusCode,
    /// From the request's arrival at this middleware to its response.
    pub latency: Duration,
}

/// Told about every request once its response is ready (the app records
/// metrics with it). Called on the worker thread: keep it cheap.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, request: &Observed<'_>);
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The outermost middleware: gives the request its id (echoed in the
/// response's `x-request-id`), runs it inside a span carrying method, route
/// and id, then writes one access line at info level on
/// [`ACCESS_LOG_TARGET`] (method, route template, status, latency in ms,
/// id) and tells the observer.
pub fn observe<S, B>(
    observer: Option<Arc<dyn RequestObserver>>,
) -> impl Fn(ServiceRequest, &S) -> Answer<B> + Clone + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    move |req: ServiceRequest, srv: &S| {
        let started = Instant::now();
        let id = request_id(&req);
        req.extensions_mut().insert(RequestId(id.clone()));
        let method = req.method().clone();
        let route = req
            .match_pattern()
            .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
        let span = tracing::info_span!(
            "request",
            method = %method,
            route = %route,
            request_id = %id
        );
        let response = span.in_scope(|| srv.call(req));
        let observer = observer.clone();
        Box::pin(async move {
            let outcome = response.instrument(span).await;
            let header = HeaderValue::from_str(&id).ok();
            let status = match &outcome {
                Ok(res) => res.status(),
                Err(e) => e.as_response_error().status_code(),
            };
            let outcome = match outcome {
                Ok(mut res) => {
                    if let Some(value) = header {
                        res.headers_mut()
                            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
                    }
                    Ok(res)
                }
                Err(mut e) => {
                    if let Some(value) = header {
                        e.add_response_mapper(move |mut res| {
                            res.headers_mut()
                                .insert(HeaderName::from_static(REQUEST_ID_HEADER), value.clone());
                            res
                        });
                    }
                    Err(e)
                }
            };
            let latency = started.elapsed();
            tracing::info!(
                target: ACCESS_LOG_TARGET,
                method = %method,
                route = %route,
                status = status.as_u16(),
                latency_ms = %format_args!("{:.3}", latency.as_secs_f64() * 1000.0),
                request_id = %id,
                "request"
            );
            if let Some(observer) = &observer {
                observer.observe(&Observed {
                    method: &method,
                    route: &route,
                    status,
                    latency,
                });
            }
            outcome
        })
    }
}

/// Cross-origin access for browser front ends. Empty: no CORS header is
/// ever written (and preflights are ordinary requests: 405 or 404).
///
/// With origins configured: a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) from an allowed origin, for an allowed
/// method and headers, answers 204 with the allowed methods and headers;
/// any other preflight answers 403 `forbidden`. Other requests run as
/// usual; from an allowed origin the response names it in
/// `Access-Control-Allow-Origin` and exposes `X-Request-Id`, `Location`
/// and `Retry-After`. `*` allows any origin (tokens are bearer headers,
/// never cookies).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Arc<HashSet<String>>,
    any: bool,
}

/// Methods a cross-origin caller may use.
pub const CORS_METHODS: &str = "GET, POST, DELETE";
/// Request headers a cross-origin caller may send.
pub const CORS_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
];
const CORS_EXPOSED: &str = "x-request-id, location, retry-after";
const CORS_MAX_AGE: &str = "600";

impl Cors {
    /// Allows `origins` (scheme, host and port, as browsers send them; a
    /// trailing `/` is ignored).
    pub fn new(origins: &[String]) -> Self {
        let origins: HashSet<String> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            any: origins.contains("*"),
            origins: Arc::new(origins),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.contains(origin)
    }

    fn preflight_allowed(&self, req: &ServiceRequest, origin: &str) -> Result<(), String> {
        if !self.allows(origin) {
            return Err(format!("origin {origin} is not allowed"));
        }
        let method = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !CORS_METHODS.split(", ").any(|m| m == method) {
            return Err(format!("method {method} is not allowed"));
        }
        let headers = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        for name in headers.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            if !CORS_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!("header {name} is not allowed"));
            }
        }
        Ok(())
    }

    /// The middleware (see [`Cors`]).
    pub fn middleware<S, B>(
        self,
    ) -> impl Fn(ServiceRequest, &S) -> Answer<EitherBody<B>> + Clone + 'static
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
        S::Future: 'static,
        B: MessageBody + 'static,
    {
        move |req: ServiceRequest, srv: &S| {
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if !self.is_enabled() {
                let response = srv.call(req);
                return Box::pin(async move { Ok(response.await?.map_into_left_body()) });
            }
            let Some(origin) = origin else {
                // The answer depends on Origin whenever CORS is on: caches
                // must keep cross-origin and same-origin answers apart.
                let response = srv.call(req);
                return Box::pin(async move {
                    let mut response = response.await?.map_into_left_body();
                    vary(response.headers_mut());
                    Ok(response)
                });
            };
            let preflight = req.method() == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            if preflight {
                let response = match self.preflight_allowed(&req, &origin) {
                    Ok(()) => {
                        let mut res = actix_web::HttpResponse::NoContent();
                        res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str()))
                            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS))
                            .insert_header((
                                header::ACCESS_CONTROL_ALLOW_HEADERS,
                                CORS_HEADERS.join(", "),
                            ))
                            .insert_header((header::ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE));
                        res.finish()
                    }
                    Err(why) => ApiError::forbidden(format!("CORS: {why}")).error_response(),
                };
                let mut response = req.into_response(response).map_into_right_body();
                vary(response.headers_mut());
                return Box::pin(async move { Ok(response) });
            }
            let allowed = self
                .allows(&origin)
                .then(|| HeaderValue::from_str(&origin).ok());
            let response = srv.call(req);
            Box::pin(async move {
                let mut response = response.await?.map_into_left_body();
                let headers = response.headers_mut();
                vary(headers);
                if let Some(Some(origin)) = allowed {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        HeaderValue::from_static(CORS_EXPOSED),
                    );
                }
                Ok(response)
            })
        }
    }
}

fn vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}
