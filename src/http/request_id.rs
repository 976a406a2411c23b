//! A request id for every management request: the client's `x-request-id`
//! when it is a short printable token, else a new UUID. It is sent back in
//! `x-request-id`, and the one log line of a failed request (the cause chain,
//! in `error.rs`) carries it, so a client's report finds its log line.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, or `-` outside one.
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

/// A client's id is kept only if it cannot forge log lines or grow them.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// Middleware: assigns the id, runs the request with it, and echoes it.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(crate::support::request_uuid, str::to_owned);
    let header = HeaderValue::from_str(&id).ok();
    let mut response = REQUEST_ID.scope(id, next.run(request)).await;
    if let Some(value) = header {
        response.headers_mut().insert(HEADER.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(super::acceptable("req-123_abc.def:1/2"));
        for bad in ["", "a b", "x\ny", "é", &"a".repeat(129)] {
            assert!(!super::acceptable(bad), "{bad:?}");
        }
    }
}
