//! `/apps`: the app-orchestrator management API.

use std::future::Future;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::apps::service::{
    AliasRequest, AliasView, DomainView, OperationView, RollbackRequest, RuntimesView,
};
use crate::apps::{AppError, AppStatusView, AppView, DeployRequest};

/// Largest deploy request: a 50 MB zip, base64-encoded, plus JSON.
pub const MAX_DEPLOY_BYTES: usize = 72 * 1024 * 1024;

/// `?wait=false`: answer at once with an operation to follow.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Default `true`: answer once the app is deployed. `false`: answer
    /// `202` with an operation (`GET /operations/{id}`).
    pub wait: Option<bool>,
}

/// Create or update an app from a zipped Lambda handler.
///
/// Unpacks and checks the archive, then stores it as a new version (earlier
/// ones are kept) and serves it at `<name>.<base_domain>`. A refused archive
/// leaves nothing behind: no version, no files, the served version serving.
/// With `?wait=false` it answers `202` at once with an operation.
#[utoipa::path(
    post, path = "/apps/deploy", tag = "apps",
    params(WaitParams),
    request_body = DeployRequest,
    responses(
        (status = 200, description = "Deployed and active", body = AppView),
        (status = 202, description = "Accepted (`?wait=false`): follow the operation", body = OperationAccepted),
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
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Response, ApiError> {
    if params.wait != Some(false) {
        return Ok(Json(state.apps.deploy(request).await?).into_response());
    }
    // What can be refused at once is.
    crate::apps::validate(&request, None)
        .map_err(|e| ApiError::bad_request("invalid_app", e.to_string()))?;
    let (apps, app) = (state.apps.clone(), request.name.clone());
    accepted(&state, &app, async move { apps.deploy(request).await }).await
}

/// `202 {"operation": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationAccepted {
    pub operation: OperationView,
}

/// Starts `deploy` as an operation of this process and answers `202` with it.
async fn accepted(
    state: &AppState,
    app: &str,
    deploy: impl Future<Output = Result<AppView, AppError>> + Send + 'static,
) -> Result<Response, ApiError> {
    let operation = state.apps.begin_operation("deploy", app).await?;
    let (apps, id) = (state.apps.clone(), operation.id.clone());
    tokio::spawn(async move {
        let work = async {
            match deploy.await {
                Ok(view) => Ok(serde_json::to_value(view).unwrap_or_default()),
                Err(err) => {
                    Err(serde_json::to_value(ApiError::from(err).body()).unwrap_or_default())
                }
            }
        };
        apps.run_operation(&id, work).await;
    });
    let location = format!("/operations/{}", operation.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(OperationAccepted { operation }),
    )
        .into_response())
}

/// An operation: `pending`, then `succeeded` with the app or `failed` with the error.
#[utoipa::path(get, path = "/operations/{id}", tag = "apps", params(("id" = String, Path)),
    responses((status = 200, body = OperationView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn operation(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OperationView>, ApiError> {
    Ok(Json(state.apps.operation(&id).await?))
}

/// The runtimes a deploy may name: on the local backend, the interpreters
/// found at start (a runtime whose version is missing is `available: false`,
/// and deploying it is a `400`); on Lambda, all of them.
#[utoipa::path(get, path = "/runtimes", tag = "apps",
    responses((status = 200, body = RuntimesView), (status = 401, body = ErrorBody)), security((), ("bearer" = [])))]
pub async fn runtimes(State(state): State<AppState>) -> Json<RuntimesView> {
    Json(state.apps.runtimes())
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

/// Every alias of the app, `live` first.
#[utoipa::path(get, path = "/apps/{name}/aliases", tag = "apps", params(("name" = String, Path)),
    responses((status = 200, body = Vec<AliasView>), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn aliases(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<AliasView>>, ApiError> {
    Ok(Json(state.apps.aliases(&name).await?))
}

/// Point an alias at a version, optionally sending a share of its requests
/// to a second version (a canary). `live` is what the app's host serves;
/// another alias is served at `<alias>--<name>.<base_domain>`.
#[utoipa::path(put, path = "/apps/{name}/aliases/{alias}", tag = "apps",
    params(("name" = String, Path), ("alias" = String, Path)),
    request_body = AliasRequest,
    responses(
        (status = 200, description = "The alias now", body = AliasView),
        (status = 400, description = "Invalid alias name, weight, or routing to the same version or to another payload format", body = ErrorBody),
        (status = 404, description = "No such app or version", body = ErrorBody),
        (status = 409, description = "The app was removed, or is changing", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn put_alias(
    State(state): State<AppState>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<AliasRequest>,
) -> Result<Json<AliasView>, ApiError> {
    Ok(Json(state.apps.put_alias(&name, &alias, request).await?))
}

/// Delete an alias (not `live`).
#[utoipa::path(delete, path = "/apps/{name}/aliases/{alias}", tag = "apps",
    params(("name" = String, Path), ("alias" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`live` cannot be deleted", body = ErrorBody),
        (status = 404, description = "No such app or alias", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn delete_alias(
    State(state): State<AppState>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.apps.delete_alias(&name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move `live` to a version already deployed (default: where it pointed
/// before), without uploading anything.
#[utoipa::path(post, path = "/apps/{name}/rollback", tag = "apps", params(("name" = String, Path)),
    request_body(content = Option<RollbackRequest>, description = "Optional; `{}` or no body rolls back to the previous version"),
    responses(
        (status = 200, description = "The app, `live` moved", body = AppView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such app or version", body = ErrorBody),
        (status = 409, description = "Nothing to roll back to, or the app was removed or is changing", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    RawBody(body): RawBody,
) -> Result<Json<AppView>, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("rollback: {e}")))?
    };
    Ok(Json(state.apps.rollback(&name, request).await?))
}

/// Serve the app's `live` alias at a custom domain (a request whose `Host`
/// is exactly it, any port).
#[utoipa::path(put, path = "/apps/{name}/domains/{domain}", tag = "apps",
    params(("name" = String, Path), ("domain" = String, Path)),
    responses(
        (status = 200, body = DomainView),
        (status = 400, description = "Not a DNS name, under the service's base domain, or the host the API is reached at", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Another app holds the domain, or the app was removed", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn put_domain(
    State(state): State<AppState>,
    ApiPath((name, domain)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<DomainView>, ApiError> {
    // The host this request reached the API by would send every later API
    // request to the app (including the one that would undo it).
    let api_host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|host| host.rsplit_once(':').map_or(host, |(name, _)| name))
        .map(|host| host.trim_end_matches('.').to_ascii_lowercase());
    let asked = domain.trim_end_matches('.').to_ascii_lowercase();
    if api_host.as_deref() == Some(asked.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_app",
            format!("'{asked}' is the host this API is reached at: it cannot serve an app"),
        ));
    }
    Ok(Json(state.apps.put_domain(&name, &domain).await?))
}

/// Stop serving the app at a custom domain.
#[utoipa::path(delete, path = "/apps/{name}/domains/{domain}", tag = "apps",
    params(("name" = String, Path), ("domain" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such app, or the app has no such domain", body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn delete_domain(
    State(state): State<AppState>,
    ApiPath((name, domain)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.apps.delete_domain(&name, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Settings of a raw upload (`PUT /apps/{name}/code`); each omitted one is
/// the app's newest version's.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CodeParams {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub memory_size: Option<u32>,
    pub timeout: Option<u32>,
    pub payload_format: Option<String>,
    /// The environment as a JSON object of strings (`{"KEY":"value"}`,
    /// URL-encoded); replaces the app's. Omitted: the app's newest version's.
    /// Better sent as the header `x-orchestrator-environment` (base64 of the
    /// JSON), which no access log records.
    pub environment: Option<String>,
    /// Default `true`: the new version takes the app's traffic.
    pub promote: Option<bool>,
    /// Default `true`; `false`: answer `202` with an operation once the body is in.
    pub wait: Option<bool>,
}

/// Deploy a new version from the raw zip in the body (`Content-Type:
/// application/zip`, up to 50 MB, streamed to disk), with the app's
/// current settings unless the query names others. A new app is created.
#[utoipa::path(put, path = "/apps/{name}/code", tag = "apps",
    params(("name" = String, Path), CodeParams),
    request_body(content = Vec<u8>, content_type = "application/zip", description = "The zip archive, raw"),
    responses(
        (status = 200, description = "Deployed", body = AppView),
        (status = 202, description = "Accepted (`?wait=false`): follow the operation", body = OperationAccepted),
        (status = 400, description = "Invalid name, settings or archive", body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 413, description = "Archive over 50 MB zipped or 250 MB unzipped", body = ErrorBody),
        (status = 415, description = "Not application/zip", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn put_code(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<CodeParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let wait = params.wait != Some(false);
    let request = code_request(name, params, &headers)?;
    let upload = state.apps.upload_path()?;
    receive(body, &headers, upload.path()).await?;
    if wait {
        return Ok(Json(state.apps.deploy_upload(request, upload).await?).into_response());
    }
    let (apps, app) = (state.apps.clone(), request.name.clone());
    accepted(&state, &app, async move {
        apps.deploy_upload(request, upload).await
    })
    .await
}

/// A raw upload's environment, base64 of its JSON object: what
/// `orchestrator deploy --env` sends (secrets stay out of URLs).
pub const ENVIRONMENT_HEADER: &str = "x-orchestrator-environment";

/// The deploy request a raw upload makes: checked before the body is read.
fn code_request(
    name: String,
    params: CodeParams,
    headers: &HeaderMap,
) -> Result<DeployRequest, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/zip") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the archive as Content-Type: application/zip, not '{content_type}'"),
        ));
    }
    crate::apps::AppName::parse(&name)
        .map_err(|reason| ApiError::bad_request("invalid_app", format!("name: {reason}")))?;
    // In a header (kept out of URLs and the logs that record them), base64
    // of the JSON object, or in the query.
    let from_header = headers
        .get(ENVIRONMENT_HEADER)
        .map(|value| {
            use base64::Engine;
            let text = value.to_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_environment",
                        format!("{ENVIRONMENT_HEADER} must be the base64 of a JSON object"),
                    )
                })
        })
        .transpose()?;
    let environment = from_header
        .or(params.environment)
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                ApiError::bad_request(
                    "invalid_environment",
                    format!("environment must be a JSON object of strings: {e}"),
                )
            })
        })
        .transpose()?;
    Ok(DeployRequest {
        name,
        archive: Some(String::new()),
        s3: None,
        image_uri: None,
        image_config: None,
        runtime: params.runtime,
        handler: params.handler,
        environment,
        memory_size: params.memory_size,
        timeout: params.timeout,
        payload_format: params.payload_format,
        promote: params.promote,
    })
}

/// Streams `body` into `path`, refusing more than an archive may hold.
async fn receive(body: Body, headers: &HeaderMap, path: &std::path::Path) -> Result<(), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the archive is over {} MB",
                crate::apps::archive::MAX_ZIPPED / (1024 * 1024)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > crate::apps::archive::MAX_ZIPPED as u64) {
        return Err(too_large());
    }
    let io = |e: std::io::Error| ApiError::from(crate::apps::AppError::Io(e.to_string()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut written = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_body", format!("reading the archive: {e}"))
        })?;
        written += chunk.len();
        if written > crate::apps::archive::MAX_ZIPPED {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(())
}
