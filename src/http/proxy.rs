//! The proxy: a request whose authority is `<app>.<base_domain>` (any port)
//! is turned into an API Gateway event, sent to the app's function, and the
//! result mapped back as API Gateway does.
//!
//! The authority is the request target's when it has one (HTTP/2's
//! `:authority`, an HTTP/1.1 absolute-form target such as
//! `GET http://shop.example.test/ HTTP/1.1`), else the `Host` header
//! (RFC 9112 §3.2.2). A request with more than one `Host` header is refused
//! with `400` (RFC 9112 §3.2), whatever it asks for.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::apps::{AppName, AppService, Selector};
use crate::functions::FunctionError;
use crate::proxy::{
    event_v1, event_v2, map_result, IncomingRequest, PayloadFormat, INTERNAL_SERVER_ERROR,
};
use crate::telemetry::trace::{self, Span, TraceContext};

/// Lambda's synchronous request limit.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// What the proxy needs.
#[derive(Clone)]
pub struct ProxyState {
    pub apps: Arc<AppService>,
    /// `.<base_domain>`, lowercase.
    pub suffix: String,
    /// Proxied requests count (and are logged) as route `proxy`.
    pub observe: super::Observe,
}

impl ProxyState {
    pub fn new(apps: Arc<AppService>, base_domain: &str, observe: super::Observe) -> Self {
        Self {
            apps,
            observe,
            suffix: format!(".{}", base_domain.to_ascii_lowercase()),
        }
    }
}

/// The app a `Host` header names, if it is `<label><suffix>` (any port).
fn app_label(host: &str, suffix: &str) -> Option<String> {
    let name = without_port(host);
    // Compared without allocating: most requests are for the API, not an app.
    let split = name.len().checked_sub(suffix.len())?;
    let (label, tail) = (name.get(..split)?, name.get(split..)?);
    if label.is_empty() || label.contains('.') || !tail.eq_ignore_ascii_case(suffix) {
        return None;
    }
    Some(label.to_ascii_lowercase())
}

/// An app's request: the host's first label, the app and what of it is
/// asked for.
struct AppRequest {
    label: String,
    app: String,
    selector: Selector,
}

/// The app an authority names: `[<alias>--|v<N>--]<app><suffix>`, or a
/// custom domain (its `live` alias); `None` for the API.
fn app_of(proxy: &ProxyState, authority: &str) -> Option<AppRequest> {
    if let Some(label) = app_label(authority, &proxy.suffix) {
        let (selector, app) = Selector::parse_label(&label);
        let app = app.to_owned();
        return Some(AppRequest {
            label,
            app,
            selector,
        });
    }
    if !proxy.apps.has_domains() {
        return None;
    }
    let host = without_port(authority)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let app = proxy.apps.domain_app(&host)?;
    Some(AppRequest {
        label: host.split('.').next().unwrap_or_default().to_owned(),
        app,
        selector: Selector::Live,
    })
}

/// A host without its `:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn gateway(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The request's one `Host` header, if any; more than one names no single
/// authority, which RFC 9112 §3.2 answers with `400`.
fn single_host(headers: &HeaderMap) -> Result<Option<&HeaderValue>, ApiError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_host",
            "the request has more than one Host header",
        ));
    }
    Ok(host)
}

/// The authority `request` is for: its target's (HTTP/2, absolute-form), else
/// its `Host` header (empty when it has none).
fn authority(request: &Request) -> Result<&str, ApiError> {
    let host = single_host(request.headers())?;
    if let Some(authority) = request.uri().authority() {
        // Without any `user@` part, which names no host.
        let text = authority.as_str();
        return Ok(text.rsplit_once('@').map_or(text, |(_, host)| host));
    }
    Ok(host.and_then(|h| h.to_str().ok()).unwrap_or_default())
}

/// The middleware: app authorities go to the proxy, everything else to the API.
pub async fn route_by_host(
    State(proxy): State<ProxyState>,
    request: Request,
    next: Next,
) -> Response {
    let app = match authority(&request) {
        // Owned only for app requests: most requests are for the API.
        Ok(authority) => app_of(&proxy, authority).map(|app| (app, authority.to_owned())),
        Err(err) => return err.into_response(),
    };
    match app {
        Some((app, authority)) => {
            let answering = proxy
                .observe
                .begin(request.headers(), request.method(), "proxy");
            let context = answering.context();
            let mut response =
                trace::within(context, serve(&proxy, &app, &authority, request)).await;
            proxy.observe.answered(answering, "proxy", &mut response);
            response
        }
        None => next.run(request).await,
    }
}

/// The middleware of a process that serves no apps: only refuses requests
/// with more than one `Host` header, as [`route_by_host`] does.
pub async fn refuse_duplicate_host(request: Request, next: Next) -> Response {
    match single_host(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Serves `request` (for `host`, the authority it names) with what it asks of its app.
async fn serve(proxy: &ProxyState, asked: &AppRequest, host: &str, request: Request) -> Response {
    let app = asked.app.as_str();
    let (Some(route), Ok(name)) = (
        proxy.apps.route(app, &asked.selector).await,
        AppName::parse(app),
    ) else {
        return not_served(asked).into_response();
    };
    let format = route.format;
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
    // The invocation's span: the function sees it as its parent.
    let mut span =
        Span::child_of_current(trace::name(|| format!("invoke {app}")), trace::Kind::Client);
    span.set("faas.invoked_name", app.to_owned());
    let incoming = IncomingRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: event_headers(&parts.headers, host, span.context()),
        body: body.to_vec(),
        source_ip: source_ip.unwrap_or_else(|| "127.0.0.1".into()),
        domain_name: host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned(),
        domain_prefix: asked.label.clone(),
        request_id: crate::support::request_uuid(),
        time_epoch_ms: crate::support::now_ms(),
    };
    let event = match format {
        PayloadFormat::V1 => event_v1(&incoming),
        PayloadFormat::V2 => event_v2(&incoming),
    };
    let invoked = trace::within(span.context(), proxy.apps.invoke(&name, &route, event)).await;
    span.end_with(&invoked);
    // The version that answered: as the backend says, else the one picked.
    let version = invoked
        .as_ref()
        .ok()
        .and_then(|i| i.version)
        .unwrap_or(route.version);
    let mut response = match invoked {
        Ok(result) => respond(format, &result.payload),
        Err(FunctionError::Timeout(_)) => gateway(
            StatusCode::GATEWAY_TIMEOUT,
            r#"{"message":"Endpoint request timed out"}"#,
        ),
        Err(FunctionError::NotFound) => not_served(asked).into_response(),
        Err(FunctionError::Throttled(why)) => {
            tracing::warn!(app, reason = %why, "invocation throttled");
            let mut response = gateway(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"message":"Too Many Requests"}"#,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(err) => {
            tracing::warn!(app, error = %err, "function failed");
            gateway(StatusCode::BAD_GATEWAY, INTERNAL_SERVER_ERROR)
        }
    };
    response
        .headers_mut()
        .insert(APP_VERSION.clone(), HeaderValue::from(version));
    response
}

/// The 404 for what the proxy does not serve.
fn not_served(asked: &AppRequest) -> ApiError {
    match &asked.selector {
        Selector::Live => ApiError::not_found(format!("no active app '{}'", asked.app)),
        selector => ApiError::not_found(format!(
            "app '{}' is not active or has no {} '{}'",
            asked.app,
            match selector {
                Selector::Version(_) => "version",
                _ => "alias",
            },
            selector.describe()
        )),
    }
}

/// The header naming the version of the app that answered.
static APP_VERSION: HeaderName = HeaderName::from_static("x-app-version");

/// The request's headers for the event, with `host` set to the authority
/// when the request carried it only in its target (HTTP/2 has no `Host`), as
/// API Gateway always shows one, and `traceparent` naming the invocation's
/// span (the client's trace, continued).
fn event_headers(
    headers: &HeaderMap,
    authority: &str,
    invocation: TraceContext,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str() != trace::TRACEPARENT)
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !headers.contains_key(header::HOST) {
        out.push((header::HOST.as_str().to_owned(), authority.to_owned()));
    }
    out.push((trace::TRACEPARENT.to_owned(), invocation.traceparent()));
    out
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

    fn request(uri: &str, hosts: &[&str]) -> Request {
        let mut builder = Request::builder().uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(Body::empty()).expect("a valid request")
    }

    #[test]
    fn the_authority_is_the_targets_else_the_host_header() {
        let of =
            |uri: &str, hosts: &[&str]| authority(&request(uri, hosts)).ok().map(str::to_owned);
        assert_eq!(
            of("/x", &["shop.localhost:8080"]).as_deref(),
            Some("shop.localhost:8080")
        );
        assert_eq!(of("/x", &[]).as_deref(), Some(""));
        // Absolute-form (and HTTP/2, whose `:authority` hyper puts in the URI): the target wins.
        assert_eq!(
            of("http://shop.localhost:8080/x", &["api.localhost"]).as_deref(),
            Some("shop.localhost:8080")
        );
        assert_eq!(
            of("http://user@shop.localhost/x", &[]).as_deref(),
            Some("shop.localhost")
        );
        let code =
            |uri: &str, hosts: &[&str]| authority(&request(uri, hosts)).err().map(|e| e.code);
        assert_eq!(
            code("/x", &["a.localhost", "a.localhost"]),
            Some("invalid_host")
        );
        assert_eq!(
            code("http://a.localhost/", &["a.localhost", "b.localhost"]),
            Some("invalid_host"),
            "two Host headers are refused whatever the target"
        );
    }
}
