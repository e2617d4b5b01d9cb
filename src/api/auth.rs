//! Bearer authentication with the operator token, as an extractor: a handler that takes
//! an [`Operator`] cannot run without a valid `Authorization: Bearer <token>`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, Shared};

/// Proof that the request carried the operator token.
pub struct Operator;

impl FromRequestParts<Shared> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "Authorization: Bearer <token> required (the token is in <home>/operator.token).",
            ));
        };
        let presented = bearer(value.as_bytes()).ok_or_else(|| {
            ApiError::unauthenticated(
                "Authorization: Bearer <token> required (the token is in <home>/operator.token).",
            )
        })?;
        if presented.is_empty() {
            return Err(ApiError::unauthenticated("empty bearer token."));
        }
        if !state.token.matches(presented) {
            return Err(ApiError::unauthenticated(
                "the bearer token is not this hub's operator token (<home>/operator.token).",
            ));
        }
        Ok(Operator)
    }
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 7235), trimmed.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = &value[6..];
    if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn parses_the_bearer_scheme_only() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER\tabc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer"), Some(&b""[..]));
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
