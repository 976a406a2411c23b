//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
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

/// Prometheus metrics, in the Prometheus text format (0.0.4), or OpenMetrics
/// when the scraper's `Accept` names `application/openmetrics-text`. Needs an
/// API token when tokens are configured (Prometheus sends it as a bearer
/// token). Inbox, app and running-job gauges are read from the store.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let gauges = match state.store.census().await {
        Ok(census) => Some(crate::telemetry::metrics::StoreGauges {
            events: census
                .events
                .iter()
                .map(|(s, n)| (s.as_str(), *n))
                .collect(),
            oldest_waiting: census.oldest_waiting_at_ms.map(|at| {
                Duration::from_millis(
                    u64::try_from(crate::support::now_ms() - at).unwrap_or_default(),
                )
            }),
            apps: census.apps.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            running_jobs: census.running_jobs,
            pool_size: census.pool_size,
            pool_idle: census.pool_idle,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: could not read the store's counts");
            None
        }
    };
    state.metrics.set_store_gauges(gauges);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        crate::telemetry::metrics::OPENMETRICS_TEXT
    } else {
        crate::telemetry::metrics::PROMETHEUS_TEXT
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        state.metrics.encode(openmetrics),
    )
        .into_response()
}
