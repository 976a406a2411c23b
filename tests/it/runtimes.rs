//! Runtimes are what they say: the interpreters found at start, listed at
//! `GET /runtimes`; a runtime whose version is missing is refused with what
//! is installed; one set in `[functions.runtimes]` runs on that interpreter.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::{assert_error, TestApp};

const WHO: &str = r#"exports.handler = async () => ({
  statusCode: 200,
  body: JSON.stringify({ node: process.version, wrapped: process.env.WRAPPED_BY || null }),
});"#;

fn deploy_body(name: &str, runtime: &str) -> Value {
    json!({"name": name, "runtime": runtime, "archive": zip_of(&[("index.js", WHO)])})
}

#[tokio::test]
async fn lists_what_runs_here_and_refuses_a_missing_version() {
    let app = TestApp::start(|_, _| {}).await;
    let (status, listed) = app.get("/runtimes").await;
    assert_eq!(status, 200);
    assert_eq!(listed["backend"], "local");
    let runtimes = listed["runtimes"].as_array().unwrap();
    let available: Vec<&str> = runtimes
        .iter()
        .filter(|r| r["available"] == true)
        .filter_map(|r| r["runtime"].as_str())
        .collect();
    // Node.js is on this machine (the suite runs it): its runtime says where and which.
    let node = runtimes
        .iter()
        .find(|r| {
            r["available"] == true
                && r["runtime"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("nodejs"))
        })
        .expect("a Node.js runtime");
    let major = node["runtime"]
        .as_str()
        .unwrap()
        .trim_start_matches("nodejs")
        .trim_end_matches(".x")
        .to_owned();
    assert!(
        node["interpreter"]["version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{major}.")),
        "{node}"
    );
    assert!(node["interpreter"]["path"]
        .as_str()
        .unwrap()
        .starts_with('/'));
    assert!(available.contains(&"provided.al2023"));
    // It really runs on it.
    let runtime = node["runtime"].as_str().unwrap();
    let (status, body) = app.post("/apps/deploy", &deploy_body("who", runtime)).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = app.app_get("who", "/").await.json().await.unwrap();
    assert_eq!(
        answer["node"],
        format!("v{}", node["interpreter"]["version"].as_str().unwrap())
    );

    // A Node.js version this machine lacks: 400 naming what it has, nothing stored.
    let missing = runtimes
        .iter()
        .filter_map(|r| {
            r["runtime"]
                .as_str()
                .filter(|n| n.starts_with("nodejs") && r["available"] == false)
        })
        .next();
    if let Some(missing) = missing {
        let (status, body) = app
            .post("/apps/deploy", &deploy_body("lacking", missing))
            .await;
        assert_error(&body, 400, "invalid_app");
        assert_eq!(status, 400);
        let message = body["error"]["message"].as_str().unwrap();
        let wanted = missing.trim_start_matches("nodejs").trim_end_matches(".x");
        assert!(
            message.contains(&format!("{missing} needs Node.js {wanted}")),
            "{message}"
        );
        assert!(message.contains(&format!("it runs {runtime}")), "{message}");
        assert_eq!(app.get("/apps/lacking").await.0, 404);
        // A redeploy of a running app to it is refused too, and the app keeps serving.
        let (status, body) = app.post("/apps/deploy", &deploy_body("who", missing)).await;
        assert_eq!(status, 400);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("needs Node.js"), "{message}");
        assert_eq!(app.app_get("who", "/").await.status(), 200);
    }
}

/// A Node.js wrapper claiming to be version 24 that runs this machine's
/// node with a mark in the environment: `[functions.runtimes]` chooses it.
#[tokio::test]
async fn a_configured_interpreter_runs_its_runtime() {
    let node = crate::common::runtimes(false)
        .interpreter("nodejs20.x")
        .ok()
        .flatten()
        .map(|i| i.path.clone())
        .or_else(|| {
            ["nodejs22.x", "nodejs24.x", "nodejs18.x"]
                .iter()
                .find_map(|r| {
                    crate::common::runtimes(false)
                        .interpreter(r)
                        .ok()
                        .flatten()
                        .map(|i| i.path.clone())
                })
        })
        .expect("a Node.js on this machine");
    let tools = tempfile::tempdir().unwrap();
    // Readable by a sandboxed worker's user: the sandbox shows this directory as it is.
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = tools.path().join("node-claims-24");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo v24.99.0; exit 0; fi\nWRAPPED_BY=claims-24 exec {} \"$@\"\n",
            node.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let configured = wrapper.clone();
    let app = TestApp::start(move |config, _| {
        config
            .functions
            .runtimes
            .insert("nodejs24.x".into(), configured);
    })
    .await;
    let (_, listed) = app.get("/runtimes").await;
    let entry = listed["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runtime"] == "nodejs24.x")
        .cloned()
        .unwrap();
    assert_eq!(entry["available"], true);
    assert_eq!(entry["interpreter"]["version"], "24.99.0");
    assert_eq!(entry["interpreter"]["path"], wrapper.display().to_string());
    let (status, body) = app
        .post("/apps/deploy", &deploy_body("claims", "nodejs24.x"))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = app.app_get("claims", "/").await.json().await.unwrap();
    assert_eq!(answer["wrapped"], "claims-24");
}

#[test]
fn a_configured_interpreter_of_another_version_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let liar = dir.path().join("node");
    std::fs::write(&liar, "#!/bin/sh\necho v18.0.0\n").unwrap();
    std::fs::set_permissions(&liar, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[functions.runtimes]\n\"nodejs22.x\" = \"{}\"\n",
            dir.path().join("data").display(),
            liar.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(crate::common::binary())
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "functions.runtimes.\"nodejs22.x\" = {} is node 18.0.0, not 22",
            liar.display()
        )),
        "{stderr}"
    );
}
