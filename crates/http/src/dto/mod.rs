//! Request and response bodies (camelCase JSON), each next to its route
//! (`routes/<resource>/dto.rs`); what they share is here. Requests are
//! plain serde structs turned into validated domain values by
//! `try_into_domain`, so an invalid value never gets past the edge;
//! responses are built from domain values. Integer fields are JSON integers,
//! declared `type: integer`; as in JSON Schema, a number with a zero
//! fraction (`7.0`) is that integer, anything else (`7.5`, `"7"`) is refused
//! (400).
//!
//! Shared: [`integral`] (integer fields) and [`filter`] (`?status=`
//! values).

pub(crate) mod filter;
pub(crate) mod integral;

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use crate::routes::catalogue::dto::SeatStatusDto;
    use crate::routes::payments::dto::{PaymentResponse, PaymentStatusDto};
    use crate::routes::points::dto::{ChargeRequest, PointKindDto};
    use crate::routes::reservations::dto::{
        ReservationStatusDto, ReserveBatchRequest, ReserveRequest,
    };

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
