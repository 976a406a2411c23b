//! The tenant lifecycle end to end: provisioning, deployment, deprovisioning,
//! failures and timeouts, with real job scripts.

use std::path::Path;

use orchestrator::config::Config;
use serde_json::{json, Map, Value};

use crate::common::{envelope, provisioning, write_job, TestApp};

fn tier(config: &mut Config, name: &str, values: Value) {
    let values: Map<String, Value> = values.as_object().cloned().unwrap();
    config.tiers.insert(name.into(), values);
}

/// A job that records what it saw and produces outputs.
const PROVISION: &str = r#"
echo "provisioning $TENANT_ID"
echo "SEEN=$SIZE|$REGION|$TENANT_ID|$TIER|$EVENT_ID|${HOME:-no-home}" >> "$JOB_OUTPUT"
echo "DB_HOST=db.$TENANT_ID.internal" >> "$JOB_OUTPUT"
sleep 0.5
"#;

fn standard(config: &mut Config, dir: &Path) {
    tier(
        config,
        "basic",
        json!({"jobIdentifier": "provision-basic", "deprovisioningJobIdentifier": "deprovision-basic", "SIZE": 2}),
    );
    tier(
        config,
        "premium",
        json!({"jobIdentifier": "provision-basic", "deploymentJobIdentifier": "deploy-premium", "SIZE": 8}),
    );
    tier(config, "broken", json!({"jobIdentifier": "fail-job"}));
    tier(config, "slow", json!({"jobIdentifier": "slow-job"}));
    tier(config, "ghost", json!({"jobIdentifier": "does-not-exist"}));
    write_job(dir, "provision-basic", PROVISION);
    write_job(
        dir,
        "deprovision-basic",
        "echo \"GONE=$TENANT_ID/$TIER\" >> \"$JOB_OUTPUT\"",
    );
    write_job(
        dir,
        "deploy-premium",
        "echo \"DEPLOYED_WITH=$DB_HOST\" >> \"$JOB_OUTPUT\"",
    );
    write_job(dir, "fail-job", "echo 'something broke' >&2\nexit 3");
    write_job(dir, "slow-job", "sleep 30");
}

#[tokio::test]
async fn provisioning_runs_the_tier_job_and_the_tenant_becomes_active() {
    let app = TestApp::start(standard).await;
    let (status, ack) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &envelope("p-1", "TENANT_PROVISIONING", provisioning("acme", "basic")),
        )
        .await;
    assert_eq!((status, ack["success"].clone()), (200, json!(true)));
    let provisioning = app
        .wait_for("/tenants/acme", |t| {
            t["status"] == "PROVISIONING" || t["status"] == "ACTIVE"
        })
        .await;
    assert_eq!(provisioning["tier"], "basic");
    let tenant = app.wait_tenant("acme", "ACTIVE").await;
    assert_eq!(
        tenant["jobOutput"]["SEEN"], "2|eu-west-1|acme|basic|p-1|no-home",
        "tier keys, override, ids, clean env: {tenant:#}"
    );
    assert_eq!(tenant["jobOutput"]["DB_HOST"], "db.acme.internal");
    let job = &tenant["jobs"][0];
    assert_eq!(job["kind"], "provisioning");
    assert_eq!(job["status"], "succeeded");

    let (_, job) = app
        .get(&format!("/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(job["exitCode"], 0);
    assert_eq!(job["backend"], "local");
    assert_eq!(job["jobIdentifier"], "provision-basic");
    assert!(
        job["logTail"]
            .as_str()
            .unwrap()
            .contains("provisioning acme"),
        "{job:#}"
    );
    let params: Vec<&str> = job["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        params,
        [
            "CORRELATION_ID",
            "EVENT_ID",
            "REGION",
            "SIZE",
            "TENANT_ID",
            "TIER"
        ]
    );
    let log = app
        .path()
        .join("data/jobs")
        .join(job["id"].as_str().unwrap())
        .join("log");
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("provisioning acme"),
        "the full log is kept on disk"
    );

    // The success event carries the job output, as ARC SaaS's pipeline expects.
    let (_, success) = app
        .get(&format!("/events/{}:result", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(success["type"], "TENANT_PROVISIONING_SUCCESS");
    assert_eq!(
        success["detail"]["jobOutput"]["DB_HOST"],
        "db.acme.internal"
    );
    assert_eq!(success["detail"]["tenantId"], "acme");
}

#[tokio::test]
async fn a_failing_job_marks_the_tenant_provisionfailed() {
    let app = TestApp::start(standard).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "f-1",
            "TENANT_PROVISIONING",
            provisioning("broken-co", "broken"),
        ),
    )
    .await;
    let tenant = app.wait_tenant("broken-co", "PROVISIONFAILED").await;
    assert!(
        tenant["lastError"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{tenant:#}"
    );
    let job = &tenant["jobs"][0];
    assert_eq!(job["status"], "failed");
    assert_eq!(job["exitCode"], 3);
    assert!(job["logTail"].as_str().unwrap().contains("something broke"));
    let (_, failure) = app
        .get(&format!("/events/{}:result", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(failure["type"], "TENANT_PROVISIONING_FAILURE");
    // A failed tenant can be provisioned again (here with a working tier).
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "f-2",
            "TENANT_PROVISIONING",
            provisioning("broken-co", "basic"),
        ),
    )
    .await;
    let tenant = app.wait_tenant("broken-co", "ACTIVE").await;
    assert_eq!(tenant["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_job_over_its_timeout_is_killed_and_fails() {
    let app = TestApp::start(|c, d| {
        standard(c, d);
        c.builder.job_timeout_secs = 1;
    })
    .await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "slow-1",
            "TENANT_PROVISIONING",
            provisioning("slowco", "slow"),
        ),
    )
    .await;
    let tenant = app.wait_tenant("slowco", "PROVISIONFAILED").await;
    assert!(
        tenant["lastError"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{tenant:#}"
    );
    assert_eq!(tenant["jobs"][0]["exitCode"], Value::Null);
}

#[tokio::test]
async fn a_missing_job_executable_fails_the_event_and_the_tenant() {
    let app = TestApp::start(standard).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "ghost-1",
            "TENANT_PROVISIONING",
            provisioning("ghostco", "ghost"),
        ),
    )
    .await;
    let event = app.wait_event("ghost-1", "failed").await;
    assert!(
        event["lastError"]
            .as_str()
            .unwrap()
            .contains("job 'does-not-exist' not found"),
        "{event:#}"
    );
    app.wait_tenant("ghostco", "PROVISIONFAILED").await;
}

#[tokio::test]
async fn success_dispatches_deployment_which_runs_the_deployment_job() {
    let app = TestApp::start(standard).await;
    app.post(
        "/events",
        &envelope(
            "d-1",
            "TENANT_PROVISIONING",
            provisioning("bigco", "premium"),
        ),
    )
    .await;
    let tenant = app.wait_tenant("bigco", "ACTIVE").await;
    let kinds: Vec<&str> = tenant["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["provisioning", "deployment"]);
    assert_eq!(
        tenant["jobOutput"]["DEPLOYED_WITH"], "db.bigco.internal",
        "the deployment job sees provisioning's output"
    );
    // The tenant is ACTIVE as the last handler commits; its event is marked a moment later.
    app.wait_for("/events?status=succeeded", |events| {
        let types: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        types.contains(&"TENANT_DEPLOYMENT") && types.contains(&"TENANT_DEPLOYMENT_SUCCESS")
    })
    .await;
}

#[tokio::test]
async fn deprovisioning_uses_the_remembered_tier_and_ends_inactive() {
    let app = TestApp::start(standard).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "dp-1",
            "TENANT_PROVISIONING",
            provisioning("byeco", "basic"),
        ),
    )
    .await;
    app.wait_tenant("byeco", "ACTIVE").await;
    let (status, _) = app
        .post(
            "/events/TENANT_DEPROVISIONING",
            &envelope(
                "dp-2",
                "TENANT_DEPROVISIONING",
                json!({"tenantId": "byeco"}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let tenant = app.wait_tenant("byeco", "INACTIVE").await;
    assert_eq!(tenant["jobs"][1]["kind"], "deprovisioning");
    assert_eq!(tenant["jobOutput"]["GONE"], "byeco/basic");
    // A tier without a deprovisioning job goes straight to INACTIVE.
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "dp-3",
            "TENANT_PROVISIONING",
            provisioning("plainco", "premium"),
        ),
    )
    .await;
    app.wait_tenant("plainco", "ACTIVE").await;
    app.post(
        "/events/TENANT_DEPROVISIONING",
        &json!({"tenantId": "plainco"}),
    )
    .await;
    app.wait_tenant("plainco", "INACTIVE").await;
}

#[tokio::test]
async fn repeated_and_out_of_order_events_change_nothing() {
    let app = TestApp::start(standard).await;
    // Two different deliveries for one tenant while its job runs: one job only.
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("r-1", "TENANT_PROVISIONING", provisioning("twice", "basic")),
    )
    .await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("r-2", "TENANT_PROVISIONING", provisioning("twice", "basic")),
    )
    .await;
    let tenant = app.wait_tenant("twice", "ACTIVE").await;
    assert_eq!(tenant["jobs"].as_array().unwrap().len(), 1, "{tenant:#}");
    let first = app.wait_event("r-1", "succeeded").await;
    let second = app.wait_event("r-2", "succeeded").await;
    let ignored = [&first, &second]
        .iter()
        .filter(|e| e["note"].as_str().unwrap().starts_with("ignored"))
        .count();
    assert_eq!(
        ignored, 1,
        "exactly one delivery starts the job: {first:#} {second:#}"
    );

    // A late failure for an ACTIVE tenant is ignored.
    app.post(
        "/events/TENANT_PROVISIONING_FAILURE",
        &envelope(
            "r-3",
            "TENANT_PROVISIONING_FAILURE",
            json!({"tenantId": "twice"}),
        ),
    )
    .await;
    let late = app.wait_event("r-3", "succeeded").await;
    assert!(late["note"].as_str().unwrap().contains("stale"), "{late:#}");
    assert_eq!(app.get("/tenants/twice").await.1["status"], "ACTIVE");

    // A result for a tenant never seen fails permanently.
    app.post(
        "/events/TENANT_PROVISIONING_SUCCESS",
        &envelope(
            "r-4",
            "TENANT_PROVISIONING_SUCCESS",
            json!({"tenantId": "nobody"}),
        ),
    )
    .await;
    let unknown = app.wait_event("r-4", "failed").await;
    assert!(
        unknown["lastError"]
            .as_str()
            .unwrap()
            .contains("unknown tenant"),
        "{unknown:#}"
    );
}

#[tokio::test]
async fn a_codebuild_state_change_for_no_known_build_fails_clearly() {
    let app = TestApp::start(standard).await;
    let detail = json!({"build-status": "SUCCEEDED", "project-name": "p", "build-id": "arn:aws:codebuild:us-east-1:1:build/p:x"});
    let (status, _) = app
        .post(
            "/events",
            &envelope("cb-1", "CodeBuild Build State Change", detail),
        )
        .await;
    assert_eq!(status, 200);
    let event = app.wait_event("cb-1", "failed").await;
    assert!(
        event["lastError"]
            .as_str()
            .unwrap()
            .contains("no job is waiting for build"),
        "{event:#}"
    );
}

#[tokio::test]
async fn a_relative_jobs_dir_is_resolved_against_the_working_directory() {
    // Jobs run in their own directory; `./jobs` must still mean the service's `./jobs`.
    let app = TestApp::start(|config, dir| {
        standard(config, dir);
        let cwd = std::env::current_dir().unwrap();
        config.builder.jobs_dir = pathdiff(&dir.join("jobs"), &cwd);
    })
    .await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &json!({"tenantId": "rel", "tier": "basic"}),
    )
    .await;
    app.wait_tenant("rel", "ACTIVE").await;
}

/// `path` relative to `base` (both absolute), with `..` steps.
fn pathdiff(path: &Path, base: &Path) -> std::path::PathBuf {
    let common = path
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = base.components().count() - common;
    let mut out: std::path::PathBuf = std::iter::repeat_n("..", ups).collect();
    out.extend(path.components().skip(common));
    out
}

/// `(kind, …)` summaries of a timeline's items of `kind`.
fn of_kind<'a>(timeline: &'a Value, kind: &str) -> Vec<&'a Value> {
    timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn the_timeline_tells_why_a_tenant_is_active_or_failed() {
    let app = TestApp::start(standard).await;
    for (id, tenant, tier) in [("tl-1", "tl-ok", "basic"), ("tl-2", "tl-bad", "broken")] {
        let (status, _) = app
            .post(
                "/events/TENANT_PROVISIONING",
                &envelope(id, "TENANT_PROVISIONING", provisioning(tenant, tier)),
            )
            .await;
        assert_eq!(status, 200);
    }
    app.wait_tenant("tl-ok", "ACTIVE").await;
    app.wait_tenant("tl-bad", "PROVISIONFAILED").await;
    // The result events are put on the timeline just after they change the tenant.
    let settled = |result: &'static str| {
        move |t: &Value| {
            of_kind(t, "event")
                .iter()
                .any(|e| e["type"] == result && e["status"] == "succeeded")
        }
    };
    let ok = app
        .wait_for(
            "/tenants/tl-ok/timeline",
            settled("TENANT_PROVISIONING_SUCCESS"),
        )
        .await;
    let bad = app
        .wait_for(
            "/tenants/tl-bad/timeline",
            settled("TENANT_PROVISIONING_FAILURE"),
        )
        .await;

    // The provisioned tenant goes through DEPLOYING (its tier has no deployment job: at once ACTIVE).
    let ok_states = [
        json!(null),
        json!("PROVISIONING"),
        json!("DEPLOYING"),
        json!("ACTIVE"),
    ];
    let bad_states = [json!(null), json!("PROVISIONING"), json!("PROVISIONFAILED")];
    for (timeline, event, states, outcome, exit) in [
        (&ok, "tl-1", &ok_states[..], "succeeded", 0),
        (&bad, "tl-2", &bad_states[..], "failed", 3),
    ] {
        let times: Vec<&str> = timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["time"].as_str().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "in order of time: {timeline:#}"
        );
        let transitions: Vec<(&Value, &Value)> = of_kind(timeline, "transition")
            .iter()
            .map(|t| (&t["from"], &t["to"]))
            .collect();
        let expected: Vec<(&Value, &Value)> = states.windows(2).map(|w| (&w[0], &w[1])).collect();
        assert_eq!(transitions, expected, "{timeline:#}");
        let first = of_kind(timeline, "transition")[0];
        assert_eq!(first["eventId"], event, "caused by the provisioning event");
        let jobs = of_kind(timeline, "jobFinished");
        assert_eq!(jobs.len(), 1, "{timeline:#}");
        let job = jobs[0];
        assert_eq!(
            (&job["status"], &job["exitCode"]),
            (&json!(outcome), &json!(exit))
        );
        assert_eq!(
            job["log"],
            format!("/jobs/{}", job["jobId"].as_str().unwrap())
        );
        assert_eq!(of_kind(timeline, "jobStarted").len(), 1);
        let last = of_kind(timeline, "transition")[1];
        assert_eq!(
            last["eventId"],
            format!("{}:result", job["jobId"].as_str().unwrap()),
            "the job's result event moved it"
        );
        let events: Vec<(&str, &str)> = of_kind(timeline, "event")
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        assert!(
            events.contains(&("TENANT_PROVISIONING", "succeeded")),
            "{events:?}"
        );
    }
    let (status, body) = app.get("/tenants/nobody/timeline").await;
    assert_eq!(status, 404, "{body:#}");
}
