//! Pieces the default handlers share: reading details, building job
//! parameters, tenant records and transitions.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Handled, HandlerError, Services};
use crate::store::{EventId, JsonObject, TenantId, TenantRecord, TenantState, TenantWrite};
use crate::telemetry::trace::{self, Span};
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
pub fn tenant_id(detail: &Map<String, Value>) -> Result<TenantId, HandlerError> {
    non_empty_str(path(detail, &["tenantId"]))
        .or_else(|| non_empty_str(path(detail, &["tenant", "id"])))
        .map(TenantId::from)
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

/// The one level of a body [`check_override_names`] walks down: the fields
/// on the way to the override, each kept as raw text (skipped, not built).
#[derive(serde::Deserialize)]
struct Level<'a> {
    #[serde(borrow, default)]
    detail: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default, rename = "detail-type")]
    detail_type: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default, rename = "builderConfig")]
    builder_config: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    config: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default, rename = "environmentOverride")]
    environment_override: Option<&'a serde_json::value::RawValue>,
}

/// An object's level, or `None` for any other value (which the handler ignores too).
fn level(raw: Option<&serde_json::value::RawValue>) -> Result<Option<Level<'_>>, String> {
    match raw.map(serde_json::value::RawValue::get) {
        Some(text) if text.starts_with('{') => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// Refuses a body whose environment override names a variable the rule of
/// [`crate::envvars`] refuses, before it is stored: the message names it.
/// The override is found where [`environment_override`] reads it (in
/// `detail` for an envelope); the rest of the body is skipped, not built.
/// Bodies that cannot spell the key (neither the word nor an escape) are
/// not read again at all. A field on the way given twice is refused: the
/// handler would read the last one.
pub fn check_override_names(payload: &str) -> Result<(), String> {
    if payload.contains("\\u") {
        // An escape could spell the key: walk the handler's own path.
        return check_override_path(payload);
    }
    // Without escapes the key is spelled as is: each object that follows it
    // is checked, wherever it stands (a superset of the handler's path), and
    // the rest of the body is not read again.
    for (at, _) in payload.match_indices("\"environmentOverride\"") {
        let rest = payload[at + "\"environmentOverride\"".len()..].trim_start();
        let Some(value) = rest.strip_prefix(':').map(str::trim_start) else {
            continue;
        };
        if !value.starts_with('{') {
            continue;
        }
        let mut objects = serde_json::Deserializer::from_str(value)
            .into_iter::<std::collections::BTreeMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny>>();
        if let Some(Ok(names)) = objects.next() {
            crate::envvars::check_names(names.keys().map(|k| k.as_ref()))
                .map_err(|e| format!("builderConfig.config.environmentOverride: {e}"))?;
        }
    }
    Ok(())
}

/// [`check_override_names`] for a body with escapes: the override is found
/// where [`environment_override`] reads it.
fn check_override_path(payload: &str) -> Result<(), String> {
    if !payload.trim_start().starts_with('{') {
        return Ok(());
    }
    let top: Level<'_> = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    let envelope =
        top.detail_type.is_some() && top.detail.is_some_and(|d| d.get().starts_with('{'));
    let detail = match envelope {
        true => level(top.detail)?,
        false => Some(top),
    };
    let Some(config) = level(detail.and_then(|d| d.builder_config))?
        .map(|b| level(b.config))
        .transpose()?
        .flatten()
    else {
        return Ok(());
    };
    let Some(overrides) = config
        .environment_override
        .map(serde_json::value::RawValue::get)
        .filter(|text| text.starts_with('{'))
    else {
        return Ok(());
    };
    let names: std::collections::BTreeMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny> =
        serde_json::from_str(overrides).map_err(|e| e.to_string())?;
    crate::envvars::check_names(names.keys().map(|k| k.as_ref()))
        .map_err(|e| format!("builderConfig.config.environmentOverride: {e}"))
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
        crate::envvars::check_name(key).map_err(|e| HandlerError::Permanent(e.to_string()))?;
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

/// A fresh tenant record.
pub fn new_tenant(id: &TenantId, state: TenantState) -> TenantRecord {
    TenantRecord {
        id: id.clone(),
        state,
        tier: None,
        current_job_id: None,
        last_error: None,
        job_output: JsonObject::default(),
        params: JsonObject::default(),
        callback_secret: None,
        callback_context: None,
        callback_event_id: None,
        control_plane: None,
        version: 0,
        created_at_ms: crate::support::now_ms(),
        updated_at_ms: crate::support::now_ms(),
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

/// A write of `record` guarded by the version it was read at, by event `cause`.
pub fn write(record: TenantRecord, read: Option<&TenantRecord>, cause: &EventId) -> TenantWrite {
    TenantWrite {
        expected_version: read.map(|t| t.version),
        from: read.map(|t| t.state),
        cause: Some(cause.clone()),
        record,
    }
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
    let mut span = Span::child_of_current("tier details", trace::Kind::Client);
    span.set("tier.source", services.tiers.name());
    let details = services.tiers.get(&tier).await;
    span.end_with(&details);
    Ok(details?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn detail(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn override_names_are_checked_where_the_handler_reads_them() {
        let bad =
            json!({"builderConfig": {"config": {"environmentOverride": {"LD_PRELOAD": "x"}}}});
        let ok = json!({"builderConfig": {"config": {"environmentOverride": {"REGION": "eu"}}}});
        let envelope = |detail: &Value| {
            json!({"id": "1", "detail-type": "TENANT_PROVISIONING", "detail": detail}).to_string()
        };
        for body in [bad.to_string(), envelope(&bad)] {
            let err = check_override_names(&body).unwrap_err();
            assert!(err.contains("'LD_PRELOAD'"), "{err}");
        }
        for body in [ok.to_string(), envelope(&ok)] {
            assert_eq!(check_override_names(&body), Ok(()));
        }
        // An escaped key is the same key to the handler.
        let escaped =
            r#"{"builderConfig":{"config":{"environment\u004fverride":{"BASH_ENV":"x"}}}}"#;
        assert!(check_override_names(escaped).is_err());
        // Where there is no override object, there is nothing to check.
        for body in [
            r#"{"builderConfig": "environment"}"#,
            r#"{"builderConfig": {"config": {"environmentOverride": ["LD_PRELOAD"]}}}"#,
            r#"{"note": "\"environmentOverride\": {\"LD_PRELOAD\": 1}"}"#,
        ] {
            assert_eq!(check_override_names(body), Ok(()), "{body}");
        }
        // An override object anywhere is held to the rule (a superset of the handler's path).
        let elsewhere = r#"{"environmentOverride": {"LD_PRELOAD": "x"}}"#;
        assert!(check_override_names(elsewhere).is_err());
        // With escapes, the handler's path is walked; a field on it given twice is refused.
        let twice =
            r#"{"builderConfig":{"config":{"environmentOverride":{"A":"\u0031"}},"config":{}}}"#;
        assert!(check_override_names(twice).is_err());
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
