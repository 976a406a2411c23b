//! `/tenants` and `/jobs`: what the orchestrator knows of each tenant.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::store::{JobId, JobRecord, TenantId, TenantRecord};
use crate::tenants::view::{JobView, TenantView, TimelineView};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTenants {
    /// Only tenants with this status (`PROVISIONING`, `ACTIVE`, `PROVISIONFAILED`,
    /// `DEPROVISIONING`, `INACTIVE`, `SUSPENDED`), as `status` shows it.
    pub status: Option<String>,
    /// At most this many (default 100, at most 1000), most recently updated first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// At most this many recorded steps (default 100, at most 1000), the newest kept; the jobs come in addition.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A running job's live log tail where the builder can read it; otherwise the stored one.
async fn job_view(state: &AppState, job: JobRecord) -> JobView {
    let live = state.builder.live_log(&job).await;
    JobView::new(job, live)
}

async fn tenant_view(state: &AppState, tenant: TenantRecord) -> Result<TenantView, ApiError> {
    let mut jobs = Vec::new();
    for job in state.store.jobs_for_tenant(&tenant.id).await? {
        jobs.push(job_view(state, job).await);
    }
    let callback = match &tenant.callback_event_id {
        Some(id) => state.store.get_event(id).await?,
        None => None,
    };
    Ok(TenantView::new(tenant, jobs, callback))
}

/// List tenants, most recently updated first.
#[utoipa::path(
    get, path = "/tenants", tag = "tenants", params(ListTenants),
    responses((status = 200, body = Vec<TenantView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = []))
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListTenants>,
) -> Result<Json<Vec<TenantView>>, ApiError> {
    let states = match &query.status {
        Some(status) => {
            let states = crate::tenants::view::states_with_status(status);
            if states.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown status '{status}': use PROVISIONING, ACTIVE, PROVISIONFAILED, DEPROVISIONING, INACTIVE or SUSPENDED"),
                ));
            }
            states
        }
        None => Vec::new(),
    };
    let mut views = Vec::new();
    for tenant in state
        .store
        .list_tenants(&states, super::limit(query.limit)?)
        .await?
    {
        views.push(tenant_view(&state, tenant).await?);
    }
    Ok(Json(views))
}

/// One tenant: status, tier, jobs, job output and webhook delivery.
#[utoipa::path(
    get, path = "/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = []))
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = state
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant '{id}'")))?;
    Ok(Json(tenant_view(&state, tenant).await?))
}

/// One build job: status, exit code, output and log tail.
#[utoipa::path(
    get, path = "/jobs/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobView>, ApiError> {
    match state.store.get_job(&id).await? {
        Some(job) => Ok(Json(job_view(&state, job).await)),
        None => Err(ApiError::not_found(format!("no job '{id}'"))),
    }
}

/// Why a tenant is where it is: every processing attempt of its events
/// (webhook deliveries included), every change of its state with the event
/// that caused it, and every job's start and end, oldest first.
#[utoipa::path(
    get, path = "/tenants/{id}/timeline", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id"), TimelineQuery),
    responses((status = 200, body = TimelineView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = []))
)]
pub async fn tenant_timeline(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<TimelineView>, ApiError> {
    let entries = state
        .store
        .timeline(&id, super::limit(query.limit)?)
        .await?;
    let jobs = state.store.jobs_for_tenant(&id).await?;
    if entries.is_empty() && jobs.is_empty() && state.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no tenant '{id}'")));
    }
    Ok(Json(TimelineView::new(entries, &jobs)))
}
