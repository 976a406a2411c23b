//! Extractors whose rejections use our error envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `Query<T>` answering bad query strings with a 400 envelope.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(Query::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// `Path<T>` answering bad path segments with a 400 envelope.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(Path::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// The raw body, within the router's body limit (413 envelope beyond it).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(Bytes::from_request(req, state).await?))
    }
}

/// `Json<T>` answering malformed, mistyped or oversized bodies with our envelope.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                // Malformed and mistyped bodies are both 400 here (axum says 422 for the latter).
                let (status, code) = match rejection.status().as_u16() {
                    413 => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
                    415 => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                    _ => (StatusCode::BAD_REQUEST, "invalid_body"),
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}
