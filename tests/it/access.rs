//! Access tokens and the refusal to listen openly beyond loopback.

use orchestrator::config::Secret;
use serde_json::json;

use crate::common::{assert_error, Binary, TestApp};

#[tokio::test]
async fn management_routes_need_the_bearer_token_and_events_take_the_api_key() {
    let app = TestApp::start(|c, _| {
        c.auth.api_tokens = vec![Secret("admin-token".into())];
        c.auth.event_api_keys = vec![Secret("eb-key".into())];
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut request = app.client.get(format!("{}/tenants", app.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = get(None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(&response.json().await.unwrap(), 401, "unauthorized");
    assert_eq!(get(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(
        get(Some("eb-key")).await.unwrap().status(),
        401,
        "an event key is not a management token"
    );
    assert_eq!(get(Some("admin-token")).await.unwrap().status(), 200);

    let post = |header: Option<(&'static str, &'static str)>| {
        let mut request = app
            .client
            .post(format!("{}/events/TENANT_PROVISIONING", app.url))
            .header("content-type", "application/json")
            .body(json!({"tenantId": "t"}).to_string());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(("x-api-key", "nope"))).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(("x-api-key", "eb-key"))).await.unwrap().status(),
        200
    );
    assert_eq!(
        post(Some(("authorization", "Bearer eb-key")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(Some(("authorization", "Bearer admin-token")))
            .await
            .unwrap()
            .status(),
        200
    );
    // Reading and retrying events is management.
    assert_eq!(
        app.client
            .get(format!("{}/events", app.url))
            .header("x-api-key", "eb-key")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for public in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(app.get(public).await.0, 200, "{public} is public");
    }
}

#[tokio::test]
async fn a_custom_api_key_header_is_honoured() {
    let app = TestApp::start(|c, _| {
        c.auth.api_tokens = vec![Secret("admin".into())];
        c.auth.event_api_keys = vec![Secret("k1".into())];
        c.auth.event_api_key_header = "x-orchestrator-key".into();
    })
    .await;
    let response = app
        .client
        .post(format!("{}/events", app.url))
        .header("x-orchestrator-key", "k1")
        .json(&json!({"detail-type": "TENANT_PROVISIONING", "detail": {"tenantId": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn refuses_to_listen_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let refused = Binary::start(&["--listen", "0.0.0.0:0", "--data-dir", &data], &[])
        .err()
        .expect("must refuse");
    assert!(
        refused.contains("refusing to listen on 0.0.0.0"),
        "{refused}"
    );
    assert!(
        refused.contains("allow_anonymous"),
        "the message says how to proceed: {refused}"
    );

    let open = Binary::start(
        &["serve", "--listen", "0.0.0.0:0", "--data-dir", &data],
        &[("ORCHESTRATOR_ALLOW_ANONYMOUS", "true")],
    );
    assert!(open.is_ok(), "allow_anonymous opts in: {:?}", open.err());
    let with_token = Binary::start(
        &["--listen", "0.0.0.0:0", "--data-dir", &data],
        &[("ORCHESTRATOR_API_TOKENS", "t1")],
    );
    assert!(with_token.is_ok(), "{:?}", with_token.err());
}

#[test]
fn invalid_configuration_is_reported_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[functions]\nbackend = \"aws\"\n").unwrap();
    let err = Binary::start(&["--config", config.to_str().unwrap()], &[])
        .err()
        .expect("must fail");
    assert!(err.contains("functions.role_arn"), "{err}");
    std::fs::write(&config, "listen = 5\n").unwrap();
    let err = Binary::start(&["--config", config.to_str().unwrap()], &[])
        .err()
        .expect("must fail");
    assert!(err.contains("invalid config file"), "{err}");
}
