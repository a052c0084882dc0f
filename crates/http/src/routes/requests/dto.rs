//! Bodies of the queued seat requests.

use concert_domain::RequestView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::routes::reservations::dto::ReservationResponse;

/// Whether a queued request has been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatusDto {
    Pending,
    Done,
}

/// A seat request accepted but not yet answered (202).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RequestAccepted)]
pub struct RequestAccepted {
    /// Poll /api/v1/reservation-requests/{requestId} (also in Location).
    #[schema(example = "4f1c2d9a8b7e6f5a4c3b2a1908f7e6d5")]
    pub request_id: String,
    /// Always PENDING here.
    pub status: RequestStatusDto,
}

/// A queued seat request as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReservationRequestState)]
pub struct ReservationRequestResponse {
    #[schema(example = "4f1c2d9a8b7e6f5a4c3b2a1908f7e6d5")]
    pub request_id: String,
    pub status: RequestStatusDto,
    /// DONE, a single seat held: the reservation as it was granted (read
    /// /api/v1/reservations/{id} for what it is now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservation: Option<ReservationResponse>,
    /// DONE, a batch held: the reservations in seat order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservations: Option<Vec<ReservationResponse>>,
    /// DONE and refused: the problem the request would have answered
    /// directly (its status and code as in the error table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub problem: Option<Problem>,
}

impl From<RequestView> for ReservationRequestResponse {
    fn from(view: RequestView) -> Self {
        let mut response = Self {
            request_id: view.id.to_string(),
            status: RequestStatusDto::Pending,
            reservation: None,
            reservations: None,
            problem: None,
        };
        let Some(outcome) = view.outcome else {
            return response;
        };
        response.status = RequestStatusDto::Done;
        match outcome {
            Ok(held) if view.many => {
                response.reservations = Some(held.into_iter().map(Into::into).collect());
            }
            Ok(mut held) => response.reservation = held.pop().map(Into::into),
            Err(e) => response.problem = Some(ApiError::from(e).problem()),
        }
        response
    }
}
