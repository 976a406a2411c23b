//! This service as an application plane of AWS's SaaS Builder Toolkit
//! (sbt-aws): which control-plane events it takes (`[sbt]`), what their jobs
//! get from the event (as sbt-aws's ScriptJob passes them), and the outcome
//! events it puts on the control plane's bus (EventBridge `PutEvents`), in
//! sbt-aws's shapes (see `../shared/research/sbt-aws.md`).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::{json, Map, Value};

use crate::config::SbtConfig;
use crate::events::EventType;

/// The value `TenantRecord::control_plane` has for an sbt-aws tenant.
pub const CONTROL_PLANE: &str = "sbt";

/// Which half of a tenant's life an outcome reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Provision,
    Deprovision,
    Activate,
    Deactivate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provision => "provision",
            Phase::Deprovision => "deprovision",
            Phase::Activate => "activate",
            Phase::Deactivate => "deactivate",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "provision" => Some(Phase::Provision),
            "deprovision" => Some(Phase::Deprovision),
            "activate" => Some(Phase::Activate),
            "deactivate" => Some(Phase::Deactivate),
            _ => None,
        }
    }
}

/// Why an outcome could not be put on the bus.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The call failed (network, throttling, credentials): retrying may help.
    #[error("PutEvents failed: {0}")]
    Call(String),
    /// EventBridge took the call but refused the entry.
    #[error("EventBridge refused the event: {code}: {message}")]
    Refused { code: String, message: String },
}

/// The configuration, and the client of the control plane's bus when one is set.
pub struct SbtPlane {
    config: SbtConfig,
    bus: Option<aws_sdk_eventbridge::Client>,
}

impl std::fmt::Debug for SbtPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SbtPlane")
            .field("event_bus", &self.config.event_bus)
            .finish_non_exhaustive()
    }
}

impl Default for SbtPlane {
    fn default() -> Self {
        Self::new(SbtConfig::default(), None)
    }
}

impl SbtPlane {
    /// `sdk`: the AWS configuration, used when `config.event_bus` is set.
    pub fn new(config: SbtConfig, sdk: Option<&aws_config::SdkConfig>) -> Self {
        let bus = match (&config.event_bus, sdk) {
            (Some(_), Some(sdk)) => Some(aws_sdk_eventbridge::Client::new(sdk)),
            _ => None,
        };
        Self { config, bus }
    }

    /// The event type an incoming detail-type names, if it is one of sbt-aws's.
    pub fn incoming_type(&self, detail_type: &str) -> Option<EventType> {
        let named = |list: &[String]| list.iter().any(|name| name == detail_type);
        if named(&self.config.onboarding_detail_types) {
            Some(EventType::SbtOnboardingRequest)
        } else if named(&self.config.offboarding_detail_types) {
            Some(EventType::SbtOffboardingRequest)
        } else if named(&self.config.activate_detail_types) {
            Some(EventType::SbtActivateRequest)
        } else if named(&self.config.deactivate_detail_types) {
            Some(EventType::SbtDeactivateRequest)
        } else {
            None
        }
    }

    /// Whether `source` is a control plane's (`sbt.control_plane_sources`).
    pub fn accepts_source(&self, source: &str) -> bool {
        self.config
            .control_plane_sources
            .iter()
            .any(|s| s == source)
    }

    /// The sources accepted, for messages.
    pub fn sources(&self) -> String {
        self.config.control_plane_sources.join(", ")
    }

    /// What a job gets from `detail`, as ScriptJob passes it: each of
    /// `string_variables` as it is (a string as such, anything else as
    /// JSON text), each of `json_variables` as JSON text; names as in the
    /// detail. A listed field the detail lacks is an error naming it
    /// (where sbt-aws's state machine would stop without a word).
    pub fn job_variables(&self, detail: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut variables = Map::new();
        for (names, as_json) in [
            (&self.config.string_variables, false),
            (&self.config.json_variables, true),
        ] {
            for name in names {
                let value = detail.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
                    format!(
                        "detail.{name} is missing (sbt.{} lists it)",
                        if as_json {
                            "json_variables"
                        } else {
                            "string_variables"
                        }
                    )
                })?;
                let text = match (as_json, value) {
                    (false, Value::String(s)) => s.clone(),
                    _ => value.to_string(),
                };
                variables.insert(name.clone(), Value::String(text));
            }
        }
        Ok(variables)
    }

    /// The detail-type and detail of an outcome, as sbt-aws's ScriptJob puts them.
    pub fn outcome(
        &self,
        phase: Phase,
        success: bool,
        registration_id: Option<&str>,
        job_output: &Map<String, Value>,
    ) -> (String, Value) {
        let name = match (phase, success) {
            (Phase::Provision, true) => "provisionSuccess",
            (Phase::Provision, false) => "provisionFailure",
            (Phase::Deprovision, true) => "deprovisionSuccess",
            (Phase::Deprovision, false) => "deprovisionFailure",
            (Phase::Activate, true) => "activateSuccess",
            (Phase::Activate, false) => "activateFailure",
            (Phase::Deactivate, true) => "deactivateSuccess",
            (Phase::Deactivate, false) => "deactivateFailure",
        };
        let pick = |names: &[String]| -> Map<String, Value> {
            names
                .iter()
                .filter_map(|name| {
                    let value = job_output.get(name)?;
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((name.clone(), Value::String(text)))
                })
                .collect()
        };
        let job_output = match success {
            true => json!({
                "tenantData": pick(&self.config.tenant_data),
                "tenantRegistrationData": pick(&self.config.tenant_registration_data),
            }),
            false => json!({"tenantStatus": format!("Failed to {} tenant.", phase.as_str())}),
        };
        (
            format!("{}{name}", self.config.detail_type_prefix),
            json!({"tenantRegistrationId": registration_id, "jobOutput": job_output}),
        )
    }

    /// The bus outcomes go to, if one is set.
    pub fn event_bus(&self) -> Option<&str> {
        self.config.event_bus.as_deref()
    }

    /// Puts one event on the control plane's bus; `false` when no bus is set.
    pub async fn put(&self, detail_type: &str, detail: &Value) -> Result<bool, PutError> {
        let (Some(client), Some(bus)) = (&self.bus, &self.config.event_bus) else {
            return Ok(false);
        };
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(&self.config.application_plane_source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let answer = client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| PutError::Call(crate::aws::describe(&e)))?;
        if answer.failed_entry_count() > 0 {
            let refused = answer.entries().iter().find(|e| e.error_code().is_some());
            return Err(PutError::Refused {
                code: refused
                    .and_then(|e| e.error_code())
                    .unwrap_or("unknown")
                    .to_owned(),
                message: refused
                    .and_then(|e| e.error_message())
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(configure: impl FnOnce(&mut SbtConfig)) -> SbtPlane {
        let mut config = SbtConfig::default();
        configure(&mut config);
        SbtPlane::new(config, None)
    }

    #[test]
    fn takes_both_versions_names_and_passes_variables_as_script_job_does() {
        let sbt = plane(|c| c.json_variables = vec!["prices".into()]);
        assert_eq!(
            sbt.incoming_type("sbt_aws_onboardingRequest"),
            Some(EventType::SbtOnboardingRequest)
        );
        assert_eq!(
            sbt.incoming_type("onboardingRequest"),
            Some(EventType::SbtOnboardingRequest)
        );
        assert_eq!(
            sbt.incoming_type("sbt_aws_offboardingRequest"),
            Some(EventType::SbtOffboardingRequest)
        );
        assert_eq!(sbt.incoming_type("TENANT_PROVISIONING"), None);
        assert!(sbt.accepts_source("sbt.control.plane") && !sbt.accepts_source("someone.else"));
        let detail = json!({"tenantId": "t-1", "tier": "basic", "tenantName": "acme", "email": "a@acme.io",
                            "prices": [{"id": 1}], "other": "x"});
        let vars = sbt
            .job_variables(detail.as_object().expect("object"))
            .expect("variables");
        assert_eq!(vars["tenantName"], "acme");
        assert_eq!(vars["prices"], r#"[{"id":1}]"#);
        assert!(!vars.contains_key("other"));
        let missing =
            json!({"tenantId": "t-1", "tier": "basic", "tenantName": "acme", "prices": []});
        let err = sbt
            .job_variables(missing.as_object().expect("object"))
            .expect_err("email is missing");
        assert!(err.contains("detail.email"), "{err}");
    }

    #[test]
    fn outcomes_have_sbt_aws_shapes() {
        let sbt = plane(|c| {
            c.tenant_data = vec!["tenantS3Bucket".into(), "absent".into()];
            c.tenant_registration_data = vec!["registrationStatus".into()];
        });
        let output =
            json!({"tenantS3Bucket": "b-1", "registrationStatus": "created", "OTHER": "x"});
        let (kind, detail) = sbt.outcome(
            Phase::Provision,
            true,
            Some("r-1"),
            output.as_object().expect("object"),
        );
        assert_eq!(kind, "sbt_aws_provisionSuccess");
        assert_eq!(
            detail,
            json!({"tenantRegistrationId": "r-1", "jobOutput": {
                "tenantData": {"tenantS3Bucket": "b-1"},
                "tenantRegistrationData": {"registrationStatus": "created"}}})
        );
        let (kind, detail) = sbt.outcome(Phase::Deprovision, false, Some("r-1"), &Map::new());
        assert_eq!(kind, "sbt_aws_deprovisionFailure");
        assert_eq!(
            detail["jobOutput"],
            json!({"tenantStatus": "Failed to deprovision tenant."})
        );
        let old = plane(|c| c.detail_type_prefix = String::new());
        assert_eq!(
            old.outcome(Phase::Provision, false, None, &Map::new()).0,
            "provisionFailure"
        );
    }
}
