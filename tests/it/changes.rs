//! Update, suspend and resume through the real server with local jobs: the
//! tier's jobs run with `TIER`/`PREVIOUS_TIER`, the tenant stays `ACTIVE`
//! (stage `updating`) while its update runs, a failed update keeps the old
//! tier, suspension and resumption go through `SUSPENDED`, with and without
//! jobs, and a suspended tenant can be deprovisioned.

use serde_json::{json, Value};

use crate::common::{envelope, provisioning, write_job, TestApp};

fn tier(config: &mut orchestrator::config::Config, name: &str, values: Value) {
    config
        .tiers
        .insert(name.into(), values.as_object().cloned().unwrap());
}

async fn started() -> TestApp {
    let app = TestApp::start(|c, dir| {
        tier(c, "basic", json!({"jobIdentifier": "p", "suspendJobIdentifier": "pause", "resumeJobIdentifier": "unpause", "SIZE": 1}));
        tier(c, "gold", json!({"jobIdentifier": "p", "updateJobIdentifier": "upgrade", "SIZE": 8}));
        tier(c, "broken", json!({"jobIdentifier": "p", "updateJobIdentifier": "fail"}));
        tier(c, "plain", json!({"jobIdentifier": "p", "deprovisioningJobIdentifier": "bye"}));
        tier(c, "kept", json!({"jobIdentifier": "p", "backupJobIdentifier": "backup", "deprovisioningJobIdentifier": "bye", "BUCKET": "archive"}));
        tier(c, "lossy", json!({"jobIdentifier": "p", "backupJobIdentifier": "fail", "deprovisioningJobIdentifier": "bye"}));
        write_job(dir, "p", "true");
        // A gate file holds the upgrade until the test lets it go.
        write_job(
            dir,
            "upgrade",
            "while [ ! -e \"$GATE\" ]; do sleep 0.05; done\necho \"SAW=$PREVIOUS_TIER>$TIER/$SIZE\" >> \"$JOB_OUTPUT\"",
        );
        write_job(dir, "fail", "echo 'cannot upgrade' >&2\nexit 2");
        write_job(dir, "pause", "echo \"PAUSED=$TIER\" >> \"$JOB_OUTPUT\"");
        write_job(dir, "unpause", "echo \"RESUMED=yes\" >> \"$JOB_OUTPUT\"");
        write_job(dir, "bye", "echo \"BYE_SAW=${GATE:+gated}/$BUCKET\" >> \"$JOB_OUTPUT\"");
        write_job(
            dir,
            "backup",
            "if [ -n \"$GATE\" ]; then while [ ! -e \"$GATE\" ]; do sleep 0.05; done; fi\n\
             echo \"ARCHIVE=s3://$BUCKET/$TENANT_ID.tar.gz\" >> \"$JOB_OUTPUT\"\n\
             echo \"WAS=$PREVIOUS_STATUS\" >> \"$JOB_OUTPUT\"",
        );
    })
    .await;
    app
}

/// The kinds of a tenant's jobs, oldest first.
fn job_kinds(tenant: &Value) -> Vec<String> {
    tenant["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["kind"].as_str().map(str::to_owned))
        .collect()
}

/// The states a tenant went through, from its timeline.
async fn walk(app: &TestApp, tenant: &str) -> Vec<String> {
    let (_, timeline) = app.get(&format!("/tenants/{tenant}/timeline")).await;
    timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "transition")
        .filter_map(|i| i["to"].as_str().map(str::to_owned))
        .collect()
}

async fn send(app: &TestApp, id: &str, event: &str, detail: Value) {
    let (status, body) = app
        .post(&format!("/events/{event}"), &envelope(id, event, detail))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_update_runs_the_new_tiers_job_and_keeps_the_tenant_active() {
    let app = started().await;
    let gate = app.path().join("gate");
    send(
        &app,
        "u-1",
        "TENANT_PROVISIONING",
        provisioning("up-co", "basic"),
    )
    .await;
    app.wait_tenant("up-co", "ACTIVE").await;

    let mut detail = json!({"tenantId": "up-co", "planConfig": {"tier": "gold"}});
    detail["builderConfig"] =
        json!({"config": {"environmentOverride": {"GATE": gate.display().to_string()}}});
    send(&app, "u-2", "TENANT_UPDATE", detail).await;
    // While the job runs: ACTIVE, stage updating, the old tier.
    let running = app
        .wait_for("/tenants/up-co", |t| t["stage"] == "updating")
        .await;
    assert_eq!(running["status"], "ACTIVE");
    assert_eq!(running["tier"], "basic");
    std::fs::write(&gate, "go").unwrap();
    let done = app
        .wait_for("/tenants/up-co", |t| {
            t["tier"] == "gold" && t["stage"].is_null()
        })
        .await;
    assert_eq!(done["status"], "ACTIVE");
    assert_eq!(done["jobOutput"]["SAW"], "basic>gold/8");
    let update = done["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "update")
        .cloned()
        .unwrap();
    assert_eq!(update["jobIdentifier"], "upgrade");
    assert_eq!(update["status"], "succeeded");

    // A failed update: ACTIVE, the old tier kept, the error said.
    send(
        &app,
        "u-3",
        "TENANT_UPDATE",
        json!({"tenantId": "up-co", "tier": "broken"}),
    )
    .await;
    let failed = app
        .wait_for("/tenants/up-co", |t| {
            t["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("update failed"))
        })
        .await;
    assert_eq!(failed["status"], "ACTIVE");
    assert_eq!(failed["tier"], "gold");

    // Refused: no tier named, an unknown tenant, a tenant that is not ACTIVE.
    for (id, detail, said) in [
        ("u-4", json!({"tenantId": "up-co"}), "needs the new tier"),
        (
            "u-5",
            json!({"tenantId": "nobody", "tier": "gold"}),
            "unknown tenant",
        ),
    ] {
        send(&app, id, "TENANT_UPDATE", detail).await;
        let event = app.wait_event(id, "failed").await;
        assert!(
            event["lastError"].as_str().unwrap().contains(said),
            "{event}"
        );
    }
    // A tier without an update or deployment job: the change is recorded at once.
    send(
        &app,
        "u-6",
        "TENANT_UPDATE",
        json!({"tenantId": "up-co", "tier": "plain"}),
    )
    .await;
    app.wait_for("/tenants/up-co", |t| t["tier"] == "plain")
        .await;
}

#[tokio::test]
async fn suspend_and_resume_go_through_suspended() {
    let app = started().await;
    send(
        &app,
        "s-1",
        "TENANT_PROVISIONING",
        provisioning("sus-co", "basic"),
    )
    .await;
    app.wait_tenant("sus-co", "ACTIVE").await;
    send(&app, "s-2", "TENANT_SUSPEND", json!({"tenantId": "sus-co"})).await;
    let suspended = app.wait_tenant("sus-co", "SUSPENDED").await;
    assert_eq!(suspended["jobOutput"]["PAUSED"], "basic");
    // Suspending again changes nothing; provisioning a suspended tenant neither.
    send(&app, "s-3", "TENANT_SUSPEND", json!({"tenantId": "sus-co"})).await;
    let again = app.wait_event("s-3", "succeeded").await;
    assert!(
        again["note"].as_str().unwrap().contains("ignored"),
        "{again}"
    );
    // An update of a suspended tenant is refused.
    send(
        &app,
        "s-4",
        "TENANT_UPDATE",
        json!({"tenantId": "sus-co", "tier": "gold"}),
    )
    .await;
    let refused = app.wait_event("s-4", "failed").await;
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap()
            .contains("only an ACTIVE tenant"),
        "{refused}"
    );

    send(&app, "s-5", "TENANT_RESUME", json!({"tenantId": "sus-co"})).await;
    let resumed = app
        .wait_for("/tenants/sus-co", |t| {
            t["status"] == "ACTIVE" && t["jobOutput"]["RESUMED"] == "yes"
        })
        .await;
    assert_eq!(resumed["tier"], "basic");
    let kinds = job_kinds(&resumed);
    assert_eq!(kinds, ["provisioning", "suspend", "resume"]);

    // The timeline holds the whole walk.
    let walk = walk(&app, "sus-co").await;
    assert_eq!(
        walk,
        [
            "PROVISIONING",
            "DEPLOYING",
            "ACTIVE",
            "SUSPENDING",
            "SUSPENDED",
            "RESUMING",
            "ACTIVE"
        ]
    );
}

#[tokio::test]
async fn a_tier_without_jobs_suspends_at_once_and_a_suspended_tenant_can_be_deprovisioned() {
    let app = started().await;
    send(
        &app,
        "d-1",
        "TENANT_PROVISIONING",
        provisioning("plain-co", "plain"),
    )
    .await;
    app.wait_tenant("plain-co", "ACTIVE").await;
    send(
        &app,
        "d-2",
        "TENANT_SUSPEND",
        json!({"tenantId": "plain-co"}),
    )
    .await;
    let note = app.wait_event("d-2", "succeeded").await;
    assert!(
        note["note"]
            .as_str()
            .unwrap()
            .contains("tenant is SUSPENDED"),
        "{note}"
    );
    app.wait_tenant("plain-co", "SUSPENDED").await;
    // Listed by the status it shows.
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect()
    };
    let (status, suspended) = app.get("/tenants?status=SUSPENDED").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&suspended), ["plain-co"]);
    let (_, active) = app.get("/tenants?status=ACTIVE").await;
    assert!(!ids(&active).contains(&"plain-co".to_owned()));
    let (status, body) = app.get("/tenants?status=SLEEPING").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
    send(
        &app,
        "d-3",
        "TENANT_DEPROVISIONING",
        json!({"tenantId": "plain-co"}),
    )
    .await;
    app.wait_tenant("plain-co", "INACTIVE").await;
    // Resuming an INACTIVE tenant is refused.
    send(
        &app,
        "d-4",
        "TENANT_RESUME",
        json!({"tenantId": "plain-co"}),
    )
    .await;
    let refused = app.wait_event("d-4", "failed").await;
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap()
            .contains("only a SUSPENDED tenant"),
        "{refused}"
    );
}

#[tokio::test]
async fn deprovisioning_archives_first_and_a_failed_backup_stops_it() {
    let app = started().await;
    let gate = app.path().join("backup-gate");
    send(
        &app,
        "a-1",
        "TENANT_PROVISIONING",
        provisioning("arch-co", "kept"),
    )
    .await;
    app.wait_tenant("arch-co", "ACTIVE").await;
    let mut detail = json!({"tenantId": "arch-co"});
    detail["builderConfig"] =
        json!({"config": {"environmentOverride": {"GATE": gate.display().to_string()}}});
    send(&app, "a-2", "TENANT_DEPROVISIONING", detail).await;
    let archiving = app
        .wait_for("/tenants/arch-co", |t| t["stage"] == "archiving")
        .await;
    assert_eq!(archiving["status"], "DEPROVISIONING");
    // Another deprovisioning while the backup runs is refused.
    send(
        &app,
        "a-3",
        "TENANT_DEPROVISIONING",
        json!({"tenantId": "arch-co"}),
    )
    .await;
    let refused = app.wait_event("a-3", "failed").await;
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap()
            .contains("wait for its backup"),
        "{refused}"
    );
    std::fs::write(&gate, "go").unwrap();
    let gone = app.wait_tenant("arch-co", "INACTIVE").await;
    // The archive's location is kept on the tenant; the deprovisioning job ran after it, with what the backup got.
    assert_eq!(gone["jobOutput"]["ARCHIVE"], "s3://archive/arch-co.tar.gz");
    assert_eq!(gone["jobOutput"]["WAS"], "ACTIVE");
    assert_eq!(gone["jobOutput"]["BYE_SAW"], "gated/archive");
    let kinds = job_kinds(&gone);
    assert_eq!(kinds, ["provisioning", "backup", "deprovisioning"]);
    let walk = walk(&app, "arch-co").await;
    assert_eq!(
        walk,
        [
            "PROVISIONING",
            "DEPLOYING",
            "ACTIVE",
            "ARCHIVING",
            "DEPROVISIONING",
            "INACTIVE"
        ]
    );

    // A failed backup: nothing deprovisioned, the tenant back where it was, the error said.
    send(
        &app,
        "a-4",
        "TENANT_PROVISIONING",
        provisioning("lossy-co", "lossy"),
    )
    .await;
    app.wait_tenant("lossy-co", "ACTIVE").await;
    send(
        &app,
        "a-5",
        "TENANT_SUSPEND",
        json!({"tenantId": "lossy-co"}),
    )
    .await;
    app.wait_tenant("lossy-co", "SUSPENDED").await;
    send(
        &app,
        "a-6",
        "TENANT_DEPROVISIONING",
        json!({"tenantId": "lossy-co"}),
    )
    .await;
    let kept = app
        .wait_for("/tenants/lossy-co", |t| {
            t["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("backup failed"))
        })
        .await;
    assert_eq!(kept["status"], "SUSPENDED");
    assert!(
        kept["lastError"]
            .as_str()
            .unwrap()
            .contains("not deprovisioned"),
        "{kept}"
    );
    let kinds = job_kinds(&kept);
    assert_eq!(kinds, ["provisioning", "backup"]);

    // "archive": true on a tier without a backup job is refused; the tenant stays.
    send(
        &app,
        "a-7",
        "TENANT_PROVISIONING",
        provisioning("plain-arch", "plain"),
    )
    .await;
    app.wait_tenant("plain-arch", "ACTIVE").await;
    send(
        &app,
        "a-8",
        "TENANT_DEPROVISIONING",
        json!({"tenantId": "plain-arch", "archive": true}),
    )
    .await;
    let refused = app.wait_event("a-8", "failed").await;
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap()
            .contains("no backupJobIdentifier"),
        "{refused}"
    );
    app.wait_tenant("plain-arch", "ACTIVE").await;
}
