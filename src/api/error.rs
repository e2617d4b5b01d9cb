//! The control API's error answers: a status plus `{error, error_description}` JSON.
//!
//! The status follows from the [`ErrorCode`] (one table, [`status_of`]), so a code cannot be
//! sent with two different statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::wire::{ErrorBody, ErrorCode};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable code; decides the HTTP status.
    pub code: ErrorCode,
    /// Sentence for humans.
    pub description: String,
    /// `Allow` header for a 405.
    allow: Option<&'static str>,
}

/// The HTTP status of each code.
pub(crate) fn status_of(code: &ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::NotFound | ErrorCode::NotSupervised => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadRequest | ErrorCode::NotInstalled => StatusCode::BAD_REQUEST,
        ErrorCode::NoStartCmd | ErrorCode::InvalidModule => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ShuttingDown | ErrorCode::Upgrading => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UpgradeRefused | ErrorCode::UpgradeBinaryUnusable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UpgradeInProgress => StatusCode::CONFLICT,
        ErrorCode::ModuleOpFailed | ErrorCode::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> ApiError {
        ApiError { code, description: description.into(), allow: None }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        status_of(&self.code)
    }

    /// 400 `bad_request`.
    pub fn bad_request(description: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, description)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(description: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, description)
    }

    /// 404 `not_supervised`.
    pub fn not_supervised(short: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NotSupervised,
            format!(
                "{short} is not currently supervised by this hub; start it first (it must have a services.json entry)."
            ),
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError { allow: Some(allow), ..ApiError::new(ErrorCode::MethodNotAllowed, format!("use {allow}")) }
    }

    /// 404 `not_found`.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("there is no control API route at {path}."))
    }

    /// 503 `shutting_down`.
    pub fn shutting_down() -> ApiError {
        ApiError::new(
            ErrorCode::ShuttingDown,
            "the hub is shutting down and starts no modules; start it again first.",
        )
    }

    /// 503 `upgrading`.
    pub fn upgrading() -> ApiError {
        ApiError::new(
            ErrorCode::Upgrading,
            "the hub is handing over to a new build of itself (an in-place upgrade); retry in a moment.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody { error: self.code, error_description: self.description };
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
