//! Paying a held seat with points, reading a payment, refunding it.

pub mod dto;

use actix_web::{HttpResponse, get, post, web};
use concert_domain::{PayError, PayReservation, PaymentId, RefundError};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Code};
use crate::extract::PathId;
use crate::extract::{Idempotency, JsonObject};
use crate::routes::created;
use dto::{PayRequest, PaymentResponse};

/// Pays one of the caller's held reservations with points
///
/// All or nothing: the balance goes down, the reservation becomes CONFIRMED
/// and the seat SOLD. With an Idempotency-Key, a repeat for the same
/// reservation returns the first payment; the same key for another
/// reservation is refused (idempotency-key-reused).
#[utoipa::path(
    tag = "payments",
    request_body = PayRequest,
    params((
        "Idempotency-Key" = Option<String>, Header, max_length = 255, min_length = 1, pattern = "^[!-~]+$", nullable = false,
        description = "1 to 255 visible ASCII characters; a repeat returns the first payment. Send one with every payment and reuse it for its retries: a 503 may hide a payment that committed",
        example = "pay-31",
    )),
    security(("bearer" = [])),
    responses((
        status = 201, description = "Paid", body = PaymentResponse,
        headers(("Location" = String, description = "The payment: /api/v1/payments/{id}")),
    )),
    extensions(("x-problems" = json!([
        "not-admitted", "not-found", "already-paid", "insufficient-points", "concurrent-update",
        "lock-timeout", "reservation-expired", "idempotency-key-reused", "unavailable"
    ]))),
)]
#[post("/api/v1/payments")]
pub async fn pay(
    user: AuthUser,
    key: Idempotency,
    state: web::Data<AppState>,
    body: JsonObject<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let cmd = PayReservation {
        user: user.id,
        reservation: body.into_inner().try_into_domain()?,
        idempotency: key.0,
    };
    let payment = state.services.payments.pay(cmd).await?;
    Ok(created(
        format!("/api/v1/payments/{}", payment.id),
        PaymentResponse::from(payment),
    ))
}

/// One of the caller's payments
#[utoipa::path(
    tag = "payments",
    params(("paymentId" = i64, Path, minimum = 1, description = "The payment", example = 4)),
    security(("bearer" = [])),
    responses((status = 200, description = "The payment", body = PaymentResponse)),
    extensions(("x-problems" = json!(["not-found", "unavailable"]))),
)]
#[get("/api/v1/payments/{paymentId}")]
pub async fn get_payment(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<PathId>,
) -> Result<web::Json<PaymentResponse>, ApiError> {
    let id = PaymentId::new(id.into_inner().get())?;
    Ok(web::Json(
        state.services.payments.get(user.id, id).await?.into(),
    ))
}

/// Refunds one of the caller's payments
///
/// All or nothing: the price goes back to the balance (history kind
/// REFUND), the payment and the reservation become REFUNDED, the seat
/// AVAILABLE. Refunding again answers the payment unchanged. Refunds close
/// the configured number of hours (24 by default) before the show.
#[utoipa::path(
    tag = "payments",
    params(("paymentId" = i64, Path, minimum = 1, description = "The payment", example = 4)),
    security(("bearer" = [])),
    responses((
        status = 200, description = "The payment, REFUNDED", body = PaymentResponse,
        example = json!({
            "id": 4, "reservationId": 31, "userId": 42, "amount": 5000,
            "paidAt": "2030-03-17T17:47:10Z", "status": "REFUNDED"
        }),
    )),
    extensions(("x-problems" = json!([
        "not-found", "refund-closed", "concurrent-update", "lock-timeout", "unavailable"
    ]))),
)]
#[post("/api/v1/payments/{paymentId}/refund")]
pub async fn refund(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<PathId>,
) -> Result<web::Json<PaymentResponse>, ApiError> {
    let id = PaymentId::new(id.into_inner().get())?;
    Ok(web::Json(
        state.services.payments.refund(user.id, id).await?.into(),
    ))
}

impl From<PayError> for ApiError {
    fn from(e: PayError) -> Self {
        match e {
            PayError::NotFound => ApiError::not_found("reservation not found"),
            PayError::Expired => {
                ApiError::new(Code::ReservationExpired, "the hold expired before payment")
            }
            PayError::AlreadyPaid => {
                ApiError::new(Code::AlreadyPaid, "the reservation is already paid")
            }
            PayError::InsufficientPoints { balance, needed } => {
                ApiError::insufficient_points(balance, needed)
            }
            PayError::KeyReused => ApiError::key_reused(),
            PayError::NotAdmitted => ApiError::not_admitted(),
            PayError::Failed(f) => f.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::NotFound => ApiError::not_found("payment not found"),
            RefundError::Closed { hours } => ApiError::new(
                Code::RefundClosed,
                format!("refunds close {hours} hours before the show"),
            ),
            RefundError::Failed(f) => f.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::check;

    #[test]
    fn pay_errors() {
        check(PayError::NotFound, 404, "not-found");
        check(PayError::Expired, 410, "reservation-expired");
        check(PayError::AlreadyPaid, 409, "already-paid");
        let short = PayError::InsufficientPoints {
            balance: 100,
            needed: 500,
        };
        check(short, 409, "insufficient-points");
        check(PayError::KeyReused, 422, "idempotency-key-reused");
        check(PayError::NotAdmitted, 403, "not-admitted");
    }

    #[test]
    fn refund_errors() {
        check(RefundError::NotFound, 404, "not-found");
        check(RefundError::Closed { hours: 24 }, 409, "refund-closed");
    }
}
