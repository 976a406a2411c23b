//! `TENANT_CALLBACK` (internal): delivers the signed provisioning outcome to
//! ARC SaaS tenant management; retried by the inbox on transient failures.

use async_trait::async_trait;
use serde_json::Value;

use super::common::tenant_id;
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::tenants::webhook::{payload, DeliveryError};

/// Sends the webhook.
pub struct CallbackHandler;

#[async_trait]
impl EventHandler for CallbackHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let id = tenant_id(&event.detail)?;
        let success = event
            .detail
            .get("success")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let webhook = services.webhook.as_ref().ok_or_else(|| {
            HandlerError::Permanent("callbacks.webhook_url is not configured".into())
        })?;
        let tenant = services
            .store
            .get_tenant(&id)
            .await?
            .ok_or_else(|| HandlerError::Permanent(format!("unknown tenant '{id}'")))?;
        let (Some(secret), Some(context)) = (&tenant.callback_secret, &tenant.callback_context)
        else {
            return Err(HandlerError::Permanent(format!(
                "tenant '{id}' has no webhook secret and context"
            )));
        };
        let body = payload(id.as_str(), success, &tenant.job_output);
        let delivered = webhook.deliver(secret, context, body).await;
        let metrics = &services.metrics;
        match delivered {
            Ok(status) => {
                metrics.webhook_delivery("delivered");
                Ok(Handled::note(format!(
                    "delivered to {} (HTTP {status})",
                    webhook.url()
                )))
            }
            Err(err @ DeliveryError::Refused { .. }) => {
                metrics.webhook_delivery("refused");
                Err(HandlerError::Permanent(err.to_string()))
            }
            Err(err @ DeliveryError::Transient(_)) => {
                metrics.webhook_delivery("failed");
                Err(HandlerError::transient_because(
                    format!("delivering to {}", webhook.url()),
                    err,
                ))
            }
        }
    }
}
