//! Embedding: replace handlers, the builder and the tier source, and mount the
//! router inside another axum app.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orchestrator::builder::{
    BuildStatus, BuilderError, BuilderService, JobCompletion, JobHandle, JobRequest,
};
use orchestrator::events::{EventHandler, EventType, Handled, HandlerError, InboxEvent, Services};
use orchestrator::tiers::{TierDetails, TierError, TierSource};
use orchestrator::OrchestratorBuilder;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, status_json, test_config};

struct OneTier;

#[async_trait]
impl TierSource for OneTier {
    fn name(&self) -> &'static str {
        "one"
    }
    async fn get(&self, tier: &str) -> Result<TierDetails, TierError> {
        let mut values = Map::new();
        values.insert("jobIdentifier".into(), json!("custom-job"));
        values.insert("COLOUR".into(), json!("teal"));
        Ok(TierDetails {
            tier: tier.into(),
            values,
        })
    }
}

/// Records what it was asked to start and reports success at once.
#[derive(Default)]
struct RecordingBuilder {
    started: Mutex<Vec<JobRequest>>,
}

#[async_trait]
impl BuilderService for RecordingBuilder {
    fn name(&self) -> &'static str {
        "recording"
    }
    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError> {
        let external_id = format!("rec-{}", request.job_id);
        let completion = JobCompletion {
            job_id: request.job_id.clone(),
            external_id: external_id.clone(),
            job_identifier: request.job_identifier.clone(),
            attempt: request.attempt,
            status: BuildStatus::Succeeded,
            exit_code: None,
            output: [("ENDPOINT".to_owned(), "https://x".to_owned())].into(),
            log_tail: None,
            error: None,
        };
        let reporter = request.reporter.clone();
        self.started.lock().unwrap().push(request);
        tokio::spawn(async move { reporter.report(completion).await });
        Ok(JobHandle { external_id })
    }
}

/// A deployment handler that only counts calls.
#[derive(Default)]
struct CountingDeployment {
    seen: Mutex<Vec<Value>>,
}

#[async_trait]
impl EventHandler for CountingDeployment {
    async fn handle(&self, event: &InboxEvent, _: &Services) -> Result<Handled, HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(Value::Object(event.detail.clone()));
        Ok(Handled::note("counted"))
    }
}

#[tokio::test]
async fn an_embedding_app_replaces_parts_and_mounts_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Arc::new(RecordingBuilder::default());
    let deployment = Arc::new(CountingDeployment::default());
    let db = crate::pg::suite_database().await;
    let mut config = test_config(dir.path());
    config.database_url = db.as_ref().map(|db| db.url.clone());
    let orchestrator = OrchestratorBuilder::new(config)
        .tier_source(Arc::new(OneTier))
        .builder_service(builder.clone())
        .handler(EventType::TenantDeployment, deployment.clone())
        .build()
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let workers = orchestrator.start(shutdown.clone()).await.unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "host app" }))
        .nest("/orchestrator", orchestrator.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(&base)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "host app"
    );
    let response = client
        .post(format!("{base}/orchestrator/events/TENANT_PROVISIONING"))
        .json(&json!({"tenantId": "lib-1", "tier": "any"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(|| async { (!deployment.seen.lock().unwrap().is_empty()).then_some(()) }).await;
    let started = builder.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].job_identifier, "custom-job");
    assert_eq!(started[0].params["COLOUR"], "teal");
    assert_eq!(
        deployment.seen.lock().unwrap()[0]["jobOutput"]["ENDPOINT"],
        "https://x"
    );
    // The build id is recorded right after the backend answers.
    let tenant = eventually(|| async {
        let response = client
            .get(format!("{base}/orchestrator/tenants/lib-1"))
            .send()
            .await
            .unwrap();
        let (_, tenant) = status_json(response).await;
        tenant["jobs"][0]["externalId"]
            .is_string()
            .then_some(tenant)
    })
    .await;
    assert_eq!(
        tenant["status"], "PROVISIONING",
        "our deployment handler never activates it"
    );
    assert_eq!(tenant["stage"], "deploying");
    assert_eq!(tenant["jobs"][0]["backend"], "recording");
    assert_eq!(
        tenant["jobs"][0]["externalId"],
        format!("rec-{}", tenant["jobs"][0]["id"].as_str().unwrap())
    );
    shutdown.cancel();
    workers.await.unwrap();
}
