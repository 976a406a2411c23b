//! The dispatcher: leases due events from the store, runs their handlers
//! concurrently (bounded), and records each outcome with retry and backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::envelope::detail_of;
use super::handlers::tenant_id;
use super::{EventType, HandlerError, HandlerSet, InboxEvent, Services};
use crate::store::{EventOutcome, EventRecord, JsonObject, TenantId, TimelineEntry};
use crate::telemetry::metrics::EventOutcome as Processed;
use crate::telemetry::trace::{self, Span, TraceContext};

/// How failing events are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before a transiently failing event is `dead`.
    pub max_attempts: i64,
    /// Delay after the first failure; doubles each time.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

/// Delay before attempt `attempts + 1`: exponential, capped, with jitter in [50 %, 100 %].
pub fn backoff_ms(policy: &RetryPolicy, attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = policy.base_delay.as_millis().saturating_mul(1u128 << exp);
    let capped = i64::try_from(base.min(policy.max_delay.as_millis())).unwrap_or(i64::MAX);
    capped / 2 + (fastrand::f64() * (capped / 2) as f64) as i64
}

/// Runs handlers from the inbox.
pub struct Dispatcher {
    pub services: Services,
    pub handlers: Arc<HandlerSet>,
    pub retry: RetryPolicy,
    /// Events processed at once.
    pub concurrency: usize,
    /// How long a claimed event stays leased to this process.
    pub lease: Duration,
    /// How often to look for due retries when nothing wakes the dispatcher.
    pub poll: Duration,
}

impl Dispatcher {
    /// Runs until `shutdown`, then waits (briefly) for handlers in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.concurrency));
        let wake = this.services.inbox.waker();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = permits.acquire() => drop(permit),
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let now = crate::support::now_ms();
            let lease = i64::try_from(this.lease.as_millis()).unwrap_or(i64::MAX);
            match this
                .services
                .store
                .claim_events(now, lease, free as i64)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let this = this.clone();
                        tokio::spawn(async move {
                            this.process(event).await;
                            this.services.inbox.wake();
                            drop(permit);
                        });
                    }
                }
                Ok(_) => {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(this.poll) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claiming events failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        let all = u32::try_from(this.concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(all)).await;
    }

    #[tracing::instrument(level = "debug", skip_all, fields(event = %record.id, event_type = %record.event_type, attempt = record.attempts))]
    async fn process(&self, record: EventRecord) {
        let span = tracing::info_span!("event", id = %record.id, r#type = %record.event_type, attempt = record.attempts);
        async {
            let (outcome, tenant) = self.outcome(&record).await;
            match &outcome {
                EventOutcome::Succeeded { note } => tracing::info!(note = note.as_deref().unwrap_or(""), "event handled"),
                EventOutcome::Failed { error } => tracing::warn!(%error, "event failed permanently"),
                EventOutcome::Retry { error, retry_at_ms } => {
                    tracing::warn!(%error, in_ms = retry_at_ms - crate::support::now_ms(), "event will be retried")
                }
                EventOutcome::Dead { error } => tracing::error!(%error, "event is dead: attempts exhausted"),
            }
            let mut delay = Duration::from_millis(100);
            // Keep trying to record the outcome; if we cannot, the lease expires and the event runs again.
            for _ in 0..5 {
                match self.services.store.finish_event(&record.id, outcome.clone(), crate::support::now_ms()).await {
                    Ok(()) => {
                        self.services.metrics.event_processed(&record.event_type, processed(&outcome));
                        if let Some(tenant) = tenant {
                            self.on_timeline(tenant, &record, &outcome).await;
                        }
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "recording the event outcome failed");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Puts an event's processing attempt on its tenant's timeline (a
    /// failure to is logged: the outcome itself is recorded).
    async fn on_timeline(&self, tenant: TenantId, record: &EventRecord, outcome: &EventOutcome) {
        let (status, error, note) = match outcome {
            EventOutcome::Succeeded { note } => ("succeeded", None, note.as_deref()),
            EventOutcome::Failed { error } => ("failed", Some(error.as_str()), None),
            EventOutcome::Retry { error, .. } => ("retried", Some(error.as_str()), None),
            EventOutcome::Dead { error } => ("dead", Some(error.as_str()), None),
        };
        let mut detail = JsonObject::default();
        detail.insert("eventId".into(), record.id.as_str().into());
        detail.insert("type".into(), record.event_type.as_str().into());
        detail.insert("status".into(), status.into());
        detail.insert("attempt".into(), record.attempts.into());
        detail.insert("error".into(), error.into());
        detail.insert("note".into(), note.into());
        let trace = TraceContext::from_stored(record.traceparent.as_deref());
        detail.insert("traceId".into(), trace.map(|t| t.trace_id()).into());
        let entry = TimelineEntry {
            tenant_id: tenant,
            at_ms: crate::support::now_ms(),
            kind: "event".into(),
            detail,
        };
        if let Err(err) = self.services.store.append_timeline(&entry).await {
            tracing::warn!(error = %err, "could not put the event on its tenant's timeline");
        }
    }

    /// The outcome of one processing attempt, and the tenant the event is about (if it names one).
    async fn outcome(&self, record: &EventRecord) -> (EventOutcome, Option<TenantId>) {
        let Some(event_type) = EventType::from_name(&record.event_type) else {
            let error = format!("Unsupported event type: {}", record.event_type);
            return (EventOutcome::Failed { error }, None);
        };
        let detail = match detail_of(&record.payload) {
            Ok(detail) => detail,
            Err(e) => {
                let error = format!("stored payload is unreadable: {e}");
                return (EventOutcome::Failed { error }, None);
            }
        };
        let tenant = tenant_id(&detail).ok();
        let Some(handler) = self.handlers.get(event_type).cloned() else {
            let error = format!("no handler for {event_type}");
            return (EventOutcome::Failed { error }, tenant);
        };
        (
            self.handle(handler, record, event_type, detail).await,
            tenant,
        )
    }

    async fn handle(
        &self,
        handler: Arc<dyn super::EventHandler>,
        record: &EventRecord,
        event_type: EventType,
        detail: serde_json::Map<String, serde_json::Value>,
    ) -> EventOutcome {
        // The handler's span continues the event's trace (a new one for an
        // event recorded without one).
        let mut span = Span::start(
            trace::name(|| format!("handle {event_type}")),
            trace::Kind::Consumer,
            TraceContext::from_stored(record.traceparent.as_deref()),
        );
        span.set("event.id", record.id.to_string());
        span.set("event.attempt", record.attempts);
        let event = InboxEvent {
            id: record.id.clone(),
            event_type,
            source: record.source.clone(),
            detail,
            attempt: record.attempts,
            trace: span.context(),
        };
        let services = self.services.clone();
        // A panicking handler must not take the dispatcher down: run it as its own task.
        let context = span.context();
        let run = tokio::spawn(trace::within(context, async move {
            handler.handle(&event, &services).await
        }));
        let limit = self.lease / 2;
        let result = match tokio::time::timeout(limit, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(HandlerError::transient(format!("handler panicked: {join}"))),
            Err(_) => Err(HandlerError::transient(format!(
                "handler took longer than {}s",
                limit.as_secs()
            ))),
        };
        if let Err(err) = &result {
            span.fail(err.to_record());
        }
        span.end();
        match result {
            Ok(handled) => EventOutcome::Succeeded { note: handled.note },
            Err(HandlerError::Permanent(error)) => EventOutcome::Failed { error },
            Err(err @ HandlerError::Transient { .. })
                if record.attempts >= self.retry.max_attempts =>
            {
                EventOutcome::Dead {
                    error: format!(
                        "{} (gave up after {} attempts)",
                        err.to_record(),
                        record.attempts
                    ),
                }
            }
            Err(err @ HandlerError::Transient { .. }) => EventOutcome::Retry {
                retry_at_ms: crate::support::now_ms() + backoff_ms(&self.retry, record.attempts),
                error: err.to_record(),
            },
        }
    }
}

/// How `orchestrator_events_processed_total` names an outcome.
fn processed(outcome: &EventOutcome) -> Processed {
    match outcome {
        EventOutcome::Succeeded { .. } => Processed::Succeeded,
        EventOutcome::Failed { .. } => Processed::Failed,
        EventOutcome::Retry { .. } => Processed::Retried,
        EventOutcome::Dead { .. } => Processed::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(8000),
        };
        for (attempts, full) in [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (9, 8000),
            (60, 8000),
        ] {
            let d = backoff_ms(&policy, attempts);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempts}: {d} not in [{}, {full}]",
                full / 2
            );
        }
    }
}
