//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// How local functions are confined: `sandbox`, or `none` (unconfined);
    /// absent when functions do not run on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "sandbox")]
    pub isolation: Option<&'static str>,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        isolation: state.isolation,
    })
}

/// 200 when the store answers and takes writes, else 503 (with `Retry-After`).
///
/// The store proves it takes writes by updating a heartbeat row (at most once
/// a second); SQLite also checks that its file and WAL are still the files at
/// their paths and writable (not removed, replaced or made read-only).
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "Store unavailable or not taking writes", body = ErrorBody))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health {
            status: "ready",
            isolation: None,
        })),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            Err(ApiError::unavailable(
                "the store is not answering or cannot take writes",
            ))
        }
    }
}
