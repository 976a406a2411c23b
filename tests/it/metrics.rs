//! `GET /metrics`: exact counter movements after known traffic (events,
//! jobs, invocations by outcome, cold starts), gauges read from the store,
//! bounded labels, both text formats.

use std::path::Path;

use orchestrator::config::Config;
use serde_json::{json, Map, Value};

use crate::apps::zip_of;
use crate::common::{envelope, eventually, provisioning, write_job, Binary, TestApp};

/// The metrics as the Prometheus text format gives them.
pub(crate) struct Scrape(String);

impl Scrape {
    pub(crate) async fn of(app: &TestApp) -> Scrape {
        let response = reqwest::get(format!("{}/metrics", app.url)).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape(response.text().await.unwrap())
    }

    /// The value of the sample `name` whose labels include every one of
    /// `labels`; 0 when there is none (a counter never incremented), and a
    /// failure when more than one matches.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let found: Vec<f64> = self
            .0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let have: Vec<&str> = label_text.split(',').collect();
                (metric == name && wanted.iter().all(|w| have.contains(&w.as_str())))
                    .then(|| value.parse().unwrap())
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().copied().unwrap_or(0.0)
    }
}

fn tiers(config: &mut Config, dir: &Path) {
    let tier = |values: Value| -> Map<String, Value> { values.as_object().cloned().unwrap() };
    config
        .tiers
        .insert("basic".into(), tier(json!({"jobIdentifier": "ok-job"})));
    config
        .tiers
        .insert("broken".into(), tier(json!({"jobIdentifier": "fail-job"})));
    write_job(dir, "ok-job", "echo done");
    write_job(dir, "fail-job", "exit 3");
}

#[tokio::test]
async fn events_jobs_and_requests_are_counted_exactly() {
    let app = TestApp::start(tiers).await;
    let before = Scrape::of(&app).await;
    assert_eq!(
        before.value(
            "orchestrator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for (id, tenant, tier) in [
        ("e-1", "t-1", "basic"),
        ("e-2", "t-2", "basic"),
        ("e-3", "t-3", "broken"),
    ] {
        let (status, _) = app
            .post(
                "/events/TENANT_PROVISIONING",
                &envelope(id, "TENANT_PROVISIONING", provisioning(tenant, tier)),
            )
            .await;
        assert_eq!(status, 200);
    }
    // A repeated delivery is acknowledged and not received again.
    let (status, ack) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &envelope("e-1", "TENANT_PROVISIONING", provisioning("t-1", "basic")),
        )
        .await;
    assert_eq!((status, ack["duplicate"].clone()), (200, json!(true)));
    app.wait_tenant("t-1", "ACTIVE").await;
    app.wait_tenant("t-2", "ACTIVE").await;
    app.wait_tenant("t-3", "PROVISIONFAILED").await;

    // The results' events are recorded as processed just after they change the tenant.
    let processed = |s: &Scrape, t: &str| {
        s.value(
            "orchestrator_events_processed_total",
            &[("type", t), ("outcome", "succeeded")],
        )
    };
    let scrape = eventually(|| async {
        let s = Scrape::of(&app).await;
        // A fast job's result can be handled before the event that started it is recorded.
        (processed(&s, "TENANT_PROVISIONING") >= 3.0
            && processed(&s, "TENANT_PROVISIONING_SUCCESS") >= 2.0
            && processed(&s, "TENANT_PROVISIONING_FAILURE") >= 1.0)
            .then_some(s)
    })
    .await;
    let received = |t: &str| scrape.value("orchestrator_events_received_total", &[("type", t)]);
    assert_eq!(received("TENANT_PROVISIONING"), 3.0, "{}", scrape.0);
    assert_eq!(processed(&scrape, "TENANT_PROVISIONING"), 3.0);
    assert_eq!(processed(&scrape, "TENANT_PROVISIONING_SUCCESS"), 2.0);
    assert_eq!(processed(&scrape, "TENANT_PROVISIONING_FAILURE"), 1.0);
    assert_eq!(processed(&scrape, "CodeBuild Build State Change"), 3.0);
    let jobs = |outcome: &str| {
        scrape.value(
            "orchestrator_jobs_total",
            &[
                ("backend", "local"),
                ("kind", "provisioning"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!((jobs("succeeded"), jobs("failed")), (2.0, 1.0));
    assert_eq!(
        scrape.value(
            "orchestrator_job_duration_seconds_count",
            &[("backend", "local"), ("kind", "provisioning")]
        ),
        3.0
    );
    assert_eq!(
        scrape.value(
            "orchestrator_http_requests_total",
            &[
                ("route", "/events/{event}"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        4.0,
        "the duplicate is a request too"
    );
    // Every store call is timed: four inserts from the client (the repeated
    // one too) and the three jobs' completions, which come through the inbox.
    assert_eq!(
        scrape.value(
            "orchestrator_store_query_duration_seconds_count",
            &[("op", "insert_event")]
        ),
        7.0
    );
    assert!(scrape.value("orchestrator_store_pool_connections", &[("state", "open")]) >= 1.0);
    // Labels are templates and fixed names, never ids.
    assert!(
        !scrape.0.contains("t-1") && !scrape.0.contains("e-1"),
        "{}",
        scrape.0
    );

    // Gauges come from the store: what the inbox holds, as the API lists it.
    let (_, succeeded) = app.get("/events?status=succeeded&limit=1000").await;
    let listed = succeeded.as_array().map_or(0, Vec::len) as f64;
    let settled = eventually(|| async {
        let s = Scrape::of(&app).await;
        let waiting = s.value("orchestrator_inbox_events", &[("status", "received")])
            + s.value("orchestrator_inbox_events", &[("status", "processing")]);
        (waiting == 0.0).then_some(s)
    })
    .await;
    assert_eq!(
        settled.value("orchestrator_inbox_events", &[("status", "succeeded")]),
        listed,
        "{succeeded:#}"
    );
    assert_eq!(
        settled.value("orchestrator_inbox_oldest_age_seconds", &[]),
        0.0
    );
    assert_eq!(settled.value("orchestrator_jobs_running", &[]), 0.0);

    // OpenMetrics when the scraper asks for it.
    let open = reqwest::Client::new()
        .get(format!("{}/metrics", app.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(open.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.text().await.unwrap().trim_end().ends_with("# EOF"));
}

/// Answers by `?mode=`: a result, an error, past its 1 s timeout, or the process exiting.
const MODES: &str = r#"
exports.handler = async (event) => {
  const mode = (event.queryStringParameters || {}).mode;
  if (mode === "error") throw new Error("boom");
  if (mode === "sleep") await new Promise((resolve) => setTimeout(resolve, 5000));
  if (mode === "exit") process.exit(1);
  return { statusCode: 200, body: "ok" };
};
"#;

#[tokio::test]
async fn invocations_are_counted_by_outcome_with_their_cold_starts() {
    let app = TestApp::start(|_, _| {}).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "modes", "archive": zip_of(&[("index.js", MODES)]), "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    // One at a time, so one worker serves until one dies: a cold start for
    // the first request, after the timeout, and after the crash.
    let mut answers = Vec::new();
    for mode in [
        "ok", "ok", "ok", "ok", "ok", "error", "error", "sleep", "exit", "ok",
    ] {
        let response = app.app_get("modes", &format!("/?mode={mode}")).await;
        answers.push(response.status().as_u16());
    }
    assert_eq!(answers, [200, 200, 200, 200, 200, 502, 502, 504, 502, 200]);

    let scrape = eventually(|| async {
        let s = Scrape::of(&app).await;
        (s.value("orchestrator_function_workers", &[("app", "modes")]) == 1.0).then_some(s)
    })
    .await;
    let invocations = |outcome: &str| {
        scrape.value(
            "orchestrator_function_invocations_total",
            &[("app", "modes"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        [
            invocations("success"),
            invocations("error"),
            invocations("timeout"),
            invocations("crash"),
            invocations("throttled")
        ],
        [6.0, 2.0, 1.0, 1.0, 0.0],
        "{}",
        scrape.0
    );
    let app_label = [("app", "modes")];
    assert_eq!(
        scrape.value("orchestrator_function_duration_seconds_count", &app_label),
        10.0
    );
    assert_eq!(
        scrape.value("orchestrator_function_cold_starts_total", &app_label),
        3.0
    );
    assert_eq!(
        scrape.value(
            "orchestrator_function_init_duration_seconds_count",
            &app_label
        ),
        3.0
    );
    assert_eq!(
        scrape.value("orchestrator_function_concurrent_executions", &app_label),
        0.0
    );
    let proxied = |status: &str| {
        scrape.value(
            "orchestrator_http_requests_total",
            &[("route", "proxy"), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(
        [proxied("200"), proxied("502"), proxied("504")],
        [6.0, 3.0, 1.0]
    );
    assert_eq!(
        scrape.value("orchestrator_apps", &[("status", "ACTIVE")]),
        1.0
    );
}

#[tokio::test]
async fn metrics_need_a_token_when_tokens_are_configured() {
    let app = TestApp::start(|config, _| {
        config.auth.api_tokens = vec![orchestrator::config::Secret("s3cret".into())];
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", app.url);
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let scraped = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("orchestrator_build_info"));
}

/// The real binary serving on a port of its own, with `env`, its data in a temp dir kept with it.
fn serve(env: &[(&str, &str)]) -> (tempfile::TempDir, Binary) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let binary = Binary::start(&args, env).unwrap();
    (dir, binary)
}

/// The access log: one JSON line per request (message `request`) with `log_format = json`, none with `access_log = false`.
#[tokio::test]
async fn every_request_gets_one_access_line_unless_turned_off() {
    let (_on_dir, on) = serve(&[("ORCHESTRATOR_LOG_FORMAT", "json")]);
    let client = reqwest::Client::new();
    let ack = client
        .post(format!("{}/events/TENANT_PROVISIONING", on.url))
        .header("x-request-id", "req-42")
        .json(&json!({"tenantId": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let missing = client
        .get(format!("{}/nowhere/acme", on.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let lines = eventually(|| async {
        let output = on.output.lock().unwrap().clone();
        let lines: Vec<Value> = output
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == "request" && line.get("route").is_some())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let posted = &lines[0];
    assert_eq!(
        (
            &posted["method"],
            &posted["route"],
            &posted["status"],
            &posted["request_id"]
        ),
        (
            &json!("POST"),
            &json!("/events/{event}"),
            &json!(200),
            &json!("req-42")
        ),
        "{posted:#}"
    );
    assert!(posted["duration_ms"].as_f64().unwrap() > 0.0);
    // The trace the answer named in `traceresponse`.
    let answered_in = ack.headers()["traceresponse"].to_str().unwrap().to_owned();
    assert_eq!(
        posted["trace_id"].as_str(),
        answered_in.split('-').nth(1),
        "{posted:#}"
    );
    assert_eq!(
        (&lines[1]["route"], &lines[1]["status"]),
        (&json!("unmatched"), &json!(404))
    );
    drop(on);

    let (_off_dir, off) = serve(&[
        ("ORCHESTRATOR_LOG_FORMAT", "json"),
        ("ORCHESTRATOR_ACCESS_LOG", "false"),
    ]);
    for _ in 0..3 {
        let health = client
            .get(format!("{}/health", off.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    // Counted, not logged: the scrape sees the three requests while the log has no access line.
    let scrape = client
        .get(format!("{}/metrics", off.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains(
            r#"orchestrator_http_requests_total{route="/health",method="GET",status="200"} 3"#
        ),
        "{scrape}"
    );
    // Stopped, the service writes what it buffered and says it is shutting down:
    // any access line would have come before that.
    let pid = rustix::process::Pid::from_raw(off.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = eventually(|| async {
        let output = off.output.lock().unwrap().clone();
        output.contains("shutting down").then_some(output)
    })
    .await;
    assert!(!output.contains(r#""route":"#), "{output}");
}

/// `metrics.listen`: `/metrics` alone on an address of its own, without the token the main address asks for.
#[tokio::test]
async fn metrics_listen_serves_them_alone_without_a_token() {
    let (_dir, service) = serve(&[
        ("ORCHESTRATOR_API_TOKENS", "s3cret"),
        ("ORCHESTRATOR_METRICS__LISTEN", "127.0.0.1:0"),
    ]);
    let metrics_url = eventually(|| async {
        let output = service.output.lock().unwrap().clone();
        let at = output.find("metrics on http://")? + "metrics on ".len();
        Some(output[at..].split_whitespace().next()?.to_owned())
    })
    .await;
    let client = reqwest::Client::new();
    let main = client
        .get(format!("{}/metrics", service.url))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 401, "the main address wants the token");
    let scraped = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("orchestrator_build_info"));
    let other = client
        .get(metrics_url.replace("/metrics", "/apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "nothing else is served there");
}
