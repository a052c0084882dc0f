//! The caller's points: balance, charge, history.

pub mod dto;

use actix_web::{get, post, web};
use concert_domain::{ChargeError, ChargePoints, UseError};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Code};
use crate::extract::{Idempotency, JsonObject};
use dto::{BalanceResponse, ChargeRequest, HistoryEntryResponse};

/// The caller's point balance
///
/// A user never charged has 0.
#[utoipa::path(
    tag = "points",
    security(("bearer" = [])),
    responses((status = 200, description = "The balance", body = BalanceResponse)),
    extensions(("x-problems" = json!(["unavailable"]))),
)]
#[get("/api/v1/points")]
pub async fn balance(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<BalanceResponse>, ApiError> {
    Ok(web::Json(
        state.services.points.balance(user.id).await?.into(),
    ))
}

/// Adds points to the caller's balance
///
/// With an Idempotency-Key, a repeat with the same amount returns the first
/// answer and changes nothing; the same key with another amount is refused
/// (idempotency-key-reused).
#[utoipa::path(
    tag = "points",
    request_body = ChargeRequest,
    params((
        "Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = "^[!-~]+$", nullable = false,
        description = "1 to 255 visible ASCII characters; a repeat returns the first answer. Send one with every charge and reuse it for its retries: a 503 may hide a charge that committed",
        example = "charge-2030-03-17-001",
    )),
    security(("bearer" = [])),
    responses((status = 200, description = "The new balance", body = BalanceResponse)),
    extensions(("x-problems" = json!([
        "concurrent-update", "lock-timeout", "balance-limit", "idempotency-key-reused",
        "unavailable"
    ]))),
)]
#[post("/api/v1/points/charge")]
pub async fn charge(
    user: AuthUser,
    key: Idempotency,
    state: web::Data<AppState>,
    body: JsonObject<ChargeRequest>,
) -> Result<web::Json<BalanceResponse>, ApiError> {
    let cmd = ChargePoints {
        user: user.id,
        amount: body.into_inner().try_into_domain()?,
        idempotency: key.0,
    };
    Ok(web::Json(state.services.points.charge(cmd).await?.into()))
}

/// Every change to the caller's balance, newest first
#[utoipa::path(
    tag = "points",
    security(("bearer" = [])),
    responses((status = 200, description = "The history, newest first", body = [HistoryEntryResponse])),
    extensions(("x-problems" = json!(["unavailable"]))),
)]
#[get("/api/v1/points/history")]
pub async fn history(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<HistoryEntryResponse>>, ApiError> {
    let entries = state.services.points.history(user.id).await?;
    Ok(web::Json(entries.into_iter().map(Into::into).collect()))
}

impl From<ChargeError> for ApiError {
    fn from(e: ChargeError) -> Self {
        match e {
            // not `balance`: that names the route (a unit struct) here
            ChargeError::BalanceLimit {
                balance: had,
                amount,
                max,
            } => ApiError::new(
                Code::BalanceLimit,
                format!("balance {had} + {amount} would exceed the maximum balance {max}"),
            ),
            ChargeError::KeyReused => ApiError::key_reused(),
            ChargeError::Failed(f) => f.into(),
        }
    }
}

/// Spending points (no route of its own: the payment does it).
impl From<UseError> for ApiError {
    fn from(e: UseError) -> Self {
        match e {
            UseError::InsufficientPoints {
                balance: had,
                needed,
            } => ApiError::insufficient_points(had, needed),
            UseError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::check;

    #[test]
    fn charge_and_use_errors() {
        let limit = ChargeError::BalanceLimit {
            balance: 9,
            amount: 2,
            max: 10,
        };
        check(limit, 422, "balance-limit");
        check(ChargeError::KeyReused, 422, "idempotency-key-reused");
        let short = UseError::InsufficientPoints {
            balance: 1,
            needed: 2,
        };
        check(short, 409, "insufficient-points");
    }
}
