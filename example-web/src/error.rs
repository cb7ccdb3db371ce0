//! The app's one error type: a status and `{code, message}` for the API,
//! the same refusals as pages for the browser.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Errors as the API answers them: a status and `{code, message}`.
#[derive(Debug)]
pub(crate) struct AppError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    /// Structured detail from a device's error (a batch's problems).
    pub(crate) details: Option<Value>,
}

impl AppError {
    pub(crate) fn invalid(field: &str, message: &str) -> Self {
        AppError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_input".into(),
            message: format!("{field}: {message}"),
            details: None,
        }
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        AppError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized".into(),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn forbidden(code: &str, message: &str) -> Self {
        AppError {
            status: StatusCode::FORBIDDEN,
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }

    /// Nothing of the caller's by that name: `code` says what (`token_not_found`).
    pub(crate) fn not_found(code: &str, message: String) -> Self {
        AppError {
            status: StatusCode::NOT_FOUND,
            code: code.into(),
            message,
            details: None,
        }
    }

    pub(crate) fn internal(detail: String) -> Self {
        tracing::error!(%detail, "internal error");
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal".into(),
            message: "something went wrong on the server; try again".into(),
            details: None,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::internal(e.to_string())
    }
}

impl From<fusion_host_server::StoreError> for AppError {
    fn from(e: fusion_host_server::StoreError) -> Self {
        AppError::internal(e.to_string())
    }
}

impl From<fusion_host_server::Error> for AppError {
    fn from(e: fusion_host_server::Error) -> Self {
        AppError {
            status: e.status(),
            code: e.code().to_string(),
            message: e.to_string(),
            details: e.to_body().details,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(match self.details {
                Some(details) => json!({ "code": self.code, "message": self.message, "details": details }),
                None => json!({ "code": self.code, "message": self.message }),
            }),
        )
            .into_response()
    }
}
