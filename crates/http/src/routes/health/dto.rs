//! Bodies of the health routes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// /health/live and a passing /health/ready.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: String,
    /// The dependencies checked (readiness only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["mysql", "redis"]))]
    pub checked: Vec<String>,
}
