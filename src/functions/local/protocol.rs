//! The Lambda Runtime API's calls and answers as plain data (`2018-06-01`):
//! which call a request line names, the answers, the payload limit. What a
//! call does is `runtime_api`'s business; how it travels is the transports'
//! (`pipes`, `tcp`). It imports no other file of `local/`.

use axum::http::{HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde_json::json;

/// Lambda's synchronous payload limit (as the emulator counts it).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;

/// The header a runtime names its error's type in.
pub const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// Where every route of the API starts.
const PREFIX: &str = "/2018-06-01/runtime/";

/// One call of the Runtime API.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// `GET invocation/next`
    Next,
    /// `POST invocation/{id}/response`
    Response(String),
    /// `POST invocation/{id}/error`
    Error(String),
    /// `POST init/error`
    InitError,
}

impl Call {
    /// The call a request line names, or the API's answer to a wrong one.
    pub fn route(method: &str, path: &str) -> Result<Call, Answer> {
        let not_found = || {
            Answer::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no Runtime API route {path}"),
            )
        };
        let route = path.strip_prefix(PREFIX).ok_or_else(not_found)?;
        // Up to four segments, without collecting them (two calls an invocation).
        let mut segments = route.split('/');
        let segments = [(); 4].map(|()| segments.next());
        let (call, wants) = match segments {
            [Some("invocation"), Some("next"), None, None] => (Call::Next, Method::GET),
            [Some("init"), Some("error"), None, None] => (Call::InitError, Method::POST),
            [Some("invocation"), Some(id), Some("response"), None] if !id.is_empty() => {
                (Call::Response(id.to_owned()), Method::POST)
            }
            [Some("invocation"), Some(id), Some("error"), None] if !id.is_empty() => {
                (Call::Error(id.to_owned()), Method::POST)
            }
            _ => return Err(not_found()),
        };
        if method != wants.as_str() {
            return Err(Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{path} takes {wants}, not {method}"),
            ));
        }
        Ok(call)
    }
}

/// A posted body over the payload limit (not read).
#[derive(Debug)]
pub struct TooLarge;

/// The API's answer to one call: always JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Besides `content-type` and `content-length` (valid values only, for
    /// either transport).
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    pub fn error(status: StatusCode, kind: &str, message: &str) -> Answer {
        let body = json!({"errorType": kind, "errorMessage": message}).to_string();
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `202 {"status":"OK"}` for a posted result or error (a constant body:
    /// it is on every invocation's path).
    pub fn accepted() -> Answer {
        Answer {
            status: StatusCode::ACCEPTED,
            headers: Vec::new(),
            body: Bytes::from_static(br#"{"status":"OK"}"#),
        }
    }

    /// A result or error posted for no waiting invocation.
    pub fn unknown_request_id() -> Answer {
        Answer::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation is waiting for this id",
        )
    }

    /// A posted result over the limit.
    pub fn too_large() -> Answer {
        let message = format!("Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).");
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_calls_and_wrong_ones_are_answered() {
        let route = |m: &str, p: &str| Call::route(m, p).map_err(|a| a.status);
        assert_eq!(
            route("GET", "/2018-06-01/runtime/invocation/next"),
            Ok(Call::Next)
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/a-1/response"),
            Ok(Call::Response("a-1".into()))
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/a-1/error"),
            Ok(Call::Error("a-1".into()))
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/init/error"),
            Ok(Call::InitError)
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/next"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        for path in [
            "/2018-06-01/runtime/invocation//response",
            "/2018-06-01/runtime/invocation/a/b/response",
            "/2020-01-01/runtime/invocation/next",
            "/",
        ] {
            assert_eq!(route("POST", path), Err(StatusCode::NOT_FOUND), "{path}");
        }
    }
}
