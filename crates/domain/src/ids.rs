//! Identifiers and validated value types. Their fields are private: a value
//! that exists has passed its constructor. They serialize (as plain numbers
//! or strings, for event payloads) but never deserialize, so no adapter can
//! skip a constructor.

use std::fmt;

use serde::Serialize;

/// A value refused by a constructor, with a message fit for a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

macro_rules! positive_id {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Accepts any positive integer.
            pub fn new(value: i64) -> Result<Self, InvalidValue> {
                u64::try_from(value)
                    .ok()
                    .filter(|v| *v > 0)
                    .map(Self)
                    .ok_or_else(|| InvalidValue::new($field, "must be a positive integer"))
            }

            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            /// For values that come from storage, which only holds valid ids.
            fn from(value: u64) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// The authenticated user (the `sub` claim of the bearer token).
    UserId,
    "userId"
);
positive_id!(ConcertId, "concertId");
positive_id!(ScheduleId, "scheduleId");
positive_id!(
    /// Storage identity of one seat (a schedule's seat number).
    SeatId,
    "seatId"
);
positive_id!(ReservationId, "reservationId");
positive_id!(PaymentId, "paymentId");

/// Seat number within a schedule: 1 to [`SeatNumber::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SeatNumber(u8);

impl SeatNumber {
    /// Seats per schedule.
    pub const MAX: u8 = 50;

    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        u8::try_from(value)
            .ok()
            .filter(|v| (1..=Self::MAX).contains(v))
            .map(Self)
            .ok_or_else(|| {
                InvalidValue::new("seatNumber", format!("must be between 1 and {}", Self::MAX))
            })
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Every seat number of a schedule, in order.
    pub fn all() -> impl Iterator<Item = SeatNumber> {
        (1..=Self::MAX).map(SeatNumber)
    }
}

impl fmt::Display for SeatNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client-chosen key that makes a retried charge or payment return the
/// first result instead of acting twice: 1 to [`IdempotencyKey::MAX_LEN`]
/// visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn new(value: &str) -> Result<Self, InvalidValue> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidValue::new(
                "Idempotency-Key",
                format!("must be 1 to {} visible ASCII characters", Self::MAX_LEN),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert_eq!(UserId::new(42).map(UserId::get), Ok(42));
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(-1).is_err());
        assert_eq!(ReservationId::new(0).unwrap_err().field, "reservationId");
    }

    #[test]
    fn seat_numbers_are_one_to_fifty() {
        assert!(SeatNumber::new(0).is_err());
        assert_eq!(SeatNumber::new(1).map(SeatNumber::get), Ok(1));
        assert_eq!(SeatNumber::new(50).map(SeatNumber::get), Ok(50));
        assert!(SeatNumber::new(51).is_err());
        assert!(SeatNumber::new(-3).is_err());
        assert!(SeatNumber::new(256 + 7).is_err());
        assert_eq!(SeatNumber::all().count(), 50);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_255_bytes() {
        assert!(IdempotencyKey::new("order-17").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        assert!(IdempotencyKey::new(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(256)).is_err());
    }
}
