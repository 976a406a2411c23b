//! The HTTP side of the client: one connection to the service, its token,
//! and the service's error envelope turned into a [`CliError`].

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use super::Connection;

/// Why a command failed; printed as `error: …` with a non-zero exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The service refused: its own message and code.
    #[error("{message} ({code}, HTTP {status})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the service answered something unexpected: {0}")]
    BadAnswer(String),
}

impl CliError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| CliError::Io { context, source }
    }
}

/// The service at `--url`, with `--token` on every request.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Self, CliError> {
        let base = Url::parse(&connection.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--url must be an http(s) URL such as http://127.0.0.1:8080, not '{}'",
                    connection.url
                ))
            })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("orchestrator-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token: connection.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The service's URL with `segments` as its path, each one escaped.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Where the proxy serves `host` (an app's host name) on this service:
    /// the scheme and port of `--url`.
    pub fn app_url(&self, host: &str) -> String {
        match self.base.port() {
            Some(port) => format!("{}://{host}:{port}/", self.base.scheme()),
            None => format!("{}://{host}/", self.base.scheme()),
        }
    }

    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub fn get(&self, segments: &[&str]) -> RequestBuilder {
        self.request(Method::GET, segments)
    }

    pub fn post(&self, segments: &[&str]) -> RequestBuilder {
        self.request(Method::POST, segments)
    }

    /// Sends `request`; a status over 399 becomes the service's error.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.to_string(),
            reason: describe(&e),
        })?;
        if response.status().is_client_error() || response.status().is_server_error() {
            return Err(refusal(response).await);
        }
        Ok(response)
    }

    /// Sends `request` and reads the answer's JSON (`null` for an empty body).
    pub async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        let response = self.send(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| CliError::BadAnswer(describe(&e)))?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| CliError::BadAnswer(e.to_string()))
    }
}

/// The error a refusing answer carries: the envelope `{"error": {"code",
/// "message"}}`, Lambda's `{"Type", "message"}` with `x-amzn-errortype`, or
/// the status and text.
async fn refusal(response: Response) -> CliError {
    let status = response.status();
    let lambda_type = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let field =
        |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let (code, message) = match (body.get("error"), lambda_type) {
        (Some(error), _) => (field(error, "code"), field(error, "message")),
        (None, Some(kind)) => (
            Some(kind),
            field(&body, "message").or_else(|| field(&body, "Message")),
        ),
        (None, None) => (None, None),
    };
    CliError::Server {
        status: status.as_u16(),
        code: code.unwrap_or_else(|| reason(status)),
        message: message.unwrap_or_else(|| {
            let text = text.trim();
            if text.is_empty() {
                reason(status)
            } else {
                text.chars().take(500).collect()
            }
        }),
    }
}

fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_")
}

/// A transport error with its causes (reqwest's own text stops at the first).
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
