//! Embedding orchestrator in your own axum application, with your own
//! provisioning handler, tier source and build backend.
//!
//! Run: `cargo run --example custom_handlers`, then
//! `curl -XPOST localhost:3000/orchestrator/events/TENANT_PROVISIONING -H 'content-type: application/json' -d '{"tenantId":"t1","tier":"gold"}'`

use std::sync::Arc;

use async_trait::async_trait;
use axum::routing::get;
use orchestrator::builder::{
    BuildStatus, BuilderError, BuilderService, JobCompletion, JobHandle, JobRequest,
};
use orchestrator::config::Config;
use orchestrator::events::handlers::ProvisioningHandler;
use orchestrator::events::{EventHandler, EventType, Handled, HandlerError, InboxEvent, Services};
use orchestrator::tiers::{TierDetails, TierError, TierSource};
use orchestrator::OrchestratorBuilder;
use serde_json::{json, Map};
use tokio_util::sync::CancellationToken;

/// Every tier runs the same job, with the tier's name as a parameter.
struct StaticTiers;

#[async_trait]
impl TierSource for StaticTiers {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn get(&self, tier: &str) -> Result<TierDetails, TierError> {
        let mut values = Map::new();
        values.insert("jobIdentifier".into(), json!("provision"));
        values.insert("PLAN".into(), json!(tier.to_uppercase()));
        Ok(TierDetails {
            tier: tier.to_owned(),
            values,
        })
    }
}

/// A build backend that "runs" jobs instantly and reports success.
struct InstantBuilder;

#[async_trait]
impl BuilderService for InstantBuilder {
    fn name(&self) -> &'static str {
        "instant"
    }

    async fn start_job(&self, request: JobRequest) -> Result<JobHandle, BuilderError> {
        let external_id = format!("instant-{}", request.job_id);
        let completion = JobCompletion {
            job_id: request.job_id.clone(),
            external_id: external_id.clone(),
            job_identifier: request.job_identifier.clone(),
            attempt: request.attempt,
            status: BuildStatus::Succeeded,
            exit_code: Some(0),
            output: [(
                "PLAN_SEEN".to_owned(),
                request.params.get("PLAN").cloned().unwrap_or_default(),
            )]
            .into(),
            log_tail: None,
            error: None,
        };
        let reporter = request.reporter.clone();
        tokio::spawn(async move { reporter.report(completion).await });
        Ok(JobHandle { external_id })
    }
}

/// Refuses tenants whose id starts with `blocked-`, then provisions as usual.
pub struct GuardedProvisioning;

#[async_trait]
impl EventHandler for GuardedProvisioning {
    async fn handle(
        &self,
        event: &InboxEvent,
        services: &Services,
    ) -> Result<Handled, HandlerError> {
        let tenant = event
            .detail
            .get("tenantId")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if tenant.starts_with("blocked-") {
            return Err(HandlerError::Permanent(format!(
                "tenant {tenant} is blocked by policy"
            )));
        }
        ProvisioningHandler.handle(event, services).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config {
        data_dir: std::env::temp_dir().join("orchestrator-example"),
        ..Config::default()
    };
    let orchestrator = OrchestratorBuilder::new(config)
        .handler(EventType::TenantProvisioning, Arc::new(GuardedProvisioning))
        .tier_source(Arc::new(StaticTiers))
        .builder_service(Arc::new(InstantBuilder))
        .build()
        .await?;
    let shutdown = CancellationToken::new();
    let workers = orchestrator.start(shutdown.clone()).await?;
    let app = axum::Router::new()
        .route("/", get(|| async { "my control plane" }))
        .nest("/orchestrator", orchestrator.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await?;
    shutdown.cancel();
    workers.await?;
    Ok(())
}
