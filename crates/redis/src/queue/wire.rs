//! How queued requests and their outcomes are written in Redis: a request
//! is a stream entry with one field `r`, an outcome one JSON document. Both
//! are decoded through the domain's constructors, so nothing invalid comes
//! back out.

use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use concert_domain::{
    Failure, Points, QueuedRequest, RequestId, ReservationStatus, ReserveError, ReserveSeat,
    ReserveSeats, SeatNumber, SeatOutcome, SeatRequest, UserId,
};
use serde::{Deserialize, Serialize};

/// The name of the one field of a request's stream entry.
pub(crate) const FIELD: &str = "r";

/// The stream entry of `request`, answered on `reply`, as the value of its
/// field [`FIELD`]: `<id> <user> <schedule> <seats> <one|many> <submitted,
/// µs since the epoch> <reply channel>`, seats comma-separated ascending
/// (one field, parsed with a split: a batch of a thousand entries reads in
/// a millisecond).
pub(crate) fn entry(request: &QueuedRequest, reply: &str) -> String {
    let r = &request.request;
    let seats = r
        .seats()
        .iter()
        .map(|s| s.get().to_string())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{} {} {} {seats} {} {} {reply}",
        request.id,
        r.user(),
        r.schedule(),
        if r.is_many() { "many" } else { "one" },
        request.submitted_at.timestamp_micros(),
    )
}

/// A stream entry back: the request and the channel to answer on.
pub(crate) fn parse_entry(value: &str) -> anyhow::Result<(QueuedRequest, String)> {
    let parts: Vec<&str> = value.split(' ').collect();
    let [id, user, schedule, seats, kind, at, reply] = parts[..] else {
        bail!("a request entry has 7 parts, not {}", parts.len());
    };
    let id = RequestId::new(id)?;
    let user = UserId::new(user.parse().context("user")?)?;
    let schedule = concert_domain::ScheduleId::new(schedule.parse().context("schedule")?)?;
    let seats = seats
        .split(',')
        .map(|n| Ok(SeatNumber::new(n.parse().context("seat")?)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = match (kind, seats.as_slice()) {
        ("one", [seat]) => SeatRequest::One(ReserveSeat {
            user,
            schedule,
            seat: *seat,
        }),
        ("many", _) => {
            let max = seats.len();
            SeatRequest::Many(ReserveSeats::new(user, schedule, seats, max)?)
        }
        (kind, _) => bail!("bad kind {kind:?} for {} seats", seats.len()),
    };
    let submitted_at = DateTime::<Utc>::from_timestamp_micros(at.parse().context("at")?)
        .context("submission time out of range")?;
    if reply.is_empty() {
        bail!("no reply channel");
    }
    Ok((
        QueuedRequest {
            id,
            request,
            submitted_at,
        },
        reply.to_owned(),
    ))
}

/// A reservation as the outcome document carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReservation {
    id: u64,
    seat: u64,
    schedule: u64,
    seat_number: u8,
    user: u64,
    price: u64,
    status: String,
    expires_at: DateTime<Utc>,
}

/// An outcome document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
enum WireOutcome {
    Held { reservations: Vec<WireReservation> },
    SeatNotFound,
    SeatUnavailable { seats: Vec<u8>, yours: Option<u64> },
    HoldLimit { limit: u32 },
    NotAdmitted,
    Conflict,
    LockTimeout,
    LockLost,
    Unavailable { message: String },
    Unknown { message: String },
}

/// `outcome` as one JSON document. A failure's cause is kept as its
/// message only.
pub(crate) fn encode_outcome(outcome: &SeatOutcome) -> String {
    let wire = match outcome {
        Ok(held) => WireOutcome::Held {
            reservations: held
                .iter()
                .map(|r| WireReservation {
                    id: r.id.get(),
                    seat: r.seat.get(),
                    schedule: r.schedule.get(),
                    seat_number: r.seat_number.get(),
                    user: r.user.get(),
                    price: r.price.get(),
                    status: r.status.as_str().to_owned(),
                    expires_at: r.expires_at,
                })
                .collect(),
        },
        Err(ReserveError::SeatNotFound) => WireOutcome::SeatNotFound,
        Err(ReserveError::SeatUnavailable { seats, yours }) => WireOutcome::SeatUnavailable {
            seats: seats.iter().map(|s| s.get()).collect(),
            yours: yours.map(|id| id.get()),
        },
        Err(ReserveError::HoldLimit { limit }) => WireOutcome::HoldLimit { limit: *limit },
        Err(ReserveError::NotAdmitted) => WireOutcome::NotAdmitted,
        Err(ReserveError::Failed(f)) => match f {
            Failure::Conflict => WireOutcome::Conflict,
            Failure::LockTimeout => WireOutcome::LockTimeout,
            Failure::LockLost => WireOutcome::LockLost,
            Failure::Unavailable(cause) => WireOutcome::Unavailable {
                message: format!("{cause:#}"),
            },
            Failure::Unknown(cause) => WireOutcome::Unknown {
                message: format!("{cause:#}"),
            },
        },
    };
    // A struct of strings and numbers always serializes.
    serde_json::to_string(&wire).unwrap_or_else(|e| {
        format!(r#"{{"kind":"unknown","message":"encoding the outcome failed: {e}"}}"#)
    })
}

/// An outcome document back.
pub(crate) fn decode_outcome(json: &str) -> anyhow::Result<SeatOutcome> {
    let wire: WireOutcome = serde_json::from_str(json).context("an outcome document")?;
    let seat = |n: u8| SeatNumber::new(i64::from(n));
    Ok(match wire {
        WireOutcome::Held { reservations } => Ok(reservations
            .into_iter()
            .map(|r| {
                Ok(concert_domain::Reservation {
                    id: r.id.into(),
                    seat: r.seat.into(),
                    schedule: r.schedule.into(),
                    seat_number: seat(r.seat_number)?,
                    user: r.user.into(),
                    price: Points::new(i64::try_from(r.price).context("price")?)?,
                    status: ReservationStatus::from_str(&r.status)?,
                    expires_at: r.expires_at,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?),
        WireOutcome::SeatNotFound => Err(ReserveError::SeatNotFound),
        WireOutcome::SeatUnavailable { seats, yours } => Err(ReserveError::SeatUnavailable {
            seats: seats.into_iter().map(seat).collect::<Result<Vec<_>, _>>()?,
            yours: yours.map(Into::into),
        }),
        WireOutcome::HoldLimit { limit } => Err(ReserveError::HoldLimit { limit }),
        WireOutcome::NotAdmitted => Err(ReserveError::NotAdmitted),
        WireOutcome::Conflict => Err(Failure::Conflict.into()),
        WireOutcome::LockTimeout => Err(Failure::LockTimeout.into()),
        WireOutcome::LockLost => Err(Failure::LockLost.into()),
        WireOutcome::Unavailable { message } => Err(Failure::unavailable(anyhow!(message)).into()),
        WireOutcome::Unknown { message } => Err(Failure::unknown(anyhow!(message)).into()),
    })
}

/// A reply message on an instance's reply channel: `<request id> <outcome>`
/// (the reply script writes it; this is its shape for tests).
#[cfg(test)]
pub(crate) fn reply_message(id: &str, outcome: &str) -> String {
    format!("{id} {outcome}")
}

/// A reply line back: (request id, outcome document).
pub(crate) fn parse_reply(line: &str) -> Option<(&str, &str)> {
    line.split_once(' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use concert_domain::{Reservation, ReservationId, ScheduleId};

    fn seat(n: i64) -> SeatNumber {
        SeatNumber::new(n).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::microseconds(17)
    }

    #[test]
    fn requests_round_trip_through_entries() {
        let user = UserId::from(42);
        let schedule = ScheduleId::from(7);
        for request in [
            SeatRequest::One(ReserveSeat {
                user,
                schedule,
                seat: seat(3),
            }),
            SeatRequest::Many(
                ReserveSeats::new(user, schedule, vec![seat(9), seat(2)], 4).unwrap(),
            ),
        ] {
            let queued = QueuedRequest {
                id: RequestId::generate(),
                request,
                submitted_at: at(),
            };
            let entry = entry(&queued, "{p:queue}:replies:i1");
            let (back, reply) = parse_entry(&entry).unwrap();
            assert_eq!((back, reply.as_str()), (queued, "{p:queue}:replies:i1"));
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        let id = RequestId::generate();
        let good = format!("{id} 1 1 1 one 1777000000000000 c");
        assert!(parse_entry(&good).is_ok());
        for bad in [
            "nope 1 1 1 one 1777000000000000 c".to_owned(),
            format!("{id} 0 1 1 one 1777000000000000 c"),
            format!("{id} 1 1 51 one 1777000000000000 c"),
            format!("{id} 1 1 1,2 one 1777000000000000 c"),
            format!("{id} 1 1 2,2 many 1777000000000000 c"),
            format!("{id} 1 1 1 some 1777000000000000 c"),
            format!("{id} 1 1 1 one yesterday c"),
            format!("{id} 1 1 1 one 1777000000000000"),
            format!("{id} 1 1 1 one 1777000000000000 c extra"),
        ] {
            assert!(parse_entry(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes_round_trip() {
        let held = Reservation {
            id: ReservationId::from(5),
            seat: 11.into(),
            schedule: ScheduleId::from(2),
            seat_number: seat(7),
            user: UserId::from(9),
            price: Points::new(500).unwrap(),
            status: ReservationStatus::Held,
            expires_at: at(),
        };
        let back = decode_outcome(&encode_outcome(&Ok(vec![held.clone()]))).unwrap();
        assert_eq!(back.unwrap(), vec![held]);

        let refused = Err(ReserveError::SeatUnavailable {
            seats: vec![seat(3), seat(4)],
            yours: Some(ReservationId::from(8)),
        });
        match decode_outcome(&encode_outcome(&refused)).unwrap() {
            Err(ReserveError::SeatUnavailable { seats, yours }) => {
                assert_eq!((seats, yours), (vec![seat(3), seat(4)], Some(8.into())));
            }
            other => panic!("{other:?}"),
        }
        let cases: Vec<(SeatOutcome, &str)> = vec![
            (Err(ReserveError::SeatNotFound), "SeatNotFound"),
            (
                Err(ReserveError::HoldLimit { limit: 2 }),
                "HoldLimit { limit: 2 }",
            ),
            (Err(ReserveError::NotAdmitted), "NotAdmitted"),
            (Err(Failure::Conflict.into()), "Failed(Conflict)"),
            (Err(Failure::LockTimeout.into()), "Failed(LockTimeout)"),
            (Err(Failure::LockLost.into()), "Failed(LockLost)"),
        ];
        for (outcome, debug) in cases {
            let back = decode_outcome(&encode_outcome(&outcome)).unwrap();
            assert_eq!(format!("{:?}", back.unwrap_err()), debug);
        }
        let down = Err(Failure::unavailable(anyhow!("db down")).into());
        match decode_outcome(&encode_outcome(&down)).unwrap() {
            Err(ReserveError::Failed(Failure::Unavailable(cause))) => {
                assert_eq!(cause.to_string(), "db down");
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_outcome("{\"kind\":\"bogus\"}").is_err());
        assert!(decode_outcome("not json").is_err());
    }

    #[test]
    fn replies_carry_the_id_then_the_outcome() {
        let message = reply_message("abc", "{\"kind\":\"notAdmitted\"}");
        assert_eq!(
            parse_reply(&message),
            Some(("abc", "{\"kind\":\"notAdmitted\"}"))
        );
        assert_eq!(parse_reply("no-space"), None);
        // an outcome never contains a raw newline (the reply lines' separator)
        let message = encode_outcome(&Err(Failure::unavailable(anyhow!("a\nb")).into()));
        assert!(!message.contains('\n'), "{message}");
    }
}
