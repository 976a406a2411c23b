//! The proxy: a request whose `Host` is `<app>.<base_domain>` (any port) is
//! turned into an API Gateway event, sent to the app's function, and the
//! result mapped back as API Gateway does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::apps::{AppName, AppService};
use crate::functions::FunctionError;
use crate::proxy::{
    event_v1, event_v2, map_result, IncomingRequest, PayloadFormat, INTERNAL_SERVER_ERROR,
};

/// Lambda's synchronous request limit.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// What the proxy needs.
#[derive(Clone)]
pub struct ProxyState {
    pub apps: Arc<AppService>,
    /// `.<base_domain>`, lowercase.
    pub suffix: String,
}

impl ProxyState {
    pub fn new(apps: Arc<AppService>, base_domain: &str) -> Self {
        Self {
            apps,
            suffix: format!(".{}", base_domain.to_ascii_lowercase()),
        }
    }
}

/// The app a `Host` header names, if it is `<label><suffix>` (any port).
fn app_label(host: &str, suffix: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    // Compared without allocating: most requests are for the API, not an app.
    let split = name.len().checked_sub(suffix.len())?;
    let (label, tail) = (name.get(..split)?, name.get(split..)?);
    if label.is_empty() || label.contains('.') || !tail.eq_ignore_ascii_case(suffix) {
        return None;
    }
    Some(label.to_ascii_lowercase())
}

fn gateway(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The middleware: app hosts go to the proxy, everything else to the API.
pub async fn route_by_host(
    State(proxy): State<ProxyState>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    match app_label(host, &proxy.suffix) {
        Some(app) => serve(&proxy, &app, request).await,
        None => next.run(request).await,
    }
}

async fn serve(proxy: &ProxyState, app: &str, request: Request) -> Response {
    let (Some(format), Ok(name)) = (proxy.apps.route(app).await, AppName::parse(app)) else {
        return ApiError::not_found(format!("no active app '{app}'")).into_response();
    };
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return gateway(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"message":"Request Too Long"}"#,
        );
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let incoming = IncomingRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        source_ip: source_ip.unwrap_or_else(|| "127.0.0.1".into()),
        domain_name: host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned(),
        domain_prefix: app.to_owned(),
        request_id: crate::request_uuid(),
        time_epoch_ms: crate::now_ms(),
    };
    let event = match format {
        PayloadFormat::V1 => event_v1(&incoming),
        PayloadFormat::V2 => event_v2(&incoming),
    };
    match proxy.apps.invoke(&name, event).await {
        Ok(result) => respond(format, &result),
        Err(FunctionError::Timeout(_)) => gateway(
            StatusCode::GATEWAY_TIMEOUT,
            r#"{"message":"Endpoint request timed out"}"#,
        ),
        Err(FunctionError::NotFound) => {
            ApiError::not_found(format!("no active app '{app}'")).into_response()
        }
        Err(err) => {
            tracing::warn!(app, error = %err, "function failed");
            gateway(StatusCode::BAD_GATEWAY, INTERNAL_SERVER_ERROR)
        }
    }
}

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
];

fn respond(format: PayloadFormat, result: &[u8]) -> Response {
    let mapped = match map_result(format, result) {
        Ok(mapped) => mapped,
        Err(err) => {
            tracing::warn!(error = %err, "unmappable function result");
            return gateway(StatusCode::BAD_GATEWAY, INTERNAL_SERVER_ERROR);
        }
    };
    let mut response = Response::new(Body::from(mapped.body));
    *response.status_mut() = StatusCode::from_u16(mapped.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in mapped.headers {
        if HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => return gateway(StatusCode::BAD_GATEWAY, INTERNAL_SERVER_ERROR),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_hosts() {
        let app = |host: &str| app_label(host, ".localhost");
        assert_eq!(app("shop.localhost:8080").as_deref(), Some("shop"));
        assert_eq!(app("Shop.LOCALHOST").as_deref(), Some("shop"));
        assert_eq!(app("localhost:8080"), None);
        assert_eq!(app("a.b.localhost"), None);
        assert_eq!(app("127.0.0.1:8080"), None);
        assert_eq!(app(".localhost"), None);
    }
}
