//! The HTTP API: routers and handlers only. Handlers call the store and the
//! inbox; domain errors become HTTP in [`error`].

mod apps;
pub mod auth;
pub mod error;
mod events;
mod extract;
mod lambda_api;
mod logs;
mod ops;
pub mod proxy;
mod request_id;
pub mod server;
mod sigv4;
mod tenants;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::AuthPolicy;
use self::error::ApiError;
use crate::events::Inbox;
use crate::store::Store;
use crate::telemetry::trace::{self, Span, TraceContext};

/// Largest accepted request body (EventBridge sends at most 256 KB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub apps: Arc<crate::apps::AppService>,
    pub inbox: Inbox,
    /// The build backend, asked for running jobs' live logs.
    pub builder: Arc<dyn crate::builder::BuilderService>,
    /// How local functions are confined (`sandbox`, `none`), if they run here.
    pub isolation: Option<&'static str>,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Cancelled when the service starts shutting down: long answers (a
    /// log follower's stream) end then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// sbt-aws's event names and sources (`[sbt]`).
    pub sbt: Arc<crate::tenants::sbt::SbtPlane>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "Tenant lifecycle orchestration (ARC SaaS compatible) and a mini-app platform on Lambda.",
        license(name = "MIT")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "events", description = "Tenant events and the durable inbox"),
        (name = "tenants", description = "Tenant state and build jobs"),
        (name = "apps", description = "Mini-apps: zipped Lambda handlers served at <name>.<base_domain>"),
        (name = "operations", description = "Health, readiness, this document"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    // Deploys carry archives: their own, larger body limit (the inner limit wins).
    let deploy = OpenApiRouter::new()
        .routes(routes!(apps::deploy))
        .layer(DefaultBodyLimit::max(apps::MAX_DEPLOY_BYTES));
    // Lambda's payload limit, for its Invoke API.
    let invoke = OpenApiRouter::new()
        .routes(routes!(lambda_api::invoke))
        .layer(DefaultBodyLimit::max(lambda_api::MAX_PAYLOAD_BYTES + 1024));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(deploy)
        .merge(invoke)
        .routes(routes!(events::post_envelope, events::list_events))
        .routes(routes!(events::post_event, events::get_event))
        .routes(routes!(events::retry_event))
        .routes(routes!(tenants::list_tenants))
        .routes(routes!(tenants::get_tenant))
        .routes(routes!(tenants::tenant_timeline))
        .routes(routes!(tenants::get_job))
        .routes(routes!(apps::list))
        .routes(routes!(apps::runtimes))
        .routes(routes!(apps::get))
        .routes(routes!(apps::status))
        .routes(routes!(apps::activate))
        .routes(routes!(apps::deactivate))
        .routes(routes!(apps::remove))
        .routes(routes!(apps::sync))
        .routes(routes!(apps::aliases))
        .routes(routes!(apps::put_alias, apps::delete_alias))
        .routes(routes!(apps::rollback))
        .routes(routes!(apps::put_code))
        .routes(routes!(apps::operation))
        .routes(routes!(apps::put_domain, apps::delete_domain))
        .routes(routes!(logs::logs))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api().split_for_parts();
    doc.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .tag("operations")
                .summary(Some("This OpenAPI document"))
                .response(
                    "200",
                    utoipa::openapi::ResponseBuilder::new().description("OpenAPI 3.1 document"),
                ),
        ),
    );
    doc
}

/// Bounds a `limit` query parameter.
fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 1000, not {n}"),
        )),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("Endpoint \"{method} {}\" not found.", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The router of `metrics.listen`: `GET /metrics` alone, without a token.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// What is recorded of every answered request.
#[derive(Clone)]
pub struct Observe {
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// One log line per request (`access_log`).
    pub access_log: bool,
}

/// One request being answered: its server span and when it began.
pub struct Answering {
    span: Span,
    started: std::time::Instant,
    method: Method,
}

impl Answering {
    /// The request's span, for the work done answering it.
    pub fn context(&self) -> TraceContext {
        self.span.context()
    }
}

impl Observe {
    /// Starts answering a request: its span continues the client's
    /// `traceparent` (a new trace without one).
    pub fn begin(&self, headers: &HeaderMap, method: &Method, route: &str) -> Answering {
        let parent = headers
            .get(trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let name = trace::name(|| format!("{method} {route}"));
        Answering {
            span: Span::start(name, trace::Kind::Server, parent),
            started: std::time::Instant::now(),
            method: method.clone(),
        }
    }

    /// Counts an answered request, logs it (with `access_log`), names its
    /// trace in `traceresponse` and ends its span.
    pub fn answered(&self, answering: Answering, route: &str, response: &mut Response) {
        let Answering {
            mut span,
            started,
            method,
        } = answering;
        let status = response.status();
        let took = started.elapsed();
        let context = span.context();
        if let Ok(value) = HeaderValue::from_str(&context.traceparent()) {
            response.headers_mut().insert(trace::TRACERESPONSE, value);
        }
        self.metrics
            .http_request(route, &method, status.as_u16(), took);
        if self.access_log {
            tracing::info!(
                target: "access",
                method = %method,
                route,
                status = status.as_u16(),
                duration_ms = took.as_secs_f64() * 1000.0,
                request_id = %request_id::current(),
                trace_id = %context.trace_id_hex(),
                "request"
            );
        }
        if span.recording() {
            span.set("http.request.method", method.to_string());
            span.set("http.route", route.to_owned());
            span.set("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.fail(status);
            }
        }
        span.end();
    }
}

/// Counts (and logs) an answered request by its route template
/// (`unmatched` for a path no route has), method and status, inside its
/// server span.
async fn count_request(
    axum::extract::State(observe): axum::extract::State<Observe>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let answering = observe.begin(request.headers(), request.method(), &route);
    let context = answering.span.context();
    let mut response = trace::within(context, next.run(request)).await;
    observe.answered(answering, &route, &mut response);
    response
}

/// The API router with its state, auth and limits applied, ready to serve or
/// to mount in another axum application. Requests for `<app>.<base_domain>`
/// go to the proxy before anything else.
///
/// `proxy`: serve apps by `Host` (else app hosts reach the API's 404s);
/// `management`: serve the management API (else only `/health` and `/ready`).
pub fn router(
    state: AppState,
    observe: Observe,
    policy: AuthPolicy,
    proxy: Option<proxy::ProxyState>,
    management: bool,
) -> Router {
    let routes = if management {
        let doc = Arc::new(openapi());
        let (routes, _) = api().split_for_parts();
        routes.route(
            "/openapi.json",
            get(move || std::future::ready(Json(doc.as_ref().clone()))),
        )
    } else {
        Router::new()
            .route("/health", get(ops::health))
            .route("/ready", get(ops::ready))
            .route("/metrics", get(ops::metrics))
    };
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            auth::require_access,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(observe, count_request))
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state);
    match proxy {
        Some(proxy) => router.layer(axum::middleware::from_fn_with_state(
            proxy,
            proxy::route_by_host,
        )),
        None => router.layer(axum::middleware::from_fn(proxy::refuse_duplicate_host)),
    }
}
