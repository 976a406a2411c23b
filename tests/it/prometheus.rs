//! The real Prometheus (Debian's package, installed by `.ci/run`) scrapes the
//! service with `deploy/prometheus/alerts.yml` loaded, and sees the dead-event
//! alert go pending once a webhook delivery has exhausted its retries.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::{checkout, envelope, eventually, write_job, FakePeer, TestApp};

/// A Prometheus server of our own, stopped with the test.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (`host:port`) every second, evaluates the rules every second.
    fn start(dir: &std::path::Path, target: &str) -> Option<Prometheus> {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let rules = checkout().join("deploy/prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: orchestrator\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let response = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        response.json().await.ok()
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_service_and_a_dead_event_raises_the_alert() {
    let peer = FakePeer::start(vec![500]).await;
    let webhook = peer.url.clone();
    let app = TestApp::start(move |config, dir| {
        config.callbacks.webhook_url = Some(webhook);
        config.tiers.insert(
            "basic".into(),
            json!({"jobIdentifier": "ok-job"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        write_job(dir, "ok-job", "echo done");
    })
    .await;
    let target = app.url.trim_start_matches("http://").to_owned();
    let Some(prometheus) = Prometheus::start(app.path(), &target) else {
        crate::require::missing("prometheus (Debian's prometheus package)");
        return;
    };
    let tenant = json!({
        "tenant": {"id": "t-dead", "key": "t-dead"},
        "subscription": {"plan": {"tier": "basic"}},
        "secret": "s3cret",
        "context": "ctx",
    });
    let (status, _) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &envelope("w-dead", "TENANT_PROVISIONING", tenant),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for("/tenants/t-dead", |t| t["callback"]["status"] == "dead")
        .await;

    // Prometheus has the target up and the dead event in the inbox gauge,
    // and the alert waits out its `for` as pending.
    let alert = eventually(|| async {
        let alerts = prometheus.get("/api/v1/alerts").await?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "OrchestratorDeadEvents")
            .cloned()
    })
    .await;
    assert!(
        alert["state"] == "pending" || alert["state"] == "firing",
        "{alert:#}"
    );
    assert_eq!(alert["labels"]["severity"], "page");
    let targets = prometheus.get("/api/v1/targets").await.unwrap();
    assert_eq!(
        targets["data"]["activeTargets"][0]["health"], "up",
        "{targets:#}"
    );

    // What Prometheus scraped are the exact counts of the deliveries and their event.
    let query = |q: &'static str| {
        let prometheus = &prometheus;
        async move {
            let body = prometheus
                .get(&format!("/api/v1/query?query={}", urlencode(q)))
                .await?;
            body["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        }
    };
    let failed =
        eventually(|| query(r#"orchestrator_webhook_deliveries_total{outcome="failed"}"#)).await;
    assert_eq!(failed, 4.0, "four attempts, each answered 500");
    let retried = eventually(|| {
        query(r#"orchestrator_events_processed_total{type="TENANT_CALLBACK",outcome="retried"}"#)
    })
    .await;
    let dead = eventually(|| {
        query(r#"orchestrator_events_processed_total{type="TENANT_CALLBACK",outcome="dead"}"#)
    })
    .await;
    assert_eq!((retried, dead), (3.0, 1.0));
    assert_eq!(peer.requests().len(), 4);
}

/// Percent-encodes a PromQL query for a URL.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
