//! Function logs: what an app's function writes, and the runtime's START,
//! END and REPORT lines, kept per app in the store with bounded retention,
//! read with `GET /apps/{name}/logs` and followed as Server-Sent Events.

use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::{assert_error, eventually, TestApp};

const CHATTY: &str = r#"exports.handler = async (event, context) => {
  const q = event.queryStringParameters || {};
  if (q.bytes) console.log('x'.repeat(Number(q.bytes)));
  console.log(`hello ${event.path}`);
  console.error(`warned ${event.path}`);
  return { statusCode: 200, body: context.awsRequestId };
};"#;

async fn deploy(app: &TestApp, name: &str) {
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": zip_of(&[("index.js", CHATTY)])}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
}

/// Invokes the app at `path`; the invocation's request id.
async fn invoke(app: &TestApp, name: &str, path: &str) -> String {
    let response = app.app_get(name, path).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The kept lines of an invocation, once all `count` are there (the
/// function's own lines are read apart from the runtime's and may come
/// after its REPORT line).
async fn lines_of(app: &TestApp, name: &str, request_id: &str, count: usize) -> Vec<Value> {
    eventually(|| async {
        let (status, body) = app
            .get(&format!("/apps/{name}/logs?requestId={request_id}"))
            .await;
        assert_eq!(status, 200, "{body:#}");
        let events = body["events"].as_array().cloned().unwrap_or_default();
        (events.len() >= count).then_some(events)
    })
    .await
}

#[tokio::test]
async fn an_apps_output_is_kept_and_read_by_invocation_time_and_count() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "chatty").await;
    let first = invoke(&app, "chatty", "/a").await;
    let second = invoke(&app, "chatty", "/b").await;

    let lines = lines_of(&app, "chatty", &first, 5).await;
    let shape: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let message = l["message"].as_str().unwrap();
            let head = message.split_whitespace().next().unwrap_or("").to_owned();
            (l["stream"].as_str().unwrap().to_owned(), head)
        })
        .collect();
    // The runtime's lines in order; the function's own lines are read from
    // its pipes apart from them, so only their presence is fixed.
    let platform: Vec<&str> = shape
        .iter()
        .filter(|(stream, _)| stream == "platform")
        .map(|(_, head)| head.as_str())
        .collect();
    assert_eq!(platform, ["START", "END", "REPORT"], "{lines:#?}");
    let mut own: Vec<(String, String)> = shape
        .iter()
        .filter(|(stream, _)| stream != "platform")
        .cloned()
        .collect();
    own.sort();
    assert_eq!(
        own,
        [
            ("stderr".to_owned(), "warned".to_owned()),
            ("stdout".to_owned(), "hello".to_owned())
        ],
        "{lines:#?}"
    );
    assert_eq!(shape[0].1, "START", "{lines:#?}");
    for line in &lines {
        assert_eq!(line["requestId"], first.as_str());
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert!(lines
        .iter()
        .any(|l| l["message"] == "hello /a" && l["stream"] == "stdout"));
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("START RequestId: {first} Version: 1")));
    assert!(lines
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains("Billed Duration:")));

    // Both invocations, newest last; `limit` keeps the newest.
    lines_of(&app, "chatty", &second, 5).await;
    let (_, all) = app.get("/apps/chatty/logs").await;
    let all = all["events"].as_array().unwrap().clone();
    assert_eq!(all.len(), 10, "{all:#?}");
    assert_eq!(all[0]["requestId"], first.as_str());
    assert_eq!(all[9]["requestId"], second.as_str());
    let (_, newest) = app.get("/apps/chatty/logs?limit=2").await;
    let newest = newest["events"].as_array().unwrap();
    assert_eq!(newest.len(), 2);
    assert!(newest.iter().all(|l| l["requestId"] == second.as_str()));
    assert_eq!(newest[1], all[9]);

    // Time windows: RFC 3339, epoch milliseconds, durations ago.
    let (_, recent) = app.get("/apps/chatty/logs?since=10m").await;
    assert_eq!(recent["events"].as_array().unwrap().len(), 10);
    let (_, future) = app
        .get("/apps/chatty/logs?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["events"], json!([]));
    let (_, past) = app.get("/apps/chatty/logs?until=1000").await;
    assert_eq!(past["events"], json!([]));

    // Bad input is a clear 4xx; an unknown app is 404.
    let (status, body) = app.get("/apps/chatty/logs?since=yesterday").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/apps/chatty/logs?since=10%C3%A9").await;
    assert_eq!(status, 400, "a unit that is not ASCII: {body:#}");
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/apps/chatty/logs?limit=0").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/apps/chatty/logs?follow=true&until=10m").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/apps/nobody/logs").await;
    assert_eq!(status, 404, "{body:#}");
}

#[tokio::test]
async fn follow_streams_new_lines_as_server_sent_events() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "tail").await;
    let before = invoke(&app, "tail", "/before").await;
    lines_of(&app, "tail", &before, 5).await;

    let response = app
        .client
        .get(format!("{}/apps/tail/logs?follow=true&limit=1", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut response = response;
    let after = invoke(&app, "tail", "/after").await;

    // Events until the new invocation's five lines: first the newest kept
    // line, then the new invocation's lines as they are kept.
    let mut text = String::new();
    let events: Vec<(String, Value)> =
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                let chunk = response.chunk().await.unwrap().expect("the stream goes on");
                text.push_str(&String::from_utf8_lossy(&chunk));
                let events: Vec<(String, Value)> = text
                    .split("\n\n")
                    .filter(|e| e.contains("data:"))
                    .map(|e| {
                        let field = |name: &str| {
                            e.lines()
                                .find_map(|l| l.strip_prefix(name))
                                .map(|v| v.trim().to_owned())
                                .unwrap_or_default()
                        };
                        (
                            field("id:"),
                            serde_json::from_str(&field("data:")).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                let new = events
                    .iter()
                    .filter(|(_, e)| e["requestId"] == after.as_str())
                    .count();
                if new >= 5 {
                    return events;
                }
            }
        })
        .await
        .expect("the new lines arrive within 20 s");
    let first = &events[0].1;
    assert_eq!(
        first["requestId"],
        before.as_str(),
        "the backlog first: {events:#?}"
    );
    let new: Vec<&Value> = events[1..].iter().map(|(_, e)| e).collect();
    assert_eq!(new.len(), 5, "each new line once: {events:#?}");
    assert!(new.iter().all(|e| e["requestId"] == after.as_str()));
    assert!(new.iter().any(|e| e["message"] == "hello /after"));
    let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "ids are positions, each once: {ids:?}"
    );
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
}

#[tokio::test]
async fn each_apps_lines_are_trimmed_to_its_retention() {
    const RETENTION: u64 = 64 * 1024;
    let app = TestApp::start(|config, _| {
        config.functions.log_retention_bytes = RETENTION;
    })
    .await;
    deploy(&app, "noisy").await;
    deploy(&app, "quiet").await;
    let quiet = invoke(&app, "quiet", "/q").await;
    let first = invoke(&app, "noisy", "/first").await;
    lines_of(&app, "noisy", &first, 5).await;
    // About 160 KiB more: the first invocation's lines go, the newest stay.
    let mut last = String::new();
    for i in 0..20 {
        last = invoke(&app, "noisy", &format!("/n{i}?bytes=8000")).await;
    }
    lines_of(&app, "noisy", &last, 6).await;
    let kept = eventually(|| async {
        let (_, body) = app.get("/apps/noisy/logs?limit=1000").await;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let bytes: usize = events
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("").len())
            .sum();
        // Trimmed each time an eighth of the retention was written.
        (bytes as u64 <= RETENTION + RETENTION / 8).then_some(events)
    })
    .await;
    assert!(kept.iter().all(|e| e["requestId"] != first.as_str()));
    assert!(
        kept.iter().any(|e| e["requestId"] == last.as_str()),
        "the newest lines stay"
    );
    // Another app's lines are its own.
    assert_eq!(lines_of(&app, "quiet", &quiet, 5).await.len(), 5);
}

/// A follower's stream ends when the service shuts down, so it does not hold
/// the shutdown for its deadline.
#[tokio::test]
async fn a_follow_ends_when_the_service_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut service = crate::common::Binary::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    let client = reqwest::Client::new();
    let deployed = client
        .post(format!("{}/apps/deploy", service.url))
        .json(&json!({"name": "tail", "archive": zip_of(&[("index.js", CHATTY)])}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let mut follow = client
        .get(format!("{}/apps/tail/logs?follow=true", service.url))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let started = std::time::Instant::now();
    let pid = rustix::process::Pid::from_raw(service.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(8), async {
        while let Ok(Some(_)) = follow.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream went on after the service began to stop"
    );
    let exited = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "the service did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "shutdown waited {:?} (its deadline is 10 s)",
        started.elapsed()
    );
}
