//! Request and response bodies (camelCase JSON). Requests are plain serde
//! structs turned into validated domain values by `try_into_domain`, so an
//! invalid value never gets past the edge; responses are built from domain
//! values. Integer fields are JSON integers, declared `type: integer`; as
//! in JSON Schema, a number with a zero fraction (`7.0`) is that integer,
//! anything else (`7.5`, `"7"`) is refused (400).

use chrono::{DateTime, Utc};
use concert_domain::{
    Concert, HistoryEntry, InvalidValue, Payment, PaymentStatus, PointBalance, PointKind, Points,
    Reservation, ReservationId, ReservationStatus, ReserveSeat, ReserveSeats, RoomEntry,
    RoomStatus, ScheduleId, ScheduleSummary, SeatNumber, SeatStatus, SeatView, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

// ---- requests ---------------------------------------------------------------

/// Body of POST /api/v1/reservations.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    /// The schedule (dated performance).
    #[schema(example = 3, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub schedule_id: i64,
    /// The seat number, 1 to 50.
    #[schema(example = 7, minimum = 1, maximum = 50)]
    #[serde(deserialize_with = "integral::one")]
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

/// Body of POST /api/v1/reservations/batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveBatchRequest {
    /// The schedule (dated performance).
    #[schema(example = 3, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub schedule_id: i64,
    /// Distinct seat numbers (1 to 50), at least one and at most the
    /// configured maximum per request (4 by default).
    #[schema(example = json!([7, 8]), min_items = 1)]
    #[serde(deserialize_with = "integral::many")]
    pub seat_numbers: Vec<i64>,
}

impl ReserveBatchRequest {
    /// The command for `user`: 1 to `max` distinct valid seats.
    pub fn try_into_domain(self, user: UserId, max: usize) -> Result<ReserveSeats, InvalidValue> {
        let seats = self
            .seat_numbers
            .into_iter()
            .map(|n| SeatNumber::new(n).map_err(|e| InvalidValue::new("seatNumbers", e.message)))
            .collect::<Result<Vec<_>, _>>()?;
        ReserveSeats::new(user, ScheduleId::new(self.schedule_id)?, seats, max)
    }
}

/// Body of POST /api/v1/points/charge.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// Points to add, 1 to 1000000.
    #[schema(example = 10000, minimum = 1, maximum = 1000000)]
    #[serde(deserialize_with = "integral::one")]
    pub amount: i64,
}

impl ChargeRequest {
    /// The amount; refuses `<= 0` and anything above `MAX_AMOUNT`.
    pub fn try_into_domain(self) -> Result<Points, InvalidValue> {
        Points::new(self.amount)
    }
}

/// Body of POST /api/v1/payments.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayRequest {
    /// The held reservation to pay.
    #[schema(example = 31, minimum = 1)]
    #[serde(deserialize_with = "integral::one")]
    pub reservation_id: i64,
}

impl PayRequest {
    /// The reservation id; refuses a non-positive one.
    pub fn try_into_domain(self) -> Result<ReservationId, InvalidValue> {
        ReservationId::new(self.reservation_id)
    }
}

/// Body of POST /api/v1/admin/concerts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConcertRequest {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "Spring Gala", min_length = 1, max_length = 200)]
    pub title: String,
}

/// Body of POST /api/v1/admin/concerts/{concertId}/schedules.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateScheduleRequest {
    /// When the show starts (RFC 3339); must be in the future.
    #[schema(example = "2030-05-01T19:00:00Z")]
    pub starts_at: DateTime<Utc>,
    /// The price of seats 1 to 50, in order: exactly 50 integers from 1 to
    /// 1000000.
    #[schema(
        min_items = 50,
        max_items = 50,
        example = json!([
            5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000,
            4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000, 4000,
            3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000, 3000,
            2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000,
            1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000
        ])
    )]
    #[serde(deserialize_with = "integral::many")]
    pub seat_prices: Vec<i64>,
}

/// Integer fields: a JSON integer, or a number with a zero fraction (the
/// same integer in JSON Schema's sense).
mod integral {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use std::fmt;

    struct One;

    impl Visitor<'_> for One {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is too large")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // Exactly representable integers only (|v| < 2^53).
            const LIMIT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && v.abs() < LIMIT {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(de::Unexpected::Float(v), &self))
            }
        }
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(One)
    }

    struct Many;

    impl<'de> Visitor<'de> for Many {
        type Value = Vec<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of integers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(v) = seq.next_element_seed(Seed)? {
                out.push(v);
            }
            Ok(out)
        }
    }

    struct Seed;

    impl<'de> de::DeserializeSeed<'de> for Seed {
        type Value = i64;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
            one(d)
        }
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(Many)
    }
}

impl CreateScheduleRequest {
    /// The start and the prices; a price outside 1..=1000000 is refused
    /// (the count and the start are the domain's rule).
    pub fn try_into_domain(self) -> Result<(DateTime<Utc>, Vec<Points>), InvalidValue> {
        let prices = self
            .seat_prices
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Points::new(p).map_err(|e| {
                    InvalidValue::new("seatPrices", format!("seat {}: {}", i + 1, e.message))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.starts_at, prices))
    }
}

/// `?status=` of a seat map.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeatsQuery {
    /// Only seats with this status.
    #[param(value_type = Option<SeatStatusDto>, example = "AVAILABLE")]
    pub status: Option<String>,
}

impl SeatsQuery {
    /// The status filter, if any; refuses an unknown status
    /// (case-insensitive).
    pub fn try_into_domain(self) -> Result<Option<SeatStatus>, InvalidValue> {
        self.status
            .map(|s| s.trim().to_ascii_uppercase().parse::<SeatStatus>())
            .transpose()
    }
}

/// `?status=` of the caller's reservations.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReservationsQuery {
    /// Only reservations with this status (as it is now: a hold past its
    /// time is EXPIRED).
    #[param(value_type = Option<ReservationStatusDto>, example = "HELD")]
    pub status: Option<String>,
}

impl ReservationsQuery {
    /// The status filter, if any; refuses an unknown status
    /// (case-insensitive).
    pub fn try_into_domain(self) -> Result<Option<ReservationStatus>, InvalidValue> {
        self.status
            .map(|s| s.trim().to_ascii_uppercase().parse::<ReservationStatus>())
            .transpose()
    }
}

// ---- responses --------------------------------------------------------------

/// A concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Concert)]
pub struct ConcertResponse {
    #[schema(example = 1)]
    pub id: u64,
    #[schema(example = "Spring Gala")]
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

/// A dated performance of a concert.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Schedule)]
pub struct ScheduleResponse {
    #[schema(example = 3)]
    pub id: u64,
    #[schema(example = 1)]
    pub concert_id: u64,
    #[schema(example = "2030-05-01T19:00:00Z")]
    pub starts_at: DateTime<Utc>,
    /// Seats bookable now (ended holds count as available).
    #[schema(example = 48)]
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

/// A seat's status as a client sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = SeatStatus)]
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
#[schema(as = Seat)]
pub struct SeatResponse {
    #[schema(example = 7)]
    pub number: u8,
    #[schema(example = 5000)]
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

/// A reservation's status: HELD until paid (CONFIRMED), let go
/// (CANCELLED), run out (EXPIRED) or refunded after payment (REFUNDED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = ReservationStatus)]
pub enum ReservationStatusDto {
    Held,
    Confirmed,
    Expired,
    Cancelled,
    Refunded,
}

impl From<ReservationStatus> for ReservationStatusDto {
    fn from(s: ReservationStatus) -> Self {
        match s {
            ReservationStatus::Held => Self::Held,
            ReservationStatus::Confirmed => Self::Confirmed,
            ReservationStatus::Expired => Self::Expired,
            ReservationStatus::Cancelled => Self::Cancelled,
            ReservationStatus::Refunded => Self::Refunded,
        }
    }
}

/// A seat reservation (a hold, and what became of it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Reservation)]
pub struct ReservationResponse {
    #[schema(example = 31)]
    pub id: u64,
    #[schema(example = 3)]
    pub schedule_id: u64,
    #[schema(example = 7)]
    pub seat_number: u8,
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 5000)]
    pub price: u64,
    pub status: ReservationStatusDto,
    /// When the hold ends unless paid: set while the status is HELD, null
    /// otherwise.
    #[schema(example = "2030-03-17T17:51:40Z", required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<Reservation> for ReservationResponse {
    fn from(r: Reservation) -> Self {
        let held = r.status == ReservationStatus::Held;
        Self {
            id: r.id.get(),
            schedule_id: r.schedule.get(),
            seat_number: r.seat_number.get(),
            user_id: r.user.get(),
            price: r.price.get(),
            status: r.status.into(),
            expires_at: held.then_some(r.expires_at),
        }
    }
}

/// A point balance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Balance)]
pub struct BalanceResponse {
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 15000)]
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
#[schema(as = PointKind)]
pub enum PointKindDto {
    Charge,
    Use,
    Refund,
}

impl From<PointKind> for PointKindDto {
    fn from(k: PointKind) -> Self {
        match k {
            PointKind::Charge => Self::Charge,
            PointKind::Use => Self::Use,
            PointKind::Refund => Self::Refund,
        }
    }
}

/// One line of the point history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = HistoryEntry)]
pub struct HistoryEntryResponse {
    #[schema(example = 12)]
    pub id: u64,
    pub kind: PointKindDto,
    #[schema(example = 5000)]
    pub amount: u64,
    /// The balance right after this change.
    #[schema(example = 10000)]
    pub balance_after: u64,
    #[schema(example = "2030-03-17T17:46:40Z")]
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

/// A payment's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = PaymentStatus)]
pub enum PaymentStatusDto {
    Paid,
    Refunded,
}

impl From<PaymentStatus> for PaymentStatusDto {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Paid => Self::Paid,
            PaymentStatus::Refunded => Self::Refunded,
        }
    }
}

/// A payment of a reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Payment)]
pub struct PaymentResponse {
    #[schema(example = 4)]
    pub id: u64,
    #[schema(example = 31)]
    pub reservation_id: u64,
    #[schema(example = 42)]
    pub user_id: u64,
    #[schema(example = 5000)]
    pub amount: u64,
    #[schema(example = "2030-03-17T17:47:10Z")]
    pub paid_at: DateTime<Utc>,
    pub status: PaymentStatusDto,
}

impl From<Payment> for PaymentResponse {
    fn from(p: Payment) -> Self {
        Self {
            id: p.id.get(),
            reservation_id: p.reservation.get(),
            user_id: p.user.get(),
            amount: p.amount.get(),
            paid_at: p.paid_at,
            status: p.status.into(),
        }
    }
}

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
    fn batches_are_one_to_max_distinct_valid_seats() {
        let batch = |seats: &[i64]| {
            ReserveBatchRequest {
                schedule_id: 2,
                seat_numbers: seats.to_vec(),
            }
            .try_into_domain(UserId::from(3), 4)
        };
        let ok = batch(&[9, 2]).unwrap();
        let numbers: Vec<_> = ok.seats().iter().map(|s| s.get()).collect();
        assert_eq!(numbers, [2, 9]);
        for bad in [&[][..], &[1, 2, 3, 4, 5], &[1, 1], &[0], &[51]] {
            assert_eq!(batch(bad).unwrap_err().field, "seatNumbers", "{bad:?}");
        }
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
    fn seat_prices_are_checked_one_by_one() {
        let request = |prices: Vec<i64>| CreateScheduleRequest {
            starts_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            seat_prices: prices,
        };
        let (_, prices) = request(vec![700; 50]).try_into_domain().unwrap();
        assert_eq!(prices.len(), 50);
        let mut bad = vec![700; 50];
        bad[9] = 0;
        let e = request(bad).try_into_domain().unwrap_err();
        assert_eq!(e.field, "seatPrices");
        assert!(e.message.starts_with("seat 10:"), "{}", e.message);
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
    fn reservation_status_filter() {
        let q = |status: Option<&str>| {
            ReservationsQuery {
                status: status.map(str::to_owned),
            }
            .try_into_domain()
        };
        assert_eq!(q(None), Ok(None));
        for status in ReservationStatus::ALL {
            assert_eq!(q(Some(status.as_str())), Ok(Some(status)));
        }
        assert_eq!(q(Some("held")), Ok(Some(ReservationStatus::Held)));
        assert!(q(Some("PAID")).is_err());
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
        // a number with a zero fraction is that integer (as in JSON Schema)
        let r: ChargeRequest = serde_json::from_str(r#"{"amount": 1.0}"#).unwrap();
        assert_eq!(r.amount, 1);
        let r: ReserveBatchRequest =
            serde_json::from_str(r#"{"scheduleId": 4.0, "seatNumbers": [7, 8.0]}"#).unwrap();
        assert_eq!((r.schedule_id, r.seat_numbers), (4, vec![7, 8]));
        assert!(serde_json::from_str::<ChargeRequest>(r#"{"amount": 1e300}"#).is_err());
        assert!(
            serde_json::from_str::<ReserveBatchRequest>(
                r#"{"scheduleId": 4, "seatNumbers": [7.5]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn responses_are_camel_case_with_upper_case_enums() {
        let payment = PaymentResponse {
            id: 1,
            reservation_id: 2,
            user_id: 3,
            amount: 500,
            paid_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
            status: PaymentStatusDto::Paid,
        };
        assert_eq!(
            serde_json::to_value(payment).unwrap(),
            serde_json::json!({
                "id": 1, "reservationId": 2, "userId": 3, "amount": 500,
                "paidAt": "2030-03-17T17:46:40Z", "status": "PAID"
            })
        );
        assert_eq!(
            serde_json::to_value(SeatStatusDto::Available).unwrap(),
            "AVAILABLE"
        );
        assert_eq!(serde_json::to_value(PointKindDto::Use).unwrap(), "USE");
        assert_eq!(
            serde_json::to_value(PointKindDto::Refund).unwrap(),
            "REFUND"
        );
        assert_eq!(
            serde_json::to_value(ReservationStatusDto::Confirmed).unwrap(),
            "CONFIRMED"
        );
        assert_eq!(
            serde_json::to_value(ReservationStatusDto::Cancelled).unwrap(),
            "CANCELLED"
        );
    }
}

// ---- waiting room -----------------------------------------------------------

/// Where a user stands in a concert's waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = WaitingRoomStatus)]
pub enum RoomStatusDto {
    Waiting,
    Admitted,
    SoldOut,
}

/// The caller's entry in a concert's waiting room.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WaitingRoomEntry)]
pub struct RoomEntryResponse {
    #[schema(example = 1)]
    pub concert_id: u64,
    #[schema(example = 42)]
    pub user_id: u64,
    pub status: RoomStatusDto,
    /// While WAITING: 1 for the next user to be admitted, 2 for the one
    /// after, ...; null otherwise. Only ever decreases while the caller
    /// keeps polling.
    #[schema(example = 17, required = true)]
    pub position: Option<u64>,
    /// While WAITING: the expected wait, from the admission rate the room
    /// observed lately (before any was observed, the bound the room's
    /// rules give); null otherwise.
    #[schema(example = 9, required = true)]
    pub estimated_wait_seconds: Option<u64>,
    /// When to poll next (also sent as Retry-After). A waiting entry not
    /// polled for the idle time loses its place.
    #[schema(example = 5)]
    pub poll_after_seconds: u64,
    /// While ADMITTED: when the admission ends; null otherwise (and null
    /// when the service runs without a waiting room: everyone is admitted,
    /// without end).
    #[schema(example = "2030-03-17T17:56:40Z", required = true)]
    pub admitted_until: Option<DateTime<Utc>>,
}

impl From<RoomEntry> for RoomEntryResponse {
    fn from(e: RoomEntry) -> Self {
        let (status, position, admitted_until) = match e.status {
            RoomStatus::Waiting { position } => (RoomStatusDto::Waiting, Some(position), None),
            RoomStatus::Admitted { until } => (RoomStatusDto::Admitted, None, Some(until)),
            RoomStatus::SoldOut => (RoomStatusDto::SoldOut, None, None),
            RoomStatus::Unrestricted => (RoomStatusDto::Admitted, None, None),
        };
        Self {
            concert_id: e.concert.get(),
            user_id: e.user.get(),
            status,
            position,
            estimated_wait_seconds: e.estimated_wait.map(|w| whole_seconds(w, false)),
            poll_after_seconds: whole_seconds(e.poll_after, true),
            admitted_until,
        }
    }
}

/// A duration in whole seconds, rounded up (at least 1 when `at_least_one`).
fn whole_seconds(d: std::time::Duration, at_least_one: bool) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if at_least_one { s.max(1) } else { s }
}
