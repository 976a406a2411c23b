//! Asynchronous invocations (`X-Amz-Invocation-Type: Event`): queued in the
//! store at once, run by processes that serve functions, and retried twice
//! on failure with growing delays, as Lambda retries asynchronous
//! invocations. A run is leased longer than the longest function timeout, so
//! one whose process died is run again by another.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AppError, AppService};
use crate::functions::FunctionError;
use crate::store::{AsyncInvocation, AsyncOutcome};

/// Runs of an invocation, the first included (Lambda: two retries).
pub const MAX_ATTEMPTS: i64 = 3;
/// A run's lease: past the longest function timeout (900 s).
const LEASE: Duration = Duration::from_secs(960);
/// Invocations claimed per look.
const BATCH: i64 = 16;

impl AppService {
    /// Queues an `Event` invocation of `name` (checked to exist first); its id.
    pub async fn enqueue_invocation(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<String, FunctionError> {
        self.resolve_function(name, qualifier).await?;
        let invocation = AsyncInvocation {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            qualifier: qualifier.map(str::to_owned),
            payload,
            attempts: 0,
        };
        self.store
            .enqueue_invocation(&invocation, crate::support::now_ms())
            .await
            .map_err(|e| FunctionError::unavailable_because("queueing the invocation", e))?;
        Ok(invocation.id)
    }

    /// Runs queued invocations as they come due, looking every `every`,
    /// until `shutdown`; a failed run is retried after `retry_delay` times
    /// the runs made so far (Lambda: 1 then 2 minutes).
    pub async fn run_async_invocations(
        self: Arc<Self>,
        every: Duration,
        retry_delay: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = crate::support::now_ms();
            let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
            let claimed = match self.store.claim_invocations(now, lease, BATCH).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "could not claim asynchronous invocations");
                    continue;
                }
            };
            for invocation in claimed {
                tokio::spawn(self.clone().run_async(invocation, retry_delay));
            }
        }
    }

    /// One run of a claimed invocation, and its outcome recorded.
    async fn run_async(self: Arc<Self>, invocation: AsyncInvocation, retry_delay: Duration) {
        let ran = self
            .invoke_function(
                &invocation.name,
                invocation.qualifier.as_deref(),
                invocation.payload.clone(),
            )
            .await;
        let failure = match ran {
            Ok((_, Ok(_))) => None,
            Ok((version, Err(err))) => Some((format!("version {version}: {err}"), true)),
            // Nothing to run: retrying will not make it exist.
            Err(FunctionError::NotFound) => Some(("the function does not exist".to_owned(), false)),
            Err(err) => Some((err.to_string(), true)),
        };
        let now = crate::support::now_ms();
        let outcome = match failure {
            None => AsyncOutcome::Succeeded,
            Some((error, true)) if invocation.attempts < MAX_ATTEMPTS => {
                let delay =
                    retry_delay.saturating_mul(u32::try_from(invocation.attempts).unwrap_or(1));
                let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                AsyncOutcome::Retry {
                    at_ms: now.saturating_add(delay),
                    error,
                }
            }
            Some((error, _)) => AsyncOutcome::Failed { error },
        };
        match &outcome {
            AsyncOutcome::Succeeded => {
                tracing::info!(app = %invocation.name, id = %invocation.id, attempt = invocation.attempts, "asynchronous invocation ran");
            }
            AsyncOutcome::Retry { error, .. } => {
                tracing::warn!(app = %invocation.name, id = %invocation.id, attempt = invocation.attempts, error = %error, "asynchronous invocation failed: retried later");
            }
            AsyncOutcome::Failed { error } => {
                tracing::warn!(app = %invocation.name, id = %invocation.id, attempt = invocation.attempts, error = %error, "asynchronous invocation failed: given up");
            }
        }
        if let Err(err) = self
            .store
            .settle_invocation(&invocation.id, &outcome, now)
            .await
        {
            tracing::warn!(id = %invocation.id, error = %AppError::from(err), "could not record an asynchronous invocation's outcome");
        }
    }
}
