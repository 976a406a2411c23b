//! App delivery: versions reachable before they take traffic, aliases and
//! the `live` pointer, rollback, canary shares, custom domains; through the
//! real server, real Node.js workers and the real store.

use std::collections::BTreeMap;

use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::{assert_error, TestApp};
use crate::metrics::Scrape;

/// A handler answering with its `TAG`.
const TAGGED: &str =
    r#"exports.handler = async () => ({ statusCode: 200, body: `tag ${process.env.TAG}` });"#;

async fn deploy(app: &TestApp, name: &str, tag: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "archive": zip_of(&[("index.js", TAGGED)]),
                          "environment": {"TAG": tag}});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, view) = app.post("/apps/deploy", &body).await;
    assert_eq!(status, 200, "{view:#}");
    view
}

/// `GET /` on `host` (`<label>.localhost`, or a full host with a dot):
/// status, `x-app-version` and body.
async fn hit(app: &TestApp, host: &str) -> (u16, Option<String>, String) {
    let host = if host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.localhost")
    };
    let response = app
        .client
        .get(format!("{}/", app.url))
        .header("host", host)
        .send()
        .await
        .unwrap();
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

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, format!("{}{path}", app.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    send(app, reqwest::Method::PUT, path, Some(body)).await
}

fn served(tag: &str, version: i64) -> (u16, Option<String>, String) {
    (200, Some(version.to_string()), format!("tag {tag}"))
}

#[tokio::test]
async fn a_version_is_tried_before_it_takes_traffic_then_promoted_and_rolled_back() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "shop", "one", json!({})).await;
    let second = deploy(&app, "shop", "two", json!({})).await;
    assert_eq!(
        (second["version"].clone(), second["previousVersion"].clone()),
        (json!(2), json!(1))
    );

    // Not promoted: live stays at 2; version 3 answers only at its own host.
    let third = deploy(&app, "shop", "three", json!({"promote": false})).await;
    assert_eq!(third["version"], 2, "{third:#}");
    assert_eq!(third["latestVersion"], 3);
    assert_eq!(hit(&app, "shop").await, served("two", 2));
    assert_eq!(hit(&app, "v3--shop").await, served("three", 3));
    assert_eq!(hit(&app, "v1--shop").await, served("one", 1));
    let (status, _, body) = hit(&app, "v9--shop").await;
    assert_eq!(status, 404, "{body}");

    // An alias serves its version at `<alias>--<app>`.
    let (status, beta) = put(&app, "/apps/shop/aliases/beta", json!({"version": 3})).await;
    assert_eq!(status, 200, "{beta:#}");
    assert_eq!(
        beta,
        json!({"name": "beta", "version": 3, "host": "beta--shop.localhost"})
    );
    assert_eq!(hit(&app, "beta--shop").await, served("three", 3));
    let (_, aliases) = app.get("/apps/shop/aliases").await;
    let names: Vec<&str> = aliases
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["live", "beta"]);

    // Promote by moving live; roll back to where it was, then to a named version.
    let (status, live) = put(&app, "/apps/shop/aliases/live", json!({"version": 3})).await;
    assert_eq!(status, 200, "{live:#}");
    assert_eq!(hit(&app, "shop").await, served("three", 3));
    let (status, rolled) = app.post("/apps/shop/rollback", &json!({})).await;
    assert_eq!(status, 200, "{rolled:#}");
    assert_eq!(
        (rolled["version"].clone(), rolled["previousVersion"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(hit(&app, "shop").await, served("two", 2));
    let (status, rolled) = app
        .post("/apps/shop/rollback", &json!({"version": 1}))
        .await;
    assert_eq!(status, 200, "{rolled:#}");
    assert_eq!(hit(&app, "shop").await, served("one", 1));
    // The app's settings are the live version's.
    assert_eq!(rolled["environment"], json!({"TAG": "one"}));

    // A redeploy keeps the newest version's settings (not live's), and promotes.
    let fourth = app
        .post(
            "/apps/deploy",
            &json!({"name": "shop", "archive": zip_of(&[("index.js", TAGGED)])}),
        )
        .await
        .1;
    assert_eq!(
        (fourth["version"].clone(), fourth["environment"].clone()),
        (json!(4), json!({"TAG": "three"}))
    );
    assert_eq!(hit(&app, "shop").await, served("three", 4));

    // Deleting an alias stops its host; the versions stay.
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/apps/shop/aliases/beta",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(hit(&app, "beta--shop").await.0, 404);
    assert_eq!(hit(&app, "v3--shop").await, served("three", 3));
    let (_, view) = app.get("/apps/shop").await;
    assert_eq!(view["versions"].as_array().unwrap().len(), 4);
    assert_eq!(
        view["aliases"],
        json!([{"name": "live", "version": 4, "host": "shop.localhost"}])
    );
}

#[tokio::test]
async fn a_canary_takes_its_share_by_independent_draws_and_metrics_carry_the_version() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "canary", "stable", json!({})).await;
    deploy(&app, "canary", "next", json!({"promote": false})).await;
    let (status, live) = put(
        &app,
        "/apps/canary/aliases/live",
        json!({"version": 1, "routing": {"version": 2, "weight": 0.25}}),
    )
    .await;
    assert_eq!(status, 200, "{live:#}");
    assert_eq!(live["routing"], json!({"version": 2, "weight": 0.25}));

    const REQUESTS: usize = 2000;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut requests = futures::stream::iter(0..REQUESTS)
        .map(|_| hit(&app, "canary"))
        .buffer_unordered(16);
    while let Some((status, version, body)) = requests.next().await {
        assert_eq!(status, 200, "{body}");
        let version = version.unwrap();
        let expected = if version == "2" {
            "tag next"
        } else {
            "tag stable"
        };
        assert_eq!(body, expected, "the version named answered");
        *counts.entry(version).or_default() += 1;
    }
    let share = counts.get("2").copied().unwrap_or(0) as f64 / REQUESTS as f64;
    // Binomial, n = 2000, p = 0.25: sd ≈ 0.0097; 4 points is over 4 sd.
    assert!((share - 0.25).abs() < 0.04, "{counts:?}");

    let scrape = Scrape::of(&app).await;
    let by_version = |version: &str| {
        scrape.value(
            "orchestrator_function_invocations_total",
            &[
                ("app", "canary"),
                ("version", version),
                ("outcome", "success"),
            ],
        )
    };
    assert_eq!(by_version("2") as usize, counts["2"]);
    assert_eq!(by_version("1") as usize, counts["1"]);

    // Weight 0 sends nothing to the second version; 1 sends everything.
    put(
        &app,
        "/apps/canary/aliases/live",
        json!({"version": 1, "routing": {"version": 2, "weight": 1.0}}),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(hit(&app, "canary").await, served("next", 2));
    }
}

#[tokio::test]
async fn a_rollback_during_traffic_fails_no_request() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "steady", "a", json!({})).await;
    deploy(&app, "steady", "b", json!({})).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = (0..6).map(|_| {
        let (app, stop) = (&app, stop.clone());
        async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, version, body) = hit(app, "steady").await;
                assert_eq!(status, 200, "{body}");
                seen.push(version.unwrap());
            }
            seen
        }
    });
    let changes = async {
        for round in 0..6 {
            let target = if round % 2 == 0 { 1 } else { 2 };
            let (status, view) = app
                .post("/apps/steady/rollback", &json!({"version": target}))
                .await;
            assert_eq!(status, 200, "{view:#}");
            // Every answer after the rollback comes from its version.
            assert_eq!(hit(&app, "steady").await.1, Some(target.to_string()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (seen, ()) = futures::join!(futures::future::join_all(traffic), changes);
    let seen: Vec<String> = seen.into_iter().flatten().collect();
    assert!(
        seen.iter().any(|v| v == "1") && seen.iter().any(|v| v == "2"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn custom_domains_serve_the_live_alias_and_belong_to_one_app() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "site", "site", json!({})).await;
    deploy(&app, "other", "other", json!({})).await;
    let (status, domain) = put(&app, "/apps/site/domains/WWW.Example.COM", json!({})).await;
    assert_eq!(status, 200, "{domain:#}");
    assert_eq!(domain, json!({"domain": "www.example.com", "app": "site"}));
    assert_eq!(hit(&app, "www.example.com").await, served("site", 1));
    assert_eq!(hit(&app, "www.example.com:8443").await, served("site", 1));
    assert_eq!(
        app.get("/apps/site").await.1["domains"],
        json!(["www.example.com"])
    );

    // Held by one app; refused when not a DNS name or under base_domain.
    let (status, body) = put(&app, "/apps/other/domains/www.example.com", json!({})).await;
    assert_error(&body, 409, "conflict");
    assert_eq!(status, 409);
    for bad in [
        "shop.localhost",
        "localhost",
        "bad_name.example.com",
        "10.0.0.1",
        "-x.example.com",
    ] {
        let (status, body) = put(&app, &format!("/apps/other/domains/{bad}"), json!({})).await;
        assert_eq!(status, 400, "{bad}: {body:#}");
    }
    let (status, _) = put(&app, "/apps/nobody/domains/a.example.com", json!({})).await;
    assert_eq!(status, 404);
    // Not the host the API itself is reached at.
    let response = app
        .client
        .put(format!("{}/apps/other/domains/api.example.net", app.url))
        .header("host", "api.example.net:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // The live alias moves: the domain follows it.
    deploy(&app, "site", "site-2", json!({})).await;
    assert_eq!(hit(&app, "www.example.com").await, served("site-2", 2));

    // Removed: the host is the API's again (no app answers), and another app may take it.
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/apps/site/domains/www.example.com",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, body) = hit(&app, "www.example.com").await;
    assert_ne!(body, "tag site-2", "{status}");
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/apps/site/domains/www.example.com",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = put(&app, "/apps/other/domains/www.example.com", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(hit(&app, "www.example.com").await, served("other", 1));
}

#[tokio::test]
async fn bad_alias_rollback_and_domain_requests_get_4xx_and_change_nothing() {
    let app = TestApp::start(|_, _| {}).await;
    deploy(&app, "firm", "one", json!({})).await;
    let (_, before) = app.get("/apps/firm").await;

    let (_, body) = app.post("/apps/firm/rollback", &json!({})).await;
    assert_error(&body, 409, "conflict");
    deploy(&app, "firm", "two", json!({"promote": false})).await;
    let (_, before_aliases) = app.get("/apps/firm/aliases").await;

    let cases = [
        ("/apps/firm/aliases/beta", json!({"version": 9}), 404),
        ("/apps/nobody/aliases/beta", json!({"version": 1}), 404),
        (
            "/apps/firm/aliases/beta",
            json!({"version": 1, "routing": {"version": 2, "weight": 1.5}}),
            400,
        ),
        (
            "/apps/firm/aliases/beta",
            json!({"version": 1, "routing": {"version": 2, "weight": -0.1}}),
            400,
        ),
        (
            "/apps/firm/aliases/beta",
            json!({"version": 1, "routing": {"version": 1, "weight": 0.5}}),
            400,
        ),
        (
            "/apps/firm/aliases/beta",
            json!({"version": 1, "routing": {"version": 7, "weight": 0.5}}),
            404,
        ),
        ("/apps/firm/aliases/beta", json!({"version": "one"}), 400),
        (
            "/apps/firm/aliases/beta",
            json!({"version": 1, "extra": true}),
            400,
        ),
        ("/apps/firm/aliases/v2", json!({"version": 1}), 400),
        ("/apps/firm/aliases/a--b", json!({"version": 1}), 400),
        ("/apps/firm/aliases/Beta", json!({"version": 1}), 400),
        ("/apps/firm/aliases/2024", json!({"version": 1}), 400),
        (
            "/apps/firm/aliases/a-very-long-alias-name-that-with-the-app-name-is-over-63-chars",
            json!({"version": 1}),
            400,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = put(&app, path, body.clone()).await;
        assert_eq!(status, expected, "{path} {body}: {answer:#}");
        assert!(answer["error"]["message"].is_string(), "{answer:#}");
    }
    // A second version that takes another payload format cannot share an alias.
    deploy(
        &app,
        "firm",
        "three",
        json!({"promote": false, "payloadFormat": "2.0"}),
    )
    .await;
    let (status, body) = put(
        &app,
        "/apps/firm/aliases/beta",
        json!({"version": 1, "routing": {"version": 3, "weight": 0.5}}),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");

    let (_, body) = send(
        &app,
        reqwest::Method::DELETE,
        "/apps/firm/aliases/live",
        None,
    )
    .await;
    assert_error(&body, 400, "invalid_app");
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/apps/firm/aliases/none",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post("/apps/firm/rollback", &json!({"version": 42}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.post_raw("/apps/firm/rollback", "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = app.post("/apps/nobody/rollback", &json!({})).await;
    assert_eq!(status, 404);
    // An app name holding `--` cannot be deployed (hosts read <alias>--<app>).
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "a--b", "archive": zip_of(&[("index.js", TAGGED)])}),
        )
        .await;
    assert_eq!(status, 400, "{body:#}");

    let (_, after_aliases) = app.get("/apps/firm/aliases").await;
    assert_eq!(after_aliases, before_aliases);
    let (_, after) = app.get("/apps/firm").await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(hit(&app, "firm").await, served("one", 1));
}

async fn wait_operation(url: &str, id: &str) -> Value {
    crate::common::eventually(|| async {
        let response = reqwest::get(format!("{url}/operations/{id}")).await.ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] != "pending").then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_deploy_that_does_not_wait_is_followed_as_an_operation() {
    let app = TestApp::start(|_, _| {}).await;
    let body = json!({"name": "later", "archive": zip_of(&[("index.js", TAGGED)]),
                      "environment": {"TAG": "async"}});
    let response = app
        .client
        .post(format!("{}/apps/deploy?wait=false", app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let operation = &accepted["operation"];
    assert_eq!(operation["status"], "pending", "{accepted:#}");
    assert_eq!(
        (operation["kind"].as_str(), operation["app"].as_str()),
        (Some("deploy"), Some("later"))
    );
    let id = operation["id"].as_str().unwrap();
    assert_eq!(location, format!("/operations/{id}"));
    let done = wait_operation(&app.url, id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["result"]["version"], 1);
    assert_eq!(hit(&app, "later").await, served("async", 1));

    // A deploy that fails later is a failed operation with the error envelope.
    let broken = json!({"name": "later", "archive": zip_of(&[("other.js", TAGGED)])});
    let (status, accepted) = {
        let response = app
            .client
            .post(format!("{}/apps/deploy?wait=false", app.url))
            .json(&broken)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 202);
    let failed = wait_operation(&app.url, accepted["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["error"]["statusCode"], 400, "{failed:#}");
    assert!(failed.get("result").is_none());
    assert_eq!(
        hit(&app, "later").await,
        served("async", 1),
        "the app as it was"
    );

    // What can be refused at once is; unknown operations are 404.
    let response = app
        .client
        .post(format!("{}/apps/deploy?wait=false", app.url))
        .json(&json!({"name": "Bad Name", "archive": zip_of(&[("index.js", TAGGED)])}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = app.get("/operations/op-none").await;
    assert_eq!(status, 404, "{body:#}");
    let response = app
        .client
        .post(format!("{}/apps/deploy?wait=maybe", app.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A raw upload may not wait either.
    let response = app
        .client
        .put(format!("{}/apps/later/code?wait=false", app.url))
        .header("content-type", "application/zip")
        .body(crate::uploads::zip_bytes(&[("index.js", TAGGED)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let done = wait_operation(&app.url, accepted["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(hit(&app, "later").await, served("async", 2));
}

/// An operation its process did not finish is settled `failed` by the next
/// process: at start on SQLite, once its lease runs out on PostgreSQL.
#[tokio::test]
async fn an_operation_interrupted_by_a_stop_is_settled_failed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let db = crate::pg::suite_database().await;
    let mut env = vec![("ORCHESTRATOR_FUNCTIONS__DEPLOY_LEASE_SECS", "1".to_owned())];
    if let Some(db) = &db {
        env.push(("DATABASE_URL", db.url.clone()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["--data-dir", data.as_str(), "--listen", "127.0.0.1:0"];
    let first = crate::common::Binary::start(&args, &env).unwrap();
    // Large enough that it is still being checked and unpacked when the process dies.
    let mut noise = vec![0u8; 24 * 1024 * 1024];
    let mut seed = 0x9e37_79b9_u32;
    for byte in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *byte = seed as u8;
    }
    let mut zip = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(&mut zip);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        writer.start_file("index.js", stored).unwrap();
        writer.write_all(TAGGED.as_bytes()).unwrap();
        writer.start_file("noise.bin", stored).unwrap();
        writer.write_all(&noise).unwrap();
        writer.finish().unwrap();
    }
    let archive = base64::engine::general_purpose::STANDARD.encode(zip.into_inner());
    let body = json!({"name": "cut", "archive": archive});
    let response = reqwest::Client::new()
        .post(format!("{}/apps/deploy?wait=false", first.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    first.kill9();
    let id = accepted["operation"]["id"].as_str().unwrap();

    let second = crate::common::Binary::start(&args, &env).unwrap();
    let settled = wait_operation(&second.url, id).await;
    assert_eq!(settled["status"], "failed", "{settled:#}");
    assert_eq!(settled["error"]["error"]["code"], "interrupted");
}
