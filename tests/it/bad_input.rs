//! Bad input gets a clear 4xx envelope and stores nothing.

use serde_json::json;

use crate::common::{assert_error, envelope, TestApp};

async fn stored_events(app: &TestApp) -> usize {
    app.get("/events").await.1.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn unknown_event_type_is_400_with_the_arc_message() {
    let app = TestApp::start(|_, _| {}).await;
    for name in ["FOO", "tenant_provisioning", "TENANT_CALLBACK"] {
        let (status, body) = app
            .post(&format!("/events/{name}"), &json!({"detail": {}}))
            .await;
        assert_eq!(status, 400);
        assert_error(&body, 400, "unsupported_event_type");
        assert_eq!(
            body["error"]["message"],
            format!("Unsupported event type: {name}")
        );
        assert_eq!(body["error"]["name"], "BadRequestError");
    }
    let (status, body) = app
        .post("/events", &envelope("x1", "NOPE", json!({})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "Unsupported event type: NOPE");
    assert_eq!(stored_events(&app).await, 0);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let app = TestApp::start(|_, _| {}).await;
    let cases: [(&[u8], &str); 8] = [
        (b"[1,2,3]", "invalid_body"),
        (b"\"text\"", "invalid_body"),
        (b"null", "invalid_body"),
        (b"", "invalid_body"),
        (b"{\"detail\": ", "malformed_json"),
        (b"{\"a\":1} trailing", "malformed_json"),
        (b"{\"a\":\"\xff\xfe\"}", "invalid_encoding"),
        (
            br#"{"detail-type":"TENANT_PROVISIONING","detail":"not an object"}"#,
            "invalid_body",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = app
            .post_raw("/events/TENANT_PROVISIONING", body.to_vec())
            .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert_error(&answer, 400, code);
    }
    let (status, body) = app
        .post("/events", &json!({"detail": {"tenantId": "t"}}))
        .await;
    assert_eq!(
        status, 400,
        "an envelope without detail-type cannot be routed"
    );
    assert_error(&body, 400, "invalid_body");
    for detail in [json!(null), json!("text")] {
        let body = json!({"id": "e1", "detail-type": "TENANT_PROVISIONING", "detail": detail});
        let (status, answer) = app.post("/events", &body).await;
        assert_eq!(status, 400, "/events takes envelopes only: {detail}");
        assert_error(&answer, 400, "invalid_body");
    }
    assert_eq!(stored_events(&app).await, 0);
}

/// Envelope strings an ASCII-only encoder escapes (as Python's `json.dumps`
/// does by default) are read as what they spell.
#[tokio::test]
async fn escaped_envelope_strings_are_decoded() {
    let app = TestApp::start(|_, _| {}).await;
    let body = r#"{"id":"caf\u00e9-1","detail-type":"TENANT_PROVISIONIN\u0047","source":"tenant-\u00e9","detail":{}}"#;
    let (status, answer) = app.post_raw("/events", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["eventId"], "café-1");
    let (status, event) = app.get("/events/caf%C3%A9-1").await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(
        (&event["type"], &event["source"]),
        (&json!("TENANT_PROVISIONING"), &json!("tenant-é")),
        "{event}"
    );
    // What an escape spells is held to the plain rules: no control
    // characters (PostgreSQL's text cannot even store a NUL).
    for (id, source) in [(r#""e2""#, r#""a\u0000b""#), (r#""e\u0000""#, r#""s""#)] {
        let body = format!(
            r#"{{"id":{id},"source":{source},"detail-type":"TENANT_PROVISIONING","detail":{{}}}}"#
        );
        let (status, answer) = app.post_raw("/events", body).await;
        assert_eq!(status, 400, "{id} {source}: {answer}");
        assert_error(&answer, 400, "invalid_body");
    }
    // Nor in the detail, where the handler would meet it.
    let nul_in_detail = r#"{"tenantId":"t\u0000","tier":"basic"}"#;
    let (status, answer) = app
        .post_raw("/events/TENANT_PROVISIONING", nul_in_detail)
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_error(&answer, 400, "invalid_body");
    assert_eq!(stored_events(&app).await, 1);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let app = TestApp::start(|_, _| {}).await;
    let padding = "x".repeat(1024 * 1024 + 10);
    let body = json!({"detail": {"tenantId": "t", "padding": padding}}).to_string();
    let (status, answer) = app.post_raw("/events/TENANT_PROVISIONING", body).await;
    assert_eq!(status, 413);
    assert_error(&answer, 413, "payload_too_large");
    // EventBridge's own limit (256 KB) fits comfortably.
    let ok = json!({"detail": {"tenantId": "t", "padding": "y".repeat(256 * 1024)}}).to_string();
    assert_eq!(app.post_raw("/events/TENANT_PROVISIONING", ok).await.0, 200);
    assert_eq!(stored_events(&app).await, 1);
}

#[tokio::test]
async fn wrong_content_type_is_415_and_charset_is_fine() {
    let app = TestApp::start(|_, _| {}).await;
    let post = |content_type: &'static str| {
        app.client
            .post(format!("{}/events/TENANT_PROVISIONING", app.url))
            .header("content-type", content_type)
            .body(r#"{"detail":{"tenantId":"t"}}"#)
            .send()
    };
    let response = post("text/plain").await.unwrap();
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(&body, 415, "unsupported_media_type");
    // EventBridge API destinations send this exact header.
    assert_eq!(
        post("application/json; charset=utf-8")
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let app = TestApp::start(|_, _| {}).await;
    let (status, body) = app.get("/nope").await;
    assert_eq!(status, 404);
    assert_error(&body, 404, "not_found");
    let response = app
        .client
        .delete(format!("{}/tenants", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(&body, 405, "method_not_allowed");
    let (status, body) = app.get("/events?status=weird").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/tenants?limit=abc").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    let (status, body) = app.get("/tenants?limit=0").await;
    assert_eq!(status, 400);
    assert_error(&body, 400, "invalid_query");
    for path in ["/tenants/missing", "/jobs/missing", "/events/missing"] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_error(&body, 404, "not_found");
    }
}

#[tokio::test]
async fn bad_envelope_ids_are_refused() {
    let app = TestApp::start(|_, _| {}).await;
    for id in [json!(""), json!(42), json!("a/b"), json!("x".repeat(300))] {
        let mut body = envelope(
            "placeholder",
            "TENANT_PROVISIONING",
            json!({"tenantId": "t"}),
        );
        body["id"] = id.clone();
        let (status, answer) = app.post("/events/TENANT_PROVISIONING", &body).await;
        assert_eq!(status, 400, "id {id}");
        assert_error(&answer, 400, "invalid_body");
    }
    assert_eq!(stored_events(&app).await, 0);
}
