//! moto (a local AWS emulator, PyPI `moto[server]`) for the AWS backend
//! tests: one server per test binary, on a free 127.0.0.1 port, dying with
//! the tests. Tests share it, so each uses names of its own and nobody resets
//! it. Without moto the tests are skipped ([`crate::require`]: a failure
//! under CI); `.ci/run` installs it and exports `ORCHESTRATOR_TEST_MOTO`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_lambda::config::Credentials;
use serde_json::Value;
use tokio::sync::OnceCell;

pub struct Moto {
    pub url: String,
    /// The watcher shell; it outlives the tests on purpose and ends moto when they do.
    _watcher: Child,
}

static MOTO: OnceCell<Option<Moto>> = OnceCell::const_new();

fn server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ORCHESTRATOR_TEST_MOTO") {
        return Some(PathBuf::from(path));
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/orchestrator-moto/bin/moto_server"));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.exists())
    });
    cached.filter(|p| p.exists()).or(on_path)
}

async fn start() -> Option<Moto> {
    let Some(binary) = server_binary() else {
        crate::require::missing(
            "no moto_server for the AWS backend tests (`pip install 'moto[server]'` or set ORCHESTRATOR_TEST_MOTO)",
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A watcher shell stops moto once this test binary is gone (the test
    // threads come and go, so a parent-death signal would fire too early).
    #[allow(clippy::zombie_processes)] // reaped by init once the test binary exits
    let child = Command::new("sh")
        .args([
            "-c",
            r#"watched=$1; shift; "$@" & server=$!; while kill -0 "$watched" 2>/dev/null; do sleep 0.5; done; kill "$server"; rm -f "$MOTO_RECORDER_FILEPATH""#,
            "moto-watch",
            &std::process::id().to_string(),
        ])
        .arg(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // The request recorder writes its file in the working directory by
        // default, i.e. into the checkout.
        .env(
            "MOTO_RECORDER_FILEPATH",
            std::env::temp_dir().join(format!("orchestrator-moto-{}.recording", std::process::id())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(format!("{url}/moto-api/")).send().await.is_ok() {
            // No Docker here: Lambda's "simple" backend, which answers invokes from a queue.
            let configured = client
                .post(format!("{url}/moto-api/config"))
                .json(&serde_json::json!({"lambda": {"use_docker": false}}))
                .send()
                .await
                .unwrap();
            assert!(configured.status().is_success());
            return Some(Moto {
                url,
                _watcher: child,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not answer within 30 s");
}

/// The shared server, or `None` without moto (see [`crate::require`]).
pub async fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(start).await.as_ref()
}

impl Moto {
    /// SDK configuration pointing at this server.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await
    }

    /// An IAM role functions and projects can use (moto checks that it exists).
    pub async fn role(&self, name: &str) -> String {
        let body = [
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", "{}"),
        ];
        let response = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=x",
            )
            .form(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
        format!("arn:aws:iam::123456789012:role/{name}")
    }

    /// Runs `f` with moto's request recorder on; returns every recorded
    /// request as `(X-Amz-Target, body)`. Only one test uses the recorder.
    pub async fn record<F: std::future::Future<Output = ()>>(&self, f: F) -> Vec<(String, Value)> {
        let client = reqwest::Client::new();
        for step in ["reset-recording", "start-recording"] {
            let url = format!("{}/moto-api/recorder/{step}", self.url);
            assert!(client.post(url).send().await.unwrap().status().is_success());
        }
        f.await;
        let url = format!("{}/moto-api/recorder/stop-recording", self.url);
        assert!(client.post(url).send().await.unwrap().status().is_success());
        let url = format!("{}/moto-api/recorder/download-recording", self.url);
        let text = client.get(url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|entry| {
                let target = entry["headers"]["X-Amz-Target"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let raw = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"].as_bool().unwrap_or(false) {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
                        .unwrap_or_default()
                } else {
                    raw.as_bytes().to_vec()
                };
                (target, serde_json::from_slice(&body).unwrap_or(Value::Null))
            })
            .collect()
    }

    /// Queues results for the next invokes of any function (moto runs no code).
    pub async fn queue_lambda_results(&self, results: &[&str]) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/static/lambda-simple/response",
                self.url
            ))
            .json(&serde_json::json!({"results": results, "region": "us-east-1"}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// The Python of the moto environment `.ci/run` installs (it has boto3 and the AWS CLI).
pub fn python_with_boto3() -> Option<std::path::PathBuf> {
    let moto = std::env::var("ORCHESTRATOR_TEST_MOTO").ok()?;
    let python = std::path::Path::new(&moto).parent()?.join("python3");
    python.exists().then_some(python)
}

/// Runs `program` with that Python; its stdout, parsed as JSON (`None`,
/// said as [`crate::require`] says it, where there is no such Python).
pub fn python_json(program: &str) -> Option<serde_json::Value> {
    let Some(python) = python_with_boto3() else {
        crate::require::missing(
            "no Python with boto3 (the moto environment: set ORCHESTRATOR_TEST_MOTO)",
        );
        return None;
    };
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout))),
    )
}
