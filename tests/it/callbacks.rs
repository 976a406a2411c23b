//! The signed webhook to ARC SaaS tenant management.

use orchestrator::config::Config;
use orchestrator::tenants::webhook::sign;
use serde_json::{json, Map, Value};

use crate::common::{envelope, write_job, FakePeer, TestApp};

const SECRET: &str = "1e77e98e72f20561209aae2983e8f397";
const CONTEXT: &str = "bf338f61-c371-4437-8252-c70ddb8992ea";

fn setup(url: String) -> impl FnOnce(&mut Config, &std::path::Path) {
    move |config, dir| {
        config.callbacks.webhook_url = Some(url);
        let mut ok = Map::new();
        ok.insert("jobIdentifier".into(), json!("provision-ok"));
        config.tiers.insert("basic".into(), ok);
        let mut bad = Map::new();
        bad.insert("jobIdentifier".into(), json!("provision-fail"));
        config.tiers.insert("broken".into(), bad);
        write_job(
            dir,
            "provision-ok",
            r#"echo 'resources=[{"type":"bucket","externalIdentifier":"tfstate-acme","metadata":{"bucket":"tfstate-acme","path":"acme/acme.tfstate"}}]' >> "$JOB_OUTPUT"
echo "appPlaneUrl=https://$TENANT_ID.example.com/main/home" >> "$JOB_OUTPUT""#,
        );
        write_job(dir, "provision-fail", "exit 1");
    }
}

/// What tenant-management-service publishes: `{type, tenant, subscription, secret, context}`.
fn tms_event(tenant: &str, tier: &str) -> Value {
    json!({
        "type": "TENANT_PROVISIONING",
        "tenant": {"id": tenant, "name": "Acme", "status": 1, "key": "acme"},
        "subscription": {"id": "sub-1", "plan": {"tier": tier, "name": "Basic"}},
        "secret": SECRET,
        "context": CONTEXT,
    })
}

fn verify(request: &crate::common::Received) -> Value {
    let timestamp: i64 = request.headers["x-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let signature = request.headers["x-signature"].to_str().unwrap();
    assert_eq!(
        signature,
        sign(SECRET, CONTEXT, &request.body, timestamp),
        "signature over the exact bytes sent"
    );
    assert!(
        (chrono::Utc::now().timestamp_millis() - timestamp).abs() < 20_000,
        "inside ARC SaaS's ±20 s window"
    );
    assert_eq!(request.headers["content-type"], "application/json");
    serde_json::from_str(&request.body).unwrap()
}

#[tokio::test]
async fn success_is_reported_with_resources_and_app_plane_url() {
    let peer = FakePeer::start(vec![204]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("w-1", "TENANT_PROVISIONING", tms_event("afb2c17f", "basic")),
    )
    .await;
    let tenant = app
        .wait_for("/tenants/afb2c17f", |t| {
            t["callback"]["status"] == "succeeded"
        })
        .await;
    assert_eq!(tenant["status"], "ACTIVE");
    let (_, event) = app.get("/events/w-1").await;
    assert_eq!(
        event["detail"]["secret"], "***",
        "the webhook secret is not shown"
    );
    assert_eq!(event["detail"]["context"], CONTEXT);
    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    let body = verify(&requests[0]);
    assert_eq!(
        body,
        json!({"initiatorId": "afb2c17f", "type": 0, "data": {"status": 1,
            "resources": [{"type": "bucket", "externalIdentifier": "tfstate-acme", "metadata": {"bucket": "tfstate-acme", "path": "acme/acme.tfstate"}}],
            "appPlaneUrl": "https://afb2c17f.example.com/main/home"}})
    );
}

#[tokio::test]
async fn failure_is_reported_with_credentials_from_the_environment_override() {
    let peer = FakePeer::start(vec![204]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    let detail = json!({
        "tenant": {"id": "t-fail"},
        "planConfig": {"tier": "broken"},
        "builderConfig": {"type": "CODE_BUILD", "config": {"environmentOverride": {"secret": SECRET, "context": CONTEXT}}},
    });
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("w-2", "TENANT_PROVISIONING", detail),
    )
    .await;
    let tenant = app
        .wait_for("/tenants/t-fail", |t| {
            t["callback"]["status"] == "succeeded"
        })
        .await;
    assert_eq!(tenant["status"], "PROVISIONFAILED");
    let body = verify(&peer.requests()[0]);
    assert_eq!(
        body,
        json!({"initiatorId": "t-fail", "type": 0, "data": {"status": 0, "resources": []}})
    );
}

#[tokio::test]
async fn delivery_is_retried_until_accepted() {
    let peer = FakePeer::start(vec![500, 503, 204]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("w-3", "TENANT_PROVISIONING", tms_event("t-retry", "basic")),
    )
    .await;
    let tenant = app
        .wait_for("/tenants/t-retry", |t| {
            t["callback"]["status"] == "succeeded"
        })
        .await;
    assert_eq!(tenant["callback"]["attempts"], 3, "{tenant:#}");
    let requests = peer.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        verify(request);
    }
}

#[tokio::test]
async fn delivery_gives_up_after_bounded_attempts_and_shows_it_on_the_tenant() {
    let peer = FakePeer::start(vec![500]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("w-4", "TENANT_PROVISIONING", tms_event("t-dead", "basic")),
    )
    .await;
    let tenant = app
        .wait_for("/tenants/t-dead", |t| t["callback"]["status"] == "dead")
        .await;
    assert_eq!(
        tenant["status"], "ACTIVE",
        "the tenant's own state is unaffected"
    );
    assert_eq!(tenant["callback"]["attempts"], 4);
    assert!(
        tenant["callback"]["lastError"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{tenant:#}"
    );
    assert_eq!(peer.requests().len(), 4);
}

#[tokio::test]
async fn a_refused_webhook_is_not_retried() {
    let peer = FakePeer::start(vec![401]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope("w-5", "TENANT_PROVISIONING", tms_event("t-401", "basic")),
    )
    .await;
    let tenant = app
        .wait_for("/tenants/t-401", |t| t["callback"]["status"] == "failed")
        .await;
    assert!(
        tenant["callback"]["lastError"]
            .as_str()
            .unwrap()
            .contains("HTTP 401"),
        "{tenant:#}"
    );
    assert_eq!(peer.requests().len(), 1);
}

#[tokio::test]
async fn no_webhook_without_arc_credentials() {
    let peer = FakePeer::start(vec![204]).await;
    let app = TestApp::start(setup(peer.url.clone())).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &json!({"tenantId": "t-plain", "tier": "basic"}),
    )
    .await;
    let tenant = app.wait_tenant("t-plain", "ACTIVE").await;
    assert!(tenant.get("callback").is_none(), "{tenant:#}");
    assert!(peer.requests().is_empty());
}
