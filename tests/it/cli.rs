//! The command-line client, run as its binary against a real server: deploy
//! a directory, follow logs, roll back, send an event and read the tenant's
//! timeline, `dev` redeploying after a file write, errors and exit codes.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use orchestrator::config::Secret;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{binary, eventually, provisioning, write_job, TestApp};

/// What a finished command printed and how it ended.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `orchestrator --url <url> <args>` to its end.
async fn cli(url: &str, args: &[&str]) -> Ran {
    let output = command(url, args).output().await.unwrap();
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; its standard output.
async fn ok(url: &str, args: &[&str]) -> String {
    let ran = cli(url, args).await;
    assert!(ran.ok, "{args:?} failed: {}{}", ran.stdout, ran.stderr);
    ran.stdout
}

/// Runs a command that must succeed with `--output json`; its JSON.
async fn ok_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let stdout = ok(url, &all).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn command(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("ORCHESTRATOR_TOKEN")
        .env_remove("ORCHESTRATOR_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A command left running (`logs --follow`, `dev`); its output lines as they come.
struct Running {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(url: &str, args: &[&str]) -> Running {
        let mut child = command(url, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Running { child, lines }
    }

    /// Waits until a line contains `text`.
    async fn wait_for_line(&self, text: &str) -> String {
        eventually(|| async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(text))
                .cloned()
        })
        .await
    }

    fn count(&self, text: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Node.js function that says which edition it is, its environment and the files it was given.
fn write_app(dir: &Path, edition: &str) {
    std::fs::write(
        dir.join("index.js"),
        format!(
            r#"const fs = require('fs');
exports.handler = async (event) => {{
  console.log('served ' + event.path);
  const files = fs.readdirSync(process.env.LAMBDA_TASK_ROOT || '.', {{ recursive: true }}).filter((f) => f !== '.complete').sort();
  return {{ statusCode: 200, body: JSON.stringify({{ edition: '{edition}', greeting: process.env.GREETING || null, files }}) }};
}};
"#
        ),
    )
    .unwrap();
}

async fn served(app: &TestApp, name: &str) -> Value {
    let response = app.app_get(name, "/hello").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_a_directory_rolls_back_and_follows_the_logs() {
    let app = TestApp::start(|_, _| {}).await;
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write_app(root, "one");
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main").unwrap();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join("lib/data.json"), "{}").unwrap();
    std::fs::write(root.join("debug.log"), "noise").unwrap();
    std::fs::write(root.join(".orchestratorignore"), "*.log\n").unwrap();
    let dir = root.to_str().unwrap();

    let out = ok(
        &app.url,
        &["deploy", dir, "--name", "site", "--env", "GREETING=hi"],
    )
    .await;
    let port = app.url.rsplit(':').next().unwrap();
    assert!(out.contains("Deployed site version 1 (live)"), "{out}");
    assert!(
        out.contains(&format!("http://site.localhost:{port}/")),
        "{out}"
    );
    let body = served(&app, "site").await;
    assert_eq!(body["edition"], "one");
    assert_eq!(body["greeting"], "hi");
    // `.git`, the ignore file and what it lists stay home.
    assert_eq!(body["files"], json!(["index.js", "lib", "lib/data.json"]));

    // A second version keeps the environment; a third is deployed without taking traffic.
    write_app(root, "two");
    let out = ok(&app.url, &["deploy", dir, "--name", "site"]).await;
    assert!(out.contains("Deployed site version 2 (live)"), "{out}");
    assert_eq!(served(&app, "site").await["greeting"], "hi");
    write_app(root, "three");
    let out = ok(&app.url, &["deploy", dir, "--name", "site", "--no-promote"]).await;
    assert!(
        out.contains("version 3 (not live; live is version 2)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://v3--site.localhost:{port}/")),
        "{out}"
    );
    assert_eq!(served(&app, "site").await["edition"], "two");

    // Roll back: `live` returns to version 1.
    let out = ok(&app.url, &["apps", "rollback", "site"]).await;
    assert!(out.contains("site live is version 1 (was 2)"), "{out}");
    assert_eq!(served(&app, "site").await["edition"], "one");
    let out = ok(&app.url, &["apps", "rollback", "site", "--version", "3"]).await;
    assert!(out.contains("live is version 3"), "{out}");
    assert_eq!(served(&app, "site").await["edition"], "three");
    let got = ok_json(&app.url, &["apps", "get", "site"]).await;
    assert_eq!(
        (got["version"].clone(), got["latestVersion"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(got["versions"].as_array().map(Vec::len), Some(3));
    let listed = ok(&app.url, &["apps", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("site ") && l.contains("ACTIVE")),
        "{listed}"
    );
    let aliases = ok_json(&app.url, &["apps", "aliases", "site"]).await;
    assert_eq!(aliases[0]["name"], "live");
    assert_eq!(aliases[0]["version"], 3);

    // Follow the logs: the lines of a request made after the follower started.
    let follow = Running::start(
        &app.url,
        &[
            "--output", "json", "logs", "site", "--follow", "--since", "1s",
        ],
    );
    let marker = format!("/followed-{}", uuid::Uuid::new_v4().simple());
    eventually(|| async {
        // Until the follower has connected, a request's lines may predate it: ask again.
        let _ = app.app_get("site", &marker).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        (follow.count(&marker) > 0).then_some(())
    })
    .await;
    let line: Value = serde_json::from_str(&follow.wait_for_line(&marker).await).unwrap();
    assert_eq!(
        line["message"].as_str().map(str::trim),
        Some(format!("served {marker}").as_str())
    );
    assert_eq!(line["stream"], "stdout");
    let request = line["requestId"].as_str().unwrap().to_owned();
    follow
        .wait_for_line(&format!("REPORT RequestId: {request}"))
        .await;
    follow.stop().await;

    // Not following: the same lines, once, as a table.
    let out = ok(&app.url, &["logs", "site", "--request-id", &request]).await;
    assert!(
        out.contains(&format!("START RequestId: {request}")),
        "{out}"
    );
    assert!(out.contains(&format!("served {marker}")), "{out}");

    // `invoke`: the raw payload through the Invoke API.
    let answer = ok_json(
        &app.url,
        &["invoke", "site", "--payload", r#"{"path": "/invoked"}"#],
    )
    .await;
    assert_eq!(answer["statusCode"], 200);

    // Deactivate, then activate.
    assert!(ok(&app.url, &["apps", "deactivate", "site"])
        .await
        .contains("site INACTIVE"));
    assert_eq!(app.app_get("site", "/").await.status(), 404);
    assert!(ok(&app.url, &["apps", "activate", "site"])
        .await
        .contains("site ACTIVE"));
    assert_eq!(served(&app, "site").await["edition"], "three");
}

#[tokio::test]
async fn failures_print_the_services_message_and_exit_non_zero() {
    let app = TestApp::start(|c, _| {
        c.auth.api_tokens = vec![Secret("cli-token".into())];
    })
    .await;
    // Without the token: the service's 401, said.
    let ran = cli(&app.url, &["apps", "list"]).await;
    assert!(!ran.ok);
    assert!(ran.stderr.starts_with("error: "), "{}", ran.stderr);
    assert!(ran.stderr.contains("HTTP 401"), "{}", ran.stderr);
    // With it, from the environment as a user would set it.
    let mut with_token = command(&app.url, &["--output", "json", "apps", "list"]);
    with_token.env("ORCHESTRATOR_TOKEN", "cli-token");
    let output = with_token.output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!([])
    );

    let token = ["--token", "cli-token"];
    let failing: &[(&[&str], &str)] = &[
        (
            &["apps", "get", "nope"],
            "no app named 'nope' (not_found, HTTP 404)",
        ),
        (&["apps", "rollback", "nope"], "HTTP 404"),
        (
            &["events", "send", "TENANT_NOPE", "--detail", "{}"],
            "HTTP 400",
        ),
        (
            &[
                "events",
                "send",
                "TENANT_PROVISIONING",
                "--detail",
                "{not json",
            ],
            "HTTP 400",
        ),
        (
            &[
                "events",
                "send",
                "TENANT_PROVISIONING",
                "--detail",
                "@/no/such/file.json",
            ],
            "reading /no/such/file.json",
        ),
        (&["deploy", "/no/such/dir", "--name", "x"], "/no/such/dir"),
        (&["invoke", "nope"], "ResourceNotFoundException"),
        (&["tenants", "get", "nobody"], "HTTP 404"),
    ];
    for (args, said) in failing {
        let mut all = token.to_vec();
        all.extend_from_slice(args);
        let ran = cli(&app.url, &all).await;
        assert!(!ran.ok, "{args:?} succeeded: {}", ran.stdout);
        assert!(
            ran.stderr.starts_with("error: ") && ran.stderr.contains(said),
            "{args:?}: {}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    // The environment header a raw upload takes must be base64 of JSON.
    let refused = app
        .client
        .put(format!("{}/apps/envy/code", app.url))
        .bearer_auth("cli-token")
        .header("content-type", "application/zip")
        .header("x-orchestrator-environment", "not base64!")
        .body(crate::uploads::zip_bytes(&[(
            "index.js",
            "exports.handler = async () => ({})",
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_environment");
    // A name the service refuses, from a real directory.
    let project = tempfile::tempdir().unwrap();
    write_app(project.path(), "x");
    let ran = cli(
        &app.url,
        &[
            "--token",
            "cli-token",
            "deploy",
            project.path().to_str().unwrap(),
            "--name",
            "Not A Name",
        ],
    )
    .await;
    assert!(
        !ran.ok && ran.stderr.contains("invalid_app, HTTP 400"),
        "{}",
        ran.stderr
    );
    // Nothing listening.
    let ran = cli("http://127.0.0.1:9", &["apps", "list"]).await;
    assert!(
        !ran.ok && ran.stderr.contains("cannot reach http://127.0.0.1:9/"),
        "{}",
        ran.stderr
    );
    // A URL that is not one.
    let ran = cli("ftp://x", &["apps", "list"]).await;
    assert!(
        !ran.ok && ran.stderr.contains("--url must be an http(s) URL"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn sends_an_event_and_reads_the_tenants_timeline() {
    let app = TestApp::start(|config, dir| {
        let tier: Map<String, Value> = json!({"jobIdentifier": "provision"})
            .as_object()
            .cloned()
            .unwrap();
        config.tiers.insert("basic".into(), tier);
        write_job(
            dir,
            "provision",
            "echo \"DB=db.$TENANT_ID\" >> \"$JOB_OUTPUT\"",
        );
    })
    .await;
    let detail = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(detail.path(), provisioning("cli-co", "basic").to_string()).unwrap();
    let out = ok(
        &app.url,
        &[
            "events",
            "send",
            "TENANT_PROVISIONING",
            "--detail",
            &format!("@{}", detail.path().display()),
        ],
    )
    .await;
    let event_id = out
        .trim()
        .strip_prefix("Recorded event ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    app.wait_tenant("cli-co", "ACTIVE").await;

    let tenant = ok_json(&app.url, &["tenants", "get", "cli-co"]).await;
    assert_eq!(tenant["status"], "ACTIVE");
    assert_eq!(tenant["jobOutput"]["DB"], "db.cli-co");
    let table = ok(&app.url, &["tenants", "list"]).await;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cli-co ") && l.contains("ACTIVE") && l.contains("basic")),
        "{table}"
    );

    // The timeline, as people read it and as scripts do.
    let timeline = eventually(|| async {
        let timeline = ok_json(&app.url, &["tenants", "timeline", "cli-co"]).await;
        let items = timeline["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .any(|i| i["kind"] == "transition" && i["to"] == "ACTIVE")
            .then_some(timeline)
    })
    .await;
    assert!(timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["kind"] == "event" && i["eventId"] == event_id.as_str()));
    let text = ok(&app.url, &["tenants", "timeline", "cli-co"]).await;
    assert!(
        text.contains("TENANT_PROVISIONING succeeded (attempt 1)"),
        "{text}"
    );
    assert!(
        text.contains("transition") && text.contains("-> ACTIVE"),
        "{text}"
    );
    assert!(
        text.contains("jobFinished") && text.contains("exit 0"),
        "{text}"
    );

    // The inbox: listed, one event read, retried.
    let events = ok_json(&app.url, &["events", "list", "--limit", "50"]).await;
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == event_id.as_str()));
    let event = ok_json(&app.url, &["events", "get", &event_id]).await;
    assert_eq!(event["detail"]["tenant"]["id"], "cli-co");
    let out = ok(&app.url, &["events", "list", "--status", "succeeded"]).await;
    assert!(
        out.contains(&event_id) && out.contains("TENANT_PROVISIONING"),
        "{out}"
    );
    let retried = ok_json(&app.url, &["events", "retry", &event_id]).await;
    assert_eq!(retried["id"], event_id.as_str());
    // The same envelope id sent again is acknowledged, not processed twice.
    let envelope = crate::common::envelope(
        "cli-env-1",
        "TENANT_PROVISIONING",
        provisioning("cli-two", "basic"),
    );
    let text = envelope.to_string();
    let send = ["events", "send", "TENANT_PROVISIONING", "--detail", &text];
    let first = ok_json(&app.url, &send).await;
    let again = ok(&app.url, &send).await;
    assert!(
        first["eventId"].is_string() && first["duplicate"] != true,
        "{first}"
    );
    assert!(again.starts_with("Already recorded: event "), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_redeploys_after_a_file_write_and_follows_the_logs() {
    let app = TestApp::start(|_, _| {}).await;
    let project = tempfile::tempdir().unwrap();
    write_app(project.path(), "first");
    std::fs::write(project.path().join(".orchestratorignore"), "scratch/\n").unwrap();
    let dev = Running::start(
        &app.url,
        &[
            "dev",
            project.path().to_str().unwrap(),
            "--name",
            "devapp",
            "--debounce-ms",
            "100",
        ],
    );
    dev.wait_for_line("Deployed devapp version 1 (live)").await;
    dev.wait_for_line("watching").await;
    assert_eq!(served(&app, "devapp").await["edition"], "first");
    dev.wait_for_line("served /hello").await;

    write_app(project.path(), "second");
    dev.wait_for_line("Deployed devapp version 2 (live)").await;
    assert_eq!(served(&app, "devapp").await["edition"], "second");
    // The request's lines arrive through the follower dev runs.
    eventually(|| async { (dev.count("served /hello") >= 2).then_some(()) }).await;

    // An ignored file changes nothing: no version 3 after it, and the next real edit is version 3.
    std::fs::create_dir_all(project.path().join("scratch")).unwrap();
    std::fs::write(project.path().join("scratch/notes.txt"), "x").unwrap();
    write_app(project.path(), "third");
    dev.wait_for_line("Deployed devapp version 3 (live)").await;
    assert_eq!(served(&app, "devapp").await["edition"], "third");
    assert_eq!(dev.count("Deployed devapp version 4"), 0);
    let versions = ok_json(&app.url, &["apps", "get", "devapp"]).await;
    assert_eq!(versions["latestVersion"], 3);

    // A broken edit is reported and the watch goes on.
    std::fs::remove_file(project.path().join("index.js")).unwrap();
    std::fs::write(project.path().join("other.js"), "x").unwrap();
    dev.wait_for_line("error: ").await;
    write_app(project.path(), "fourth");
    dev.wait_for_line("Deployed devapp version 4 (live)").await;
    eventually(|| async { (served(&app, "devapp").await["edition"] == "fourth").then_some(()) })
        .await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_keeps_watching_when_the_first_deploy_fails() {
    let app = TestApp::start(|_, _| {}).await;
    let project = tempfile::tempdir().unwrap();
    // No handler file yet: the service refuses the first deploy.
    std::fs::write(project.path().join("notes.txt"), "to do").unwrap();
    let dev = Running::start(
        &app.url,
        &[
            "dev",
            project.path().to_str().unwrap(),
            "--name",
            "later",
            "--debounce-ms",
            "100",
        ],
    );
    let refused = dev.wait_for_line("error: ").await;
    assert!(refused.contains("HTTP 400"), "{refused}");
    dev.wait_for_line("watching").await;
    assert_eq!(app.get("/apps/later").await.0, 404);
    write_app(project.path(), "at-last");
    dev.wait_for_line("Deployed later version 1 (live)").await;
    assert_eq!(served(&app, "later").await["edition"], "at-last");
    dev.wait_for_line("served /hello").await;
    dev.stop().await;
}

#[tokio::test]
async fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = tokio::process::Command::new(binary())
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
        let script = String::from_utf8_lossy(&output.stdout);
        for word in ["orchestrator", "deploy", "rollback", "timeline"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}
