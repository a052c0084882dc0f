//! Liveness, readiness and metrics.

pub mod dto;

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};

use crate::error::ApiError;
use crate::{AppState, MetricsRender};
use dto::HealthResponse;

/// How long `/health/ready` waits for one dependency.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The media type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Liveness
///
/// 200 while the process serves requests.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "The process runs", body = HealthResponse)),
)]
#[get("/health/live")]
pub async fn live() -> web::Json<HealthResponse> {
    web::Json(HealthResponse {
        status: "ok".into(),
        checked: Vec::new(),
    })
}

/// Readiness
///
/// 200 when every dependency answers (MySQL, and Redis when something
/// configured needs it), else 503 naming the ones that did not.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Every dependency answers", body = HealthResponse)),
    extensions(("x-problems" = json!(["unavailable"]))),
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<web::Json<HealthResponse>, ApiError> {
    let mut failed = Vec::new();
    let mut checked = Vec::new();
    for dependency in &state.readiness {
        let name = dependency.name();
        match actix_web::rt::time::timeout(READINESS_TIMEOUT, dependency.check()).await {
            Ok(Ok(())) => checked.push(name.to_owned()),
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = %format_args!("{e:#}"), "not ready");
                failed.push(name);
            }
            Err(_) => {
                tracing::warn!(
                    dependency = name,
                    timeout_ms = READINESS_TIMEOUT.as_millis() as u64,
                    "not ready: the check timed out"
                );
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(web::Json(HealthResponse {
            status: "ok".into(),
            checked,
        }))
    } else {
        Err(ApiError::not_ready(&failed))
    }
}

/// Metrics in the Prometheus text format
///
/// HTTP requests by route and status, and the service's own counters.
/// 404 when this instance has no metrics.
#[utoipa::path(
    tag = "operations",
    responses((
        status = 200, description = "The current metrics",
        body = String, content_type = "text/plain; version=0.0.4",
    )),
    extensions(("x-problems" = json!(["not-found"]))),
)]
#[get("/metrics")]
pub async fn metrics(render: web::Data<Option<MetricsRender>>) -> Result<HttpResponse, ApiError> {
    match render.as_ref() {
        Some(render) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, PROMETHEUS_TEXT))
            .body(render().await)),
        None => Err(ApiError::not_found(
            "metrics are not enabled on this instance",
        )),
    }
}
