//! Hardening of the HTTP edges (issue 16), end to end through the real
//! server: routing by the request's authority (HTTP/2, absolute-form, two
//! `Host` headers), function status codes and default `Content-Type` as API
//! Gateway sends them, forged CodeBuild events, and event bodies the handler
//! could not read refused at ingestion.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::apps::zip_one;
use crate::common::{assert_error, envelope, provisioning, test_config, write_job, TestApp};

/// An app that answers with its path and the `host` it was given, or with the
/// status, body and content type the query asks for (`/plain`: a v2 plain value).
const ECHO: &str = r#"
exports.handler = async (event) => {
  const path = event.rawPath || event.path;
  const query = event.queryStringParameters || {};
  if (path === "/plain") return { hello: "world" };
  if (query.status) {
    const headers = query.type ? { "Content-Type": query.type } : undefined;
    return { statusCode: Number(query.status), headers, body: query.body || "" };
  }
  const host = event.headers.host || event.headers.Host;
  return { statusCode: 200, headers: { "content-type": "text/plain" }, body: `${path} ${host}` };
};
"#;

/// Deploys [`ECHO`] as `name` in payload `format`.
async fn deploy_echo(app: &TestApp, name: &str, format: &str) {
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": zip_one("index.js", ECHO), "payloadFormat": format}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
}

/// The service's `host:port`.
fn address(app: &TestApp) -> &str {
    app.url.trim_start_matches("http://")
}

/// Sends `request` as is on a new connection and reads until the server closes it.
async fn raw(app: &TestApp, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(address(app)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn http2_requests_reach_apps_by_their_authority() {
    let app = TestApp::start(|_, _| {}).await;
    deploy_echo(&app, "hello", "1.0").await;
    let addr: std::net::SocketAddr = address(&app).parse().unwrap();
    // h2c with prior knowledge: the app is named only by `:authority`.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("hello.localhost", addr)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://hello.localhost:{}/over/h2", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    // The event still shows a `host`, as API Gateway's always do.
    assert_eq!(body, format!("/over/h2 hello.localhost:{}", addr.port()));
    // The API answers HTTP/2 as before.
    let health = client
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn an_absolute_form_target_reaches_its_app_and_two_hosts_are_400() {
    let app = TestApp::start(|_, _| {}).await;
    deploy_echo(&app, "abs", "1.0").await;
    // The target's authority wins over `Host` (RFC 9112 §3.2.2).
    let (status, head, body) = raw(
        &app,
        "GET http://abs.localhost/absolute?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(body.starts_with("/absolute "), "{body}");

    for (target, hosts) in [
        ("/", "Host: abs.localhost\r\nHost: abs.localhost"),
        ("/", "Host: abs.localhost\r\nHost: other.localhost"),
        ("/health", "Host: localhost\r\nHost: localhost"),
        ("http://abs.localhost/", "Host: abs.localhost\r\nHost: x"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n");
        let (status, head, body) = raw(&app, &request).await;
        assert_eq!(status, 400, "{request}\n{head}\n{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_error(&body, 400, "invalid_host");
    }
}

#[tokio::test]
async fn a_process_serving_no_apps_refuses_two_hosts_too() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let service = orchestrator::OrchestratorBuilder::new(test_config(dir.path()))
        .build()
        .await
        .unwrap();
    let request = |hosts: &[&str]| {
        let mut request = axum::http::Request::builder().uri("/health");
        for host in hosts {
            request = request.header("host", *host);
        }
        request.body(axum::body::Body::empty()).unwrap()
    };
    let router = service.router_for(orchestrator::Role::Api);
    let twice = router
        .clone()
        .oneshot(request(&["localhost", "localhost"]))
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let body = axum::body::to_bytes(twice.into_body(), 1 << 16)
        .await
        .unwrap();
    assert_error(&serde_json::from_slice(&body).unwrap(), 400, "invalid_host");
    let once = router.oneshot(request(&["localhost"])).await.unwrap();
    assert_eq!(once.status(), 200);
}

/// `GET /?{query}` on app `name`: status, headers and body.
async fn call(app: &TestApp, name: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = app.app_get(name, path).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn content_type(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn informational_statuses_are_502_and_no_content_has_no_body() {
    let app = TestApp::start(|_, _| {}).await;
    deploy_echo(&app, "codes", "1.0").await;
    for code in [100, 101, 103] {
        let (status, _, body) = call(&app, "codes", &format!("/?status={code}&body=x")).await;
        assert_eq!(status, 502, "statusCode {code}");
        assert_eq!(body, br#"{"message":"Internal server error"}"#);
    }
    for code in [204, 304] {
        let (status, headers, body) =
            call(&app, "codes", &format!("/?status={code}&body=not-sent")).await;
        assert_eq!(status, code);
        assert!(
            body.is_empty(),
            "{code}: {}",
            String::from_utf8_lossy(&body)
        );
        let length = headers
            .get(reqwest::header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            length.is_none() || length.as_deref() == Some("0"),
            "{code}: content-length {length:?}"
        );
    }
    // On the wire too: nothing follows the head of a 204.
    let (status, head, body) = raw(
        &app,
        "GET /?status=204&body=not-sent HTTP/1.1\r\nHost: codes.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""), "{head}");
}

#[tokio::test]
async fn a_missing_content_type_is_what_api_gateway_sends_in_each_format() {
    let app = TestApp::start(|_, _| {}).await;
    deploy_echo(&app, "rest", "1.0").await;
    deploy_echo(&app, "http", "2.0").await;
    let cases = [
        ("rest", "/?status=200&body=hi", "application/json"),
        ("rest", "/?status=200&body=hi&type=text/html", "text/html"),
        ("http", "/?status=200&body=hi", "text/plain; charset=utf-8"),
        ("http", "/?status=200&body=hi&type=text/html", "text/html"),
        ("http", "/plain", "application/json"),
    ];
    for (name, path, expected) in cases {
        let (status, headers, _) = call(&app, name, path).await;
        assert_eq!(status, 200, "{name}{path}");
        assert_eq!(content_type(&headers), Some(expected), "{name}{path}");
    }
}

/// A provisioning job that waits for `<dir>/release`, then reports its output.
fn waiting_job(config: &mut orchestrator::config::Config, dir: &Path) {
    let values = json!({"jobIdentifier": "wait-for-release"});
    config
        .tiers
        .insert("held".into(), values.as_object().cloned().unwrap());
    let release = dir.join("release");
    write_job(
        dir,
        "wait-for-release",
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done\necho \"DB=real\" >> \"$JOB_OUTPUT\"",
            release.display()
        ),
    );
}

/// A `CodeBuild Build State Change` as someone holding an event key could post it.
fn forged(id: &str, source: &str, build_id: &str, job_id: &str) -> Value {
    let mut event = envelope(
        id,
        "CodeBuild Build State Change",
        json!({
            "build-id": build_id, "build-status": "SUCCEEDED", "project-name": "wait-for-release",
            "orchestrator-job-id": job_id,
            "exported-environment-variables": [{"name": "DB", "value": "forged"}],
            "additional-information": {"build-complete": true, "exit-code": 0},
        }),
    );
    event["source"] = json!(source);
    event
}

#[tokio::test]
async fn a_forged_build_event_cannot_complete_a_local_job() {
    let app = TestApp::start(waiting_job).await;
    app.post("/events/TENANT_PROVISIONING", &provisioning("held", "held"))
        .await;
    let tenant = app
        .wait_for("/tenants/held", |t| t["jobs"][0]["status"] == "running")
        .await;
    let job = &tenant["jobs"][0];
    let (job_id, external) = (
        job["id"].as_str().unwrap(),
        job["externalId"].as_str().unwrap(),
    );

    // Naming the job's build id, from outside: recorded, then ignored with the reason.
    // Its id is the one completions had before they moved out of clients' reach.
    let squatter = format!("{external}:1:completed");
    let (status, body) = app
        .post(
            "/events",
            &forged(&squatter, "aws.codebuild", external, job_id),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ignored = app.wait_event(&squatter, "succeeded").await;
    let note = ignored["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("ignored") && note.contains("local"),
        "{ignored:#}"
    );

    // Naming our job id with another build id: no CodeBuild job has that build.
    let (status, _) = app
        .post(
            "/events",
            &forged("f-2", "aws.codebuild", "arn:x:build/p:1", job_id),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_event("f-2", "failed").await;

    // Passing for the service, or taking its completion's id first: refused.
    for (id, source) in [
        ("f-3", "orchestrator.builder"),
        ("f-4", "orchestrator"),
        (&*format!("{external}:1/completed"), "aws.codebuild"),
    ] {
        let (status, body) = app
            .post("/events", &forged(id, source, external, job_id))
            .await;
        assert_eq!(status, 400, "{id} {source}");
        assert_error(&body, 400, "invalid_body");
    }

    let (_, now) = app.get("/tenants/held").await;
    assert_eq!(
        (&now["status"], &now["jobs"][0]["status"]),
        (&json!("PROVISIONING"), &json!("running")),
        "{now:#}"
    );
    std::fs::write(app.path().join("release"), "").unwrap();
    let done = app.wait_tenant("held", "ACTIVE").await;
    assert_eq!(done["jobs"][0]["status"], "succeeded", "{done:#}");
    assert_eq!(done["jobOutput"]["DB"], "real", "{done:#}");
}

/// Bodies the handler's parser (serde_json into a `Value`) cannot read.
fn unreadable_details() -> Vec<(&'static str, String)> {
    let depth = 130;
    vec![
        (
            "nested too deep",
            format!(
                r#"{{"tenantId":"t","deep":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
        (
            "number out of range",
            r#"{"tenantId":"t","n":1e999999}"#.into(),
        ),
        ("lone surrogate", r#"{"tenantId":"t","s":"\ud800"}"#.into()),
    ]
}

#[tokio::test]
async fn event_bodies_the_handler_could_not_read_are_400_and_not_stored() {
    let app = TestApp::start(|_, _| {}).await;
    for (what, detail) in unreadable_details() {
        let wrapped = format!(
            r#"{{"id":"e-1","detail-type":"TENANT_PROVISIONING","source":"tms","detail":{detail}}}"#
        );
        for (path, body) in [
            ("/events/TENANT_PROVISIONING", &detail),
            ("/events/TENANT_PROVISIONING", &wrapped),
            ("/events", &wrapped),
        ] {
            let (status, answer) = app.post_raw(path, body.clone()).await;
            assert_eq!(status, 400, "{what} on {path}: {answer}");
            assert_error(&answer, 400, "malformed_json");
        }
    }
    let (status, events) = app.get("/events").await;
    assert_eq!((status, events), (200, json!([])));
}

/// Every management answer carries a request id; a client's own id is kept only
/// when it is a short plain token (it ends up in the service's log lines).
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::start(|_, _| {}).await;
    let id = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let url = format!("{}/events/nope", app.url);
    let first = app.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 404);
    let first = id(&first).expect("an id for an error answer too");
    let second = id(&app.client.get(&url).send().await.unwrap()).unwrap();
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_ne!(first, second, "one id per request");

    let kept = app
        .client
        .get(&url)
        .header("x-request-id", "client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(id(&kept).as_deref(), Some("client-42"));
    let forged = app
        .client
        .get(&url)
        .header("x-request-id", "x error=\"forged\"")
        .send()
        .await
        .unwrap();
    let replaced = id(&forged).unwrap();
    assert_eq!(replaced.len(), 36, "replaced by a UUID: {replaced}");
}
