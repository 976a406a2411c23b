//! The one error type of the HTTP layer and its JSON envelope:
//! `{"error": {"statusCode", "name", "code", "message"}}`.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::apps::AppError;
use crate::events::InboxError;
use crate::functions::FunctionError;
use crate::store::StoreError;

/// The error envelope (ARC SaaS clients read `error.statusCode` and `error.message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    #[schema(example = 400)]
    pub status_code: u16,
    /// LoopBack-style error name, e.g. `BadRequestError`.
    #[schema(example = "BadRequestError")]
    pub name: &'static str,
    /// Stable snake_case code.
    #[schema(example = "unsupported_event_type")]
    pub code: &'static str,
    /// A sentence for humans.
    #[schema(example = "Unsupported event type: FOO")]
    pub message: String,
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 503s.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    fn from_store(err: &StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, "conflict", message.clone())
            }
            StoreError::Unavailable(_) => {
                Self::unavailable("the store is unavailable; retry later")
            }
            // Whatever else kept the store from answering is on the store's side, not the
            // client's: a 503 the client may retry, never a bare 500.
            StoreError::Other(_) => {
                tracing::error!(request_id = %super::request_id::current(), error = %err, cause = %crate::support::error_chain(err), "store error");
                Self::unavailable("the store failed; retry later")
            }
        }
    }
}

fn name_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "UnauthorizedError",
        404 => "NotFoundError",
        405 => "MethodNotAllowedError",
        409 => "ConflictError",
        413 => "PayloadTooLargeError",
        415 => "UnsupportedMediaTypeError",
        502 => "BadGatewayError",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    }
}

impl ApiError {
    /// The envelope (also what an operation that failed keeps).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                status_code: self.status.as_u16(),
                name: name_of(self.status),
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::from_store(&err)
    }
}

/// Recording an event is the write path clients retry on: whatever kept the
/// store from recording it is a `503` with `Retry-After` (as every store
/// failure is), never an acknowledgement and never a bare `500`.
impl From<InboxError> for ApiError {
    fn from(err: InboxError) -> Self {
        Self::from_store(&err.0)
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Invalid(message) => Self::bad_request("invalid_app", message),
            AppError::TooLarge(message) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            err @ (AppError::NotFound(_) | AppError::Missing(_)) => {
                Self::not_found(err.to_string())
            }
            AppError::Io(message) => {
                tracing::error!(request_id = %super::request_id::current(), error = %message, "writing an app's code failed");
                Self::unavailable("the app's code could not be written; retry later")
            }
            AppError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            AppError::Store(err) => Self::from_store(&err),
            AppError::Backend(FunctionError::Conflict(message)) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            AppError::Backend(FunctionError::NotFound) => {
                Self::not_found("the function does not exist")
            }
            // The backend's own words go to the log (and the app's `lastError`),
            // not into a 5xx body.
            AppError::Backend(err @ FunctionError::Unavailable { .. }) => {
                tracing::error!(request_id = %super::request_id::current(), error = %err, cause = %crate::support::error_chain(&err), "function backend unavailable");
                Self::unavailable("the function backend is unavailable; retry later")
            }
            AppError::Backend(err) => {
                tracing::error!(request_id = %super::request_id::current(), error = %err, cause = %crate::support::error_chain(&err), "function backend failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "function_backend",
                    "the function backend failed; the service log has the details",
                )
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than 1 MiB",
            )
        } else {
            Self::bad_request("invalid_body", rejection.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_failure_is_a_retryable_503() {
        for err in [
            StoreError::Unavailable(anyhow::anyhow!("pool timed out")),
            StoreError::Other(anyhow::anyhow!("disk I/O error")),
        ] {
            let response = ApiError::from(err).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        let conflict = ApiError::from(StoreError::Conflict("changed".into())).into_response();
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert!(conflict.headers().get(header::RETRY_AFTER).is_none());
    }
}
