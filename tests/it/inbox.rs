//! The durable inbox: acknowledgement, duplicates, permanent and transient
//! failures, manual retry, store outages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use orchestrator::store::sqlite::SqliteStore;
use orchestrator::tiers::{TierDetails, TierError, TierSource};
use serde_json::{json, Map};

use crate::common::{assert_error, envelope, provisioning, write_job, TestApp};

fn basic_tier(config: &mut orchestrator::config::Config, dir: &std::path::Path) {
    let mut tier = Map::new();
    tier.insert("jobIdentifier".into(), json!("provision-basic"));
    config.tiers.insert("basic".into(), tier);
    write_job(dir, "provision-basic", "exit 0");
}

#[tokio::test]
async fn acknowledges_with_the_envelope_id_and_never_processes_a_duplicate() {
    let app = TestApp::start(basic_tier).await;
    let event = envelope(
        "evt-dup-1",
        "TENANT_PROVISIONING",
        provisioning("t-dup", "basic"),
    );
    let (status, first) = app.post("/events/TENANT_PROVISIONING", &event).await;
    assert_eq!(status, 200);
    assert_eq!(first, json!({"success": true, "eventId": "evt-dup-1"}));
    let (status, second) = app.post("/events/TENANT_PROVISIONING", &event).await;
    assert_eq!(status, 200, "a redelivery is acknowledged");
    assert_eq!(
        second,
        json!({"success": true, "eventId": "evt-dup-1", "duplicate": true})
    );
    let tenant = app.wait_tenant("t-dup", "ACTIVE").await;
    // Redeliver after processing, and concurrently, too.
    let posts = (0..5).map(|_| app.post("/events", &event));
    for (status, body) in futures::future::join_all(posts).await {
        assert_eq!(status, 200);
        assert_eq!(body["duplicate"], true);
    }
    let (_, tenant_after) = app.get("/tenants/t-dup").await;
    assert_eq!(
        tenant_after["jobs"].as_array().unwrap().len(),
        1,
        "{tenant:#}"
    );
    let (_, event_view) = app.get("/events/evt-dup-1").await;
    assert_eq!(event_view["status"], "succeeded");
    assert_eq!(event_view["attempts"], 1);
    assert_eq!(event_view["type"], "TENANT_PROVISIONING");
    assert_eq!(event_view["source"], "TenantManagementService");
    assert_eq!(event_view["detail"]["tenant"]["id"], "t-dup");
}

#[tokio::test]
async fn a_bare_detail_gets_a_generated_id() {
    let app = TestApp::start(basic_tier).await;
    let (status, body) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &json!({"tenantId": "t-bare", "tier": "basic"}),
        )
        .await;
    assert_eq!(status, 200);
    let id = body["eventId"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    app.wait_event(id, "succeeded").await;
    app.wait_tenant("t-bare", "ACTIVE").await;
}

#[tokio::test]
async fn permanent_errors_fail_at_once_naming_the_cause() {
    let app = TestApp::start(basic_tier).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "no-tier",
            "TENANT_PROVISIONING",
            provisioning("t-x", "gold"),
        ),
    )
    .await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "no-tenant",
            "TENANT_PROVISIONING",
            json!({"planConfig": {"tier": "basic"}}),
        ),
    )
    .await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "no-tier-at-all",
            "TENANT_PROVISIONING",
            json!({"tenantId": "t-y"}),
        ),
    )
    .await;
    let failed = app.wait_event("no-tier", "failed").await;
    assert_eq!(failed["attempts"], 1, "no retries for a permanent error");
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("unknown tier 'gold'"),
        "{failed:#}"
    );
    let failed = app.wait_event("no-tenant", "failed").await;
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("missing tenant id"),
        "{failed:#}"
    );
    let failed = app.wait_event("no-tier-at-all", "failed").await;
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("missing tier"),
        "{failed:#}"
    );
    assert_eq!(
        app.get("/tenants/t-x").await.0,
        404,
        "bad input changes no tenant"
    );
    let (_, listed) = app.get("/events?status=failed").await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["status"] == "failed"));
}

/// Tier details from a source that is down until told otherwise.
struct FlakyTiers {
    up: AtomicBool,
}

#[async_trait]
impl TierSource for FlakyTiers {
    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn get(&self, tier: &str) -> Result<TierDetails, TierError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(TierError::Unavailable {
                message: "tier table is down".into(),
                cause: None,
            });
        }
        let mut values = Map::new();
        values.insert("jobIdentifier".into(), json!("provision-basic"));
        Ok(TierDetails {
            tier: tier.into(),
            values,
        })
    }
}

#[tokio::test]
async fn transient_errors_retry_with_backoff_then_dead_then_manual_retry() {
    let tiers = Arc::new(FlakyTiers {
        up: AtomicBool::new(false),
    });
    let source = tiers.clone();
    let app = TestApp::start_with(basic_tier, move |b| b.tier_source(source)).await;
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "flaky-1",
            "TENANT_PROVISIONING",
            provisioning("t-flaky", "basic"),
        ),
    )
    .await;
    let dead = app.wait_event("flaky-1", "dead").await;
    assert_eq!(
        dead["attempts"], 4,
        "bounded by inbox.max_attempts: {dead:#}"
    );
    assert!(
        dead["lastError"]
            .as_str()
            .unwrap()
            .contains("tier table is down"),
        "{dead:#}"
    );
    let (_, listed) = app.get("/events?status=dead").await;
    assert_eq!(listed[0]["id"], "flaky-1");

    tiers.up.store(true, Ordering::SeqCst);
    let (status, retried) = app.post("/events/flaky-1/retry", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(retried["status"], "received");
    app.wait_event("flaky-1", "succeeded").await;
    app.wait_tenant("t-flaky", "ACTIVE").await;
}

#[tokio::test]
async fn retry_is_404_for_unknown_and_409_for_waiting_events() {
    let tiers = Arc::new(FlakyTiers {
        up: AtomicBool::new(false),
    });
    let app = TestApp::start_with(
        |c, dir| {
            basic_tier(c, dir);
            c.inbox.backoff_base_ms = 60_000;
            c.inbox.backoff_max_ms = 60_000;
        },
        move |b| b.tier_source(tiers),
    )
    .await;
    let (status, body) = app.post("/events/unknown/retry", &json!({})).await;
    assert_eq!(status, 404);
    assert_error(&body, 404, "not_found");
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            "waiting-1",
            "TENANT_PROVISIONING",
            provisioning("t-w", "basic"),
        ),
    )
    .await;
    let waiting = app
        .wait_for("/events/waiting-1", |e| {
            e["attempts"] == 1 && e["status"] == "received"
        })
        .await;
    assert!(waiting["nextAttemptAt"].is_string(), "{waiting:#}");
    let (status, body) = app.post("/events/waiting-1/retry", &json!({})).await;
    assert_eq!(status, 409);
    assert_error(&body, 409, "conflict");
}

#[tokio::test]
async fn a_store_outage_is_503_with_retry_after_and_never_a_false_200() {
    let db_dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite://{}/outage.db", db_dir.path().display()))
        .await
        .unwrap();
    let handle = store.clone();
    let app = TestApp::start_with(|_, _| {}, move |b| b.store(Arc::new(store))).await;
    assert_eq!(app.get("/ready").await.0, 200);
    handle.close().await;
    let response = app
        .client
        .post(format!("{}/events/TENANT_PROVISIONING", app.url))
        .header("content-type", "application/json")
        .body(r#"{"tenantId":"t"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(&body, 503, "unavailable");
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 503);
    assert_error(&body, 503, "unavailable");
    assert_eq!(
        app.get("/health").await.0,
        200,
        "the process itself is alive"
    );
}
