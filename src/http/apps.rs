//! `/apps`: the app-orchestrator management API.

use axum::extract::State;
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::apps::{AppStatusView, AppView, DeployRequest};

/// Largest deploy request: a 50 MB zip, base64-encoded, plus JSON.
pub const MAX_DEPLOY_BYTES: usize = 72 * 1024 * 1024;

/// Create or update an app from a zipped Lambda handler.
///
/// Unpacks and checks the archive, then stores it as a new version (earlier
/// ones are kept) and serves it at `<name>.<base_domain>`. A refused archive
/// leaves nothing behind: no version, no files, the served version serving.
#[utoipa::path(
    post, path = "/apps/deploy", tag = "apps",
    request_body = DeployRequest,
    responses(
        (status = 200, description = "Deployed and active", body = AppView),
        (status = 400, description = "Invalid name, settings or archive", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "Another deploy of this app is in progress, or another replica changed the app while this one ran", body = ErrorBody),
        (status = 413, description = "Archive over 50 MB zipped or 250 MB unzipped", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store unavailable, or the code could not be written; retry (see Retry-After)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn deploy(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(state.apps.deploy(request).await?))
}

/// Every app.
#[utoipa::path(get, path = "/apps", tag = "apps",
    responses((status = 200, body = Vec<AppView>), (status = 401, body = ErrorBody)), security((), ("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<AppView>>, ApiError> {
    Ok(Json(state.apps.list().await?))
}

/// One app, with its versions.
#[utoipa::path(get, path = "/apps/{name}", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(state.apps.get(&name).await?))
}

/// `{name, status}`.
#[utoipa::path(get, path = "/apps/{name}/status", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppStatusView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppStatusView>, ApiError> {
    Ok(Json(state.apps.status(&name).await?))
}

/// Serve the app again.
#[utoipa::path(post, path = "/apps/{name}/activate", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppStatusView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn activate(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppStatusView>, ApiError> {
    Ok(Json(state.apps.activate(&name).await?))
}

/// Stop serving the app (the proxy answers 404) and stop its workers.
#[utoipa::path(post, path = "/apps/{name}/deactivate", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppStatusView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn deactivate(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppStatusView>, ApiError> {
    Ok(Json(state.apps.deactivate(&name).await?))
}

/// Remove the app's function; its record and versions stay, with status `REMOVED`.
#[utoipa::path(post, path = "/apps/{name}/remove", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppStatusView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppStatusView>, ApiError> {
    Ok(Json(state.apps.remove(&name).await?))
}

/// Checks the app's function against the platform now (AWS Lambda): a function
/// deleted or failed outside the service makes the app `ERROR`, with the reason.
#[utoipa::path(post, path = "/apps/{name}/sync", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = AppView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn sync(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AppView>, ApiError> {
    Ok(Json(state.apps.sync(&name).await?))
}
