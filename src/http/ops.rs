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
use crate::store::{AppStatus, EventStatus};

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

/// Longest a scrape waits for the store's counts; past it the store-backed
/// gauges keep their last values (and the failure is counted).
const CENSUS_TIMEOUT: Duration = Duration::from_secs(2);

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
    // A scrape must answer within Prometheus's timeout, whatever the store does.
    let census = tokio::time::timeout(CENSUS_TIMEOUT, state.store.census()).await;
    let gauges = match census {
        Ok(Ok(census)) => Some(crate::telemetry::metrics::StoreGauges {
            events: every_status(EventStatus::ALL, &census.events),
            oldest_waiting: census.oldest_waiting_at_ms.map(|at| {
                Duration::from_millis(
                    u64::try_from(crate::support::now_ms() - at).unwrap_or_default(),
                )
            }),
            apps: every_status(AppStatus::ALL, &census.apps),
            running_jobs: census.running_jobs,
            pool_size: census.pool_size,
            pool_idle: census.pool_idle,
        }),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics: could not read the store's counts");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: the store's counts took longer than {CENSUS_TIMEOUT:?}");
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

/// A count for every status, 0 for those the store has none of (so a status
/// that emptied reads 0 instead of vanishing).
fn every_status<S: Copy + PartialEq + std::fmt::Display>(
    all: &[S],
    counts: &[(S, i64)],
) -> Vec<(String, i64)> {
    all.iter()
        .map(|status| {
            let count = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            (status.to_string(), count)
        })
        .collect()
}
