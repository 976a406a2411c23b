//! Several real processes sharing one PostgreSQL database (the PostgreSQL
//! half of the suite only): exactly-once processing across replicas, apps
//! served by every replica, kill -9 in a burst, migrations racing, roles,
//! and PostgreSQL going away and coming back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{envelope, eventually, provisioning, status_json, write_job, Binary};
use crate::gate::TcpGate;
use crate::pg::PgTestDb;

/// A replica's config file: its own data dir, the shared database, fast polling.
fn replica_config(dir: &Path, name: &str, database_url: &str, extra: &str) -> String {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\ndatabase_url = \"{database_url}\"\n\
             [builder]\njobs_dir = \"{jobs}\"\njob_lease_secs = 3\n[inbox]\npoll_ms = 50\nbackoff_base_ms = 50\nlease_secs = 4\n\
             [functions]\nsync_interval_ms = 200\n[tiers.basic]\njobIdentifier = \"provision-basic\"\n{extra}",
            data = dir.join(name).display(),
            jobs = dir.join("jobs").display(),
        ),
    )
    .unwrap();
    config.display().to_string()
}

/// A job that records each run in `runs.log` (one line per run), then succeeds.
fn counting_job(dir: &Path, seconds: &str) {
    write_job(
        dir,
        "provision-basic",
        &format!(
            "echo \"$TENANT_ID\" >> \"{log}\"\nsleep {seconds}\necho \"DONE=1\" >> \"$JOB_OUTPUT\"",
            log = dir.join("runs.log").display()
        ),
    );
}

fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    status_json(client.get(url).send().await.unwrap()).await
}

async fn post_event(client: &reqwest::Client, base: &str, tenant: &str) -> u16 {
    client
        .post(format!("{base}/events/TENANT_PROVISIONING"))
        .json(&envelope(
            &format!("evt-{tenant}"),
            "TENANT_PROVISIONING",
            provisioning(tenant, "basic"),
        ))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_all_active(client: &reqwest::Client, base: &str, tenants: &[String]) {
    eventually(|| async {
        for tenant in tenants {
            if get(client, &format!("{base}/tenants/{tenant}")).await.1["status"] != "ACTIVE" {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn start(config: &str, role: &str) -> Binary {
    Binary::start(&["--config", config, "serve", "--role", role], &[]).unwrap()
}

#[tokio::test]
async fn events_posted_to_either_replica_are_processed_exactly_once() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    counting_job(dir.path(), "0.1");
    let a = start(&replica_config(dir.path(), "a", &db.url, ""), "all");
    let b = start(&replica_config(dir.path(), "b", &db.url, ""), "all");
    let client = reqwest::Client::new();
    let tenants: Vec<String> = (0..60).map(|i| format!("twin-{i}")).collect();
    let posts = tenants.iter().enumerate().map(|(i, t)| {
        let base = if i % 2 == 0 { &a.url } else { &b.url };
        post_event(&client, base, t)
    });
    assert!(futures::future::join_all(posts)
        .await
        .iter()
        .all(|s| *s == 200));
    wait_all_active(&client, &b.url, &tenants).await;

    let mut ran = runs(dir.path());
    ran.sort();
    let mut expected = tenants.clone();
    expected.sort();
    assert_eq!(ran, expected, "each tenant's job ran exactly once");
    for tenant in &tenants {
        let (_, event) = get(&client, &format!("{}/events/evt-{tenant}", a.url)).await;
        assert_eq!(event["status"], "succeeded", "{event:#}");
    }
    // Both replicas did some of the work.
    let worked = |b: &Binary| b.output.lock().unwrap().contains("provision-basic");
    assert!(worked(&a) || worked(&b));
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn an_app_deployed_through_one_replica_is_served_by_the_other_and_deactivation_spreads() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start(&replica_config(dir.path(), "a", &db.url, ""), "all");
    let b = start(&replica_config(dir.path(), "b", &db.url, ""), "proxy");
    let client = reqwest::Client::new();
    let deployed = client
        .post(format!("{}/apps/deploy", a.url))
        .json(&json!({"name": "twin", "archive": crate::apps::seed_archive()}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);

    // B never saw the deploy: it learns from the store and fetches the code from it.
    let via_b = |path: &'static str| {
        let client = client.clone();
        let url = format!("{}{path}", b.url);
        async move {
            let response = client
                .get(url)
                .header("host", "twin.localhost")
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let served = eventually(|| async {
        let (status, body) = via_b("/").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(served, "success");
    // The proxy role serves no management API.
    let (status, body) = get(&client, &format!("{}/apps", b.url)).await;
    assert_eq!(status, 404, "{body}");

    // Deactivated through A: B stops serving within the sync interval (200 ms here).
    let off = client
        .post(format!("{}/apps/twin/deactivate", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    let started = Instant::now();
    eventually(|| async { (via_b("/").await.0 == 404).then_some(()) }).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn kill_9_of_one_replica_in_a_burst_loses_and_duplicates_nothing() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    counting_job(dir.path(), "0.3");
    let config_a = replica_config(dir.path(), "a", &db.url, "");
    let a = start(&config_a, "all");
    let b = start(&replica_config(dir.path(), "b", &db.url, ""), "all");
    let client = reqwest::Client::new();
    let tenants: Vec<String> = (0..200).map(|i| format!("burst-{i}")).collect();
    let mut acknowledged = Vec::new();
    let mut a = Some(a);
    for (i, chunk) in tenants.chunks(20).enumerate() {
        if i == 5 {
            // Half-way: A dies with events leased and jobs running.
            a.take().unwrap().kill9();
        }
        let posts = chunk.iter().enumerate().map(|(j, t)| {
            let base = match (&a, j % 2) {
                (Some(a), 0) => a.url.clone(),
                _ => b.url.clone(),
            };
            let client = client.clone();
            async move { (t.clone(), post_event(&client, &base, t).await) }
        });
        for (tenant, status) in futures::future::join_all(posts).await {
            if status == 200 {
                acknowledged.push(tenant);
            }
        }
    }
    assert!(
        acknowledged.len() >= 190,
        "{} acknowledged",
        acknowledged.len()
    );
    // B alone finishes everything, including A's leased events and its interrupted jobs.
    wait_all_active(&client, &b.url, &acknowledged).await;
    let ran = runs(dir.path());
    let mut repeats = 0;
    for tenant in &acknowledged {
        let (_, view) = get(&client, &format!("{}/tenants/{tenant}", b.url)).await;
        let jobs = view["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "one job per tenant: {view:#}");
        let times = ran.iter().filter(|r| *r == tenant).count();
        // The only repeats: a job A was running when it died (re-run once its
        // lease ended: attempt 2), or one A had started but not yet recorded
        // as started (started again by B once the event's lease ended).
        let job = &jobs[0];
        let rerun = job["attempt"].as_i64().unwrap_or(1) > 1;
        let millis = |key: &str| {
            chrono::DateTime::parse_from_rfc3339(job[key].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        let restarted = millis("startedAt") - millis("createdAt") >= 3000;
        assert!(
            times == 1 || (times == 2 && (rerun || restarted)),
            "{tenant} ran {times} times: {view:#}"
        );
        repeats += usize::from(times == 2);
        let (_, event) = get(&client, &format!("{}/events/evt-{tenant}", b.url)).await;
        assert_eq!(event["status"], "succeeded", "{event:#}");
    }
    // Only jobs A had started can repeat: at most the 100 events posted before it died.
    assert!(repeats < 100, "{repeats} jobs ran twice");
    eprintln!("{repeats} jobs A had started ran again on B");
    drop(b);
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_runs_once_while_replicas_start_together_and_serve_can_skip_it() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let configs: Vec<String> = (0..3)
        .map(|i| replica_config(dir.path(), &format!("r{i}"), &db.url, ""))
        .collect();
    // Three replicas racing to migrate an empty database.
    let replicas: Vec<Binary> = std::thread::scope(|s| {
        let started: Vec<_> = configs
            .iter()
            .map(|c| s.spawn(move || start(c, "all")))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let client = reqwest::Client::new();
    for replica in &replicas {
        assert_eq!(get(&client, &format!("{}/ready", replica.url)).await.0, 200);
    }
    drop(replicas);
    // `migrate` on an up-to-date database is a no-op that succeeds.
    let out = std::process::Command::new(crate::common::binary())
        .args(["--config", &configs[0], "migrate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // `serve --no-migrate` against an empty database refuses to start, naming the fix.
    let empty = PgTestDb::create().await.unwrap();
    let config = replica_config(dir.path(), "fresh", &empty.url, "");
    let refused = Binary::start(&["--config", &config, "serve", "--no-migrate"], &[])
        .err()
        .expect("no schema: no start");
    assert!(
        refused.contains("run `orchestrator migrate` first"),
        "{refused}"
    );
    // After `migrate`, it starts.
    let out = std::process::Command::new(crate::common::binary())
        .args(["--config", &config, "migrate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fresh = Binary::start(&["--config", &config, "serve", "--no-migrate"], &[]).unwrap();
    assert_eq!(post_event(&client, &fresh.url, "somebody").await, 200);
    drop(fresh);
    db.drop_db().await;
    empty.drop_db().await;
}

// Multi-threaded: the gate forwards while the test thread blocks starting the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_postgres_and_events_are_refused_while_it_is_away() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let gate = TcpGate::start(db.server_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    counting_job(dir.path(), "0");
    let url = db.url_via(gate.addr);
    let replica = start(&replica_config(dir.path(), "a", &url, ""), "all");
    let client = reqwest::Client::new();
    assert_eq!(get(&client, &format!("{}/ready", replica.url)).await.0, 200);

    gate.close();
    let (status, body) = eventually(|| async {
        let (status, body) = get(&client, &format!("{}/ready", replica.url)).await;
        (status == 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let refused = client
        .post(format!("{}/events/TENANT_PROVISIONING", replica.url))
        .json(&envelope(
            "evt-away",
            "TENANT_PROVISIONING",
            provisioning("away", "basic"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        get(&client, &format!("{}/health", replica.url)).await.0,
        200
    );

    gate.open();
    eventually(|| async {
        (get(&client, &format!("{}/ready", replica.url)).await.0 == 200).then_some(())
    })
    .await;
    // The refused event was never stored; sent again, it is processed.
    assert_eq!(post_event(&client, &replica.url, "away").await, 200);
    wait_all_active(&client, &replica.url, &["away".to_owned()]).await;
    assert_eq!(runs(dir.path()), vec!["away".to_owned()]);
    drop(replica);
    db.drop_db().await;
}

#[tokio::test]
async fn roles_split_the_work() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    counting_job(dir.path(), "0");
    let api = start(&replica_config(dir.path(), "api", &db.url, ""), "api");
    let client = reqwest::Client::new();
    assert_eq!(post_event(&client, &api.url, "split").await, 200);
    // Nobody processes it yet: the api role only records.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, event) = get(&client, &format!("{}/events/evt-split", api.url)).await;
    assert_eq!(event["status"], "received", "{event:#}");

    let worker = start(&replica_config(dir.path(), "worker", &db.url, ""), "worker");
    // The worker serves only health and readiness...
    assert_eq!(get(&client, &format!("{}/health", worker.url)).await.0, 200);
    assert_eq!(get(&client, &format!("{}/ready", worker.url)).await.0, 200);
    assert_eq!(
        get(&client, &format!("{}/tenants", worker.url)).await.0,
        404
    );
    // ...and processes what the api replica recorded.
    wait_all_active(&client, &api.url, &["split".to_owned()]).await;
    // The api role deploys apps but does not proxy them.
    let deployed = client
        .post(format!("{}/apps/deploy", api.url))
        .json(&json!({"name": "split", "archive": crate::apps::seed_archive()}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let (status, body) = status_json(
        client
            .get(format!("{}/", api.url))
            .header("host", "split.localhost")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    drop((api, worker));
    db.drop_db().await;
}

/// Function logs live in the store: lines written by the workers of two
/// proxy replicas are read, and followed, through a third replica.
#[tokio::test]
async fn an_apps_logs_from_every_replica_are_read_through_any() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start(&replica_config(dir.path(), "a", &db.url, ""), "all");
    let b = start(&replica_config(dir.path(), "b", &db.url, ""), "proxy");
    let c = start(&replica_config(dir.path(), "c", &db.url, ""), "proxy");
    let client = reqwest::Client::new();
    let code = r#"exports.handler = async (event, context) => {
  console.log(`served ${event.path}`);
  return { statusCode: 200, body: context.awsRequestId };
};"#;
    let deployed = client
        .post(format!("{}/apps/deploy", a.url))
        .json(&json!({"name": "echo", "archive": crate::apps::zip_of(&[("index.js", code)])}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let invoke = |base: String, path: &'static str| {
        let client = client.clone();
        async move {
            eventually(|| async {
                let response = client
                    .get(format!("{base}{path}"))
                    .header("host", "echo.localhost")
                    .send()
                    .await
                    .ok()?;
                if response.status() != 200 {
                    return None;
                }
                response.text().await.ok()
            })
            .await
        }
    };
    let on_b = invoke(b.url.clone(), "/b").await;
    let on_c = invoke(c.url.clone(), "/c").await;
    // Each invocation's lines, written by its own replica, through A.
    for (request, path) in [(&on_b, "/b"), (&on_c, "/c")] {
        let lines = eventually(|| async {
            let (_, body) = get(
                &client,
                &format!("{}/apps/echo/logs?requestId={request}", a.url),
            )
            .await;
            let lines = body["events"].as_array().cloned().unwrap_or_default();
            (lines.len() == 4).then_some(lines)
        })
        .await;
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == format!("served {path}")),
            "{lines:#?}"
        );
    }
    // Following through A sees an invocation served by C.
    let mut follow = client
        .get(format!("{}/apps/echo/logs?follow=true&limit=1", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let later = invoke(c.url.clone(), "/later").await;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !text.contains(&format!("\"requestId\":\"{later}\""))
            || !text.contains("served /later")
        {
            let chunk = follow.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the line served by C did not arrive through A: {text}"));
    drop(follow);
    drop((a, b, c));
    db.drop_db().await;
}

/// Aliases, versions, rollbacks and custom domains set through one replica
/// are served by another, which never saw the change but reads the store.
#[tokio::test]
async fn aliases_versions_and_domains_set_through_one_replica_are_served_by_the_other() {
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start(&replica_config(dir.path(), "a", &db.url, ""), "all");
    let b = start(&replica_config(dir.path(), "b", &db.url, ""), "proxy");
    let client = reqwest::Client::new();
    let code = |tag: &str| {
        crate::apps::zip_of(&[(
            "index.js",
            &format!("exports.handler = async () => ({{ statusCode: 200, body: '{tag}' }});"),
        )])
    };
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    };
    send(
        client
            .post(format!("{}/apps/deploy", a.url))
            .json(&json!({"name": "pair", "archive": code("one")})),
    )
    .await;
    send(
        client
            .post(format!("{}/apps/deploy", a.url))
            .json(&json!({"name": "pair", "archive": code("two"), "promote": false})),
    )
    .await;
    let via_b = |host: &'static str| {
        let request = client.get(format!("{}/", b.url)).header("host", host);
        async move {
            let response = request.send().await.unwrap();
            let version = response
                .headers()
                .get("x-app-version")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                version,
                response.text().await.unwrap(),
            )
        }
    };
    let expect = |host: &'static str, version: &'static str, body: &'static str| {
        let via_b = &via_b;
        async move {
            eventually(|| async {
                let got = via_b(host).await;
                (got == (200, Some(version.to_owned()), body.to_owned())).then_some(())
            })
            .await
        }
    };
    expect("pair.localhost", "1", "one").await;
    // A version not promoted, found in the store on its first request.
    expect("v2--pair.localhost", "2", "two").await;

    // Promoted, aliased, given a domain, rolled back: all through A, seen at B.
    send(
        client
            .put(format!("{}/apps/pair/aliases/live", a.url))
            .json(&json!({"version": 2})),
    )
    .await;
    expect("pair.localhost", "2", "two").await;
    send(
        client
            .put(format!("{}/apps/pair/aliases/stable", a.url))
            .json(&json!({"version": 1})),
    )
    .await;
    expect("stable--pair.localhost", "1", "one").await;
    send(client.put(format!("{}/apps/pair/domains/pair.example.org", a.url))).await;
    expect("pair.example.org", "2", "two").await;
    send(client.post(format!("{}/apps/pair/rollback", a.url))).await;
    expect("pair.localhost", "1", "one").await;
    expect("pair.example.org", "1", "one").await;
    drop((a, b));
    db.drop_db().await;
}
