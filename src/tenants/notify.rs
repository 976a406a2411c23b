//! Publishing tenant transitions and job outcomes to the sinks
//! `[notifications]` names: an EventBridge bus (`PutEvents`, detail-type
//! `orchestrator.tenant.<transition>`) and webhooks signed as the Standard
//! Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
//! Each message is an inbox event per sink, so it is retried with backoff
//! and, keeping its id, delivered once per transition.

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::NotificationsConfig;

/// The source of the events put on the bus.
pub const SOURCE: &str = "orchestrator";

/// How long a webhook receiver has to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Retrying may help (network, 5xx, 408, 429, EventBridge unavailable).
    #[error("{0}")]
    Transient(String),
    /// It will not be taken (another 4xx, a sink no longer configured).
    #[error("{0}")]
    Refused(String),
}

struct Webhook {
    url: String,
    key: Vec<u8>,
}

/// The configured sinks.
pub struct Notifier {
    bus: Option<(aws_sdk_eventbridge::Client, String)>,
    webhooks: Vec<Webhook>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sinks", &self.sinks())
            .finish()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            bus: None,
            webhooks: Vec::new(),
            http: reqwest::Client::new(),
        }
    }
}

/// The key of a Standard Webhooks secret (`whsec_<base64>`).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a webhook secret is 'whsec_' followed by base64 (Standard Webhooks)")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| "the webhook secret after 'whsec_' is not base64".to_owned())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

impl Notifier {
    /// `sdk`: the AWS configuration, used when `event_bus` is set.
    pub fn new(
        config: &NotificationsConfig,
        sdk: Option<&aws_config::SdkConfig>,
    ) -> Result<Self, String> {
        let webhooks = config
            .webhooks
            .iter()
            .map(|sink| {
                let url = reqwest::Url::parse(&sink.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        format!(
                            "notifications.webhooks: '{}' is not an http(s) URL",
                            sink.url
                        )
                    })?;
                let key = signing_key(&sink.secret.0)
                    .map_err(|e| format!("notifications.webhooks ({url}): {e}"))?;
                Ok(Webhook {
                    url: sink.url.clone(),
                    key,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let bus = match (&config.event_bus, sdk) {
            (Some(bus), Some(sdk)) => Some((aws_sdk_eventbridge::Client::new(sdk), bus.clone())),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent("orchestrator-notifications")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            bus,
            webhooks,
            http,
        })
    }

    /// Whether no sink is configured (then nothing is published).
    pub fn is_empty(&self) -> bool {
        self.bus.is_none() && self.webhooks.is_empty()
    }

    /// The sinks' names, as the messages name them.
    pub fn sinks(&self) -> Vec<String> {
        let bus = self.bus.iter().map(|_| "eventbridge".to_owned());
        bus.chain(self.webhooks.iter().map(|w| format!("webhook:{}", w.url)))
            .collect()
    }

    /// Delivers message `id` (`type`: `tenant.active`, …) to `sink`; what
    /// the sink answered.
    pub async fn deliver(
        &self,
        sink: &str,
        id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<String, NotifyError> {
        if sink == "eventbridge" {
            let Some((client, bus)) = &self.bus else {
                return Err(NotifyError::Refused(
                    "notifications.event_bus is no longer set".into(),
                ));
            };
            let mut detail = data.clone();
            if let Some(map) = detail.as_object_mut() {
                map.insert("id".into(), json!(id));
            }
            let entry = PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(SOURCE)
                .detail_type(format!("orchestrator.{kind}"))
                .detail(detail.to_string())
                .build();
            let answer = client
                .put_events()
                .entries(entry)
                .send()
                .await
                .map_err(|e| {
                    NotifyError::Transient(format!(
                        "PutEvents failed: {}",
                        crate::aws::describe(&e)
                    ))
                })?;
            if answer.failed_entry_count() > 0 {
                let code = answer
                    .entries()
                    .iter()
                    .find_map(|e| e.error_code())
                    .unwrap_or("unknown");
                return Err(NotifyError::Transient(format!(
                    "EventBridge refused the event: {code}"
                )));
            }
            return Ok(format!("put on {bus}"));
        }
        let url = sink.strip_prefix("webhook:").unwrap_or(sink);
        let Some(webhook) = self.webhooks.iter().find(|w| w.url == url) else {
            return Err(NotifyError::Refused(format!(
                "no webhook {url} is configured any more"
            )));
        };
        let now = chrono::Utc::now();
        let body = json!({
            "type": kind,
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": data,
        })
        .to_string();
        let timestamp = now.timestamp();
        let response = self
            .http
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&webhook.key, id, timestamp, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Transient(format!("POST {url}: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(format!("delivered to {url} (HTTP {})", status.as_u16()));
        }
        let said = format!("{url} answered HTTP {}", status.as_u16());
        match status.as_u16() {
            408 | 429 | 500..=599 => Err(NotifyError::Transient(said)),
            _ => Err(NotifyError::Refused(said)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example_does() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key("MfKQ9r8").is_err());
        assert!(signing_key("whsec_!!").is_err());
    }
}
