//! The service as an sbt-aws application plane: sbt-aws's own onboarding and
//! offboarding envelopes through the real server, local jobs getting the
//! detail's fields as ScriptJob passes them, and the outcomes put on the
//! control plane's bus (moto), read back from an SQS queue a rule on that
//! bus targets: success, failure, timeout, a missing field, offboarding, and
//! sbt-aws 0.8's unprefixed names.

use std::sync::Arc;

use orchestrator::config::SbtConfig;
use orchestrator::tenants::sbt::SbtPlane;
use serde_json::{json, Map, Value};

use crate::common::{write_job, TestApp};

/// Runs `script` with boto3 on moto (`moto` is its URL, `kw` the client
/// settings); its stdout as JSON.
fn boto3(moto: &str, script: &str) -> Value {
    let program = format!(
        "import json, boto3\n\
         kw = dict(endpoint_url='{moto}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
         {script}\n"
    );
    crate::moto::python_json(&program).expect("moto runs, so its Python does")
}

/// A bus like sbt-aws's `SbtEventBus`, with a rule sending what the
/// application plane puts to a queue; (bus ARN, queue URL).
fn control_plane_bus(moto: &str) -> (String, String) {
    bus_with_queue(moto, "sbt.application.plane")
}

/// A new bus with a rule sending events of `source` to a new queue; (bus ARN, queue URL).
pub fn bus_with_queue(moto: &str, source: &str) -> (String, String) {
    let name = format!("bus-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let made = boto3(
        moto,
        &format!(
            r#"
events, sqs = boto3.client('events', **kw), boto3.client('sqs', **kw)
bus = events.create_event_bus(Name='{name}')['EventBusArn']
queue = sqs.create_queue(QueueName='{name}')['QueueUrl']
arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=['QueueArn'])['Attributes']['QueueArn']
events.put_rule(Name='{name}', EventBusName='{name}', EventPattern=json.dumps({{'source': ['{source}']}}))
events.put_targets(Rule='{name}', EventBusName='{name}', Targets=[{{'Id': 'q', 'Arn': arn}}])
print(json.dumps({{'bus': bus, 'queue': queue}}))
"#
        ),
    );
    (
        made["bus"].as_str().unwrap().to_owned(),
        made["queue"].as_str().unwrap().to_owned(),
    )
}

/// Every event on the queue so far (EventBridge envelopes), taken off it.
pub fn received(moto: &str, queue: &str) -> Vec<Value> {
    let got = boto3(
        moto,
        &format!(
            r#"
sqs = boto3.client('sqs', **kw)
out = []
while True:
    batch = sqs.receive_message(QueueUrl='{queue}', MaxNumberOfMessages=10, WaitTimeSeconds=0).get('Messages', [])
    if not batch:
        break
    for m in batch:
        out.append(json.loads(m['Body']))
        sqs.delete_message(QueueUrl='{queue}', ReceiptHandle=m['ReceiptHandle'])
print(json.dumps(out))
"#
        ),
    );
    got.as_array().cloned().unwrap_or_default()
}

/// sbt-aws's onboarding envelope (its registration function's detail: the
/// request's fields plus both ids), as EventBridge delivers it.
fn onboarding(registration: &str, detail_type: &str, source: &str, extra: Value) -> Value {
    let mut detail = json!({
        "registrationStatus": "In progress", "tenantName": format!("{registration}-co"),
        "email": format!("admin@{registration}.example"), "tier": "basic",
        "tenantRegistrationId": registration, "tenantId": format!("tenant-of-{registration}"),
        "prices": [{"id": "price_1", "metricName": "calls"}]
    });
    let detail_map: &mut Map<String, Value> = detail.as_object_mut().unwrap();
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            detail_map.remove(&k);
        } else {
            detail_map.insert(k, v);
        }
    }
    json!({"version": "0", "id": format!("evt-{registration}-{detail_type}"), "detail-type": detail_type,
           "source": source, "account": "123456789012", "time": "2026-12-08T10:00:00Z",
           "region": "us-east-1", "resources": [], "detail": detail})
}

const PROVISION: &str = r#"
echo "provisioning $tenantName"
echo "tenantS3Bucket=bucket-$tenantName" >> "$JOB_OUTPUT"
echo "registrationStatus=created" >> "$JOB_OUTPUT"
echo "SEEN=$tenantId|$tier|$tenantName|$email|$prices|$TENANT_ID" >> "$JOB_OUTPUT"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbt_aws_events_run_jobs_and_outcomes_go_on_the_control_plane_bus() {
    let Some(moto) = crate::moto::moto().await else {
        return;
    };
    let url = moto.url.clone();
    let (bus, queue) = tokio::task::block_in_place(|| control_plane_bus(&url));
    let sbt_config = SbtConfig {
        event_bus: Some(bus.clone()),
        json_variables: vec!["prices".into()],
        tenant_data: vec!["tenantS3Bucket".into()],
        tenant_registration_data: vec!["registrationStatus".into()],
        ..SbtConfig::default()
    };
    let plane = Arc::new(SbtPlane::new(sbt_config.clone(), Some(&moto.sdk().await)));
    let app = TestApp::start_with(
        move |config, dir| {
            config.sbt = sbt_config;
            config.builder.job_timeout_secs = 2;
            let tier = |json: Value| json.as_object().cloned().unwrap();
            config.tiers.insert(
                "basic".into(),
                tier(json!({"jobIdentifier": "sbt-provision", "deprovisioningJobIdentifier": "sbt-deprovision"})),
            );
            config.tiers.insert("broken".into(), tier(json!({"jobIdentifier": "sbt-broken"})));
            config.tiers.insert("slow".into(), tier(json!({"jobIdentifier": "sbt-slow"})));
            write_job(dir, "sbt-provision", PROVISION);
            write_job(dir, "sbt-deprovision", "echo \"GONE=$tenantId\" >> \"$JOB_OUTPUT\"");
            write_job(dir, "sbt-broken", "echo 'no capacity' >&2\nexit 4");
            write_job(dir, "sbt-slow", "sleep 30");
        },
        move |builder| builder.sbt_plane(plane),
    )
    .await;

    // sbt-aws 0.9's names, and 0.8's.
    let sends = [
        onboarding(
            "reg-ok",
            "sbt_aws_onboardingRequest",
            "sbt.control.plane",
            json!({}),
        ),
        onboarding(
            "reg-broken",
            "sbt_aws_onboardingRequest",
            "sbt.control.plane",
            json!({"tier": "broken"}),
        ),
        onboarding(
            "reg-slow",
            "sbt_aws_onboardingRequest",
            "sbt.control.plane",
            json!({"tier": "slow"}),
        ),
        onboarding(
            "reg-noemail",
            "sbt_aws_onboardingRequest",
            "sbt.control.plane",
            json!({"email": null}),
        ),
        onboarding(
            "reg-old",
            "onboardingRequest",
            "controlPlaneEventSource",
            json!({}),
        ),
    ];
    for envelope in &sends {
        let (status, ack) = app.post("/events", envelope).await;
        assert_eq!(status, 200, "{ack}");
    }
    // Another source is refused, nothing stored.
    let (status, body) = app
        .post(
            "/events",
            &onboarding(
                "reg-x",
                "sbt_aws_onboardingRequest",
                "someone.else",
                json!({}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_source");

    let tenant = app.wait_tenant("reg-ok", "ACTIVE").await;
    // The job got the detail's fields: strings as they are, `prices` as JSON text.
    assert_eq!(
        tenant["jobOutput"]["SEEN"],
        "tenant-of-reg-ok|basic|reg-ok-co|admin@reg-ok.example|[{\"id\":\"price_1\",\"metricName\":\"calls\"}]|reg-ok"
    );
    app.wait_tenant("reg-old", "ACTIVE").await;
    // Deactivate, then activate (sbt-aws declares these; they suspend and resume).
    let (status, _) = app
        .post(
            "/events",
            &onboarding(
                "reg-old",
                "sbt_aws_deactivateRequest",
                "sbt.control.plane",
                json!({}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_tenant("reg-old", "SUSPENDED").await;
    let (status, _) = app
        .post(
            "/events",
            &onboarding(
                "reg-old",
                "sbt_aws_activateRequest",
                "sbt.control.plane",
                json!({}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for("/tenants/reg-old", |t| {
        t["status"] == "ACTIVE" && t["stage"].is_null()
    })
    .await;
    app.wait_tenant("reg-broken", "PROVISIONFAILED").await;
    app.wait_tenant("reg-slow", "PROVISIONFAILED").await;

    // Offboard the first: its deprovisioning job runs, the tenant is INACTIVE.
    let mut offboard = onboarding(
        "reg-ok",
        "sbt_aws_offboardingRequest",
        "sbt.control.plane",
        json!({
        "tenantS3Bucket": "bucket-reg-ok-co", "registrationStatus": "created", "sbtaws_active": true}),
    );
    offboard["id"] = json!("evt-reg-ok-offboard");
    let (status, _) = app.post("/events", &offboard).await;
    assert_eq!(status, 200);
    let gone = app.wait_tenant("reg-ok", "INACTIVE").await;
    assert_eq!(gone["jobOutput"]["GONE"], "tenant-of-reg-ok");

    // What the control plane's bus got, by registration and detail-type.
    let expected = 8;
    let mut all: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while all.len() < expected && std::time::Instant::now() < deadline {
        all.extend(tokio::task::block_in_place(|| received(&url, &queue)));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let by = |registration: &str, kind: &str| -> Vec<&Value> {
        all.iter()
            .filter(|e| {
                e["detail"]["tenantRegistrationId"] == registration && e["detail-type"] == kind
            })
            .collect()
    };
    for event in &all {
        assert_eq!(event["source"], "sbt.application.plane", "{event}");
    }
    let ok = by("reg-ok", "sbt_aws_provisionSuccess");
    assert_eq!(ok.len(), 1, "{all:#?}");
    assert_eq!(
        ok[0]["detail"],
        json!({"tenantRegistrationId": "reg-ok", "jobOutput": {
            "tenantData": {"tenantS3Bucket": "bucket-reg-ok-co"},
            "tenantRegistrationData": {"registrationStatus": "created"}}})
    );
    for (registration, why) in [
        ("reg-broken", "job failed"),
        ("reg-slow", "timeout"),
        ("reg-noemail", "missing field"),
    ] {
        let failed = by(registration, "sbt_aws_provisionFailure");
        assert_eq!(failed.len(), 1, "{why}: {all:#?}");
        assert_eq!(
            failed[0]["detail"],
            json!({"tenantRegistrationId": registration, "jobOutput": {"tenantStatus": "Failed to provision tenant."}}),
            "{why}"
        );
    }
    assert_eq!(
        by("reg-old", "sbt_aws_provisionSuccess").len(),
        1,
        "{all:#?}"
    );
    for kind in ["sbt_aws_deactivateSuccess", "sbt_aws_activateSuccess"] {
        assert_eq!(by("reg-old", kind).len(), 1, "{kind}: {all:#?}");
    }
    let offboarded = by("reg-ok", "sbt_aws_deprovisionSuccess");
    assert_eq!(offboarded.len(), 1, "{all:#?}");
    assert_eq!(all.len(), expected, "nothing twice: {all:#?}");

    // The missing field is said on the event, and the report is on the tenant's timeline.
    let (_, failed) = app
        .get("/events/evt-reg-noemail-sbt_aws_onboardingRequest")
        .await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("detail.email is missing"),
        "{failed}"
    );
    let (_, timeline) = app.get("/tenants/reg-ok/timeline").await;
    let reports: Vec<&Value> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "event" && i["type"] == "SBT_REPORT")
        .collect();
    assert_eq!(reports.len(), 2, "{timeline:#}");
    assert!(
        reports.iter().all(|r| r["status"] == "succeeded"),
        "{timeline:#}"
    );
}

/// The same onboarding on CodeBuild (moto): the build gets the detail's
/// fields as PLAINTEXT overrides, named as in the detail, and its end is
/// put on the bus as `sbt_aws_provisionSuccess` (moto's builds export no
/// variables, so the data is empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sbt_aws_onboarding_runs_a_codebuild_build() {
    let Some(moto) = crate::moto::moto().await else {
        return;
    };
    let url = moto.url.clone();
    let (bus, queue) = tokio::task::block_in_place(|| control_plane_bus(&url));
    let project = crate::aws::project(moto).await;
    let sbt_config = SbtConfig {
        event_bus: Some(bus),
        json_variables: vec!["prices".into()],
        tenant_data: vec!["tenantS3Bucket".into()],
        ..SbtConfig::default()
    };
    let sdk = moto.sdk().await;
    let plane = Arc::new(SbtPlane::new(sbt_config.clone(), Some(&sdk)));
    let tier_project = project.clone();
    let app = TestApp::start_with(
        move |config, _| {
            config.sbt = sbt_config;
            let tier = json!({"jobIdentifier": tier_project});
            config
                .tiers
                .insert("basic".into(), tier.as_object().cloned().unwrap());
        },
        move |builder| {
            builder.sbt_plane(plane).builder_service(Arc::new(
                orchestrator::builder::codebuild::CodeBuildJobs::new(
                    &sdk,
                    std::time::Duration::from_millis(200),
                ),
            ))
        },
    )
    .await;
    let registration = format!("reg-cb-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let recorded = moto
        .record(async {
            let event = onboarding(
                &registration,
                "sbt_aws_onboardingRequest",
                "sbt.control.plane",
                json!({}),
            );
            let (status, _) = app.post("/events", &event).await;
            assert_eq!(status, 200);
            app.wait_tenant(&registration, "ACTIVE").await;
        })
        .await;
    // Named as in the detail, each a PLAINTEXT override.
    let overrides: std::collections::HashMap<String, String> =
        crate::aws::start_build_overrides(&recorded, &project)
            .into_iter()
            .map(|(name, (value, kind))| {
                assert_eq!(kind, "PLAINTEXT", "{name}");
                (name, value)
            })
            .collect();
    assert_eq!(overrides["tenantName"], format!("{registration}-co"));
    assert_eq!(overrides["email"], format!("admin@{registration}.example"));
    assert_eq!(overrides["tenantId"], format!("tenant-of-{registration}"));
    assert_eq!(
        overrides["prices"],
        r#"[{"id":"price_1","metricName":"calls"}]"#
    );
    assert_eq!(overrides["TENANT_ID"], registration);
    let mut put = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while put.is_empty() && std::time::Instant::now() < deadline {
        put.extend(tokio::task::block_in_place(|| received(&url, &queue)));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(put.len(), 1, "{put:#?}");
    assert_eq!(put[0]["detail-type"], "sbt_aws_provisionSuccess");
    assert_eq!(
        put[0]["detail"],
        json!({"tenantRegistrationId": registration, "jobOutput": {"tenantData": {}, "tenantRegistrationData": {}}})
    );
}
