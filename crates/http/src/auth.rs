//! Bearer-token authentication: HS256 JWTs whose `sub` claim is the user id.
//! The service is a resource server: it verifies tokens; [`Auth::issue`]
//! exists for the `app token` command and for tests.

use std::fmt;
use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{DateTime, Utc};
use concert_domain::UserId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// The claims this service signs and requires.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, a positive integer written as a string.
    sub: String,
    /// Expiry, seconds since the epoch (required).
    exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// Signs and verifies bearer tokens with one HS256 secret. Its `Debug`
/// output never shows the secret.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// Why a token was refused (the 401's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token's subject is not a user id")]
    BadSubject,
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::invalid_token(e.to_string())
    }
}

impl Auth {
    /// Verifies and signs with `secret` (HS256). Tokens must carry `exp`;
    /// an expired token is refused with no leeway.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token for `user` that expires `ttl` from now.
    pub fn issue(&self, user: UserId, ttl: Duration) -> String {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = Utc::now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.issue_until(user, expires_at)
    }

    /// A token for `user` that expires at `expires_at` (in the past gives
    /// an expired token, which tests use).
    pub fn issue_until(&self, user: UserId, expires_at: DateTime<Utc>) -> String {
        let claims = Claims {
            sub: user.to_string(),
            exp: expires_at.timestamp(),
            iat: Some(Utc::now().timestamp()),
        };
        // HMAC signing of a struct of a string and integers cannot fail:
        // serialization is infallible and HMAC accepts any key length.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims is infallible")
    }

    /// The user a token names, if its signature, expiry and subject are valid.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Malformed("algorithm must be HS256".into())
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Malformed(format!("missing claim {claim}"))
                }
                _ => TokenError::Malformed("not a valid JWT".into()),
            })?;
        data.claims
            .sub
            .parse::<i64>()
            .ok()
            .and_then(|id| UserId::new(id).ok())
            .ok_or(TokenError::BadSubject)
    }

    /// The user of a request from its `Authorization: Bearer` header.
    fn authenticate(&self, req: &HttpRequest) -> Result<UserId, ApiError> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or_else(ApiError::missing_token)?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid_token("the Authorization header is not ASCII"))?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| ApiError::invalid_token("expected `Authorization: Bearer <token>`"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::invalid_token(
                "expected `Authorization: Bearer <token>`",
            ));
        }
        Ok(self.verify(token.trim())?)
    }
}

/// Extractor: the authenticated user of the request. Refuses the request
/// with 401 `unauthorized` (and a `WWW-Authenticate: Bearer` challenge) when
/// the token is missing, malformed, forged, expired, or its `sub` is not a
/// positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let outcome = match req.app_data::<web::Data<AppState>>() {
            Some(state) => state.auth.authenticate(req).map(AuthUser),
            None => Err(ApiError::internal(&anyhow::anyhow!(
                "AppState is not registered as app data"
            ))),
        };
        ready(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(b"test-secret")
    }

    #[test]
    fn issued_tokens_verify() {
        let token = auth().issue(UserId::from(42), Duration::from_secs(60));
        assert_eq!(auth().verify(&token), Ok(UserId::from(42)));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = auth().issue_until(UserId::from(42), Utc::now() - chrono::Duration::seconds(5));
        assert_eq!(auth().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let token = Auth::new(b"another-secret").issue(UserId::from(42), Duration::from_secs(60));
        assert_eq!(auth().verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!(matches!(
            auth().verify("not-a-jwt"),
            Err(TokenError::Malformed(_))
        ));
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap()
    }

    #[test]
    fn subjects_must_be_positive_integers() {
        let exp = Utc::now().timestamp() + 60;
        for sub in ["abc", "0", "-3", "1.5", ""] {
            let token = signed(serde_json::json!({ "sub": sub, "exp": exp }));
            assert_eq!(auth().verify(&token), Err(TokenError::BadSubject), "{sub}");
        }
        let numeric = signed(serde_json::json!({ "sub": 7, "exp": exp }));
        assert!(matches!(
            auth().verify(&numeric),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn exp_is_required() {
        let token = signed(serde_json::json!({ "sub": "7" }));
        assert!(matches!(
            auth().verify(&token),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(format!("{:?}", auth()), "Auth { .. }");
    }
}
