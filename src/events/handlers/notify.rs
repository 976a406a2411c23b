//! Tenant transitions and final job outcomes as messages to the sinks of
//! `[notifications]`: one `TENANT_NOTIFY` event per message and sink, raised
//! in the commit that makes the change (so a change is published if and
//! only if it happened), its id derived from what caused it (so a handler
//! run again raises the same, which the inbox keeps once).

use async_trait::async_trait;
use serde_json::{json, Value};

use super::jobs::follow_up;
use super::{EventHandler, Handled, HandlerError, InboxEvent, Services};
use crate::events::EventType;
use crate::store::{JobFinish, JobRecord, NewEvent, TenantWrite};
use crate::telemetry::trace::TraceContext;
use crate::tenants::notify::NotifyError;

/// The messages for a change of a tenant's state (none when it stays).
pub fn transition(services: &Services, write: &TenantWrite) -> Vec<NewEvent> {
    let to = write.record.state;
    // Most services publish nothing: no message is built for every commit.
    if services.notifier.is_empty() || write.from == Some(to) {
        return Vec::new();
    }
    let Some(cause) = &write.cause else {
        return Vec::new();
    };
    let kind = format!("tenant.{}", to.as_str().to_lowercase());
    let data = json!({
        "tenantId": write.record.id,
        "from": write.from.map(|s| s.as_str()),
        "to": to.as_str(),
        "tier": write.record.tier,
        "eventId": cause,
        "lastError": write.record.last_error,
    });
    messages(services, &format!("{cause}:{kind}"), &kind, data, None)
}

/// The messages for a job's final outcome.
pub fn job_outcome(
    services: &Services,
    job: &JobRecord,
    finish: &JobFinish,
    trace: Option<TraceContext>,
) -> Vec<NewEvent> {
    if services.notifier.is_empty() {
        return Vec::new();
    }
    let kind = format!("tenant.job_{}", finish.status.as_str());
    let data = json!({
        "tenantId": job.tenant_id,
        "jobId": job.id,
        "jobKind": job.kind.as_str(),
        "jobIdentifier": job.job_identifier,
        "backend": job.backend,
        "status": finish.status.as_str(),
        "exitCode": finish.exit_code,
        "error": finish.error,
    });
    messages(
        services,
        &format!("{}:{}:{kind}", job.id, job.attempt),
        &kind,
        data,
        trace,
    )
}

fn messages(
    services: &Services,
    id: &str,
    kind: &str,
    data: Value,
    trace: Option<TraceContext>,
) -> Vec<NewEvent> {
    let trace = trace.or_else(crate::telemetry::trace::current);
    // The operation's correlation id: the trace its events and jobs share.
    let mut data = data;
    if let (Some(map), Some(trace)) = (data.as_object_mut(), trace) {
        map.insert("correlationId".into(), json!(trace.trace_id()));
    }
    services
        .notifier
        .sinks()
        .into_iter()
        .map(|sink| {
            let tenant = data.get("tenantId").cloned().unwrap_or(Value::Null);
            follow_up(
                &format!("{id}>{sink}"),
                EventType::TenantNotify,
                json!({"tenantId": tenant, "sink": sink, "type": kind, "data": data}),
                trace,
            )
        })
        .collect()
}

/// `TENANT_NOTIFY`: delivers one message to one sink, its event id as the
/// message id (`webhook-id`), so a receiver can tell a retry from a new one.
pub struct NotifyHandler;

#[async_trait]
impl EventHandler for NotifyHandler {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let field = |name: &str| event.detail.get(name).and_then(Value::as_str);
        let (Some(sink), Some(kind)) = (field("sink"), field("type")) else {
            return Err(HandlerError::Permanent(
                "TENANT_NOTIFY without a sink and type".into(),
            ));
        };
        let data = event.detail.get("data").cloned().unwrap_or(Value::Null);
        match services
            .notifier
            .deliver(sink, event.id.as_str(), kind, &data)
            .await
        {
            Ok(said) => Ok(Handled::note(said)),
            Err(NotifyError::Transient(why)) => Err(HandlerError::transient(why)),
            Err(NotifyError::Refused(why)) => Err(HandlerError::Permanent(why)),
        }
    }
}
