//! Request and response bodies (camelCase JSON). Requests are plain serde
//! structs turned into validated domain values by `try_into_domain`, so an
//! invalid value never gets past the edge; responses are built from domain
//! values.

use chrono::{DateTime, Utc};
use concert_domain::{
    Concert, HistoryEntry, IdempotencyKey, InvalidValue, Payment, PointBalance, PointKind, Points,
    Reservation, ReservationId, ReservationStatus, ReserveSeat, ScheduleId, ScheduleSummary,
    SeatNumber, SeatStatus, SeatView, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

// ---- requests ---------------------------------------------------------------

/// `POST /api/v1/reservations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    /// The schedule (dated performance).
    #[schema(example = 1, minimum = 1)]
    pub schedule_id: i64,
    /// The seat number, 1 to 50.
    #[schema(example = 7, minimum = 1, maximum = 50)]
    pub seat_number: i64,
}

impl ReserveRequest {
    /// The command for `user`; refuses a non-positive schedule id and a seat
    /// number outside 1..=50.
    pub fn try_into_domain(self, user: UserId) -> Result<ReserveSeat, InvalidValue> {
        Ok(ReserveSeat {
            user,
            schedule: ScheduleId::new(self.schedule_id)?,
            seat: SeatNumber::new(self.seat_number)?,
        })
    }
}

/// `POST /api/v1/points/charge`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// Points to add, 1 to 1,000,000.
    #[schema(example = 10000, minimum = 1, maximum = 1000000)]
    pub amount: i64,
}

impl ChargeRequest {
    /// The amount; refuses `<= 0` and anything above `MAX_AMOUNT`.
    pub fn try_into_domain(self) -> Result<Points, InvalidValue> {
        Points::new(self.amount)
    }
}

/// `POST /api/v1/payments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    /// The held reservation to pay.
    #[schema(example = 1, minimum = 1)]
    pub reservation_id: i64,
}

impl PayRequest {
    /// The reservation id; refuses a non-positive one.
    pub fn try_into_domain(self) -> Result<ReservationId, InvalidValue> {
        ReservationId::new(self.reservation_id)
    }
}

/// `?status=` of the seat map.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeatsQuery {
    /// Only seats with this status: `AVAILABLE`, `HELD` or `SOLD`.
    #[param(example = "AVAILABLE")]
    pub status: Option<String>,
}

impl SeatsQuery {
    /// The status filter, if any; refuses an unknown status (case-insensitive).
    pub fn try_into_domain(self) -> Result<Option<SeatStatus>, InvalidValue> {
        self.status
            .map(|s| {
                SeatStatus::parse(&s.trim().to_ascii_uppercase()).ok_or_else(|| {
                    InvalidValue::new("status", "must be one of AVAILABLE, HELD, SOLD")
                })
            })
            .transpose()
    }
}

/// The `Idempotency-Key` header, if present and valid.
pub fn idempotency_key(
    req: &actix_web::HttpRequest,
) -> Result<Option<IdempotencyKey>, InvalidValue> {
    req.headers()
        .get("Idempotency-Key")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| InvalidValue::new("Idempotency-Key", "must be visible ASCII"))
                .and_then(IdempotencyKey::new)
        })
        .transpose()
}

// ---- responses --------------------------------------------------------------

/// A concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcertResponse {
    pub id: u64,
    pub title: String,
}

impl From<Concert> for ConcertResponse {
    fn from(c: Concert) -> Self {
        Self {
            id: c.id.get(),
            title: c.title,
        }
    }
}

/// A bookable date of a concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleResponse {
    pub id: u64,
    pub concert_id: u64,
    pub starts_at: DateTime<Utc>,
    /// Seats bookable now (expired holds count as available).
    pub available_seats: u32,
}

impl From<ScheduleSummary> for ScheduleResponse {
    fn from(s: ScheduleSummary) -> Self {
        Self {
            id: s.id.get(),
            concert_id: s.concert.get(),
            starts_at: s.starts_at,
            available_seats: s.available_seats,
        }
    }
}

/// A seat's status as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatusDto {
    Available,
    Held,
    Sold,
}

impl From<SeatStatus> for SeatStatusDto {
    fn from(s: SeatStatus) -> Self {
        match s {
            SeatStatus::Available => Self::Available,
            SeatStatus::Held => Self::Held,
            SeatStatus::Sold => Self::Sold,
        }
    }
}

/// One seat of a schedule's seat map.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatResponse {
    pub number: u8,
    pub price: u64,
    pub status: SeatStatusDto,
}

impl From<SeatView> for SeatResponse {
    fn from(s: SeatView) -> Self {
        Self {
            number: s.number.get(),
            price: s.price.get(),
            status: s.status.into(),
        }
    }
}

/// A reservation's status: `HELD` until paid (`CONFIRMED`) or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatusDto {
    Held,
    Confirmed,
    Expired,
}

impl From<ReservationStatus> for ReservationStatusDto {
    fn from(s: ReservationStatus) -> Self {
        match s {
            ReservationStatus::Held => Self::Held,
            ReservationStatus::Confirmed => Self::Confirmed,
            ReservationStatus::Expired => Self::Expired,
        }
    }
}

/// A seat hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationResponse {
    pub id: u64,
    pub schedule_id: u64,
    pub seat_number: u8,
    pub user_id: u64,
    pub price: u64,
    pub status: ReservationStatusDto,
    /// When an unpaid hold lapses.
    pub expires_at: DateTime<Utc>,
}

impl From<Reservation> for ReservationResponse {
    fn from(r: Reservation) -> Self {
        Self {
            id: r.id.get(),
            schedule_id: r.schedule.get(),
            seat_number: r.seat_number.get(),
            user_id: r.user.get(),
            price: r.price.get(),
            status: r.status.into(),
            expires_at: r.expires_at,
        }
    }
}

/// A point balance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceResponse {
    pub user_id: u64,
    pub balance: u64,
}

impl From<PointBalance> for BalanceResponse {
    fn from(b: PointBalance) -> Self {
        Self {
            user_id: b.user.get(),
            balance: b.balance,
        }
    }
}

/// The kind of a point change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PointKindDto {
    Charge,
    Use,
}

impl From<PointKind> for PointKindDto {
    fn from(k: PointKind) -> Self {
        match k {
            PointKind::Charge => Self::Charge,
            PointKind::Use => Self::Use,
        }
    }
}

/// One line of the point history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntryResponse {
    pub id: u64,
    pub kind: PointKindDto,
    pub amount: u64,
    /// The balance right after this change.
    pub balance_after: u64,
    pub created_at: DateTime<Utc>,
}

impl From<HistoryEntry> for HistoryEntryResponse {
    fn from(h: HistoryEntry) -> Self {
        Self {
            id: h.id,
            kind: h.kind.into(),
            amount: h.amount,
            balance_after: h.balance_after,
            created_at: h.created_at,
        }
    }
}

/// A completed payment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResponse {
    pub id: u64,
    pub reservation_id: u64,
    pub user_id: u64,
    pub amount: u64,
    pub paid_at: DateTime<Utc>,
}

impl From<Payment> for PaymentResponse {
    fn from(p: Payment) -> Self {
        Self {
            id: p.id.get(),
            reservation_id: p.reservation.get(),
            user_id: p.user.get(),
            amount: p.amount.get(),
            paid_at: p.paid_at,
        }
    }
}

/// `/health/live` and a passing `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: String,
    /// The dependencies checked (readiness only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use concert_domain::MAX_AMOUNT;

    fn reserve(schedule_id: i64, seat_number: i64) -> Result<ReserveSeat, InvalidValue> {
        ReserveRequest {
            schedule_id,
            seat_number,
        }
        .try_into_domain(UserId::from(3))
    }

    #[test]
    fn seat_numbers_must_be_one_to_fifty() {
        let ok = reserve(2, 7).unwrap();
        assert_eq!((ok.user.get(), ok.schedule.get(), ok.seat.get()), (3, 2, 7));
        assert!(reserve(2, 1).is_ok());
        assert!(reserve(2, 50).is_ok());
        assert_eq!(reserve(2, 0).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(2, 51).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(2, -1).unwrap_err().field, "seatNumber");
        assert_eq!(reserve(0, 7).unwrap_err().field, "scheduleId");
    }

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        let charge = |amount| ChargeRequest { amount }.try_into_domain();
        assert_eq!(charge(500).unwrap().get(), 500);
        assert_eq!(charge(MAX_AMOUNT as i64).unwrap().get(), MAX_AMOUNT);
        assert!(charge(0).is_err());
        assert!(charge(-500).is_err());
        assert!(charge(MAX_AMOUNT as i64 + 1).is_err());
        assert!(charge(i64::MAX).is_err());
    }

    #[test]
    fn reservation_ids_must_be_positive() {
        let pay = |reservation_id| PayRequest { reservation_id }.try_into_domain();
        assert_eq!(pay(9).unwrap().get(), 9);
        assert!(pay(0).is_err());
        assert!(pay(-9).is_err());
    }

    #[test]
    fn seat_status_filter() {
        let q = |status: Option<&str>| {
            SeatsQuery {
                status: status.map(str::to_owned),
            }
            .try_into_domain()
        };
        assert_eq!(q(None), Ok(None));
        assert_eq!(q(Some("AVAILABLE")), Ok(Some(SeatStatus::Available)));
        assert_eq!(q(Some("sold")), Ok(Some(SeatStatus::Sold)));
        assert!(q(Some("FREE")).is_err());
        assert!(q(Some("")).is_err());
    }

    #[test]
    fn requests_are_camel_case() {
        let r: ReserveRequest =
            serde_json::from_str(r#"{"scheduleId": 4, "seatNumber": 9}"#).unwrap();
        assert_eq!((r.schedule_id, r.seat_number), (4, 9));
        assert!(serde_json::from_str::<ReserveRequest>(r#"{"schedule_id": 4}"#).is_err());
        assert!(serde_json::from_str::<ChargeRequest>(r#"{"amount": "5"}"#).is_err());
        assert!(serde_json::from_str::<ChargeRequest>(r#"{"amount": 1.5}"#).is_err());
    }

    #[test]
    fn responses_are_camel_case_with_upper_case_enums() {
        let payment = PaymentResponse {
            id: 1,
            reservation_id: 2,
            user_id: 3,
            amount: 500,
            paid_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
        };
        assert_eq!(
            serde_json::to_value(payment).unwrap(),
            serde_json::json!({
                "id": 1, "reservationId": 2, "userId": 3, "amount": 500,
                "paidAt": "2030-03-17T17:46:40Z"
            })
        );
        assert_eq!(
            serde_json::to_value(SeatStatusDto::Available).unwrap(),
            "AVAILABLE"
        );
        assert_eq!(serde_json::to_value(PointKindDto::Use).unwrap(), "USE");
        assert_eq!(
            serde_json::to_value(ReservationStatusDto::Confirmed).unwrap(),
            "CONFIRMED"
        );
    }
}
