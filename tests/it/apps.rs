//! The mini-app platform end to end: the management API and the proxy,
//! with real Node.js workers.

use std::io::Write;

use base64::Engine;
use serde_json::{json, Value};

use orchestrator::apps::AppName;
use orchestrator::functions::local::{LocalFunctions, LocalOptions, Scaling};
use orchestrator::functions::{Deployment, FunctionBackend, FunctionError};
use orchestrator::store::postgres::PgStore;
use orchestrator::store::sqlite::SqliteStore;
use orchestrator::store::{AppStatus, Store};

use crate::common::{app_name, assert_error, TestApp};

const SEED: &str = include_str!("../fixtures/seed-app.js");

/// The seed's example Lambda as a deployable archive (for the replica tests of the PostgreSQL suite).
#[allow(dead_code)]
pub fn seed_archive() -> String {
    zip_of(&[("index.js", SEED)])
}

/// One file as a deployable archive (for the AWS tests).
#[allow(dead_code)]
pub fn zip_one(name: &str, content: &str) -> String {
    zip_of(&[(name, content)])
}

/// Files as a deployable archive (base64 zip).
pub fn zip_of(files: &[(&str, &str)]) -> String {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, content) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

/// A request to `<app>.localhost` on the service's port.
fn to_app(
    app: &TestApp,
    name: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.client
        .request(method, format!("{}{path}", app.url))
        .header("host", format!("{name}.localhost"))
}

async fn text(response: reqwest::RequestBuilder) -> (u16, String) {
    let response = response.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_seed_api_and_its_example_lambda_work_unchanged() {
    let app = TestApp::start(|_, _| {}).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "seed", "archive": zip_of(&[("index.js", SEED)])}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(
        (body["name"].as_str(), body["status"].as_str()),
        (Some("seed"), Some("ACTIVE"))
    );

    assert_eq!(
        text(to_app(&app, "seed", reqwest::Method::GET, "/")).await,
        (200, "success".into())
    );
    assert_eq!(
        text(to_app(&app, "seed", reqwest::Method::GET, "/notFound")).await,
        (400, "bad request text".into())
    );
    assert_eq!(
        text(to_app(
            &app,
            "seed",
            reqwest::Method::GET,
            "/testProxyingWithQueryParams?text=hi"
        ))
        .await,
        (200, "hi".into())
    );
    let post = to_app(&app, "seed", reqwest::Method::POST, "/testProxyingWithBody")
        .header("content-type", "application/json")
        .body(r#"{"text":"hi"}"#);
    assert_eq!(text(post).await, (200, "hi".into()));

    assert_eq!(
        app.get("/apps/seed/status").await,
        (200, json!({"name": "seed", "status": "ACTIVE"}))
    );
    let (_, list) = app.get("/apps").await;
    assert_eq!(list[0]["name"], "seed");

    // Deactivated and removed apps answer 404 through the proxy.
    assert_eq!(
        app.post("/apps/seed/deactivate", &json!({})).await.1["status"],
        "INACTIVE"
    );
    assert_eq!(
        text(to_app(&app, "seed", reqwest::Method::GET, "/"))
            .await
            .0,
        404
    );
    assert_eq!(
        app.post("/apps/seed/activate", &json!({})).await.1["status"],
        "ACTIVE"
    );
    assert_eq!(
        text(to_app(&app, "seed", reqwest::Method::GET, "/")).await,
        (200, "success".into())
    );
    assert_eq!(
        app.post("/apps/seed/remove", &json!({})).await.1["status"],
        "REMOVED"
    );
    assert_eq!(
        text(to_app(&app, "seed", reqwest::Method::GET, "/"))
            .await
            .0,
        404
    );
    assert_eq!(app.get("/apps/seed/status").await.1["status"], "REMOVED");

    for path in ["/apps/nope", "/apps/nope/status"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_error(&body, 404, "not_found");
    }
    for action in ["activate", "deactivate", "remove"] {
        assert_eq!(
            app.post(&format!("/apps/nope/{action}"), &json!({}))
                .await
                .0,
            404,
            "{action}"
        );
    }
    assert_eq!(
        text(to_app(&app, "nope", reqwest::Method::GET, "/"))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn redeploying_serves_new_code_and_keeps_versions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first_data = data.clone();
    let mut app = TestApp::start(move |c, _| c.data_dir = first_data).await;
    let v1 = "exports.handler = async () => ({ statusCode: 200, body: 'one' });";
    let v2 = "exports.handler = async () => ({ statusCode: 200, body: 'two' });";
    assert_eq!(
        app.post(
            "/apps/deploy",
            &json!({"name": "ver", "archive": zip_of(&[("index.js", v1)])})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        text(to_app(&app, "ver", reqwest::Method::GET, "/")).await.1,
        "one"
    );
    let (_, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "ver", "archive": zip_of(&[("index.js", v2)])}),
        )
        .await;
    assert_eq!(body["version"], 2);
    assert_eq!(
        text(to_app(&app, "ver", reqwest::Method::GET, "/")).await.1,
        "two"
    );
    let (_, details) = app.get("/apps/ver").await;
    let versions: Vec<i64> = details["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(versions, [2, 1]);
    let (_db, database_url) = (app.take_db(), app.database_url.clone());
    drop(app);

    // A new process on the same store, without the unpacked code, serves the app from the store.
    std::fs::remove_dir_all(data.join("apps")).unwrap();
    let again = TestApp::start(move |c, _| {
        c.data_dir = data;
        c.database_url = database_url;
    })
    .await;
    assert_eq!(
        text(to_app(&again, "ver", reqwest::Method::GET, "/")).await,
        (200, "two".into())
    );
}

/// As Lambda's `UpdateFunctionCode`: a redeploy that omits a setting keeps
/// the serving version's, and `"environment": {}` clears the environment.
#[tokio::test]
async fn a_redeploy_keeps_the_settings_it_omits() {
    let app = TestApp::start(|_, _| {}).await;
    const V1: &str =
        r#"exports.handler = async () => ({ statusCode: 200, body: `v1 ${process.env.MODE}` });"#;
    const V2: &str =
        r#"exports.handler = async () => ({ statusCode: 200, body: `v2 ${process.env.MODE}` });"#;
    let (status, first) = app
        .post(
            "/apps/deploy",
            &json!({"name": "keep", "archive": zip_of(&[("index.js", V1)]),
                    "environment": {"MODE": "prod"}, "timeout": 7, "memorySize": 256, "payloadFormat": "2.0"}),
        )
        .await;
    assert_eq!(status, 200, "{first:#}");
    let (status, second) = app
        .post(
            "/apps/deploy",
            &json!({"name": "keep", "archive": zip_of(&[("index.js", V2)])}),
        )
        .await;
    assert_eq!(status, 200, "{second:#}");
    assert_eq!(second["version"], 2);
    for key in [
        "environment",
        "timeout",
        "memorySize",
        "payloadFormat",
        "runtime",
        "handler",
    ] {
        assert_eq!(second[key], first[key], "{key}: {second:#}");
    }
    assert_eq!(
        text(to_app(&app, "keep", reqwest::Method::GET, "/")).await,
        (200, "v2 prod".into())
    );
    let (status, cleared) = app
        .post(
            "/apps/deploy",
            &json!({"name": "keep", "archive": zip_of(&[("index.js", V1)]), "environment": {}}),
        )
        .await;
    assert_eq!(status, 200, "{cleared:#}");
    assert_eq!(cleared["environment"], json!({}));
    assert_eq!(cleared["timeout"], 7);
    assert_eq!(
        text(to_app(&app, "keep", reqwest::Method::GET, "/")).await,
        (200, "v1 undefined".into())
    );
    // Every proxied answer names the version that answered.
    let answered = to_app(&app, "keep", reqwest::Method::GET, "/")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.headers()["x-app-version"], "3");
    let missing = to_app(&app, "nobody", reqwest::Method::GET, "/")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().get("x-app-version").is_none());
}

#[tokio::test]
async fn bad_deploys_get_400_or_413_and_change_nothing() {
    let app = TestApp::start(|_, _| {}).await;
    let good = zip_of(&[("index.js", SEED)]);
    let cases = [
        (json!({"name": "Bad_Name", "archive": good}), 400),
        (json!({"name": "-x", "archive": good}), 400),
        (json!({"name": "ok", "archive": ""}), 400),
        (json!({"name": "ok", "archive": "not base64!!"}), 400),
        (
            json!({"name": "ok", "archive": base64::engine::general_purpose::STANDARD.encode(b"not a zip")}),
            400,
        ),
        (
            json!({"name": "ok", "archive": zip_of(&[("other.js", "x")])}),
            400,
        ),
        (
            json!({"name": "ok", "archive": zip_of(&[("../evil.js", "x"), ("index.js", SEED)])}),
            400,
        ),
        (
            json!({"name": "ok", "archive": good, "runtime": "cobol"}),
            400,
        ),
        (
            json!({"name": "ok", "archive": good, "handler": "index"}),
            400,
        ),
        (json!({"name": "ok", "archive": good, "timeout": 0}), 400),
        (
            json!({"name": "ok", "archive": good, "memorySize": 100000}),
            400,
        ),
        (
            json!({"name": "ok", "archive": good, "payloadFormat": "9"}),
            400,
        ),
        (
            json!({"name": "ok", "archive": good, "environment": {"AWS_SECRET_ACCESS_KEY": "x"}}),
            400,
        ),
        (
            json!({"name": "ok", "archive": good, "environment": {"N": 1}}),
            400,
        ),
        (json!({"archive": good}), 400),
        (
            json!({"name": "ok", "archive": good, "timeout": "ten"}),
            400,
        ),
    ];
    for (body, status) in cases {
        let (got, answer) = app.post("/apps/deploy", &body).await;
        assert_eq!(got, status, "{body}: {answer:#}");
        assert_eq!(answer["error"]["statusCode"], status);
    }
    let (status, _) = app.post_raw("/apps/deploy", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(app.get("/apps").await.1, json!([]), "nothing was stored");
    assert!(!app.path().join("evil.js").exists() && !app.path().join("data/evil.js").exists());
}

#[tokio::test]
async fn api_gateway_mapping_through_the_proxy() {
    let app = TestApp::start(|c, _| c.functions.max_workers = 2).await;
    let v1 = r#"exports.handler = async (e) => {
        if (e.path === '/cookies') return { statusCode: 200, multiValueHeaders: { 'Set-Cookie': ['a=1', 'b=2'] }, body: 'c' };
        if (e.path === '/binary') return { statusCode: 200, headers: { 'content-type': 'image/png' }, isBase64Encoded: true, body: Buffer.from([0, 255, 1]).toString('base64') };
        if (e.path === '/echo') return { statusCode: 200, body: JSON.stringify({ b64: e.isBase64Encoded, body: e.body, multi: e.multiValueQueryStringParameters }) };
        if (e.path === '/bad') return { hello: 'world' };
        if (e.path === '/throw') throw new Error('nope');
        if (e.path === '/slow') await new Promise(r => setTimeout(r, 5000));
        if (e.path === '/huge') return { statusCode: 200, body: 'x'.repeat(7 * 1024 * 1024) };
        if (e.path === '/length') return { statusCode: 200, body: String(e.body.length) };
        return { statusCode: 204 };
    };"#;
    let deploy = json!({"name": "gw", "archive": zip_of(&[("index.js", v1)]), "timeout": 1});
    assert_eq!(app.post("/apps/deploy", &deploy).await.0, 200);
    let response = to_app(&app, "gw", reqwest::Method::GET, "/cookies")
        .send()
        .await
        .unwrap();
    let cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    let response = to_app(&app, "gw", reqwest::Method::GET, "/binary")
        .send()
        .await
        .unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), [0, 255, 1]);
    let (_, echo) = text(
        to_app(&app, "gw", reqwest::Method::POST, "/echo?x=1&x=2")
            .header("content-type", "application/octet-stream")
            .body(vec![0u8, 159, 146, 150]),
    )
    .await;
    let echo: Value = serde_json::from_str(&echo).unwrap();
    assert_eq!(
        echo,
        json!({"b64": true, "body": "AJ+Slg==", "multi": {"x": ["1", "2"]}})
    );
    for (path, status) in [
        ("/bad", 502),
        ("/throw", 502),
        ("/slow", 504),
        ("/huge", 502),
    ] {
        let (got, body) = text(to_app(&app, "gw", reqwest::Method::GET, path)).await;
        assert_eq!(got, status, "{path}: {body}");
    }
    assert_eq!(
        text(to_app(&app, "gw", reqwest::Method::GET, "/bad"))
            .await
            .1,
        r#"{"message":"Internal server error"}"#
    );
    let big = vec![b'x'; 6 * 1024 * 1024 + 1];
    assert_eq!(
        text(to_app(&app, "gw", reqwest::Method::POST, "/echo").body(big))
            .await
            .0,
        413
    );
    // An event of a few MB reaches the worker whole (its runtime client reads
    // it in many pieces), and the worker goes on serving.
    let large = "y".repeat(3 * 1024 * 1024);
    let (status, length) = text(
        to_app(&app, "gw", reqwest::Method::POST, "/length")
            .header("content-type", "text/plain")
            .body(large.clone()),
    )
    .await;
    assert_eq!((status, length), (200, large.len().to_string()));
    assert_eq!(
        text(to_app(&app, "gw", reqwest::Method::GET, "/")).await.0,
        204,
        "still serving after all that"
    );

    let v2 = "exports.handler = async (e) => e.rawPath === '/plain' ? { hello: e.requestContext.http.method } : { statusCode: 201, cookies: ['s=1'], body: e.cookies.join('|') };";
    let deploy =
        json!({"name": "v2", "archive": zip_of(&[("index.js", v2)]), "payloadFormat": "2.0"});
    assert_eq!(app.post("/apps/deploy", &deploy).await.0, 200);
    let response = to_app(&app, "v2", reqwest::Method::GET, "/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"hello":"GET"}"#);
    let response = to_app(&app, "v2", reqwest::Method::GET, "/c")
        .header("cookie", "a=1; b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["set-cookie"], "s=1");
    assert_eq!(response.text().await.unwrap(), "a=1|b=2");
}

/// The fixture built with AWS's `lambda_runtime` crate (built once, then cached).
fn rust_lambda_bootstrap() -> std::path::PathBuf {
    let target = std::env::var("RUST_LAMBDA_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("orchestrator-rust-lambda-target"));
    let manifest = crate::common::checkout().join("tests/fixtures/rust-lambda/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the lambda_runtime fixture failed"
    );
    target.join("release/bootstrap")
}

#[tokio::test]
async fn a_rust_handler_built_with_aws_lambda_runtime_answers_through_the_proxy() {
    let bootstrap = tokio::task::spawn_blocking(rust_lambda_bootstrap)
        .await
        .unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        zip.start_file(
            "bootstrap",
            zip::write::SimpleFileOptions::default().unix_permissions(0o755),
        )
        .unwrap();
        zip.write_all(&std::fs::read(bootstrap).unwrap()).unwrap();
        zip.finish().unwrap();
    }
    let archive = base64::engine::general_purpose::STANDARD.encode(out.into_inner());
    let app = TestApp::start(|_, _| {}).await;
    let deploy = json!({"name": "rusty", "archive": archive, "runtime": "provided.al2023", "handler": "bootstrap"});
    let (status, body) = app.post("/apps/deploy", &deploy).await;
    assert_eq!(status, 200, "{body:#}");
    for path in ["/hello", "/again"] {
        let (status, text) = text(to_app(&app, "rusty", reqwest::Method::GET, path)).await;
        assert_eq!((status, text), (200, format!("rust rusty {path} 36")));
    }
}

#[tokio::test]
async fn concurrent_deploys_of_one_app_never_corrupt_it() {
    let app = TestApp::start(|_, _| {}).await;
    let bodies: Vec<Value> = (0..6)
        .map(|i| json!({"name": "race", "archive": zip_of(&[("index.js", &format!("exports.handler = async () => ({{ statusCode: 200, body: 'v{i}' }});"))])}))
        .collect();
    let results =
        futures::future::join_all(bodies.iter().map(|b| app.post("/apps/deploy", b))).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(ok >= 1);
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{results:?}"
    );
    let (_, details) = app.get("/apps/race").await;
    assert_eq!(
        details["versions"].as_array().unwrap().len(),
        ok,
        "one version per accepted deploy"
    );
    let served = text(to_app(&app, "race", reqwest::Method::GET, "/")).await;
    assert_eq!(served.0, 200);
    let current = details["version"].as_i64().unwrap();
    assert!(served.1.starts_with('v'), "{served:?} (version {current})");
}

/// The real local backend, with each deploy held until the test lets it go.
struct GatedDeploys {
    local: std::sync::Arc<LocalFunctions>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl FunctionBackend for GatedDeploys {
    fn name(&self) -> &'static str {
        "gated-local"
    }
    async fn deploy(&self, deployment: Deployment<'_>) -> Result<(), FunctionError> {
        self.gate
            .acquire()
            .await
            .map_err(|e| FunctionError::unavailable_because("the test's gate", e))?
            .forget();
        self.local.deploy(deployment).await
    }
    async fn remove(&self, app: &AppName) -> Result<(), FunctionError> {
        self.local.remove(app).await
    }
    async fn invoke(&self, app: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        self.local.invoke(app, event).await
    }
}

/// An app is `DEPLOYED` (listed, not served) until its first deploy is
/// done; one being served stays `ACTIVE` and keeps serving its running
/// version while the next one deploys; an inactive one redeployed is
/// `DEPLOYED` again until it is ready.
#[tokio::test]
async fn an_app_is_deployed_until_its_function_is_ready() {
    let runtimes = tempfile::tempdir().unwrap();
    let backend = std::sync::Arc::new(GatedDeploys {
        local: LocalFunctions::start(LocalOptions {
            metrics: Default::default(),
            logs: Default::default(),
            runtimes_dir: runtimes.path().join("runtimes"),
            scaling: Scaling {
                max_workers: 2,
                eager_workers: 2,
                delay: std::time::Duration::from_millis(20),
            },
            idle_timeout: std::time::Duration::from_secs(60),
            batch_scheduling: false,
            region: "us-east-1".into(),
            runtimes: crate::common::runtimes(crate::common::sandbox().is_some()),
            sandbox: crate::common::sandbox(),
            max_queue: 100,
            max_queue_wait: std::time::Duration::from_secs(10),
        })
        .unwrap(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let gated = backend.clone();
    let app = TestApp::start_with(|_, _| {}, move |b| b.function_backend(gated)).await;
    let archive = |body: &str| {
        zip_of(&[(
            "index.js",
            &format!("exports.handler = async () => ({{ statusCode: 200, body: '{body}' }});"),
        )])
    };
    let deploy_in_background = |body: &str| {
        let request = app
            .client
            .post(format!("{}/apps/deploy", app.url))
            .json(&json!({"name": "gated", "archive": archive(body)}));
        tokio::spawn(async move { crate::common::status_json(request.send().await.unwrap()).await })
    };
    let status_is = |want: &'static str, version: i64| {
        let app = &app;
        move || async move {
            let (code, body) = app.get("/apps/gated").await;
            (code == 200 && body["status"] == want && body["version"] == version).then_some(())
        }
    };
    let served = || text(to_app(&app, "gated", reqwest::Method::GET, "/"));

    let first = deploy_in_background("one");
    crate::common::eventually(status_is("DEPLOYED", 1)).await;
    let (_, listed) = app.get("/apps").await;
    assert_eq!(listed[0]["status"], "DEPLOYED", "{listed}");
    assert_eq!(
        served().await.0,
        404,
        "not served before its deploy is done"
    );
    backend.gate.add_permits(1);
    let (code, body) = first.await.unwrap();
    assert_eq!((code, &body["status"]), (200, &json!("ACTIVE")), "{body}");
    assert_eq!(served().await, (200, "one".into()));

    let second = deploy_in_background("two");
    crate::common::eventually(status_is("ACTIVE", 2)).await;
    assert_eq!(
        served().await,
        (200, "one".into()),
        "the running version serves while the next deploys"
    );
    backend.gate.add_permits(1);
    assert_eq!(second.await.unwrap().0, 200);
    assert_eq!(served().await, (200, "two".into()));

    let (code, _) = app.post("/apps/gated/deactivate", &json!({})).await;
    assert_eq!(code, 200);
    let third = deploy_in_background("three");
    crate::common::eventually(status_is("DEPLOYED", 3)).await;
    assert_eq!(served().await.0, 404);
    backend.gate.add_permits(1);
    assert_eq!(third.await.unwrap().0, 200);
    assert_eq!(served().await, (200, "three".into()));
    let (_, status) = app.get("/apps/gated/status").await;
    assert_eq!(status, json!({"name": "gated", "status": "ACTIVE"}));

    // Another replica deactivates it while version 4 deploys here: its
    // change stands, this deploy is told so, and the app is not served.
    let fourth = deploy_in_background("four");
    crate::common::eventually(status_is("ACTIVE", 4)).await;
    other_replica_store(&app)
        .await
        .set_app_status(
            &app_name("gated"),
            AppStatus::Inactive,
            None,
            orchestrator::support::now_ms(),
        )
        .await
        .unwrap();
    backend.gate.add_permits(1);
    let (code, body) = fourth.await.unwrap();
    assert_error(&body, 409, "conflict");
    assert_eq!(code, 409);
    let (_, status) = app.get("/apps/gated/status").await;
    assert_eq!(status["status"], "INACTIVE");
    assert_eq!(served().await.0, 404);

    // Another replica deploys version 6 (and finishes) while version 5
    // deploys here: this one is told so and serves version 6 at once.
    let other = other_replica_store(&app).await;
    let fifth = deploy_in_background("five");
    crate::common::eventually(status_is("DEPLOYED", 5)).await;
    let config = other
        .get_app(&app_name("gated"))
        .await
        .unwrap()
        .unwrap()
        .config;
    let six = base64::engine::general_purpose::STANDARD
        .decode(archive("six"))
        .unwrap();
    let now = orchestrator::support::now_ms();
    let version = other
        .add_app_version(&app_name("gated"), &config, &six, "sha-six", now, true)
        .await
        .unwrap();
    assert_eq!(version, 6);
    other
        .set_app_status(&app_name("gated"), AppStatus::Active, None, now)
        .await
        .unwrap();
    backend.gate.add_permits(2);
    let (code_five, body) = fifth.await.unwrap();
    assert_eq!(code_five, 409, "{body}");
    assert_eq!(served().await, (200, "six".into()));

    // Removed elsewhere while version 7 deploys here: it stays removed,
    // unserved, its unpacked code gone.
    let seventh = deploy_in_background("seven");
    crate::common::eventually(status_is("ACTIVE", 7)).await;
    other
        .set_app_status(
            &app_name("gated"),
            AppStatus::Removed,
            None,
            orchestrator::support::now_ms(),
        )
        .await
        .unwrap();
    backend.gate.add_permits(1);
    assert_eq!(seventh.await.unwrap().0, 409);
    let (_, status) = app.get("/apps/gated/status").await;
    assert_eq!(status["status"], "REMOVED");
    assert_eq!(served().await.0, 404);
    assert!(!app.path().join("data/apps/gated").exists());
}

/// A connection of its own to the service's store, as another replica has.
async fn other_replica_store(app: &TestApp) -> std::sync::Arc<dyn Store> {
    match &app.database_url {
        Some(url) => std::sync::Arc::new(PgStore::connect(url).await.unwrap()),
        None => {
            let file = app.path().join("data").join("orchestrator.db");
            let url = format!("sqlite://{}", file.display());
            std::sync::Arc::new(SqliteStore::connect(&url).await.unwrap())
        }
    }
}

/// As on Lambda, a slow cold start does not eat into the function's timeout:
/// init has its own budget, the timeout starts when the runtime takes the event.
#[tokio::test]
async fn a_slow_init_does_not_count_against_the_function_timeout() {
    let app = TestApp::start(|_, _| {}).await;
    let slow_init = r#"const end = Date.now() + 1500; while (Date.now() < end) {}
        exports.handler = async (e, ctx) => ({ statusCode: 200, body: String(ctx.getRemainingTimeInMillis() > 500) });"#;
    let deploy =
        json!({"name": "slowstart", "archive": zip_of(&[("index.js", slow_init)]), "timeout": 1});
    assert_eq!(app.post("/apps/deploy", &deploy).await.0, 200);
    assert_eq!(
        text(to_app(&app, "slowstart", reqwest::Method::GET, "/")).await,
        (200, "true".to_owned()),
        "1.5 s of init with a 1 s timeout: answered, with the whole second left"
    );
}

#[tokio::test]
async fn each_invocation_is_logged_like_lambda_with_its_output_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let server =
        crate::common::Binary::start(&["--listen", "127.0.0.1:0", "--data-dir", &data], &[])
            .unwrap();
    let client = reqwest::Client::new();
    let code = "exports.handler = async (e) => { console.log('hello from ' + e.path); return { statusCode: 200, body: 'ok' }; };";
    let deploy = json!({"name": "logs", "archive": zip_of(&[("index.js", code)])});
    let response = client
        .post(format!("{}/apps/deploy", server.url))
        .json(&deploy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("{}/greet", server.url))
        .header("host", "logs.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");

    // Each line of the invocation, by what it starts with, once all are there.
    let lines = crate::common::eventually(|| {
        let output = server.output.lock().unwrap().clone();
        async move {
            let id = output
                .lines()
                .find_map(|l| l.split("START RequestId: ").nth(1))?
                .split_whitespace()
                .next()?
                .to_owned();
            let tagged = format!("app=logs request_id={id}");
            let find = |what: &str| {
                output
                    .lines()
                    .position(|l| l.contains(what) && l.contains(&tagged))
            };
            Some((
                find(&format!("START RequestId: {id} Version: 1"))?,
                find("hello from /greet")?,
                find(&format!("END RequestId: {id}"))?,
                find(&format!("REPORT RequestId: {id}\tDuration: "))?,
            ))
        }
    })
    .await;
    let (start, _output, end, report) = lines;
    // The handler's line comes through a pipe, so it may be read after END.
    assert!(start < end && end < report, "{lines:?}");
    let output = server.output.lock().unwrap().clone();
    let report_line = output.lines().nth(report).unwrap();
    assert!(
        report_line.contains("Billed Duration: ") && report_line.contains("Memory Size: 128 MB"),
        "{report_line}"
    );
}
