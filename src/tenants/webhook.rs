//! The signed webhook ARC SaaS tenant management verifies (`POST /webhook`).
//!
//! Signature: `hex(HMAC-SHA256(key = secret as UTF-8, body + context + timestamp))`,
//! sent as `x-signature` with the millisecond timestamp in `x-timestamp`. The
//! body is signed and sent as the very same bytes.

use crate::telemetry::trace::{self, Span, TraceContext};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// `WebhookType.RESOURCES_PROVISIONED`.
const RESOURCES_PROVISIONED: u8 = 0;

/// Signs `body` as ARC SaaS expects.
pub fn sign(secret: &str, context: &str, body: &str, timestamp_ms: i64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body.as_bytes());
    mac.update(context.as_bytes());
    mac.update(timestamp_ms.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The webhook body for a provisioning outcome. `resources` and `appPlaneUrl`
/// come from the job output when the job wrote them (`resources` as a JSON array).
pub fn payload(tenant_id: &str, success: bool, job_output: &Map<String, Value>) -> String {
    let resources = job_output
        .get("resources")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_array)
        .unwrap_or_else(|| json!([]));
    let mut data = Map::new();
    data.insert("status".into(), json!(u8::from(success)));
    data.insert("resources".into(), resources);
    if let Some(url) = job_output.get("appPlaneUrl").and_then(Value::as_str) {
        data.insert("appPlaneUrl".into(), json!(url));
    }
    json!({"initiatorId": tenant_id, "type": RESOURCES_PROVISIONED, "data": data}).to_string()
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver refused the request; repeating it will not help.
    #[error("webhook refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// Network trouble, a timeout or a 5xx/408/429: try again.
    #[error("webhook delivery failed: {0}")]
    Transient(String),
}

/// Sends webhooks.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    url: String,
}

impl WebhookClient {
    pub fn new(url: String, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent("orchestrator-webhook")
            .build()?;
        Ok(Self { http, url })
    }

    /// The configured receiver.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Signs and POSTs `body` now.
    pub async fn deliver(
        &self,
        secret: &str,
        context: &str,
        body: String,
    ) -> Result<u16, DeliveryError> {
        let mut span = Span::child_of_current("POST webhook", trace::Kind::Client);
        let delivered = self.send(secret, context, body, span.context()).await;
        match &delivered {
            Ok(status) => span.set("http.response.status_code", i64::from(*status)),
            Err(err) => {
                if let DeliveryError::Refused { status, .. } = err {
                    span.set("http.response.status_code", i64::from(*status));
                }
                span.fail(err);
            }
        }
        span.end();
        delivered
    }

    /// One signed POST, continuing `trace` (its `traceparent` header).
    async fn send(
        &self,
        secret: &str,
        context: &str,
        body: String,
        trace: TraceContext,
    ) -> Result<u16, DeliveryError> {
        let timestamp = chrono::Utc::now().timestamp_millis();
        let signature = sign(secret, context, &body, timestamp);
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-timestamp", timestamp.to_string())
            .header("x-signature", signature)
            .header(trace::TRACEPARENT, trace.traceparent())
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let mut text = response.text().await.unwrap_or_default();
        text.truncate(300);
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(DeliveryError::Transient(format!(
                "HTTP {}: {text}",
                status.as_u16()
            )))
        } else {
            Err(DeliveryError::Refused {
                status: status.as_u16(),
                body: text,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector from ARC SaaS tenant-management (Node `crypto` and openssl agree).
    #[test]
    fn reproduces_the_arc_saas_test_vector() {
        let body = r#"{"initiatorId":"afb2c17f-f859-bd99-91eb-b0553032d95e","type":0,"data":{"status":1,"resources":[{"type":"bucket","externalIdentifier":"tfstate-acme","metadata":{"bucket":"tfstate-acme","path":"acme/acme.tfstate"}}],"appPlaneUrl":"https://acme.example.com/main/home"}}"#;
        assert_eq!(body.len(), 266);
        let signature = sign(
            "1e77e98e72f20561209aae2983e8f397",
            "bf338f61-c371-4437-8252-c70ddb8992ea",
            body,
            1723631794739,
        );
        assert_eq!(
            signature,
            "d937b871f717693727a4082b4f94822d2e358afe17b8d4a4c0cf59b619d78eda"
        );
    }

    #[test]
    fn payload_matches_the_vector_shape() {
        let mut output = Map::new();
        output.insert(
            "resources".into(),
            json!(r#"[{"type":"bucket","externalIdentifier":"tfstate-acme","metadata":{"bucket":"tfstate-acme","path":"acme/acme.tfstate"}}]"#),
        );
        output.insert(
            "appPlaneUrl".into(),
            json!("https://acme.example.com/main/home"),
        );
        let body = payload("afb2c17f-f859-bd99-91eb-b0553032d95e", true, &output);
        let signature = sign(
            "1e77e98e72f20561209aae2983e8f397",
            "bf338f61-c371-4437-8252-c70ddb8992ea",
            &body,
            1723631794739,
        );
        assert_eq!(
            signature,
            "d937b871f717693727a4082b4f94822d2e358afe17b8d4a4c0cf59b619d78eda"
        );
    }

    #[test]
    fn failure_payload_has_status_zero_and_no_resources() {
        let body = payload("t1", false, &Map::new());
        assert_eq!(
            body,
            r#"{"initiatorId":"t1","type":0,"data":{"status":0,"resources":[]}}"#
        );
    }
}
