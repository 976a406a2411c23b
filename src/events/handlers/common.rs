//! Pieces the default handlers share: reading details, building job
//! parameters, launching jobs and the events that follow them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{Handled, HandlerError, InboxEvent, Services};
use crate::builder::{BuilderError, JobReporter, JobRequest};
use crate::events::envelope::internal_envelope;
use crate::events::EventType;
use crate::store::{
    Commit, JobFinish, JobKind, JobRecord, JobStatus, NewEvent, TenantRecord, TenantState,
    TenantWrite,
};
use crate::tenants::{next, Lifecycle, Transition};
use crate::tiers::TierDetails;

fn path<'a>(detail: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    rest.iter()
        .try_fold(detail.get(*first)?, |value, key| value.get(key))
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `detail.tenantId`, else `detail.tenant.id`.
pub fn tenant_id(detail: &Map<String, Value>) -> Result<String, HandlerError> {
    non_empty_str(path(detail, &["tenantId"]))
        .or_else(|| non_empty_str(path(detail, &["tenant", "id"])))
        .map(str::to_owned)
        .ok_or_else(|| {
            HandlerError::Permanent(
                "missing tenant id: expected detail.tenantId or detail.tenant.id".into(),
            )
        })
}

/// `detail.planConfig.tier`, else `detail.subscription.plan.tier`, else `detail.tier`.
pub fn tier_of(detail: &Map<String, Value>) -> Option<String> {
    [
        &["planConfig", "tier"][..],
        &["subscription", "plan", "tier"],
        &["tier"],
    ]
    .iter()
    .find_map(|keys| match path(detail, keys) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `detail.builderConfig.config.environmentOverride` (an object, or nothing).
pub fn environment_override(detail: &Map<String, Value>) -> Map<String, Value> {
    match path(detail, &["builderConfig", "config", "environmentOverride"]) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    }
}

/// ARC SaaS's `secret` and `context`: in `detail`, or in the environment override.
pub fn callback_credentials(
    detail: &Map<String, Value>,
    overrides: &Map<String, Value>,
) -> Option<(String, String)> {
    let pick = |key: &str| {
        non_empty_str(detail.get(key))
            .or_else(|| non_empty_str(overrides.get(key)))
            .map(str::to_owned)
    };
    Some((pick("secret")?, pick("context")?))
}

/// A JSON value as an environment variable value.
pub fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Layers parameter maps (later wins) into environment variables, checking names.
pub fn job_params<'a>(
    layers: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ids: [(&str, &str); 3],
) -> Result<BTreeMap<String, String>, HandlerError> {
    let mut params = BTreeMap::new();
    for (key, value) in layers {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(HandlerError::Permanent(format!(
                "parameter name '{}' cannot be an environment variable name",
                key.escape_debug()
            )));
        }
        let value = env_value(value);
        if value.contains('\0') {
            return Err(HandlerError::Permanent(format!(
                "parameter '{key}' contains a NUL character"
            )));
        }
        params.insert(key.clone(), value);
    }
    for (key, value) in ids {
        params.insert(key.to_owned(), value.to_owned());
    }
    Ok(params)
}

/// Parses a stored JSON object (empty when absent or unreadable).
pub fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A fresh tenant record.
pub fn new_tenant(id: &str, state: TenantState) -> TenantRecord {
    TenantRecord {
        id: id.to_owned(),
        state,
        tier: None,
        current_job_id: None,
        last_error: None,
        job_output: "{}".into(),
        params: "{}".into(),
        callback_secret: None,
        callback_context: None,
        callback_event_id: None,
        version: 0,
        created_at_ms: crate::now_ms(),
        updated_at_ms: crate::now_ms(),
    }
}

/// The state the tenant moves to, or the handler's answer when it does not move.
pub fn transition(
    tenant: Option<&TenantRecord>,
    event: Lifecycle,
) -> Result<TenantState, Result<Handled, HandlerError>> {
    match next(tenant.map(|t| t.state), event) {
        Transition::To(state) => Ok(state),
        Transition::Ignore(why) => Err(Ok(Handled::note(format!("ignored: {why}")))),
        Transition::Reject(why) => Err(Err(HandlerError::Permanent(why))),
    }
}

/// A write of `record` guarded by the version it was read at.
pub fn write(record: TenantRecord, read: Option<&TenantRecord>) -> TenantWrite {
    TenantWrite {
        expected_version: read.map(|t| t.version),
        record,
    }
}

/// When a crash interrupted this very event after its job was recorded, the
/// job to start now (still `pending`), or a note that it already started.
pub async fn resume(
    services: &Services,
    event: &InboxEvent,
    tenant: Option<&TenantRecord>,
) -> Result<Option<Handled>, HandlerError> {
    let Some(job_id) = tenant.and_then(|t| t.current_job_id.as_deref()) else {
        return Ok(None);
    };
    let job = services.store.get_job(job_id).await?;
    if job.event_id != event.id {
        return Ok(None);
    }
    if job.status == JobStatus::Pending {
        return start(services, &job).await.map(Some);
    }
    Ok(Some(Handled::note(format!(
        "job {} already {}",
        job.id, job.status
    ))))
}

/// Records a pending job with the tenant's new state, then starts it.
pub async fn launch(
    services: &Services,
    event: &InboxEvent,
    mut tenant: TenantWrite,
    kind: JobKind,
    job_identifier: &str,
    params: BTreeMap<String, String>,
) -> Result<Handled, HandlerError> {
    let job = JobRecord {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant.record.id.clone(),
        kind,
        job_identifier: job_identifier.to_owned(),
        backend: services.builder.name().to_owned(),
        status: JobStatus::Pending,
        event_id: event.id.clone(),
        params: serde_json::to_string(&params).unwrap_or_else(|_| "{}".into()),
        external_id: None,
        attempt: 0,
        exit_code: None,
        output: None,
        log_tail: None,
        error: None,
        created_at_ms: crate::now_ms(),
        started_at_ms: None,
        finished_at_ms: None,
    };
    tenant.record.current_job_id = Some(job.id.clone());
    let commit = Commit {
        tenant: Some(tenant),
        new_jobs: vec![job.clone()],
        ..Commit::default()
    };
    services.store.commit(commit, crate::now_ms()).await?;
    start(services, &job).await
}

/// Asks the builder to start a recorded job and marks it running. A job the
/// builder cannot run at all is finished as failed, which reports the failure.
pub async fn start(services: &Services, job: &JobRecord) -> Result<Handled, HandlerError> {
    let params: BTreeMap<String, String> = serde_json::from_str(&job.params).unwrap_or_default();
    let attempt = job.attempt + 1;
    let request = JobRequest {
        job_id: job.id.clone(),
        job_identifier: job.job_identifier.clone(),
        params,
        attempt,
        reporter: JobReporter::new(services.inbox.clone()),
    };
    match services.builder.start_job(request).await {
        Ok(handle) => {
            services
                .store
                .mark_job_running(&job.id, &handle.external_id, attempt, crate::now_ms())
                .await?;
            Ok(Handled::note(format!(
                "started {} job {} ({})",
                job.kind, job.id, job.job_identifier
            )))
        }
        Err(BuilderError::Unavailable(msg)) => Err(HandlerError::Transient(msg)),
        Err(BuilderError::NotFound(msg) | BuilderError::Invalid(msg)) => {
            let finish = JobFinish {
                id: job.id.clone(),
                status: JobStatus::Failed,
                exit_code: None,
                output: None,
                log_tail: None,
                error: Some(msg.clone()),
            };
            let events = vec![result_event(job, false, &Map::new(), Some(&msg))];
            services
                .store
                .commit(
                    Commit {
                        finished_jobs: vec![finish],
                        events,
                        ..Commit::default()
                    },
                    crate::now_ms(),
                )
                .await?;
            services.inbox.wake();
            Err(HandlerError::Permanent(msg))
        }
    }
}

/// The `*_SUCCESS` / `*_FAILURE` event that reports a finished job to its tenant.
pub fn result_event(
    job: &JobRecord,
    success: bool,
    output: &Map<String, Value>,
    error: Option<&str>,
) -> NewEvent {
    let event_type = match (job.kind, success) {
        (JobKind::Provisioning, true) => EventType::TenantProvisioningSuccess,
        (JobKind::Provisioning, false) => EventType::TenantProvisioningFailure,
        (JobKind::Deployment, true) => EventType::TenantDeploymentSuccess,
        (JobKind::Deployment, false) => EventType::TenantDeploymentFailure,
        (JobKind::Deprovisioning, true) => EventType::TenantDeprovisioningSuccess,
        (JobKind::Deprovisioning, false) => EventType::TenantDeprovisioningFailure,
    };
    let detail = json!({
        "tenantId": job.tenant_id,
        "jobId": job.id,
        "jobIdentifier": job.job_identifier,
        "jobOutput": output,
        "error": error,
    });
    follow_up(&format!("{}:result", job.id), event_type, detail)
}

/// An event the service raises itself, with a deterministic id so a retried
/// handler never raises it twice.
pub fn follow_up(id: &str, event_type: EventType, detail: Value) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        event_type: event_type.as_str().to_owned(),
        source: Some("orchestrator".into()),
        payload: internal_envelope(id, event_type.as_str(), detail),
        received_at_ms: crate::now_ms(),
    }
}

/// The webhook delivery for a final provisioning outcome, when the tenant
/// carried ARC SaaS credentials and a receiver is configured.
pub fn callback_event(
    services: &Services,
    cause: &InboxEvent,
    tenant: &mut TenantRecord,
    success: bool,
) -> Option<NewEvent> {
    if tenant.callback_secret.is_none() || tenant.callback_context.is_none() {
        return None;
    }
    if services.webhook.is_none() {
        tracing::debug!(tenant = %tenant.id, "tenant has webhook credentials but callbacks.webhook_url is not set");
        return None;
    }
    let id = format!("{}:callback", cause.id);
    tenant.callback_event_id = Some(id.clone());
    Some(follow_up(
        &id,
        EventType::TenantCallback,
        json!({"tenantId": tenant.id, "success": success}),
    ))
}

/// The tier's details for a tenant: from the event, else the one remembered.
pub async fn tier_details(
    services: &Services,
    detail: &Map<String, Value>,
    tenant: Option<&TenantRecord>,
) -> Result<TierDetails, HandlerError> {
    let tier = tier_of(detail).or_else(|| tenant.and_then(|t| t.tier.clone())).ok_or_else(|| {
        HandlerError::Permanent(
            "missing tier: expected detail.planConfig.tier, detail.subscription.plan.tier or detail.tier".into(),
        )
    })?;
    Ok(services.tiers.get(&tier).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn reads_tenant_and_tier_in_contract_order() {
        let d = detail(
            json!({"tenant": {"id": "t2"}, "subscription": {"plan": {"tier": "premium"}}, "tier": "basic"}),
        );
        assert_eq!(tenant_id(&d).unwrap(), "t2");
        assert_eq!(tier_of(&d).as_deref(), Some("premium"));
        let d = detail(
            json!({"tenantId": "t1", "tenant": {"id": "t2"}, "planConfig": {"tier": "gold"}, "tier": "basic"}),
        );
        assert_eq!(tenant_id(&d).unwrap(), "t1");
        assert_eq!(tier_of(&d).as_deref(), Some("gold"));
        assert!(matches!(
            tenant_id(&detail(json!({"tenantId": ""}))),
            Err(HandlerError::Permanent(_))
        ));
    }

    #[test]
    fn params_layer_and_stringify() {
        let tier = detail(json!({"SIZE": 3, "FLAG": true, "X": "tier"}));
        let over = detail(json!({"X": "override", "OBJ": {"a": 1}}));
        let p = job_params(
            tier.iter().chain(over.iter()),
            [("TENANT_ID", "t"), ("TIER", "basic"), ("EVENT_ID", "e")],
        )
        .unwrap();
        assert_eq!(p["SIZE"], "3");
        assert_eq!(p["FLAG"], "true");
        assert_eq!(p["X"], "override");
        assert_eq!(p["OBJ"], r#"{"a":1}"#);
        assert_eq!(p["TENANT_ID"], "t");
        let bad = detail(json!({"A=B": "x"}));
        assert!(matches!(
            job_params(bad.iter(), [("A", ""), ("B", ""), ("C", "")]),
            Err(HandlerError::Permanent(_))
        ));
    }

    #[test]
    fn finds_credentials_in_detail_or_override() {
        let over = detail(json!({"secret": "s", "context": "c"}));
        assert_eq!(
            callback_credentials(&Map::new(), &over),
            Some(("s".into(), "c".into()))
        );
        assert_eq!(
            callback_credentials(&detail(json!({"secret": "s"})), &Map::new()),
            None
        );
    }
}
