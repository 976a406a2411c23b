//! Job completions as inbox events: the [`CompletionSink`] the builders report
//! through. A completion becomes a CodeBuild `Build State Change` event with
//! [`COMPLETION_SOURCE`], which ingestion refuses from clients, and an id with
//! a `/`, which client event ids cannot have: a client can neither pass for
//! the service nor take a completion's id first. Clients' `Build State Change`
//! events complete CodeBuild jobs only (see `handlers/build_state.rs`).

use async_trait::async_trait;

use super::envelope::internal_envelope;
use super::{EventType, Inbox};
use crate::builder::{CompletionSink, JobCompletion};
use crate::store::NewEvent;

/// The `source` of the completions the service records: reserved (see
/// [`super::envelope::is_reserved_source`]), so only the service itself
/// records events with it.
pub const COMPLETION_SOURCE: &str = "orchestrator.builder";

/// The inbox id of a completion: deterministic (a second report of the same
/// run is a duplicate), with a `/` no client event id may contain.
pub fn completion_event_id(external_id: &str, attempt: i64) -> String {
    format!("{external_id}:{attempt}/completed")
}

#[async_trait]
impl CompletionSink for Inbox {
    async fn record(&self, completion: &JobCompletion) -> anyhow::Result<()> {
        let id = completion_event_id(&completion.external_id, completion.attempt);
        let event = NewEvent {
            payload: internal_envelope(
                &id,
                EventType::BuildStateChange.as_str(),
                completion.to_detail(),
            ),
            id: id.into(),
            event_type: EventType::BuildStateChange.as_str().to_owned(),
            source: Some(COMPLETION_SOURCE.to_owned()),
            received_at_ms: crate::support::now_ms(),
            // The job's result continues the job's trace (read from the job).
            traceparent: None,
        };
        self.submit(event).await?;
        Ok(())
    }
}
