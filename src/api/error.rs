//! The control API's error answers: a status plus `{error, error_description}` JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::wire::ErrorBody;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Sentence for humans.
    pub description: String,
    /// `Allow` header for a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
        ApiError { status, code, description: description.into(), allow: None }
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", description)
    }

    /// 404 `not_supervised`.
    pub fn not_supervised(short: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_supervised",
            format!(
                "{short} is not currently supervised by this hub; start it first (it must have a services.json entry)."
            ),
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("use {allow}"))
        }
    }

    /// 404 `not_found`.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("there is no control API route at {path}."))
    }

    /// 503 `shutting_down`.
    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the hub is shutting down and starts no modules; start it again first.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code.to_owned(), error_description: self.description };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
