//! A [`Store`] that times every call of the one it wraps
//! (`orchestrator_store_query_duration_seconds{op}`), whatever the database.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    AppRecord, AppStatus, AppStore, AppVersionRecord, AsyncInvocation, AsyncOutcome, Census,
    ChunkQuery, Claimed, Commit, EventId, EventOutcome, EventRecord, EventStatus, EventStore,
    JobId, JobRecord, JobStore, LogChunk, LogStore, NewEvent, OperationRecord, OperationStatus,
    Store, StoreError, StoredLogChunk, TenantId, TenantRecord, TenantStore, TimelineEntry,
};
use crate::function_config::{Aliases, AppName, FunctionConfig};
use crate::telemetry::metrics::StoreQueries;
use crate::telemetry::trace::{self, Span};

pub struct TimedStore {
    inner: Arc<dyn Store>,
    queries: StoreQueries,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, queries: StoreQueries) -> Self {
        Self { inner, queries }
    }

    /// Runs `call`, recording how long it took as `op` (and, when traces
    /// are exported and the call is part of one, as a span).
    async fn time<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        let span = trace::current()
            .filter(|_| trace::exporting())
            .map(|parent| Span::start(op, trace::Kind::Client, Some(parent)));
        let started = Instant::now();
        let out = call.await;
        self.queries.observe(op, started.elapsed());
        if let Some(mut span) = span {
            span.set("db.operation.name", op);
            span.end();
        }
        out
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.time("ping", self.inner.ping()).await
    }
    async fn census(&self) -> Result<Census, StoreError> {
        self.time("census", self.inner.census()).await
    }
}

#[async_trait]
impl EventStore for TimedStore {
    async fn insert_event(&self, event: NewEvent) -> Result<bool, StoreError> {
        self.time("insert_event", self.inner.insert_event(event))
            .await
    }
    async fn claim_events(&self, now: i64, lease: i64, limit: i64) -> Result<Claimed, StoreError> {
        let call = self.inner.claim_events(now, lease, limit);
        self.time("claim_events", call).await
    }
    async fn finish_event(
        &self,
        id: &EventId,
        outcome: EventOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.finish_event(id, outcome, now);
        self.time("finish_event", call).await
    }
    async fn requeue_abandoned(&self, now: i64) -> Result<u64, StoreError> {
        self.time("requeue_abandoned", self.inner.requeue_abandoned(now))
            .await
    }
    async fn get_event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        self.time("get_event", self.inner.get_event(id)).await
    }
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.time("list_events", self.inner.list_events(status, limit))
            .await
    }
    async fn retry_event(&self, id: &EventId, now: i64) -> Result<EventRecord, StoreError> {
        self.time("retry_event", self.inner.retry_event(id, now))
            .await
    }
}

#[async_trait]
impl TenantStore for TimedStore {
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        self.time("get_tenant", self.inner.get_tenant(id)).await
    }
    async fn list_tenants(
        &self,
        states: &[crate::store::TenantState],
        limit: i64,
    ) -> Result<Vec<TenantRecord>, StoreError> {
        self.time("list_tenants", self.inner.list_tenants(states, limit))
            .await
    }
    async fn commit(&self, commit: Commit, now: i64) -> Result<(), StoreError> {
        self.time("commit", self.inner.commit(commit, now)).await
    }
    async fn append_timeline(&self, entry: &TimelineEntry) -> Result<(), StoreError> {
        self.time("append_timeline", self.inner.append_timeline(entry))
            .await
    }
    async fn timeline(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.time("timeline", self.inner.timeline(tenant, limit))
            .await
    }
}

#[async_trait]
impl JobStore for TimedStore {
    async fn get_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.time("get_job", self.inner.get_job(id)).await
    }
    async fn find_job_by_external_id(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let call = self.inner.find_job_by_external_id(id);
        self.time("find_job_by_external_id", call).await
    }
    async fn jobs_for_tenant(&self, tenant: &TenantId) -> Result<Vec<JobRecord>, StoreError> {
        self.time("jobs_for_tenant", self.inner.jobs_for_tenant(tenant))
            .await
    }
    async fn take_abandoned_jobs(
        &self,
        backend: &str,
        expired_before: i64,
        lease_until: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let call = self
            .inner
            .take_abandoned_jobs(backend, expired_before, lease_until);
        self.time("take_abandoned_jobs", call).await
    }
    async fn renew_job_leases(&self, ids: &[JobId], until: i64) -> Result<(), StoreError> {
        self.time("renew_job_leases", self.inner.renew_job_leases(ids, until))
            .await
    }
    async fn mark_job_running(
        &self,
        id: &JobId,
        external_id: &str,
        attempt: i64,
        now: i64,
        lease_until: i64,
    ) -> Result<(), StoreError> {
        let call = self
            .inner
            .mark_job_running(id, external_id, attempt, now, lease_until);
        self.time("mark_job_running", call).await
    }
}

#[async_trait]
impl AppStore for TimedStore {
    async fn add_app_version(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        code: &[u8],
        sha: &str,
        now: i64,
        promote: bool,
    ) -> Result<i64, StoreError> {
        let call = self
            .inner
            .add_app_version(name, config, code, sha, now, promote);
        self.time("add_app_version", call).await
    }
    async fn app_version(
        &self,
        name: &AppName,
        version: i64,
    ) -> Result<Option<AppVersionRecord>, StoreError> {
        self.time("app_version", self.inner.app_version(name, version))
            .await
    }
    async fn set_aliases(
        &self,
        name: &AppName,
        expected: &Aliases,
        aliases: &Aliases,
        live_config: &FunctionConfig,
        mend_error: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let call = self
            .inner
            .set_aliases(name, expected, aliases, live_config, mend_error, now);
        self.time("set_aliases", call).await
    }
    async fn add_domain(
        &self,
        domain: &str,
        app: &AppName,
        now: i64,
    ) -> Result<Option<AppName>, StoreError> {
        self.time("add_domain", self.inner.add_domain(domain, app, now))
            .await
    }
    async fn remove_domain(&self, domain: &str, app: &AppName) -> Result<bool, StoreError> {
        self.time("remove_domain", self.inner.remove_domain(domain, app))
            .await
    }
    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<(String, AppName)>, StoreError> {
        self.time("domains", self.inner.domains(app)).await
    }
    async fn enqueue_invocation(
        &self,
        invocation: &AsyncInvocation,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.enqueue_invocation(invocation, now);
        self.time("enqueue_invocation", call).await
    }
    async fn claim_invocations(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<AsyncInvocation>, StoreError> {
        let call = self.inner.claim_invocations(now, lease_ms, limit);
        self.time("claim_invocations", call).await
    }
    async fn settle_invocation(
        &self,
        id: &str,
        outcome: &AsyncOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.settle_invocation(id, outcome, now);
        self.time("settle_invocation", call).await
    }
    async fn create_operation(
        &self,
        operation: &OperationRecord,
        lease_until: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.create_operation(operation, lease_until);
        self.time("create_operation", call).await
    }
    async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        self.time("get_operation", self.inner.get_operation(id))
            .await
    }
    async fn renew_operation(&self, id: &str, lease_until: i64) -> Result<(), StoreError> {
        let call = self.inner.renew_operation(id, lease_until);
        self.time("renew_operation", call).await
    }
    async fn finish_operation(
        &self,
        id: &str,
        status: OperationStatus,
        result: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.finish_operation(id, status, result, error, now);
        self.time("finish_operation", call).await
    }
    async fn settle_abandoned_operations(
        &self,
        expired_before: i64,
        error: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let call = self
            .inner
            .settle_abandoned_operations(expired_before, error, now);
        self.time("settle_abandoned_operations", call).await
    }
    async fn get_app(&self, name: &AppName) -> Result<Option<AppRecord>, StoreError> {
        self.time("get_app", self.inner.get_app(name)).await
    }
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.time("list_apps", self.inner.list_apps()).await
    }
    async fn app_versions(&self, name: &AppName) -> Result<Vec<AppVersionRecord>, StoreError> {
        self.time("app_versions", self.inner.app_versions(name))
            .await
    }
    async fn app_code(&self, name: &AppName, version: i64) -> Result<Vec<u8>, StoreError> {
        self.time("app_code", self.inner.app_code(name, version))
            .await
    }
    async fn settle_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        status: AppStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let call = self
            .inner
            .settle_app_deploy(name, version, status, error, now);
        self.time("settle_app_deploy", call).await
    }
    async fn take_abandoned_deploys(
        &self,
        expired_before: i64,
        now: i64,
    ) -> Result<Vec<AppRecord>, StoreError> {
        let call = self.inner.take_abandoned_deploys(expired_before, now);
        self.time("take_abandoned_deploys", call).await
    }
    async fn renew_app_deploy(
        &self,
        name: &AppName,
        version: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.renew_app_deploy(name, version, now);
        self.time("renew_app_deploy", call).await
    }
    async fn set_app_status(
        &self,
        name: &AppName,
        status: AppStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let call = self.inner.set_app_status(name, status, error, now);
        self.time("set_app_status", call).await
    }
}

#[async_trait]
impl LogStore for TimedStore {
    async fn append_logs(&self, chunks: &[LogChunk]) -> Result<(), StoreError> {
        self.time("append_logs", self.inner.append_logs(chunks))
            .await
    }
    async fn log_chunks(&self, query: &ChunkQuery) -> Result<Vec<StoredLogChunk>, StoreError> {
        self.time("log_chunks", self.inner.log_chunks(query)).await
    }
    async fn trim_logs(&self, app: &AppName, keep_bytes: i64) -> Result<u64, StoreError> {
        self.time("trim_logs", self.inner.trim_logs(app, keep_bytes))
            .await
    }
}
