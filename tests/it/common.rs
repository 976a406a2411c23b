//! The test harness: the real service on 127.0.0.1:0 with a temp data dir,
//! real job scripts, and tiny fake HTTP peers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator::config::Config;
use orchestrator::functions::local::runtimes::Runtimes;
use orchestrator::functions::local::sandbox::{self, Sandbox, SandboxOptions};
use orchestrator::{OrchestratorBuilder, Role};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::pg::{suite_database, PgTestDb};

/// A running service.
pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    /// The store it runs on (`None`: SQLite under the data dir).
    pub database_url: Option<String>,
    /// The PostgreSQL database this app created (dropped with it).
    db: Option<PgTestDb>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Defaults for tests: fast polling and retries, jobs under the temp dir.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        ..Config::default()
    };
    config.builder.jobs_dir = dir.join("jobs");
    config.inbox.poll_ms = 50;
    config.inbox.backoff_base_ms = 50;
    config.inbox.backoff_max_ms = 200;
    config.inbox.max_attempts = 4;
    if std::env::var_os(REQUIRE_SANDBOX).is_some() {
        config.functions.isolation = orchestrator::config::Isolation::Sandbox;
    }
    config
}

/// Set by `.ci/run`: the sandbox must be available (a test fails rather than run unconfined).
pub const REQUIRE_SANDBOX: &str = "ORCHESTRATOR_TEST_REQUIRE_SANDBOX";

/// The function sandbox with the default settings, as the service would
/// probe it; `None` (said visibly) where this machine cannot sandbox,
/// unless `.ci/run` requires it.
pub fn sandbox() -> Option<Arc<Sandbox>> {
    let defaults = orchestrator::config::FunctionsConfig::default();
    let options = SandboxOptions {
        uid_base: defaults.sandbox_uid_base,
        uid_count: defaults.sandbox_uid_count,
        max_processes: defaults.max_processes,
        tmp_size_bytes: defaults.tmp_size_mb * 1024 * 1024,
    };
    match Sandbox::probe(options) {
        Ok(sandbox) => Some(sandbox),
        Err(why) if std::env::var_os(REQUIRE_SANDBOX).is_some() => {
            panic!("{REQUIRE_SANDBOX} is set but the sandbox is unavailable: {why}")
        }
        Err(why) => {
            eprintln!("SANDBOX UNAVAILABLE on this machine ({why}): functions run unconfined");
            None
        }
    }
}

/// The runtimes a local backend finds here, as the service finds them:
/// on the sandbox's `PATH` when confined, else on ours.
pub fn runtimes(confined: bool) -> Arc<Runtimes> {
    let search = match confined {
        true => sandbox::PATH.to_owned(),
        false => std::env::var("PATH").unwrap_or_default(),
    };
    Runtimes::shared(&search, &Default::default()).unwrap()
}

/// Writes an executable shell script `jobs/<name>`.
pub fn write_job(dir: &Path, name: &str, body: &str) {
    let jobs = dir.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let path = jobs.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl TestApp {
    /// Starts the service with `configure` applied to the test defaults.
    pub async fn start(configure: impl FnOnce(&mut Config, &Path)) -> TestApp {
        Self::start_with(configure, |b| b).await
    }

    /// Like [`TestApp::start`], and lets the test replace parts of the service.
    pub async fn start_with(
        configure: impl FnOnce(&mut Config, &Path),
        customize: impl FnOnce(OrchestratorBuilder) -> OrchestratorBuilder,
    ) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        configure(&mut config, dir.path());
        // On the PostgreSQL suite, a fresh database unless the test chose one.
        let db = match config.database_url {
            Some(_) => None,
            None => suite_database().await,
        };
        if let Some(db) = &db {
            config.database_url = Some(db.url.clone());
        }
        let database_url = config.database_url.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let orchestrator = customize(OrchestratorBuilder::new(config))
            .build()
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(orchestrator.serve(Role::All, listener, async move {
            let _ = rx.await;
        }));
        TestApp {
            url,
            client: reqwest::Client::new(),
            dir,
            database_url,
            db,
            shutdown: Some(tx),
        }
    }

    /// Hands over the database this app created, so it outlives the app
    /// (a test restarting the service on the same store).
    pub fn take_db(&mut self) -> Option<PgTestDb> {
        self.db.take()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `GET <path>` on app `name` through the proxy (`Host: <name>.localhost`).
    pub async fn app_get(&self, name: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .header("host", format!("{name}.localhost"))
            .send()
            .await
            .unwrap()
    }

    /// POSTs raw bytes with a JSON content type.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        status_json(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_json(
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Polls `GET path` until `done` holds for the body, or fails after 20 s showing the last body.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.get(path).await;
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}; last: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the tenant has `status`.
    pub async fn wait_tenant(&self, id: &str, status: &str) -> Value {
        self.wait_for(&format!("/tenants/{id}"), |t| t["status"] == status)
            .await
    }

    /// Waits until the event has `status`.
    pub async fn wait_event(&self, id: &str, status: &str) -> Value {
        self.wait_for(&format!("/events/{id}"), |e| e["status"] == status)
            .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// An EventBridge envelope as an API destination delivers it.
pub fn envelope(id: &str, detail_type: &str, detail: Value) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": "TenantManagementService",
        "account": "123456789012",
        "time": "2026-11-23T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    })
}

/// A provisioning detail as ARC SaaS's reference connector sends it.
pub fn provisioning(tenant: &str, tier: &str) -> Value {
    json!({
        "tenant": {"id": tenant, "name": "Acme", "key": "acme"},
        "planConfig": {"tier": tier},
        "builderConfig": {"type": "CODE_BUILD", "config": {"environmentOverride": {"REGION": "eu-west-1"}}},
    })
}

/// Asserts the error envelope.
pub fn assert_error(body: &Value, status: u16, code: &str) {
    assert_eq!(body["error"]["statusCode"], status, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
}

/// One request a [`FakePeer`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// A tiny HTTP server on 127.0.0.1:0 that records requests and answers with
/// the given statuses in turn (the last one repeats).
pub struct FakePeer {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl FakePeer {
    pub async fn start(statuses: Vec<u16>) -> FakePeer {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let handler = move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            let statuses = statuses.clone();
            async move {
                let mut log = log.lock().unwrap();
                let status = statuses
                    .get(log.len())
                    .or(statuses.last())
                    .copied()
                    .unwrap_or(204);
                log.push(Received { headers, body });
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        };
        let app = axum::Router::new().route("/webhook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakePeer { url, received }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Runs `f` until it returns `Some`, for at most 20 s.
pub async fn eventually<T, F: Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checkout the tests run from: cargo says so when it runs them, so a
/// test binary built from another checkout (sharing a `CARGO_TARGET_DIR`)
/// still reads this one's files.
pub fn checkout() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The path of the compiled binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"))
}

/// The real binary, started as a child process.
pub struct Binary {
    pub child: std::process::Child,
    pub url: String,
    pub output: Arc<Mutex<String>>,
}

impl Binary {
    /// Starts `orchestrator` with `args` and `env`, and waits for its `listening on` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Result<Binary, String> {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(binary())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let output: Arc<Mutex<String>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("listening on http://") {
                        // The address ends at a space, or at the quote of a JSON log line.
                        let url = line[at + "listening on ".len()..]
                            .split(|c: char| c.is_whitespace() || c == '"')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(Some(url));
                    }
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
                let _ = tx.send(None);
            });
        }
        drop(tx);
        let mut closed = 0;
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Some(url)) => return Ok(Binary { child, url, output }),
                Ok(None) => {
                    closed += 1;
                    if closed == 2 {
                        let _ = child.wait();
                        return Err(output.lock().unwrap().clone());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    return Err(format!(
                        "no 'listening on' line within 30 s: {}",
                        output.lock().unwrap()
                    ));
                }
            }
        }
    }

    /// SIGKILL, as `kill -9` does.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app name the test knows to be valid.
pub fn app_name(name: &str) -> orchestrator::apps::AppName {
    orchestrator::apps::AppName::parse(name).expect("a valid app name")
}
