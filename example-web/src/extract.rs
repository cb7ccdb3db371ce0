//! The API's extractors: axum's `Json`, `Query` and `Path`, whose rejections
//! are answered as `{code, message}` like every other API error, and the
//! fallbacks for unknown routes and wrong methods.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A JSON body; rejections are [`AppError`]s.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(AppError::from)
    }
}

/// A query string; rejections are [`AppError`]s.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(AppError::from)
    }
}

/// Path parameters; rejections are [`AppError`]s.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(AppError::from)
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let (code, message) = match &rejection {
            JsonRejection::JsonSyntaxError(e) => (
                "invalid_json",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => (
                "invalid_input",
                format!("the body does not fit this route: {}", e.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => (
                "unsupported_media_type",
                "send the body as JSON with the header Content-Type: application/json".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => (
                "too_large",
                "the body is larger than the server accepts; send less".into(),
            ),
            other => ("invalid_request", other.body_text()),
        };
        AppError {
            status: rejection.status(),
            code: code.into(),
            message,
            details: None,
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query".into(),
            message: format!("the query string is not valid here: {}", rejection.body_text()),
            details: None,
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path".into(),
            message: format!("a path segment is not valid: {}", rejection.body_text()),
            details: None,
        }
    }
}

/// Whether `uri` is one of the JSON surfaces (the API, the device routes,
/// the live events) rather than a page.
fn is_api(uri: &Uri) -> bool {
    let path = uri.path();
    path == "/api" || path.starts_with("/api/") || path == "/events"
}

/// No route matched: JSON under `/api`, a plain page elsewhere.
pub(crate) async fn not_found(method: Method, uri: Uri) -> Response {
    if is_api(&uri) {
        AppError::not_found(
            "route_not_found",
            format!(
                "there is no {method} {}; see the JSON API in the README",
                uri.path()
            ),
        )
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found; go to /devices").into_response()
    }
}

/// A route matched but not its method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    if is_api(&uri) {
        AppError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed".into(),
            message: format!("{} does not take {method}", uri.path()),
            details: None,
        }
        .into_response()
    } else {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response()
    }
}
