//! Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`), so
//! the AWS CLI, boto3 and the SDKs can call an app's function with
//! `--endpoint-url`: the body is the function's raw payload (not an API
//! Gateway event), answers and errors are Lambda's: `RequestResponse`,
//! `DryRun`, and `Event` (queued in the store, run later, retried twice);
//! `X-Amz-Log-Type: Tail` returns the invocation's last 4 KB of log.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::functions::FunctionError;

/// Lambda's limit on a synchronous invocation's payload.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Lambda's limit on an asynchronous (`Event`) invocation's payload.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// `?Qualifier=`: a version number, an alias, or `$LATEST` (the default).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvokeQuery {
    #[serde(rename = "Qualifier")]
    pub qualifier: Option<String>,
}

/// Invoke a function as Lambda's Invoke API does.
///
/// The body is the function's event as is. Unqualified (or `$LATEST`) runs
/// the app's newest version; `Qualifier` names a version or an alias
/// (`live` is what the app's host serves).
#[utoipa::path(post, path = "/2015-03-31/functions/{name}/invocations", tag = "lambda",
    params(("name" = String, Path, description = "The app's name"), InvokeQuery,
        ("X-Amz-Invocation-Type" = Option<String>, Header, description = "`RequestResponse` (default), `Event` or `DryRun`")),
    request_body(content = Vec<u8>, content_type = "application/json", description = "The function's payload"),
    responses(
        (status = 200, description = "The function's result (`X-Amz-Function-Error: Unhandled` and the error document when it failed; `X-Amz-Executed-Version`)"),
        (status = 202, description = "`Event`: queued; it runs later, retried twice on failure"),
        (status = 204, description = "`DryRun`: the function exists and may be invoked"),
        (status = 400, description = "`InvalidRequestContentException`, `InvalidParameterValueException`"),
        (status = 404, description = "`ResourceNotFoundException`"),
        (status = 413, description = "`RequestTooLargeException`"),
        (status = 429, description = "`TooManyRequestsException`"),
        (status = 503, description = "`ServiceException`"),
    ),
    security((), ("bearer" = [])))]
pub async fn invoke(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    let qualifier = query.qualifier.as_deref();
    match invocation_type {
        "RequestResponse" => {}
        "DryRun" => {
            return match state.apps.resolve_function(&name, qualifier).await {
                Ok(_) => StatusCode::NO_CONTENT.into_response(),
                Err(err) => lambda_error(&name, qualifier, &err),
            };
        }
        "Event" => {
            let payload = match payload(&body, MAX_EVENT_BYTES, "an Event invocation") {
                Ok(payload) => payload,
                Err(refused) => return *refused,
            };
            return match state
                .apps
                .enqueue_invocation(&name, qualifier, payload)
                .await
            {
                Ok(id) => {
                    let mut response = StatusCode::ACCEPTED.into_response();
                    if let Ok(id) = HeaderValue::from_str(&id) {
                        response.headers_mut().insert("x-amzn-requestid", id);
                    }
                    response
                }
                Err(err) => lambda_error(&name, qualifier, &err),
            };
        }
        other => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!(
                    "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not {other}"
                ),
            );
        }
    }
    let payload = match payload(&body, MAX_PAYLOAD_BYTES, "the InvokeFunction operation") {
        Ok(payload) => payload,
        Err(refused) => return *refused,
    };
    let invocation = state.apps.invoke_function(&name, qualifier, payload);
    let (outcome, tail) = match headers.get("x-amz-log-type").map(HeaderValue::as_bytes) {
        None | Some(b"None") => (invocation.await, None),
        Some(b"Tail") => {
            let (outcome, tail) = crate::functions::logs::with_tail(invocation).await;
            (outcome, Some(tail))
        }
        Some(other) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!(
                    "X-Amz-Log-Type must be None or Tail, not {}",
                    String::from_utf8_lossy(other)
                ),
            );
        }
    };
    let mut response = match outcome {
        Ok((version, Ok(result))) => answered(version, None, result),
        Ok((version, Err(err))) => match error_document(&err) {
            Some(document) => answered(version, Some("Unhandled"), document),
            None => return lambda_error(&name, qualifier, &err),
        },
        Err(err) => return lambda_error(&name, qualifier, &err),
    };
    if let Some(tail) = tail {
        let encoded = base64::engine::general_purpose::STANDARD.encode(tail);
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            response.headers_mut().insert("x-amz-log-result", value);
        }
    }
    response
}

/// The payload to hand the function (`{}` for an empty body), or Lambda's
/// answer to one over `limit` bytes (for `what`) or not JSON.
fn payload(body: &[u8], limit: usize, what: &str) -> Result<Vec<u8>, Box<Response>> {
    if body.len() > limit {
        return Err(Box::new(aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {limit} bytes for {what}"),
        )));
    }
    if body.is_empty() {
        return Ok(b"{}".to_vec());
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return Err(Box::new(aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json",
        )));
    }
    Ok(body.to_vec())
}

/// `200` with the result (or a function error's document).
fn answered(version: i64, function_error: Option<&'static str>, body: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-amz-executed-version", HeaderValue::from(version));
    if let Some(kind) = function_error {
        headers.insert("x-amz-function-error", HeaderValue::from_static(kind));
    }
    response
}

/// The error document Lambda returns for a function that failed (its
/// `errorType` and `errorMessage`), or `None` when the invocation itself
/// failed (not found, throttled, too large, unavailable).
fn error_document(err: &FunctionError) -> Option<Vec<u8>> {
    let (kind, message) = match err {
        FunctionError::Failed(reported) => {
            // The AWS backend keeps Lambda's document after `Unhandled: `.
            if let Some((_, text)) = reported.split_once(": ") {
                if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok()
                {
                    return Some(text.as_bytes().to_vec());
                }
            }
            match reported.split_once(": ") {
                Some((kind, message)) if !kind.contains(' ') => {
                    (kind.to_owned(), message.to_owned())
                }
                _ => ("Runtime.Unknown".to_owned(), reported.clone()),
            }
        }
        FunctionError::Timeout(seconds) => (
            "Sandbox.Timedout".to_owned(),
            format!("Task timed out after {seconds}.00 seconds"),
        ),
        _ => return None,
    };
    Some(
        serde_json::json!({"errorType": kind, "errorMessage": message})
            .to_string()
            .into_bytes(),
    )
}

/// An invocation that failed, as Lambda answers it.
fn lambda_error(name: &str, qualifier: Option<&str>, err: &FunctionError) -> Response {
    match err {
        FunctionError::NotFound => {
            let arn = match qualifier {
                Some(qualifier) => format!("function:{name}:{qualifier}"),
                None => format!("function:{name}"),
            };
            aws_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("Function not found: arn:aws:lambda:local:000000000000:{arn}"),
            )
        }
        FunctionError::Throttled(why) => aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            &format!("Rate Exceeded: {why}"),
        ),
        FunctionError::PayloadTooLarge(why) => aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            why,
        ),
        other => aws_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            &other.to_string(),
        ),
    }
}

/// An AWS JSON error: the type in `X-Amzn-ErrorType` and the body.
pub(super) fn aws_error(status: StatusCode, kind: &'static str, message: &str) -> Response {
    let body = serde_json::json!({"Type": "User", "message": message}).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-amzn-errortype", HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_errors_become_lambdas_error_documents() {
        let local = FunctionError::Failed("TypeError: x is undefined".into());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&error_document(&local).unwrap()).unwrap(),
            serde_json::json!({"errorType": "TypeError", "errorMessage": "x is undefined"})
        );
        let aws = FunctionError::Failed(
            r#"Unhandled: {"errorType":"Error","errorMessage":"boom"}"#.into(),
        );
        assert_eq!(
            error_document(&aws).unwrap(),
            br#"{"errorType":"Error","errorMessage":"boom"}"#.to_vec()
        );
        let timeout = error_document(&FunctionError::Timeout(3)).unwrap();
        assert!(String::from_utf8(timeout)
            .unwrap()
            .contains("Sandbox.Timedout"));
        assert!(error_document(&FunctionError::NotFound).is_none());
    }
}
