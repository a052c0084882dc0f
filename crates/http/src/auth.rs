//! Bearer-token authentication. The service is a resource server: it
//! verifies HS256 JWTs signed with a shared secret by whoever issues them
//! (an identity provider in a real deployment); [`Auth::issue`] exists for
//! the `app token` command and for tests.
//!
//! A token is accepted when its signature is valid, `exp` is present and
//! not past, `nbf` (if present) is not in the future (no leeway either
//! way), `iss`/`aud` match when an issuer/audience is configured, and `sub`
//! is a positive user id written in canonical decimal (`"42"`, never
//! `"+42"`, `"042"` or the number `42`). `role: "admin"` marks an operator.

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

/// The `role` claim value of an operator.
pub const ADMIN_ROLE: &str = "admin";

/// What a token must also carry, beyond signature, `sub` and `exp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthOptions {
    /// When set, `iss` must equal it (and issued tokens carry it).
    pub issuer: Option<String>,
    /// When set, `aud` must contain it (and issued tokens carry it).
    pub audience: Option<String>,
}

/// The claims [`Auth::issue`] signs.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    sub: String,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// The claims read from a token (`exp`, `nbf`, `iss` and `aud` are checked
/// by the JWT library).
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    role: Option<serde_json::Value>,
}

/// Signs and verifies bearer tokens with one HS256 secret. Its `Debug`
/// output never shows the secret.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    options: AuthOptions,
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
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token's subject is not a user id")]
    BadSubject,
    #[error("the token's issuer is not accepted")]
    BadIssuer,
    #[error("the token's audience is not accepted")]
    BadAudience,
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::invalid_token(e.to_string())
    }
}

impl Auth {
    /// Verifies and signs with `secret` (HS256) under `options`.
    pub fn new(secret: &[u8], options: AuthOptions) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        match &options.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &options.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            options,
        }
    }

    /// A token for `user` (with the admin role when `admin`) that expires
    /// `ttl` from now, carrying the configured issuer and audience.
    pub fn issue(&self, user: UserId, ttl: Duration, admin: bool) -> String {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let expires_at = Utc::now()
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sign(user, expires_at, admin)
    }

    /// A non-admin token for `user` that expires at `expires_at` (in the
    /// past gives an expired token, which tests use).
    pub fn issue_until(&self, user: UserId, expires_at: DateTime<Utc>) -> String {
        self.sign(user, expires_at, false)
    }

    fn sign(&self, user: UserId, expires_at: DateTime<Utc>, admin: bool) -> String {
        let claims = IssuedClaims {
            sub: user.to_string(),
            exp: expires_at.timestamp(),
            iat: Utc::now().timestamp(),
            role: admin.then_some(ADMIN_ROLE),
            iss: self.options.issuer.as_deref(),
            aud: self.options.audience.as_deref(),
        };
        // HMAC signing of a struct of strings and integers cannot fail:
        // serialization is infallible and HMAC accepts any key length.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims is infallible")
    }

    /// The caller a token names, if it passes every check.
    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::BadIssuer,
                ErrorKind::InvalidAudience => TokenError::BadAudience,
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Malformed("the algorithm must be HS256".into())
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Malformed(format!("missing claim {claim}"))
                }
                _ => TokenError::Malformed("not a valid JWT".into()),
            })?;
        let id = canonical_user_id(&data.claims.sub).ok_or(TokenError::BadSubject)?;
        let admin = data
            .claims
            .role
            .as_ref()
            .is_some_and(|role| role.as_str() == Some(ADMIN_ROLE));
        Ok(AuthUser { id, admin })
    }

    /// The caller of a request from its `Authorization: Bearer` header.
    fn authenticate(&self, req: &HttpRequest) -> Result<AuthUser, ApiError> {
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
            .ok_or_else(|| ApiError::invalid_token("expected Authorization: Bearer TOKEN"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::invalid_token(
                "expected Authorization: Bearer TOKEN",
            ));
        }
        Ok(self.verify(token.trim())?)
    }
}

/// A positive user id in canonical decimal form: digits only, no sign, no
/// leading zero.
fn canonical_user_id(sub: &str) -> Option<UserId> {
    let canonical =
        !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit()) && !sub.starts_with('0');
    if !canonical {
        return None;
    }
    sub.parse::<i64>().ok().and_then(|id| UserId::new(id).ok())
}

/// Extractor: the authenticated caller. Refuses the request with 401
/// `unauthorized` (and a `WWW-Authenticate: Bearer` challenge) when the
/// token is missing or fails a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    /// The token carries `role: "admin"`.
    pub admin: bool,
}

/// Extractor: an authenticated caller with the admin role. 401 without a
/// valid token, 403 `forbidden` with a valid token that lacks the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin(pub UserId);

fn caller(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.auth.authenticate(req),
        None => Err(ApiError::internal(&anyhow::anyhow!(
            "AppState is not registered as app data"
        ))),
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req))
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req).and_then(|user| {
            if user.admin {
                Ok(Admin(user.id))
            } else {
                Err(ApiError::forbidden(
                    "this operation needs a token with the admin role",
                ))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn auth() -> Auth {
        Auth::new(SECRET, AuthOptions::default())
    }

    fn user(id: u64) -> UserId {
        UserId::from(id)
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn later() -> i64 {
        Utc::now().timestamp() + 60
    }

    #[test]
    fn issued_tokens_verify() {
        let token = auth().issue(user(42), Duration::from_secs(60), false);
        assert_eq!(
            auth().verify(&token),
            Ok(AuthUser {
                id: user(42),
                admin: false
            })
        );
        let admin = auth().issue(user(1), Duration::from_secs(60), true);
        assert_eq!(
            auth().verify(&admin),
            Ok(AuthUser {
                id: user(1),
                admin: true
            })
        );
    }

    #[test]
    fn only_the_admin_role_is_admin() {
        for (role, admin) in [
            (serde_json::json!("admin"), true),
            (serde_json::json!("Admin"), false),
            (serde_json::json!("user"), false),
            (serde_json::json!(["admin"]), false),
            (serde_json::json!(null), false),
        ] {
            let token = signed(serde_json::json!({"sub": "5", "exp": later(), "role": role}));
            assert_eq!(auth().verify(&token).map(|u| u.admin), Ok(admin), "{role}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let token = auth().issue_until(user(42), Utc::now() - chrono::Duration::seconds(5));
        assert_eq!(auth().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_not_valid_yet_are_refused_without_leeway() {
        let now = Utc::now().timestamp();
        let future = signed(serde_json::json!({"sub": "5", "exp": now + 600, "nbf": now + 30}));
        assert_eq!(auth().verify(&future), Err(TokenError::NotYetValid));
        let past = signed(serde_json::json!({"sub": "5", "exp": now + 600, "nbf": now - 1}));
        assert!(auth().verify(&past).is_ok());
    }

    #[test]
    fn forged_tokens_are_refused() {
        let token = Auth::new(b"another-secret", AuthOptions::default()).issue(
            user(42),
            Duration::from_secs(60),
            true,
        );
        assert_eq!(auth().verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!(matches!(
            auth().verify("not-a-jwt"),
            Err(TokenError::Malformed(_))
        ));
        let none = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub": "5", "exp": later()}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            auth().verify(&none),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn subjects_must_be_positive_integers_in_canonical_form() {
        for sub in [
            "abc", "0", "-3", "1.5", "", "+8101", "08101", " 7", "7 ", "1e3",
        ] {
            let token = signed(serde_json::json!({ "sub": sub, "exp": later() }));
            assert_eq!(
                auth().verify(&token),
                Err(TokenError::BadSubject),
                "{sub:?}"
            );
        }
        let big = signed(serde_json::json!({ "sub": "99999999999999999999", "exp": later() }));
        assert_eq!(auth().verify(&big), Err(TokenError::BadSubject));
        let numeric = signed(serde_json::json!({ "sub": 7, "exp": later() }));
        assert!(matches!(
            auth().verify(&numeric),
            Err(TokenError::Malformed(_))
        ));
        let ok = signed(serde_json::json!({ "sub": "8101", "exp": later() }));
        assert_eq!(auth().verify(&ok).map(|u| u.id), Ok(user(8101)));
    }

    #[test]
    fn exp_and_sub_are_required() {
        let token = signed(serde_json::json!({ "sub": "7" }));
        assert!(matches!(
            auth().verify(&token),
            Err(TokenError::Malformed(_))
        ));
        let token = signed(serde_json::json!({ "exp": later() }));
        assert!(matches!(
            auth().verify(&token),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = Auth::new(
            SECRET,
            AuthOptions {
                issuer: Some("https://id.example".into()),
                audience: Some("concert-api".into()),
            },
        );
        let own = strict.issue(user(3), Duration::from_secs(60), false);
        assert_eq!(strict.verify(&own).map(|u| u.id), Ok(user(3)));
        // a plain token lacks both
        let plain = auth().issue(user(3), Duration::from_secs(60), false);
        assert!(matches!(
            strict.verify(&plain),
            Err(TokenError::Malformed(_))
        ));
        let exp = later();
        let wrong_iss = signed(serde_json::json!({
            "sub": "3", "exp": exp, "iss": "https://evil.example", "aud": "concert-api"
        }));
        assert_eq!(strict.verify(&wrong_iss), Err(TokenError::BadIssuer));
        let wrong_aud = signed(serde_json::json!({
            "sub": "3", "exp": exp, "iss": "https://id.example", "aud": "other"
        }));
        assert_eq!(strict.verify(&wrong_aud), Err(TokenError::BadAudience));
        let listed_aud = signed(serde_json::json!({
            "sub": "3", "exp": exp, "iss": "https://id.example", "aud": ["other", "concert-api"]
        }));
        assert!(strict.verify(&listed_aud).is_ok());
        // without configuration, iss and aud are not checked
        assert!(auth().verify(&own).is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(format!("{:?}", auth()), "Auth { .. }");
    }
}
