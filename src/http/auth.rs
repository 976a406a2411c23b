//! Access tokens: bearer tokens for management routes, API keys (or bearer
//! tokens) for `POST /events…`; health, readiness and the spec are public.
//! Tokens are compared as SHA-256 digests in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::AuthConfig;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Events,
    Management,
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
            Access::Management if self.api_tokens.is_empty() => Ok(()),
            Access::Management => match bearer {
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
    match policy.allows(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
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
