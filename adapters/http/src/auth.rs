//! Who is connecting: a username from the request (auth `none`) or from an HS256 JWT (auth
//! `jwt`).

use banter_domain::Username;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use poem::http::HeaderMap;
use serde::Deserialize;

/// How clients prove who they are.
#[derive(Clone)]
pub enum AuthMode {
    /// Clients say who they are (`?username=`, or `username` in a REST body).
    None,
    /// Clients present an HS256 JWT whose `sub` is the username; `exp` is required.
    Jwt { key: DecodingKey },
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMode::None => f.write_str("AuthMode::None"),
            AuthMode::Jwt { .. } => f.write_str("AuthMode::Jwt { key: <secret> }"),
        }
    }
}

impl AuthMode {
    pub fn jwt(secret: &[u8]) -> Self {
        AuthMode::Jwt {
            key: DecodingKey::from_secret(secret),
        }
    }
}

/// Why a token was refused (the `detail` of the 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "a bearer token is required (Authorization: Bearer <jwt>, or ?token= on the WebSocket)"
    )]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token must be an HS256 JWT")]
    Algorithm,
    #[error("the token has no exp claim")]
    MissingExpiry,
    #[error("the token's sub is not a valid username: {0}")]
    Subject(String),
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    // Optional here so a missing claim is reported as such, not as a parse error.
    exp: Option<u64>,
}

/// Checks a JWT and returns its subject as a username.
///
/// # Errors
/// [`AuthError`] for any other algorithm, a bad signature, an expired token or a missing or
/// invalid `sub`.
pub fn verify(key: &DecodingKey, token: &str) -> Result<Username, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    // An expired token is refused at once: no grace for clock skew.
    validation.leeway = 0;
    validation.validate_aud = false;
    let data = decode::<Claims>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::MissingExpiry,
            _ => AuthError::Invalid(e.to_string()),
        }
    })?;
    if data.claims.exp.is_none() {
        return Err(AuthError::MissingExpiry);
    }
    let sub = data
        .claims
        .sub
        .ok_or_else(|| AuthError::Subject("missing".to_owned()))?;
    Username::parse(&sub).map_err(|e| AuthError::Subject(e.to_string()))
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn token(alg: Algorithm, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn check(t: &str) -> Result<Username, AuthError> {
        verify(&DecodingKey::from_secret(SECRET), t)
    }

    #[test]
    fn a_valid_token_names_the_user() {
        let t = token(
            Algorithm::HS256,
            json!({"sub": "Émile", "exp": get_current_timestamp() + 60}),
        );
        assert_eq!(check(&t).unwrap().as_str(), "Émile");
    }

    #[test]
    fn refusals() {
        let later = get_current_timestamp() + 60;
        let expired = token(
            Algorithm::HS256,
            json!({"sub": "alice", "exp": get_current_timestamp() - 3600}),
        );
        assert_eq!(check(&expired), Err(AuthError::Expired));
        let no_exp = token(Algorithm::HS256, json!({"sub": "alice"}));
        assert_eq!(check(&no_exp), Err(AuthError::MissingExpiry));
        let hs384 = token(Algorithm::HS384, json!({"sub": "alice", "exp": later}));
        assert_eq!(check(&hs384), Err(AuthError::Algorithm));
        let bad_sub = token(Algorithm::HS256, json!({"sub": "not valid!", "exp": later}));
        assert!(matches!(check(&bad_sub), Err(AuthError::Subject(_))));
        let no_sub = token(Algorithm::HS256, json!({"exp": later}));
        assert!(matches!(check(&no_sub), Err(AuthError::Subject(_))));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "alice", "exp": later}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert!(matches!(check(&forged), Err(AuthError::Invalid(_))));
        assert!(matches!(check("garbage"), Err(AuthError::Invalid(_))));
        // alg "none": an unsigned token.
        assert!(check("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.").is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            poem::http::header::AUTHORIZATION,
            "Bearer abc.def".parse().unwrap(),
        );
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert(
            poem::http::header::AUTHORIZATION,
            "bearer xyz".parse().unwrap(),
        );
        assert_eq!(bearer_token(&headers), Some("xyz"));
        headers.insert(
            poem::http::header::AUTHORIZATION,
            "Basic xyz".parse().unwrap(),
        );
        assert_eq!(bearer_token(&headers), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any string as a token is refused (or, never here, accepted) without a panic.
            #[test]
            fn arbitrary_tokens_are_refused(raw in any::<String>()) {
                prop_assert!(check(&raw).is_err());
            }

            /// A signed token names its user only when `sub` is a valid username and it has
            /// not expired.
            #[test]
            fn a_signed_token_is_accepted_exactly_when_its_claims_are_valid(
                sub in prop_oneof![
                    Just("alice".to_owned()),
                    Just("名前.x-1".to_owned()),
                    Just(String::new()),
                    any::<String>(),
                ],
                seconds_left in -100i64..100,
            ) {
                let exp = get_current_timestamp().saturating_add_signed(seconds_left);
                let t = token(Algorithm::HS256, json!({"sub": sub, "exp": exp}));
                let valid_name = Username::parse(&sub).is_ok();
                match check(&t) {
                    Ok(user) => {
                        prop_assert!(valid_name && seconds_left >= 0);
                        prop_assert_eq!(user.as_str(), sub.as_str());
                    }
                    // Within a second of expiry either answer is right.
                    Err(_) => prop_assert!(!valid_name || seconds_left <= 1),
                }
            }
        }
    }
}
