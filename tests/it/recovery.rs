//! Crash safety with the real binary: kill -9 right after acknowledgements,
//! and while a job runs.

use std::path::Path;

use serde_json::json;

use crate::common::{envelope, provisioning, status_json, write_job, Binary};
use crate::pg::{suite_database, PgTestDb};

/// The config file of a service on `dir` (and on `db` in the PostgreSQL suite).
fn config(dir: &Path, db: Option<&PgTestDb>, job_body: &str) -> String {
    write_job(dir, "provision-basic", job_body);
    let database = db.map_or(String::new(), |db| {
        format!("database_url = \"{}\"\n", db.url)
    });
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n{database}[builder]\njobs_dir = \"{jobs}\"\njob_lease_secs = 3\n[inbox]\npoll_ms = 50\nbackoff_base_ms = 50\nlease_secs = 4\n[tiers.basic]\njobIdentifier = \"provision-basic\"\n",
            data = dir.join("data").display(),
            jobs = dir.join("jobs").display()
        ),
    )
    .unwrap();
    config.display().to_string()
}

async fn get(client: &reqwest::Client, url: &str) -> serde_json::Value {
    status_json(client.get(url).send().await.unwrap()).await.1
}

async fn wait_all_active(client: &reqwest::Client, base: &str, tenants: &[String]) {
    crate::common::eventually(|| async {
        for tenant in tenants {
            if get(client, &format!("{base}/tenants/{tenant}")).await["status"] != "ACTIVE" {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test]
async fn kill_9_right_after_acknowledgements_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = suite_database().await;
    let config = config(dir.path(), db.as_ref(), "sleep 0.2");
    let first = Binary::start(&["--config", &config], &[]).unwrap();
    let client = reqwest::Client::new();
    let tenants: Vec<String> = (0..40).map(|i| format!("crash-{i}")).collect();
    let posts = tenants.iter().map(|t| {
        client
            .post(format!("{}/events/TENANT_PROVISIONING", first.url))
            .json(&envelope(
                &format!("evt-{t}"),
                "TENANT_PROVISIONING",
                provisioning(t, "basic"),
            ))
            .send()
    });
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    first.kill9();

    let second = Binary::start(&["--config", &config], &[]).unwrap();
    wait_all_active(&client, &second.url, &tenants).await;
    for tenant in &tenants {
        let view = get(&client, &format!("{}/tenants/{tenant}", second.url)).await;
        assert_eq!(
            view["jobs"].as_array().unwrap().len(),
            1,
            "one job per tenant: {view:#}"
        );
        let event = get(&client, &format!("{}/events/evt-{tenant}", second.url)).await;
        assert_eq!(event["status"], "succeeded", "{event:#}");
    }
    // Redelivery after the restart is still recognised.
    let again = client
        .post(format!("{}/events/TENANT_PROVISIONING", second.url))
        .json(&envelope(
            "evt-crash-0",
            "TENANT_PROVISIONING",
            provisioning("crash-0", "basic"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_json(again).await.1,
        json!({"success": true, "eventId": "evt-crash-0", "duplicate": true})
    );
    let failed = get(&client, &format!("{}/events?status=failed", second.url)).await;
    let dead = get(&client, &format!("{}/events?status=dead", second.url)).await;
    assert_eq!((failed, dead), (json!([]), json!([])));
}

#[tokio::test]
async fn a_job_running_at_kill_9_is_re_run_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = suite_database().await;
    let config = config(
        dir.path(),
        db.as_ref(),
        "echo \"run $JOB_ID\"\nsleep 2\necho \"RUNS=done\" >> \"$JOB_OUTPUT\"",
    );
    let first = Binary::start(&["--config", &config], &[]).unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/events/TENANT_PROVISIONING", first.url))
        .json(&envelope(
            "evt-running",
            "TENANT_PROVISIONING",
            provisioning("running-co", "basic"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let url = format!("{}/tenants/running-co", first.url);
    crate::common::eventually(|| async {
        (get(&client, &url).await["jobs"][0]["status"] == "running").then_some(())
    })
    .await;
    first.kill9();

    let second = Binary::start(&["--config", &config], &[]).unwrap();
    wait_all_active(&client, &second.url, &["running-co".to_owned()]).await;
    let tenant = get(&client, &format!("{}/tenants/running-co", second.url)).await;
    let job = &tenant["jobs"][0];
    assert_eq!(tenant["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(job["attempt"], 2, "re-run once after the restart: {job:#}");
    assert_eq!(tenant["jobOutput"]["RUNS"], "done");
    let log = std::fs::read_to_string(
        dir.path()
            .join("data/jobs")
            .join(job["id"].as_str().unwrap())
            .join("log"),
    )
    .unwrap();
    assert_eq!(log.matches("run ").count(), 2, "{log}");
    assert!(second
        .output
        .lock()
        .unwrap()
        .contains("re-running a job whose process stopped"));
}
