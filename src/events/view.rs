//! What the API shows of inbox events.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::store::{EventRecord, EventStatus};
use crate::support::timestamp;
use crate::telemetry::trace::TraceContext;

/// An event in the inbox.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "TENANT_PROVISIONING")]
    pub event_type: String,
    pub source: Option<String>,
    pub status: EventStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// What the handler did, e.g. why the event changed nothing.
    pub note: Option<String>,
    pub received_at: String,
    pub updated_at: String,
    /// When a waiting retry is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The trace the event continues (W3C trace id, 32 hex digits); its
    /// handler, jobs, webhook deliveries and follow-up events are in it.
    pub trace_id: Option<String>,
    /// The event's detail (shown for a single event, not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Map<String, Value>>,
}

impl EventView {
    /// The view with the event's detail included.
    /// ARC SaaS's webhook `secret` (in the detail or its environment
    /// override) is shown as `***`.
    pub fn with_detail(record: EventRecord) -> Self {
        let detail = crate::events::envelope::detail_of(&record.payload)
            .ok()
            .map(|mut detail| {
                redact_secret(&mut detail);
                if let Some(Value::Object(overrides)) = detail
                    .get_mut("builderConfig")
                    .and_then(|b| b.get_mut("config"))
                    .and_then(|c| c.get_mut("environmentOverride"))
                {
                    redact_secret(overrides);
                }
                detail
            });
        Self {
            detail,
            ..Self::from(record)
        }
    }
}

fn redact_secret(map: &mut Map<String, Value>) {
    if let Some(secret) = map.get_mut("secret") {
        *secret = Value::String("***".into());
    }
}

impl From<EventRecord> for EventView {
    fn from(e: EventRecord) -> Self {
        let waiting = e.status == EventStatus::Received && e.attempts > 0;
        Self {
            next_attempt_at: waiting.then(|| timestamp(e.next_attempt_at_ms)),
            id: e.id.into_string(),
            event_type: e.event_type,
            source: e.source,
            status: e.status,
            attempts: e.attempts,
            last_error: e.last_error,
            note: e.note,
            received_at: timestamp(e.received_at_ms),
            updated_at: timestamp(e.updated_at_ms),
            trace_id: TraceContext::from_stored(e.traceparent.as_deref()).map(|t| t.trace_id()),
            detail: None,
        }
    }
}
