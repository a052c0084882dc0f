//! Request extractors that answer problem+json when the input is bad:
//! JSON object bodies ([`JsonObject`]) with a size limit and a read
//! timeout, and the `Idempotency-Key` header ([`Idempotency`]).

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::time::Duration;

use actix_web::body::{BodyStream, to_bytes_limited};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use concert_domain::IdempotencyKey;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The header a client names a retryable write with.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How much of a body is read, and for how long (app data; the defaults
/// apply when it is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted; a larger one is 413 `payload-too-large`.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive; a slower one is 408
    /// `request-timeout`.
    pub timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Extractor: a JSON body that is an object, deserialized into `T`.
///
/// Refuses, as problem+json: a content type other than JSON, a body that is
/// not one JSON object (an array, a scalar, nothing, trailing data), a
/// field of the wrong type or missing (400 `validation`); a body over
/// [`BodyLimits::max_bytes`] (413 `payload-too-large`, unread when its
/// length is announced); a body slower than [`BodyLimits::timeout`] (408
/// `request-timeout`).
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = req.app_data::<BodyLimits>().copied().unwrap_or_default();
        if let Err(e) = check_head(req, limits) {
            return Box::pin(ready(Err(e)));
        }
        let stream = BodyStream::new(payload.take());
        Box::pin(async move {
            let read = actix_web::rt::time::timeout(
                limits.timeout,
                to_bytes_limited(stream, limits.max_bytes),
            )
            .await;
            let bytes = match read {
                Err(_) => {
                    return Err(ApiError::body_timeout(format!(
                        "the request body did not arrive within {} seconds",
                        limits.timeout.as_secs_f64()
                    )));
                }
                Ok(Err(_over_limit)) => {
                    return Err(ApiError::payload_too_large(limits.max_bytes));
                }
                Ok(Ok(Err(e))) => {
                    return Err(ApiError::validation(format!(
                        "could not read the body: {e}"
                    )));
                }
                Ok(Ok(Ok(bytes))) => bytes,
            };
            parse_object(&bytes).map(JsonObject)
        })
    }
}

/// Content type JSON, announced length within the limit.
fn check_head(req: &HttpRequest, limits: BodyLimits) -> Result<(), ApiError> {
    let mime = req.mime_type().ok().flatten();
    let is_json = mime
        .as_ref()
        .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
    if !is_json {
        return Err(ApiError::validation(
            "expected Content-Type: application/json",
        ));
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limits.max_bytes as u64) {
        return Err(ApiError::payload_too_large(limits.max_bytes));
    }
    Ok(())
}

/// One JSON object into `T`; anything else is 400 `validation`, invalid
/// UTF-8 anywhere in the body included (also inside a member the request
/// ignores: JSON text is UTF-8, RFC 8259).
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::validation(format!("the body is not UTF-8: {e}")))?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        return Err(ApiError::validation("the body must be a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| ApiError::validation(format!("invalid JSON body: {e}")))
}

/// Extractor: the `Idempotency-Key` header, if present. A key that is not
/// 1 to 255 visible ASCII characters is 400 `validation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency(pub Option<IdempotencyKey>);

impl FromRequest for Idempotency {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(idempotency_key(req).map(Idempotency))
    }
}

/// A numeric id in a path (`/payments/{paymentId}`): an integer, or a
/// number with a zero fraction (`12.0`), the same integer in JSON Schema's
/// sense (the document declares ids `type: integer`). Anything else fails
/// the path (400 `validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId(i64);

impl PathId {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> serde::Deserialize<'de> for PathId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_id(&raw)
            .map(PathId)
            .ok_or_else(|| serde::de::Error::custom(format!("{raw:?} is not an integer")))
    }
}

fn parse_id(raw: &str) -> Option<i64> {
    if let Ok(v) = raw.parse::<i64>() {
        return Some(v);
    }
    // Exactly representable integers only (|v| < 2^53).
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    let v: f64 = raw.parse().ok()?;
    (v.is_finite() && v.fract() == 0.0 && v.abs() < LIMIT).then_some(v as i64)
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::validation(
            "Idempotency-Key: send the header once",
        ));
    }
    let value = value.to_str().map_err(|_| {
        ApiError::validation("Idempotency-Key: must be 1 to 255 visible ASCII characters")
    })?;
    Ok(Some(IdempotencyKey::new(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Pair {
        schedule_id: i64,
        seat_number: i64,
    }

    #[test]
    fn path_ids_are_integers_in_json_schema_s_sense() {
        assert_eq!(parse_id("12"), Some(12));
        assert_eq!(parse_id("12.0"), Some(12));
        assert_eq!(parse_id("-3"), Some(-3));
        assert_eq!(parse_id("12.5"), None);
        assert_eq!(parse_id("batch"), None);
        assert_eq!(parse_id("1e300"), None);
        assert_eq!(parse_id("NaN"), None);
    }

    #[test]
    fn invalid_utf8_is_refused_even_where_ignored() {
        let mut body = br#"{"scheduleId": 1, "seatNumber": 9, "note": ""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}"#);
        let e = parse_object::<Pair>(&body).unwrap_err();
        assert_eq!(e.status(), actix_web::http::StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // the same body in valid UTF-8 is read, the member ignored
        let ok = r#"{"scheduleId": 1, "seatNumber": 9, "note": "\u00e9 é"}"#;
        assert!(parse_object::<Pair>(ok.as_bytes()).is_ok());
    }

    #[test]
    fn only_objects_are_read() {
        assert_eq!(
            parse_object::<Pair>(br#" {"scheduleId": 1, "seatNumber": 9}"#).unwrap(),
            Pair {
                schedule_id: 1,
                seat_number: 9
            }
        );
        for body in [&b"[1, 9]"[..], b"null", b"", b"  ", b"7", b"\"x\""] {
            let e = parse_object::<Pair>(body).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{body:?}");
        }
        assert!(parse_object::<Pair>(br#"{"scheduleId": 1, "seatNumber": 9} x"#).is_err());
        assert!(parse_object::<Pair>(br#"{"scheduleId": 1.0, "seatNumber": 9}"#).is_err());
    }
}
