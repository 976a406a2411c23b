//! Access tokens: bearer tokens for management routes, API keys (or bearer
//! tokens) for `POST /events…`, SigV4 signatures (or bearer tokens) for the
//! Lambda Invoke API; health, readiness and the spec are public. Tokens are
//! compared as SHA-256 digests in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::sigv4::{self, AccessKeys};
use crate::config::AuthConfig;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Events,
    Management,
    /// The Lambda Invoke API: what AWS clients sign.
    Lambda,
}

/// Which access a request needs.
pub fn access_for(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    match path {
        "/health" | "/ready" | "/openapi.json" => return Access::Public,
        _ => {}
    }
    let ingest = path == "/events"
        || path
            .strip_prefix("/events/")
            .is_some_and(|rest| !rest.contains('/'));
    if method == Method::POST && ingest {
        Access::Events
    } else if path.starts_with("/2015-03-31/functions/") {
        Access::Lambda
    } else {
        Access::Management
    }
}

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn contains(set: &[Digest32], candidate: &str) -> bool {
    let candidate = digest(candidate);
    // Check every entry so timing does not reveal which one matched.
    set.iter().fold(false, |found, known| {
        found | bool::from(known.ct_eq(&candidate))
    })
}

/// The configured tokens, hashed.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    api_tokens: Vec<Digest32>,
    event_keys: Vec<Digest32>,
    key_header: HeaderName,
    lambda_keys: AccessKeys,
}

impl AuthPolicy {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            api_tokens: config.api_tokens.iter().map(|s| digest(&s.0)).collect(),
            event_keys: config.event_api_keys.iter().map(|s| digest(&s.0)).collect(),
            key_header: config
                .event_api_key_header
                .parse()
                .unwrap_or(HeaderName::from_static("x-api-key")),
            lambda_keys: AccessKeys::new(&config.lambda_access_keys),
        }
    }

    /// Whether the request may proceed.
    pub fn allows(&self, access: Access, headers: &HeaderMap) -> Result<(), ApiError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match access {
            Access::Public => Ok(()),
            Access::Management | Access::Lambda if self.api_tokens.is_empty() => Ok(()),
            Access::Management | Access::Lambda => match bearer {
                Some(token) if contains(&self.api_tokens, token) => Ok(()),
                Some(_) => Err(ApiError::unauthorized("invalid bearer token")),
                None => Err(ApiError::unauthorized(
                    "missing bearer token (Authorization: Bearer …)",
                )),
            },
            Access::Events if self.api_tokens.is_empty() && self.event_keys.is_empty() => Ok(()),
            Access::Events => {
                let key = headers.get(&self.key_header).and_then(|v| v.to_str().ok());
                let ok = key.is_some_and(|k| contains(&self.event_keys, k))
                    || bearer.is_some_and(|t| {
                        contains(&self.event_keys, t) || contains(&self.api_tokens, t)
                    });
                if ok {
                    Ok(())
                } else if key.is_none() && bearer.is_none() {
                    Err(ApiError::unauthorized(format!(
                        "missing API key ({} header or bearer token)",
                        self.key_header
                    )))
                } else {
                    Err(ApiError::unauthorized("invalid API key"))
                }
            }
        }
    }
}

/// The middleware.
pub async fn require_access(
    State(policy): State<Arc<AuthPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let access = access_for(request.method(), request.uri().path());
    let signed = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(sigv4::SCHEME.as_bytes()));
    // Signatures are checked once there is anything to check them against:
    // tokens (then keys are how AWS clients get in) or keys configured.
    let checks_signatures = !policy.api_tokens.is_empty() || !policy.lambda_keys.is_empty();
    if access == Access::Lambda && signed && checks_signatures {
        return match policy.verify_signed(request).await {
            Ok(request) => next.run(request).await,
            Err(refused) => refused,
        };
    }
    match policy.allows(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) if access == Access::Lambda => {
            let kind = match err.message.starts_with("missing") {
                true => "MissingAuthenticationTokenException",
                false => "UnrecognizedClientException",
            };
            lambda_refusal(
                StatusCode::FORBIDDEN,
                kind,
                &format!(
                    "{} (or sign the request with a key in auth.lambda_access_keys)",
                    err.message
                ),
            )
        }
        Err(err) => err.into_response(),
    }
}

fn lambda_refusal(status: StatusCode, kind: &'static str, message: &str) -> Response {
    super::lambda_api::aws_error(status, kind, message)
}

/// The most of a signed body read to check its signature (Lambda's
/// synchronous payload limit; the route refuses more).
const MAX_SIGNED_BODY: usize = 6 * 1024 * 1024;

/// How long a signed request's body may take to arrive once its head has.
const SIGNED_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl AuthPolicy {
    /// Checks a SigV4-signed request: its claims first, then (only then)
    /// its body, read within [`SIGNED_BODY_DEADLINE`]; the request again,
    /// with its body, if the signature holds.
    async fn verify_signed(&self, request: Request) -> Result<Request, Response> {
        let refused = |r: sigv4::Refusal| lambda_refusal(StatusCode::FORBIDDEN, r.kind, &r.message);
        let checked = self
            .lambda_keys
            .check(request.headers(), std::time::SystemTime::now())
            .map_err(refused)?;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let too_large = || {
            lambda_refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                &format!("Request must be smaller than {MAX_SIGNED_BODY} bytes for the InvokeFunction operation"),
            )
        };
        if declared.is_some_and(|n| n > MAX_SIGNED_BODY as u64) {
            return Err(too_large());
        }
        let (parts, body) = request.into_parts();
        let read = tokio::time::timeout(
            SIGNED_BODY_DEADLINE,
            axum::body::to_bytes(body, MAX_SIGNED_BODY),
        )
        .await;
        let body = match read {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                return Err(lambda_refusal(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("the body could not be read whole (at most {MAX_SIGNED_BODY} bytes)"),
                ))
            }
            Err(_) => {
                return Err(lambda_refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeoutException",
                    "the body did not arrive in time",
                ))
            }
        };
        let uri = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        checked
            .verify(parts.method.as_str(), &uri, &body)
            .map_err(refused)?;
        Ok(Request::from_parts(parts, axum::body::Body::from(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_routes() {
        assert_eq!(access_for(&Method::GET, "/health"), Access::Public);
        assert_eq!(
            access_for(&Method::POST, "/events/TENANT_PROVISIONING"),
            Access::Events
        );
        assert_eq!(access_for(&Method::POST, "/events"), Access::Events);
        assert_eq!(access_for(&Method::GET, "/events/abc"), Access::Management);
        assert_eq!(
            access_for(&Method::POST, "/events/abc/retry"),
            Access::Management
        );
        assert_eq!(access_for(&Method::GET, "/tenants"), Access::Management);
    }
}
