//! The Runtime API over HTTP on a worker's own loopback port, for runtime
//! clients other than ours (`provided.*` bootstraps): axum serves it, and
//! only the worker's user may connect (see `peer`). Imports `runtime_api`,
//! `protocol` and `peer`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::peer::OwnedBy;
use super::protocol::{Answer, Call, TooLarge, ERROR_TYPE_HEADER, MAX_PAYLOAD};
use super::runtime_api::Api;

/// A worker's port, bound and not served yet.
pub struct Port {
    listener: OwnedBy,
    /// `127.0.0.1:<port>`, as `AWS_LAMBDA_RUNTIME_API` names it.
    pub addr: String,
}

impl Port {
    /// Binds a loopback port that only `owner`'s sockets may dial.
    pub fn bind(owner: u32) -> std::io::Result<Port> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .and_then(|l| OwnedBy::new(l, owner))?;
        let addr = axum::serve::Listener::local_addr(&listener)?.to_string();
        Ok(Port { listener, addr })
    }

    /// Serves `api` on it until `stop` is cancelled.
    pub fn serve(self, api: Arc<Api>, stop: CancellationToken) {
        // Small responses back to back (the 202 of a result, then the next
        // event): without TCP_NODELAY, Nagle and delayed ACKs stall them 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let router = router(api);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .fallback(over_http)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api)
}

async fn over_http(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let call = match Call::route(method.as_str(), uri.path()) {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let body = axum::body::to_bytes(body, MAX_PAYLOAD)
        .await
        .map(Vec::from)
        .map_err(|_| TooLarge);
    let error_type = headers.get(ERROR_TYPE_HEADER).and_then(|v| v.to_str().ok());
    api.answer(call, error_type, body).await
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(self.body),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
